"""Replays that reuse the eval pass instead of recomputing it.

A module replayed with only its own flag in training mode calls its children much as the eval
pass did. A child called again exactly as then returns a copy of what it returned then, without
running: the replays of a Hugging Face model's root, encoder and layers (which read their flag
and change nothing) then cost a fraction of a forward each instead of a whole one.

"Exactly as then" is checked, never assumed, so the replay's output is the one a full replay
would give: the same inputs (structure, values, dtypes and strides of plain tensors, numbers
and containers, and the whole state of any plain object among them, such as a KV cache), the
child's own and its submodules' training flags, parameters and buffers as they were (compared
with the audit's snapshot, so a write through `.data` is seen too), no tensor state kept on its
modules, and an eval-pass call that drew no random numbers (from torch's generators; from
Python's or numpy's, no call of the pass did), left its input tensors untouched and returned no
alias of them or of the model's tensors. Anything else runs the child as usual.

A call may change the objects it is given (a decoder layer extends the cache): the eval pass
describes their state after the call too, and a reuse brings the replay's objects, in place, to
that state (the replay's own tensors where the call kept one, copies of the new ones). That is
only done when the call's whole effect is known: every object it changed was reachable from its
inputs before the call (it attached no object from elsewhere), is a plain object (attributes in
`__dict__`, no slots) and appears once, and every new tensor in them is its own memory, not a
view of an input, the output or the model.
"""

from __future__ import annotations

import copy
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Callable, Iterator

import torch
from torch import nn

from modeguard.runtime.flags import is_user_defined
from modeguard.runtime.state import TensorState, all_modules, parameters_and_buffers
from modeguard.runtime.trees import leaves

MAX_CALLS = 4  # calls remembered per module (a block called in a loop is reused up to this)
_SCALARS = (bool, int, float, complex, str, bytes, torch.dtype, torch.device)
_TENSOR = "<tensor>"
_OBJECT = "<object>"


class _NotPlain(Exception):
    pass


@dataclass
class _Described:
    """A comparable description of plain values: the structure, and the tensors and plain
    objects in it, in the order met (depth first, an object before its attributes)."""

    structure: Any
    tensors: list[torch.Tensor]
    objects: list[Any]
    mutable: bool = False  # holds a list, dict or object: a call could change it


def _is_plain_object(obj: Any) -> bool:
    """An object whose whole state is its `__dict__` (a KV cache, a cache layer): no slots, not
    one of torch's objects, not a module, class or function."""
    cls = type(obj)
    return (
        not isinstance(obj, (nn.Module, type))
        and isinstance(getattr(obj, "__dict__", None), dict)
        and cls.__module__.split(".")[0] != "torch"
        and not callable(obj)
        and all(not getattr(base, "__slots__", ()) for base in cls.__mro__[:-1])
    )


def _structure(obj: Any, found: _Described, depth: int = 0) -> Any:
    if type(obj) in (torch.Tensor, nn.Parameter):
        found.tensors.append(obj)
        return _TENSOR
    if obj is None or isinstance(obj, _SCALARS):
        return (type(obj), obj)
    if depth >= 8:
        raise _NotPlain
    if isinstance(obj, tuple):
        return (type(obj), tuple(_structure(v, found, depth + 1) for v in obj))
    if isinstance(obj, list):
        found.mutable = True
        return (type(obj), tuple(_structure(v, found, depth + 1) for v in obj))
    if isinstance(obj, dict):
        found.mutable = found.mutable or depth != 1  # at depth 1: the call's own **kwargs
        return (type(obj), tuple((k, _structure(v, found, depth + 1)) for k, v in obj.items()))
    if isinstance(obj, type):  # a class named in a cache
        return (type, obj)
    if _is_plain_object(obj):
        if any(o is obj for o in found.objects):
            raise _NotPlain  # shared within the input: a copy would not share it
        found.objects.append(obj)
        found.mutable = True
        items = tuple((k, _structure(v, found, depth + 1)) for k, v in vars(obj).items())
        return (_OBJECT, type(obj), items)
    raise _NotPlain


def _described(value: Any) -> _Described | None:
    found = _Described(None, [], [])
    try:
        found.structure = _structure(value, found)
    except _NotPlain:
        return None
    return found


