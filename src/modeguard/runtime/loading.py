"""Turn the CLI's SPEC, --input and --weights into a model and an example input."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeguard.errors import InputError

DEFAULT_IMAGE_SHAPE = (4, 3, 224, 224)


def load_factory(spec: str) -> tuple[nn.Module, Any, str]:
    """(model, example input or None, display name) for `file.py:factory`, `pkg.mod:factory`,
    `torchvision:NAME` or `timm:NAME` (random weights: nothing is downloaded)."""
    source, sep, attr = spec.rpartition(":")
    if not sep or not source or not attr:
        raise InputError(f"SPEC must look like path/file.py:factory or package.module:factory, got {spec!r}")
    if source == "torchvision":
        return _torchvision(attr), None, spec
    if source == "timm":
        return _timm(attr), None, spec
    module = _import_source(source)
    factory = getattr(module, attr, None)
    if factory is None:
        raise InputError(f"{source} has no attribute {attr!r}")
    try:
        made = factory() if callable(factory) and not isinstance(factory, nn.Module) else factory
    except Exception as exc:  # noqa: BLE001 - the user's factory failing is a usage error
        raise InputError(f"{spec} raised {type(exc).__name__}: {exc}") from exc
    example = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], nn.Module):
        made, example = made
    if not isinstance(made, nn.Module):
        raise InputError(f"{spec} returned {type(made).__name__}, not an nn.Module or (model, input)")
    return made, example, spec


def load_data(spec: str) -> Any:
    """The DataLoader or iterable of batches that `file.py:factory` / `pkg.mod:factory` returns."""
    source, sep, attr = spec.rpartition(":")
    if not sep or not source or not attr:
        raise InputError(f"--data must look like path/file.py:factory or package.module:factory, got {spec!r}")
    factory = getattr(_import_source(source), attr, None)
    if factory is None:
        raise InputError(f"{source} has no attribute {attr!r}")
    try:
        data = factory() if callable(factory) else factory
    except Exception as exc:  # noqa: BLE001 - the user's factory failing is a usage error
        raise InputError(f"{spec} raised {type(exc).__name__}: {exc}") from exc
    if isinstance(data, (torch.Tensor, tuple, list, dict)):
        return iter([data]) if not isinstance(data, list) else iter(data)
    try:
        iter(data)
    except TypeError as exc:
        raise InputError(f"{spec} returned {type(data).__name__}, not a DataLoader or iterable of batches") from exc
    return data


def _import_source(source: str):
    if source.endswith(".py") or "/" in source or "\\" in source:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"no such file: {source}")
        name = f"_modeguard_user_{abs(hash(path.resolve()))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"importing {source} raised {type(exc).__name__}: {exc}") from exc
        finally:
            sys.path.pop(0)
        return module
    try:
        return importlib.import_module(source)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot import {source}: {type(exc).__name__}: {exc}") from exc


def _torchvision(name: str) -> nn.Module:
    try:
        import torchvision
    except ImportError as exc:
        raise InputError("torchvision is not installed: pip install torchvision") from exc
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError as exc:
        raise InputError(f"unknown torchvision model {name!r}") from exc
    return builder(**no_pretrained_weights(builder))


def no_pretrained_weights(builder) -> dict:
    """weights=None, and weights_backbone=None where the builder takes it (detection and
    segmentation models would otherwise download ImageNet backbone weights)."""
    import inspect

    kwargs = {"weights": None}
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs["weights_backbone"] = None
    return kwargs


def _timm(name: str) -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise InputError("timm is not installed: pip install timm") from exc
    if not timm.is_model(name):
        raise InputError(f"unknown timm model {name!r}")
    return timm.create_model(name, pretrained=False)


def default_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(config, dict) and config.get("input_size"):
        return (DEFAULT_IMAGE_SHAPE[0], *config["input_size"])
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return DEFAULT_IMAGE_SHAPE
    return None


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError as exc:
        raise InputError(f"--input-shape must be integers separated by commas, got {text!r}") from exc
    if not shape or any(size <= 0 for size in shape):
        raise InputError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def load_input(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InputError(f"no such file: {path}") from exc
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"cannot load {path}: it holds pickled objects other than tensors, which "
            "modeguard refuses to unpickle (torch.load(weights_only=True))"
        ) from exc
    except Exception as exc:  # noqa: BLE001
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"cannot load {path} as tensors: {type(exc).__name__}: {first_line}") from exc


def load_weights(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load a state_dict with weights_only=True; return (missing, unexpected) keys."""
    state = load_input(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # Lightning and many training scripts
    if not isinstance(state, dict):
        raise InputError(f"{path} does not hold a state_dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DDP
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise InputError(f"{path} does not fit the model: {str(exc).splitlines()[0]}") from exc
    return list(result.missing_keys), list(result.unexpected_keys)


def checkpoint_findings(model: nn.Module, missing: list[str], unexpected: list[str]) -> list:
    """MG213: keys a checkpoint lacks or adds. Missing BatchNorm buffers are an error: eval
    mode would normalize with placeholder statistics (MG205 follows)."""
    from modeguard.findings import Finding, Severity
    from modeguard.runtime.inventory import is_batchnorm

    bn_buffers = {
        f"{name}.{buffer}" if name else buffer
        for name, module in model.named_modules()
        if is_batchnorm(module)
        for buffer, _ in module.named_buffers(recurse=False)
    }
    missing_bn = [k for k in missing if k in bn_buffers]
    other = [k for k in missing if k not in bn_buffers]
    groups = [
        (missing_bn, Severity.ERROR, "lacks {n} BatchNorm buffer(s) ({keys}): those layers keep placeholder statistics",
         "save the full state_dict (buffers included), or recalibrate (modeguard.recalibrate_bn)"),
        (other, Severity.WARNING, "lacks {n} key(s): {keys}", "check that the checkpoint belongs to this architecture"),
        (unexpected, Severity.WARNING, "has {n} key(s) the model does not: {keys}",
         "check that the checkpoint belongs to this architecture"),
    ]
    return [
        Finding("MG213", severity, "the checkpoint " + template.format(n=len(keys), keys=_some(keys)), fix)
        for keys, severity, template, fix in groups
        if keys
    ]


def _some(keys: list[str], shown: int = 5) -> str:
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")
