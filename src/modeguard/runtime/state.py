"""Capture and restore everything an analysis could touch on a model and in the process."""

from __future__ import annotations

import copy
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
from torch import nn


def all_modules(model: nn.Module) -> list[nn.Module]:
    """`list(model.modules())`, in its order, without its generator frame per nesting level for
    every module (the audit walks the tree a dozen times)."""
    found: list[nn.Module] = []
    seen: set[int] = set()
    pending = [model]
    while pending:
        module = pending.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        found.append(module)
        pending.extend(reversed([child for child in module._modules.values() if child is not None]))
    return found


def named_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """`list(model.named_modules())`, names and order included, walked the way `all_modules` is."""
    found: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    pending = [("", model)]
    while pending:
        name, module = pending.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        found.append((name, module))
        pending.extend(
            reversed([(f"{name}.{key}" if name else key, child) for key, child in module._modules.items() if child is not None])
        )
    return found


def set_flags(flags: Iterable[tuple[nn.Module, bool]]) -> None:
    """`module.training = flag` for each pair, through `object.__setattr__` where the class keeps
    `nn.Module.__setattr__` (for `training` that one ends there too, after a dozen checks)."""
    for module, flag in flags:
        if type(module).__setattr__ is nn.Module.__setattr__:
            object.__setattr__(module, "training", flag)
        else:
            module.training = flag


def set_mode(model: nn.Module, training: bool) -> None:
    """`model.train(training)`: the flags set directly unless some class in the model overrides
    `train()` (then it is called), without `nn.Module.train`'s recursion and `__setattr__`."""
    modules = all_modules(model)
    if any(type(m).train is not nn.Module.train for m in modules):
        model.train(training)
    else:
        set_flags((m, training) for m in modules)


@dataclass
class ModuleModes:
    """Each submodule's own `training` flag, restorable exactly (a mixed model stays mixed)."""

    flags: list[tuple[nn.Module, bool]]

    @classmethod
    def capture(cls, model: nn.Module, modules: list[nn.Module] | None = None) -> "ModuleModes":
        return cls([(m, m.training) for m in (modules if modules is not None else all_modules(model))])

    def restore(self) -> None:
        set_flags(self.flags)


@dataclass
class RngState:
    """torch (CPU and every initialized CUDA device), `random` and numpy generator states."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor] | None
    python: object
    numpy: object

    @classmethod
    def capture(cls) -> "RngState":
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        try:
            import numpy

            np_state = numpy.random.get_state()
        except ImportError:
            np_state = None
        return cls(torch.get_rng_state(), cuda, random.getstate(), np_state)

    def restore(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda is not None:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        random.setstate(self.python)
        if self.numpy is not None:
            import numpy

            numpy.random.set_state(self.numpy)


def parameters_and_buffers(
    model: nn.Module, modules: list[nn.Module] | None = None
) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
    """Every parameter and buffer once (as `model.parameters()` and `model.buffers()` give
    them), in one walk over the modules instead of one per call."""
    params: list[nn.Parameter] = []
    buffers: list[torch.Tensor] = []
    seen: set[int] = set()
    for module in modules if modules is not None else all_modules(model):
        for group, found in ((module._parameters, params), (module._buffers, buffers)):
            for tensor in group.values():
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    found.append(tensor)
    return params, buffers


@dataclass
class TensorState:
    """Copies of every parameter and buffer, and each parameter's `requires_grad`."""

    tensors: list[tuple[torch.Tensor, torch.Tensor]]
    requires_grad: list[tuple[nn.Parameter, bool]]
    _by_id: dict[int, torch.Tensor] | None = None

    @classmethod
    def capture(cls, model: nn.Module, modules: list[nn.Module] | None = None) -> "TensorState":
        params, buffers = parameters_and_buffers(model, modules)
        return cls([(t, t.detach().clone()) for t in [*params, *buffers]], [(p, p.requires_grad) for p in params])

    @torch.no_grad()
    def restore(self) -> None:
        for live, saved in self.tensors:
            live.copy_(saved)
        for param, flag in self.requires_grad:
            param.requires_grad_(flag)

    def unchanged(self, tensors: Iterable[torch.Tensor]) -> bool:
        """Whether these parameters/buffers still hold their captured values (a write through
        `.data` leaves no trace in the version counter, so the values are compared)."""
        saved = self._saved_by_id()
        return all(id(t) in saved and torch.equal(t, saved[id(t)]) for t in tensors)

    def _saved_by_id(self) -> dict[int, torch.Tensor]:
        if self._by_id is None:
            self._by_id = {id(live): saved for live, saved in self.tensors}
        return self._by_id


