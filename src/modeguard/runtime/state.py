"""Capture and restore everything an analysis could touch on a model and in the process."""

from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn


@dataclass
class ModuleModes:
    """Each submodule's own `training` flag, restorable exactly (a mixed model stays mixed)."""

    flags: list[tuple[nn.Module, bool]]

    @classmethod
    def capture(cls, model: nn.Module) -> "ModuleModes":
        return cls([(m, m.training) for m in model.modules()])

    def restore(self) -> None:
        for module, flag in self.flags:
            module.training = flag


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


@dataclass
class TensorState:
    """Copies of every parameter and buffer, and each parameter's `requires_grad`."""

    tensors: list[tuple[torch.Tensor, torch.Tensor]]
    requires_grad: list[tuple[nn.Parameter, bool]]

    @classmethod
    def capture(cls, model: nn.Module) -> "TensorState":
        tensors = [
            (t, t.detach().clone())
            for t in [*model.parameters(), *model.buffers()]
            if t is not None
        ]
        return cls(tensors, [(p, p.requires_grad) for p in model.parameters()])

    @torch.no_grad()
    def restore(self) -> None:
        for live, saved in self.tensors:
            live.copy_(saved)
        for param, flag in self.requires_grad:
            param.requires_grad_(flag)


@contextmanager
def preserved(model: nn.Module, *, tensors: bool = True) -> Iterator[None]:
    """Run a block that may switch modes, update buffers or draw random numbers; undo it all."""
    modes = ModuleModes.capture(model)
    rng = RngState.capture()
    saved = TensorState.capture(model) if tensors else None
    try:
        yield
    finally:
        modes.restore()
        rng.restore()
        if saved is not None:
            saved.restore()
