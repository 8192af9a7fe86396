"""`evaluating(model)` / `training(model)`: switch a model's mode for a block and restore every
submodule's own flag afterwards (a frozen backbone stays frozen, a mixed model stays mixed)."""

from __future__ import annotations

import contextlib
from contextlib import ContextDecorator

import torch
from torch import nn

from modeguard.runtime.state import ModuleModes


class _ModeContext(ContextDecorator):
    def __init__(self, model: nn.Module, training: bool, grad_context):
        if not isinstance(model, nn.Module):
            from modeguard.errors import InputError

            raise InputError(f"expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.mode = training
        self.grad_context = grad_context
        self._stack: list[tuple[ModuleModes, contextlib.AbstractContextManager]] = []

    def __enter__(self) -> nn.Module:
        modes = ModuleModes.capture(self.model)
        grad = self.grad_context()
        self._stack.append((modes, grad))  # a stack: the same object may be entered recursively
        self.model.train(self.mode)
        grad.__enter__()
        return self.model

    def __exit__(self, *exc_info) -> bool:
        modes, grad = self._stack.pop()
        try:
            grad.__exit__(*exc_info)
        finally:
            modes.restore()
        return False


def evaluating(model: nn.Module, *, grad: bool = False, inference_mode: bool = True) -> _ModeContext:
    """Eval mode with autograd off (`torch.inference_mode()` by default, `torch.no_grad()` with
    `inference_mode=False`, left on with `grad=True`); a context manager and a decorator.

    >>> with modeguard.evaluating(model):
    ...     predictions = model(x)
    """
    if grad:
        context = contextlib.nullcontext
    elif inference_mode:
        context = torch.inference_mode
    else:
        context = torch.no_grad
    return _ModeContext(model, False, context)


def training(model: nn.Module) -> _ModeContext:
    """Training mode for a block (autograd untouched), every submodule's own flag restored after."""
    return _ModeContext(model, True, contextlib.nullcontext)