MODULE_INTERNALS = frozenset(vars(nn.Module()))  # nn.Module's own bookkeeping: flag, hooks, registries


_STATE_TYPES = (torch.Tensor, list, tuple, dict)
_PLAIN_TYPES = frozenset({int, float, bool, str, type(None)})


def only_plain_values(items: Iterable[Any]) -> bool:
    """Whether all items are numbers, strings or None (a layer's `kernel_size`): one C-level
    pass, where a test per item costs a Python step for each of a model's many such tuples."""
    return _PLAIN_TYPES.issuperset(map(type, items))


def _holds_state(value: Any) -> bool:
    """A tensor, or a container with tensors: what a stateful forward keeps on `self`
    (an RNN's hidden state, a KV cache) besides parameters and buffers."""
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)) or only_plain_values(value):
        return False
    # A plain loop: cheaper than any() over a generator.
    for item in value:
        if isinstance(item, _STATE_TYPES) and _holds_state(item):
            return True
    return False


@dataclass
class ModuleAttributes:
    """Plain attributes holding tensors (or None) on every module: a model that keeps its hidden
    state or cache on `self` between calls is put back in the same state before each pass. The
    original objects are put back (a reference the user holds stays valid), with their contents."""

    saved: list[tuple[nn.Module, dict[str, tuple[Any, Any]]]]

    @classmethod
    def capture(cls, model: nn.Module, modules: list[nn.Module] | None = None) -> "ModuleAttributes":
        modules = modules if modules is not None else all_modules(model)
        shared: dict[int, torch.Tensor] | None = None  # kept out of the copies: looked up when one is made
        saved = []
        for module in modules:
            attributes = vars(module)
            state = {}
            for key in attributes.keys() - MODULE_INTERNALS:  # one set operation per module
                value = attributes[key]
                if value is None:
                    state[key] = (None, None)
                elif type(value) not in _PLAIN_TYPES and _holds_state(value):  # most are numbers: no call
                    if shared is None:
                        params, buffers = parameters_and_buffers(model, modules)
                        shared = {id(t): t for t in [*params, *buffers]}
                    state[key] = (value, copy.deepcopy(value, dict(shared)))
            if state:
                saved.append((module, state))
        return cls(saved)

    @torch.no_grad()
    def restore(self) -> None:
        for module, state in self.saved:
            attributes = vars(module)
            created = [
                k for k, v in attributes.items()
                if k not in MODULE_INTERNALS and k not in state and _holds_state(v)
            ]
            for key in created:
                del attributes[key]
            for key, (original, snapshot) in state.items():
                attributes[key] = original
                if isinstance(original, torch.Tensor) and original.shape == snapshot.shape:
                    original.copy_(snapshot)
                elif isinstance(original, list):
                    original[:] = copy.deepcopy(snapshot)
                elif isinstance(original, dict):
                    original.clear()
                    original.update(copy.deepcopy(snapshot))


@dataclass
class Snapshot:
    """What `preserved` captured: the tensor attributes (restore() them before each pass of a
    stateful model), the parameters and buffers (None when not captured) and the modules."""

    attributes: ModuleAttributes
    tensors: TensorState | None
    modules: list[nn.Module]

    def stateful_modules(self) -> set[int]:
        """ids of the modules that keep tensors on `self` besides parameters and buffers."""
        return {
            id(module)
            for module, state in self.attributes.saved
            if any(_holds_state(original) for original, _ in state.values())
        }


@contextmanager
def preserved(model: nn.Module, *, tensors: bool = True) -> Iterator[Snapshot]:
    """Run a block that may switch modes, update buffers or draw random numbers; undo it all."""
    modules = all_modules(model)
    modes = ModuleModes.capture(model, modules)
    rng = RngState.capture()
    saved = TensorState.capture(model, modules) if tensors else None
    attributes = ModuleAttributes.capture(model, modules)
    try:
        yield Snapshot(attributes, saved, modules)
    finally:
        attributes.restore()
        modes.restore()
        rng.restore()
        if saved is not None:
            saved.restore()