def _outside_objects(found: _Described) -> tuple[Any, list[int]]:
    """The structure with each object's contents left out (its type kept), and the ids of the
    tensors outside objects."""
    outside: list[int] = []
    cursor = [0]

    def strip(structure: Any, inside: bool) -> Any:
        if structure == _TENSOR:
            if not inside:
                outside.append(id(found.tensors[cursor[0]]))
            cursor[0] += 1
            return structure
        if structure[0] is _OBJECT:
            for _, value in structure[2]:
                strip(value, True)
            return (_OBJECT, structure[1])
        kind, value = structure
        if isinstance(kind, type) and issubclass(kind, (tuple, list)):
            return (kind, tuple(strip(v, inside) for v in value))
        if isinstance(kind, type) and issubclass(kind, dict):
            return (kind, tuple((k, strip(v, inside)) for k, v in value))
        return structure

    return strip(found.structure, False), outside


def _rebuildable(structure: Any) -> bool:
    """Whether `_rebuilt` can make the value again: containers are plain tuples, lists and dicts."""
    if structure == _TENSOR:
        return True
    if structure[0] is _OBJECT:
        return all(_rebuildable(v) for _, v in structure[2])
    kind, value = structure
    if kind in (tuple, list):
        return all(_rebuildable(v) for v in value)
    if kind is dict:
        return all(_rebuildable(v) for _, v in value)
    return not (isinstance(kind, type) and issubclass(kind, (tuple, list, dict)))


def _rebuilt(
    structure: Any,
    after: _Described,
    objects: dict[int, Any],
    tensors: dict[int, torch.Tensor],
    cursor: list[int],
) -> Any:
    """The value `structure` (from `after`) describes, for the replay: its objects are the
    replay's objects (`objects`, by the eval pass's object id), updated in place; a tensor is
    the replay's own where the eval pass's call kept one (`tensors`), else a copy."""
    if structure == _TENSOR:
        tensor = after.tensors[cursor[0]]
        cursor[0] += 1
        mine = tensors.get(id(tensor))
        return mine if mine is not None else tensor.clone()
    if structure[0] is _OBJECT:
        _, cls, items = structure
        original = after.objects[cursor[1]]
        cursor[1] += 1
        target = objects[id(original)]
        state = {k: _rebuilt(v, after, objects, tensors, cursor) for k, v in items}
        target.__dict__.clear()
        target.__dict__.update(state)
        return target
    kind, value = structure
    if kind in (tuple, list):
        return kind(_rebuilt(v, after, objects, tensors, cursor) for v in value)
    if kind is dict:
        return {k: _rebuilt(v, after, objects, tensors, cursor) for k, v in value}
    return value


def _torch_rng_states() -> tuple:
    """torch's generators (CUDA only once initialized): compared around every recorded call."""
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None


def _same_torch_rng(a: tuple, b: tuple) -> bool:
    (cpu_a, cuda_a), (cpu_b, cuda_b) = a, b
    return torch.equal(cpu_a, cpu_b) and (cuda_a is None or all(torch.equal(x, y) for x, y in zip(cuda_a, cuda_b)))


def _other_rng_states() -> tuple:
    """Python's `random` and numpy's global generator: compared once around the whole pass
    (reading numpy's state costs more than a small layer's forward)."""
    numpy = sys.modules.get("numpy")
    return random.getstate(), numpy.random.get_state() if numpy is not None else None


def _same_other_rng(a: tuple, b: tuple) -> bool:
    """Equal states; numpy's compared whole: a draw moves its position, not always its key."""
    (py_a, np_a), (py_b, np_b) = a, b
    if py_a != py_b:
        return False
    if np_a is None or np_b is None:
        return np_a is np_b
    (kind_a, key_a, *rest_a), (kind_b, key_b, *rest_b) = np_a, np_b
    return kind_a == kind_b and rest_a == rest_b and bool((key_a == key_b).all())


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        type(a) is type(b)
        and a.dtype == b.dtype
        and a.device == b.device
        and a.shape == b.shape
        and a.stride() == b.stride()
        and not a.is_sparse
        and torch.equal(a, b)
    )


