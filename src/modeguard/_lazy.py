"""Lazy import of torch, so the linter installs and runs without it."""

from __future__ import annotations

import importlib
from types import ModuleType

from modeguard.errors import TorchMissingError


def require_torch(feature: str = "this command") -> ModuleType:
    try:
        return importlib.import_module("torch")
    except ImportError as exc:  # pragma: no cover - exercised in the no-torch subprocess test
        raise TorchMissingError(feature) from exc
