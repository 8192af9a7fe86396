"""Forward hooks that record what each module saw and produced during one pass."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_pre_hook

from modeguard.runtime.batchnorm_health import ChannelStats
from modeguard.runtime.compare import fingerprint
from modeguard.runtime.inventory import describe
from modeguard.runtime.state import all_modules, named_modules, parameters_and_buffers
from modeguard.runtime.trees import leaves, map_tensors, sample_of


@dataclass
class ModuleCall:
    name: str
    order: int
    input_print: torch.Tensor | None = None
    output_print: torch.Tensor | None = None
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)


@dataclass
class StrayModule:
    """A module called during forward that is not registered in the model (built in forward)."""

    module_id: int
    type_name: str
    training: bool
    mode_sensitive: bool
    inside: str  # innermost registered module running at that moment


def output_print(obj: Any, select=lambda t: t) -> torch.Tensor | None:
    """The fingerprints of every tensor in a nested input or output, concatenated."""
    prints = [fingerprint(s) for _, t in leaves(obj) if (s := select(t)) is not None]
    return torch.cat(prints) if prints else None


def shared_objects(model: nn.Module, modules: list[nn.Module] | None = None) -> dict[int, Any]:
    """The model's modules, parameters and buffers: shared, never copied, by `frozen_copy`.
    `modules`: the model's `all_modules`, when the caller has them."""
    modules = modules if modules is not None else all_modules(model)
    params, buffers = parameters_and_buffers(model, modules)
    return {id(x): x for x in [*modules, *params, *buffers]}


def frozen_copy(obj: Any, shared: dict[int, Any]) -> Any:
    """A private copy of a module's arguments, caches and other state objects included (a KV
    cache the call extends must not leak into a replay); the `shared` objects are kept."""
    try:
        return copy.deepcopy(obj, dict(shared))
    except Exception:  # noqa: BLE001 - an object that refuses copying: copy the tensors only
        return map_tensors(obj, torch.Tensor.clone)


class PassRecorder:
    """Records, for each watched module's first call: fingerprints of its input and output,
    input shapes, and (for `capture_inputs`) a private copy of its arguments to replay it.

    `only` limits the hooks to those modules (hooks on every module of a small-layer model cost
    more than its forward), output fingerprints to the captured and `fingerprinted` ones and
    input fingerprints to the `fingerprinted` ones; None watches every module and notes modules
    built in forward."""

    def __init__(
        self,
        model: nn.Module,
        capture_inputs: set[str] = frozenset(),
        sample: tuple[int, int, int] | None = None,
        channel_stats: set[str] = frozenset(),
        only: set[str] | None = None,
        shared: dict[int, Any] | None = None,
        fingerprinted: set[str] = frozenset(),
        named: list[tuple[str, nn.Module]] | None = None,
    ):
        self.model = model
        self.named = named  # the model's `named_modules`, when the caller has walked them
        self.capture_inputs = capture_inputs
        self.shared = shared if shared is not None else shared_objects(model) if capture_inputs else {}
        self.only = only
        self.fingerprinted = fingerprinted
        self._output_printed = capture_inputs | fingerprinted
        self.sample = sample  # (index, batch size, batch dim): fingerprint only that sample
        self.calls: dict[str, ModuleCall] = {}
        self.captured: dict[str, tuple[tuple, dict]] = {}
        self.channel_stats_of = channel_stats
        self.channel_stats: dict[str, ChannelStats] = {}
        self.strays: list[StrayModule] = []
        self._stack: list[str] = []

    def _select(self, t: torch.Tensor) -> torch.Tensor | None:
        if self.sample is None:
            return t
        return sample_of(t, *self.sample)

    @contextmanager
    def recording(self) -> Iterator["PassRecorder"]:
        if self.only is not None and not self.only:
            yield self  # nothing to watch
            return
        walked = self.named if self.named is not None else named_modules(self.model)
        names = {id(m): name or "<root>" for name, m in walked}
        handles = []
        for name, module in walked:
            name = name or "<root>"
            if self.only is not None and name not in self.only:
                continue
            handles.append(
                module.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True)
            )
            if self.only is None or name in self._output_printed:  # else nothing to do after the call
                handles.append(module.register_forward_hook(self._post_hook(name), with_kwargs=True))

        def global_pre_hook(module, args):
            if id(module) not in names:
                inside = self._stack[-1] if self._stack else "<root>"
                self.strays.append(
                    StrayModule(
                        id(module),
                        type(module).__name__,
                        module.training,
                        describe(module) is not None,
                        inside,
                    )
                )

        if self.only is None:
            handles.append(register_module_forward_pre_hook(global_pre_hook))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _pre_hook(self, name: str):
        def hook(module, args, kwargs):
            if self.only is None:
                self._stack.append(name)  # the module running now, for modules built in forward
            if name in self.calls:
                return None
            call = ModuleCall(name, len(self.calls))
            if self.only is None or name in self.fingerprinted:
                call.input_print = output_print((args, kwargs), self._select)
            if len(args) == 1 and type(args[0]) is torch.Tensor:  # most calls: no tree to walk
                call.input_shapes = [tuple(args[0].shape)]
            else:
                call.input_shapes = [tuple(t.shape) for _, t in leaves(args)]
            self.calls[name] = call
            if name in self.capture_inputs:
                self.captured[name] = frozen_copy((args, kwargs), self.shared)
            if name in self.channel_stats_of and args and isinstance(args[0], torch.Tensor):
                self.channel_stats[name] = ChannelStats.of(args[0])
            return None

        return hook

    def _post_hook(self, name: str):
        def hook(module, args, kwargs, output):
            if self.only is None and self._stack:
                self._stack.pop()
            call = self.calls[name]
            if call.output_print is None and (self.only is None or name in self._output_printed):
                call.output_print = output_print(output, self._select)
            return None

        return hook