@dataclass
class _Call:
    inputs: _Described  # what the call received (references to its tensors and objects)
    versions: list[int]  # the input tensors' version counters then: a later write retires the call
    flags: tuple[bool, ...]  # the training flags of the module and its submodules
    output: Any  # a private copy of what forward() returned
    after: _Described | None = None  # the input objects' state after the call, when it changed
    after_versions: list[int] = field(default_factory=list)


class ChildCalls:
    """What the children of replayed modules received and returned in the eval pass, and the
    reuse of it in replays."""

    def __init__(
        self,
        model: nn.Module,
        parents: list[nn.Module],
        tensors: TensorState,
        stateful: set[int],
        shared: dict,
        descend: Callable[[nn.Module], bool] = lambda child: False,
    ):
        """`descend(child)`: whether replays are expected to call the child with other inputs
        than the eval pass did (a detector's heads, handed the targets that the root's replay
        gets): its own children are recorded too, so that rerunning it still reuses what it
        calls as before."""
        self.model = model
        self.saved = tensors
        self.shared = shared  # the model's modules, parameters and buffers: never copied
        self.children: dict[int, nn.Module] = {}
        self._subtrees: dict[int, list[nn.Module]] = {}  # each child's modules, itself first
        self._stateful = stateful
        self._descend = descend
        for parent in parents:
            self._add_children_of(parent)
        self.calls: dict[int, list[_Call]] = {}
        self._model_storage: set[int] | None = None  # looked up at the first recorded call

    def _add_children_of(self, parent: nn.Module) -> None:
        for child in _called_children(parent):
            if id(child) in self.children or not _worth_reusing(child):
                continue
            subtree = all_modules(child)
            if self._stateful & {id(m) for m in subtree}:
                continue
            self.children[id(child)] = child
            self._subtrees[id(child)] = subtree
            if self._descend(child):
                self._add_children_of(child)

    @contextmanager
    def recording(self) -> Iterator[None]:
        if not self.children:
            yield
            return
        before = _other_rng_states()
        with _patched_forwards(self.children.values(), self._recorder):
            yield
        if not _same_other_rng(before, _other_rng_states()):
            self.calls.clear()  # some call drew from Python's or numpy's generator: reuse none

    @contextmanager
    def reusing(self, parent: nn.Module) -> Iterator[None]:
        """Every recorded module below `parent` (not only its children: one that runs again
        because its input changed still reuses what it calls as before)."""
        children = [m for m in all_modules(parent) if m is not parent and self.calls.get(id(m))]
        with _patched_forwards(children, self._reuser):
            yield

    def _recorder(self, module: nn.Module, forward):
        def recorded(*args, **kwargs):
            calls = self.calls.setdefault(id(module), [])
            inputs = _described((args, kwargs)) if len(calls) < MAX_CALLS else None
            if inputs is None:
                return forward(*args, **kwargs)
            versions = [t._version for t in inputs.tensors]
            before = _torch_rng_states()
            output = forward(*args, **kwargs)
            if (
                [t._version for t in inputs.tensors] == versions
                and _same_torch_rng(before, _torch_rng_states())
                and not self._aliases(output, inputs.tensors)
            ):
                call = _Call(inputs, versions, _flags(self._subtrees[id(module)]), None)
                if inputs.mutable and not self._effect_known(call, _described((args, kwargs)), output):
                    return output
                try:
                    call.output = copy.deepcopy(output, dict(self.shared))
                except Exception:  # noqa: BLE001 - an output that cannot be copied is not reused
                    return output
                calls.append(call)
            return output

        return recorded

    def _effect_known(self, call: _Call, after: _Described | None, output: Any) -> bool:
        """Keep `after`, the call's inputs described after it ran, as its effect on the objects
        it was given; False when that cannot be replayed exactly (see the module docstring)."""
        before = call.inputs
        if after is None:
            return False
        unchanged = after.structure == before.structure and all(
            a is b for a, b in zip(after.tensors, before.tensors)
        )
        if unchanged:
            return not before.objects or _described(output) is not None
        if not before.objects or _described(output) is None or not _rebuildable(after.structure):
            return False
        if _outside_objects(after) != _outside_objects(before):
            return False  # it changed a list or dict it was given, not an object
        known = {id(o) for o in before.objects}
        if any(id(o) not in known for o in after.objects):
            return False  # an object from elsewhere was attached
        kept = {id(t) for t in before.tensors}
        new = [t for t in after.tensors if id(t) not in kept]
        if len({id(t) for t in new}) != len(new):
            return False
        storages = [t.untyped_storage().data_ptr() for t in new]
        taken = self._model_storage | {t.untyped_storage().data_ptr() for t in call.inputs.tensors}
        taken |= {t.untyped_storage().data_ptr() for _, t in leaves(output)}
        if len(set(storages)) != len(storages) or taken & set(storages):
            return False
        call.after, call.after_versions = after, [t._version for t in after.tensors]
        return True

    def _aliases(self, output: Any, inputs: list[torch.Tensor]) -> bool:
        """Whether the output shares memory with an input or with the model's tensors: a copy
        would not behave like it under a later in-place write."""
        if self._model_storage is None:
            self._model_storage = {
                t.untyped_storage().data_ptr() for t in self.shared.values() if isinstance(t, torch.Tensor)
            }
        taken = self._model_storage | {t.untyped_storage().data_ptr() for t in inputs}
        return any(t.untyped_storage().data_ptr() in taken for _, t in leaves(output))

    def _reuser(self, module: nn.Module, forward):
        def reused(*args, **kwargs):
            found = self._matching_call(module, args, kwargs)
            if found is None:
                return forward(*args, **kwargs)
            call, inputs = found
            if call.after is not None:  # the call's effect on the objects it was given
                objects = {id(a): b for a, b in zip(call.inputs.objects, inputs.objects)}
                tensors = {id(a): b for a, b in zip(call.inputs.tensors, inputs.tensors)}
                _rebuilt(call.after.structure, call.after, objects, tensors, [0, 0])
            return copy.deepcopy(call.output, dict(self.shared))

        return reused

    def _matching_call(
        self, module: nn.Module, args: tuple, kwargs: dict
    ) -> tuple[_Call, _Described] | None:
        inputs = _described((args, kwargs))
        if inputs is None:
            return None
        subtree = self._subtrees[id(module)]
        flags = _flags(subtree)
        for call in self.calls[id(module)]:
            if (
                call.inputs.structure == inputs.structure
                and call.flags == flags
                and all(t._version == v for t, v in zip(call.inputs.tensors, call.versions))
                and (call.after is None or all(
                    t._version == v for t, v in zip(call.after.tensors, call.after_versions)
                ))
                and all(_identical(a, b) for a, b in zip(call.inputs.tensors, inputs.tensors))
                and self.saved.unchanged(chain(*parameters_and_buffers(module, subtree)))
            ):
                return call, inputs
        return None


