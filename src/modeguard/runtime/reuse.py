"""Replays that reuse the eval pass instead of recomputing it.

A module replayed with only its own flag in training mode calls its children much as the eval
pass did. A child called again exactly as then returns a copy of what it returned then, without
running: the replays of a Hugging Face model's root, encoder and layers (which read their flag
and change nothing) then cost a fraction of a forward each instead of a whole one.

"Exactly as then" is checked, never assumed, so the replay's output is the one a full replay
would give: the same inputs (structure, values, dtypes and strides; only plain tensors, numbers
and containers, never a cache object the call could change), the child's own and its
submodules' training flags, parameters and buffers as they were (compared with the audit's
snapshot, so a write through `.data` is seen too), no tensor state kept on its modules, and an
eval-pass call that drew no random numbers, left its inputs untouched and returned no alias of
them or of the model's tensors. Anything else runs the child as usual.
"""

from __future__ import annotations

import copy
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any, Iterator

import torch
from torch import nn

from modeguard.runtime.flags import is_user_defined
from modeguard.runtime.state import TensorState
from modeguard.runtime.trees import leaves

MAX_CALLS = 4  # calls remembered per module (a block called in a loop is reused up to this)
_SCALARS = (bool, int, float, complex, str, bytes, torch.dtype, torch.device)
_TENSOR = "<tensor>"


class _NotPlain(Exception):
    pass


def _structure(obj: Any, tensors: list[torch.Tensor], depth: int = 0) -> Any:
    """A comparable description of a plain input, its tensors collected in order."""
    if type(obj) in (torch.Tensor, nn.Parameter):
        tensors.append(obj)
        return _TENSOR
    if obj is None or isinstance(obj, _SCALARS):
        return (type(obj), obj)
    if depth < 8 and isinstance(obj, (tuple, list)):
        return (type(obj), tuple(_structure(v, tensors, depth + 1) for v in obj))
    if depth < 8 and isinstance(obj, dict):
        return (type(obj), tuple((k, _structure(v, tensors, depth + 1)) for k, v in obj.items()))
    raise _NotPlain


def _described(args: tuple, kwargs: dict) -> tuple[Any, list[torch.Tensor]] | None:
    tensors: list[torch.Tensor] = []
    try:
        return _structure((args, kwargs), tensors), tensors
    except _NotPlain:
        return None


def _rng_states() -> tuple:
    """Every generator a forward could draw from (CUDA only once initialized)."""
    numpy = sys.modules.get("numpy")
    return (
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        random.getstate(),
        numpy.random.get_state()[1].copy() if numpy is not None else None,
    )


def _same_rng(a: tuple, b: tuple) -> bool:
    (cpu_a, cuda_a, py_a, np_a), (cpu_b, cuda_b, py_b, np_b) = a, b
    return (
        torch.equal(cpu_a, cpu_b)
        and (cuda_a is None or all(torch.equal(x, y) for x, y in zip(cuda_a, cuda_b)))
        and py_a == py_b
        and (np_a is None or bool((np_a == np_b).all()))
    )


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
    structure: Any
    inputs: list[torch.Tensor]  # the tensors the call received (references)
    versions: list[int]  # their version counters then: a later in-place write retires the call
    flags: tuple[bool, ...]  # the training flags of the module and its submodules
    output: Any  # a private copy of what forward() returned


class ChildCalls:
    """What the children of replayed modules received and returned in the eval pass, and the
    reuse of it in replays."""

    def __init__(
        self, model: nn.Module, parents: list[nn.Module], tensors: TensorState, stateful: set[int], shared: dict
    ):
        self.model = model
        self.saved = tensors
        self.shared = shared  # the model's modules, parameters and buffers: never copied
        self.children: dict[int, nn.Module] = {}
        for parent in parents:
            for child in _called_children(parent):
                if _worth_reusing(child) and not stateful & {id(m) for m in child.modules()}:
                    self.children[id(child)] = child
        self.calls: dict[int, list[_Call]] = {}
        self._model_storage: set[int] | None = None  # looked up at the first recorded call

    @contextmanager
    def recording(self) -> Iterator[None]:
        if not self.children:
            yield
            return
        with _patched_forwards(self.children.values(), self._recorder):
            yield

    @contextmanager
    def reusing(self, parent: nn.Module) -> Iterator[None]:
        children = [c for c in _called_children(parent) if self.calls.get(id(c))]
        with _patched_forwards(children, self._reuser):
            yield

    def _recorder(self, module: nn.Module, forward):
        def recorded(*args, **kwargs):
            calls = self.calls.setdefault(id(module), [])
            described = _described(args, kwargs) if len(calls) < MAX_CALLS else None
            if described is None:
                return forward(*args, **kwargs)
            structure, inputs = described
            versions = [t._version for t in inputs]
            before = _rng_states()
            output = forward(*args, **kwargs)
            if (
                [t._version for t in inputs] == versions
                and _same_rng(before, _rng_states())
                and not self._aliases(output, inputs)
            ):
                try:
                    snapshot = copy.deepcopy(output, dict(self.shared))
                except Exception:  # noqa: BLE001 - an output that cannot be copied is not reused
                    return output
                calls.append(_Call(structure, inputs, versions, _flags(module), snapshot))
            return output

        return recorded

    def _aliases(self, output: Any, inputs: list[torch.Tensor]) -> bool:
        """Whether the output shares memory with an input or with the model's tensors: a copy
        would not behave like it under a later in-place write."""
        if self._model_storage is None:
            self._model_storage = {
                t.untyped_storage().data_ptr() for t in chain(self.model.parameters(), self.model.buffers())
            }
        taken = self._model_storage | {t.untyped_storage().data_ptr() for t in inputs}
        return any(t.untyped_storage().data_ptr() in taken for _, t in leaves(output))

    def _reuser(self, module: nn.Module, forward):
        def reused(*args, **kwargs):
            call = self._matching_call(module, args, kwargs)
            if call is None:
                return forward(*args, **kwargs)
            return copy.deepcopy(call.output, dict(self.shared))

        return reused

    def _matching_call(self, module: nn.Module, args: tuple, kwargs: dict) -> _Call | None:
        described = _described(args, kwargs)
        if described is None:
            return None
        structure, inputs = described
        flags = _flags(module)
        for call in self.calls[id(module)]:
            if (
                call.structure == structure
                and call.flags == flags
                and all(t._version == v for t, v in zip(call.inputs, call.versions))
                and all(_identical(a, b) for a, b in zip(call.inputs, inputs))
                and self.saved.unchanged(chain(module.parameters(), module.buffers()))
            ):
                return call
        return None


def _worth_reusing(child: nn.Module) -> bool:
    """A network of its own: a container or a model's own class. One of torch's layers costs
    about what recording and checking its call would (a DenseNet's hundreds of BatchNorm, ReLU
    and convolution children made the audit slower, not faster)."""
    if isinstance(child, torch.jit.ScriptModule):
        return False
    return next(child.children(), None) is not None or is_user_defined(child)


def _flags(module: nn.Module) -> tuple:
    """The training flags of a module and its submodules, read from the instances' own
    attributes: the audit's flag watcher would count a `.training` read as the model's."""
    return tuple(vars(m).get("training") for m in module.modules())


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
