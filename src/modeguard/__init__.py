"""modeguard: catch, explain and fix PyTorch train/eval-mode bugs.

`import modeguard` does not import torch: the linter runs without it. The run-time API below
imports torch on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from modeguard.errors import InputError, ModeError, ModeguardError, ModelCallError, TorchMissingError
from modeguard.findings import Finding, Severity

__version__ = "0.1.0"

_RUNTIME_API = {
    "audit": "modeguard.runtime.audit",
    "AuditReport": "modeguard.runtime.report",
}

__all__ = [
    "Finding",
    "InputError",
    "ModeError",
    "ModeguardError",
    "ModelCallError",
    "Severity",
    "TorchMissingError",
    *_RUNTIME_API,
]


def __getattr__(name: str) -> Any:
    if name in _RUNTIME_API:
        from modeguard._lazy import require_torch

        require_torch(f"modeguard.{name}")
        return getattr(importlib.import_module(_RUNTIME_API[name]), name)
    raise AttributeError(f"module 'modeguard' has no attribute {name!r}")