def _worth_reusing(child: nn.Module) -> bool:
    """A network of its own: a container or a model's own class. One of torch's layers costs
    about what recording and checking its call would (a DenseNet's hundreds of BatchNorm, ReLU
    and convolution children made the audit slower, not faster)."""
    if isinstance(child, torch.jit.ScriptModule):
        return False
    return next(child.children(), None) is not None or is_user_defined(child)


def _flags(modules: list[nn.Module]) -> tuple:
    """The training flags of a module and its submodules, read from the instances' own
    attributes: the audit's flag watcher would count a `.training` read as the model's."""
    return tuple(vars(m).get("training") for m in modules)


def _called_children(parent: nn.Module) -> Iterator[nn.Module]:
    """The modules a parent's forward calls directly: its children, looking through
    ModuleList/ModuleDict containers, which are never called themselves."""
    for child in parent.children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from _called_children(child)
        else:
            yield child


@contextmanager
def _patched_forwards(modules, wrap) -> Iterator[None]:
    """Each module's `forward` replaced on the instance (hooks still run around it), then put
    back exactly: an instance attribute that was there before is restored, else removed."""
    patched = []
    try:
        for module in modules:
            own = module.__dict__.get("forward")
            module.__dict__["forward"] = wrap(module, module.forward)
            patched.append((module, own))
        yield
    finally:
        for module, own in patched:
            if own is None:
                del module.__dict__["forward"]
            else:
                module.__dict__["forward"] = own
