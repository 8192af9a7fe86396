"""`guard(model)`: cheap run-time checks on every call of a model, for the mode bugs that only
show while it runs."""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from typing import Iterable

import torch
from torch import nn

from modeguard.errors import InputError, ModeError, ModeWarning
from modeguard.runtime.batchnorm_health import batchnorm_layers
from modeguard.runtime.structure import contains_mode_sensitive

logger = logging.getLogger("modeguard")
_LIBRARY_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, sys.modules["modeguard"]))


def _call_site() -> str:
    """The first frame outside torch and modeguard: where the user called the model."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "<unknown>"


class GuardHandle:
    """Returned by `guard()`: `.remove()` takes the checks off (also on leaving a `with`)."""

    def __init__(self, model: nn.Module, on: str, allow_eval: Iterable):
        self.model = model
        self.on = on
        self.reported: set[tuple[str, str]] = set()
        self.sensitive = contains_mode_sensitive(model)
        self.allowed = self._resolve(allow_eval)
        self.batchnorms = batchnorm_layers(model)
        self._bn_handles: list = []
        self._last_mode: bool | None = None
        self._handles = [
            model.register_forward_pre_hook(self._before),
            model.register_forward_hook(self._after),
        ]

    def _resolve(self, allow_eval: Iterable) -> set[int]:
        named = dict(self.model.named_modules())
        allowed = set()
        for item in allow_eval:
            if isinstance(item, str):
                if item not in named:
                    raise InputError(f"allow_eval names {item!r}, which is not a submodule of the model")
                roots = [named[item]]
            elif isinstance(item, type):
                roots = [m for m in self.model.modules() if isinstance(m, item)]
            else:
                roots = [item]
            allowed.update(id(m) for root in roots for m in root.modules())
        return allowed

    # -- reporting -------------------------------------------------------------------------
    def report(self, key: str, message: str, site: str | None = None) -> None:
        site = site or _call_site()
        if (key, site) in self.reported:
            return  # once per call site, not on every call
        self.reported.add((key, site))
        text = f"{message} (at {site})"
        if self.on == "raise":
            raise ModeError(text)
        if self.on == "log":
            logger.warning(text)
        else:
            warnings.warn(text, ModeWarning, stacklevel=3)

    # -- hooks -----------------------------------------------------------------------------
    def _before(self, model, args):
        training = model.training
        if training != self._last_mode:
            self._last_mode = training
            self._check_mixed(training)
            self._sync_batchnorm_hooks(training)
        if training and not torch.is_grad_enabled() and self.sensitive:
            self.report(
                "train-no-grad",
                "predicting in training mode: forgot model.eval()? (autograd is off, so this looks "
                "like inference, but Dropout drops and BatchNorm uses batch statistics)",
            )

    def _after(self, model, args, output):
        if model.training or not torch.is_grad_enabled() or not self.sensitive:
            return
        tensor = _first_grad_tensor(output)
        if tensor is not None:
            site = _call_site()

            def on_backward(grad):
                self.report(
                    "eval-backward",
                    "training step in eval mode: backward() through outputs computed with "
                    "model.eval() (Dropout off, BatchNorm statistics frozen); call model.train() "
                    "before training",
                    site,
                )
                return grad

            tensor.register_hook(on_backward)

    def _check_mixed(self, training: bool) -> None:
        lagging = [
            name
            for name, module in self.model.named_modules()
            if module.training != training and id(module) not in self.allowed
        ]
        outermost = [n for n in lagging if not any(n.startswith(o + ".") for o in lagging if o != n)]
        if outermost:
            mode = "training" if training else "eval"
            shown = ", ".join(outermost[:5]) + (" ..." if len(outermost) > 5 else "")
            self.report(
                "mixed:" + ",".join(outermost),
                f"the model is in {mode} mode but {len(outermost)} submodule(s) are not: {shown}; "
                "declare intended ones with allow_eval=",
            )

    def _sync_batchnorm_hooks(self, training: bool) -> None:
        """BatchNorm shape checks only while training: inference pays nothing for them."""
        for handle in self._bn_handles:
            handle.remove()
        self._bn_handles = []
        if training:
            for name, bn in self.batchnorms:
                self._bn_handles.append(bn.register_forward_pre_hook(_single_value_check(name)))

    def remove(self) -> None:
        for handle in [*self._handles, *self._bn_handles]:
            handle.remove()
        self._handles, self._bn_handles = [], []

    def __enter__(self) -> "GuardHandle":
        return self

    def __exit__(self, *exc_info) -> bool:
        self.remove()
        return False


def _single_value_check(name: str):
    def hook(bn, args):
        if not (bn.training and args and isinstance(args[0], torch.Tensor)):
            return None
        shape = args[0].shape
        if len(shape) >= 2 and shape[0] * math.prod(shape[2:]) == 1:
            raise ModeError(
                f"{name} ({type(bn).__name__}) would see one value per channel in training mode "
                f"(input {list(shape)}): batch statistics need at least two. Fixes: call "
                "model.eval() for single-sample inference; train with batches of >= 2 "
                "(DataLoader(drop_last=True)); or freeze this layer (modeguard.freeze_bn)"
            )
        return None

    return hook


def _first_grad_tensor(output) -> torch.Tensor | None:
    from modeguard.runtime.trees import leaves

    for _, tensor in leaves(output):
        if tensor.requires_grad:
            return tensor
    return None


def guard(model: nn.Module, *, on: str = "warn", allow_eval: Iterable = ()) -> GuardHandle:
    """Check every call of `model`: training mode while autograd is off, backward through
    eval-mode outputs, submodules that did not follow a mode change (except `allow_eval`:
    names, module types or instances), and BatchNorm about to see one value per channel
    (raises `ModeError` instead of the bare ValueError)."""
    if on not in ("warn", "raise", "log"):
        raise InputError(f"on must be 'warn', 'raise' or 'log', got {on!r}")
    if not isinstance(model, nn.Module):
        raise InputError(f"guard() needs a torch.nn.Module, got {type(model).__name__}")
    return GuardHandle(model, on, allow_eval)
