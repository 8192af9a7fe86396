"""modeguard: catch, explain and fix PyTorch train/eval-mode bugs.

`import modeguard` does not import torch: the linter runs without it. The run-time API below
imports torch on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from modeguard.errors import (
    CheckpointError,
    InputError,
    ModeError,
    ModeguardError,
    ModelCallError,
    ModeWarning,
    TorchMissingError,
)
from modeguard.findings import Finding, Severity

__version__ = "0.1.0"

_RUNTIME_API = {
    "audit": "modeguard.runtime.audit",
    "AuditReport": "modeguard.runtime.report",
    "evaluating": "modeguard.runtime.modes",
    "training": "modeguard.runtime.modes",
    "guard": "modeguard.runtime.guard",
    "mc_dropout": "modeguard.runtime.mc_dropout",
    "predict_mc": "modeguard.runtime.mc_dropout",
    "measure_inference": "modeguard.runtime.efficiency",
    "recalibrate_bn": "modeguard.runtime.batchnorm",
    "freeze_bn": "modeguard.runtime.batchnorm",
    "unfreeze_bn": "modeguard.runtime.batchnorm",
    "bn_health": "modeguard.runtime.batchnorm",
    "check_buffers_synced": "modeguard.runtime.batchnorm",
    "load_weights": "modeguard.runtime.loading",
}

__all__ = [
    "CheckpointError",
    "Finding",
    "InputError",
    "ModeError",
    "ModeguardError",
    "ModelCallError",
    "ModeWarning",
    "Severity",
    "TorchMissingError",
    *_RUNTIME_API,
]


def load_ipython_extension(shell: Any) -> None:
    """`%load_ext modeguard`: adds `%modeguard on|off` (run-time mode checks per cell)."""
    from modeguard.ipython import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    from modeguard.ipython import unload_ipython_extension as unload

    unload(shell)


def __getattr__(name: str) -> Any:
    if name in _RUNTIME_API:
        from modeguard._lazy import require_torch

        require_torch(f"modeguard.{name}")
        return getattr(importlib.import_module(_RUNTIME_API[name]), name)
    raise AttributeError(f"module 'modeguard' has no attribute {name!r}")
