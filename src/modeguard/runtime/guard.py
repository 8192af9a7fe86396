"""`guard(model)`: the run-time mode checks (`modeguard.runtime.checks`, the same ones as
`modeguard run`) on one model, reported as warnings, log records or `ModeError`."""

from __future__ import annotations

import logging
import warnings
from typing import Iterable

from torch import nn

from modeguard.errors import InputError, ModeError, ModeWarning
from modeguard.findings import Finding
from modeguard.runtime.checks import Checks

logger = logging.getLogger("modeguard")


class GuardHandle:
    """Returned by `guard()`: `.remove()` takes the checks off (also on leaving a `with`) and
    reports what could only be decided at the end (a model used for inference only)."""

    def __init__(self, model: nn.Module, on: str, allow_eval: Iterable):
        self.model = model
        self.on = on
        self.checks = Checks(
            scope=model, allow_eval=self._resolve(allow_eval), raise_single_value=True, on_root=self._emit
        ).install()

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

    @property
    def reported(self) -> set:
        return self.checks.reported

    def _emit(self, findings: list[Finding] | None = None) -> None:
        for finding in self.checks.drain() if findings is None else findings:
            text = f"{finding.code} {finding.message} (at {finding.filename}:{finding.location.row}); fix: {finding.fix}"
            if self.on == "raise":
                raise ModeError(text)
            if self.on == "log":
                logger.warning(text)
            else:
                warnings.warn_explicit(text, ModeWarning, finding.filename, finding.location.row)

    def remove(self) -> None:
        if not self.checks._handles:
            return
        findings = self.checks.flush()
        self.checks.remove()
        self._emit(findings)

    def __enter__(self) -> "GuardHandle":
        return self

    def __exit__(self, exc_type, *exc_info) -> bool:
        if exc_type is None:
            self.remove()
        else:  # the block's own exception comes first
            self.checks.remove()
        return False


def guard(model: nn.Module, *, on: str = "warn", allow_eval: Iterable = ()) -> GuardHandle:
    """Check every call of `model` with modeguard's run-time checks (MG3xx, see `modeguard
    run`): inference in training mode, training steps in eval mode, submodules in another mode
    than the model (except `allow_eval`: names, module types or instances; frozen parts with
    requires_grad=False are recognised), random draws in eval mode, and BatchNorm about to see
    one value per channel (raises `ModeError` instead of the bare ValueError)."""
    if on not in ("warn", "raise", "log"):
        raise InputError(f"on must be 'warn', 'raise' or 'log', got {on!r}")
    if not isinstance(model, nn.Module):
        raise InputError(f"guard() needs a torch.nn.Module, got {type(model).__name__}")
    return GuardHandle(model, on, allow_eval)
