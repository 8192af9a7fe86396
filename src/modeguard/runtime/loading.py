"""Turn the CLI's SPEC, --input and --weights into a model and an example input."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from modeguard.errors import CheckpointError, InputError

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
    if callable(factory) and not isinstance(factory, nn.Module):
        made = run_user_code(spec, factory)
    else:
        made = factory
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
    data = run_user_code(spec, factory) if callable(factory) else factory
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
            run_user_code(f"importing {source}", lambda: spec.loader.exec_module(module))
        finally:
            sys.path.pop(0)
        return module
    return run_user_code(f"importing {source}", lambda: importlib.import_module(source))


def run_user_code(what: str, call: Callable[[], Any]) -> Any:
    """Run the user's import or factory. Whatever it raises, `sys.exit()` included, becomes one
    InputError line (the original is chained for --debug); what it prints is held back and
    passed on to stderr, so that stdout carries only the report."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            result = call()
    except SystemExit as exc:
        raise InputError(f"{what} called sys.exit({exc.code!r}){_last_line(printed)}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's code failing is a usage error
        raise InputError(f"{what} raised {type(exc).__name__}: {first_line(exc)}{_last_line(printed)}") from exc
    sys.stderr.write(printed.getvalue())
    return result


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _last_line(printed: io.StringIO) -> str:
    lines = [line.strip() for line in printed.getvalue().splitlines() if line.strip()]
    return f"; it printed: {lines[-1]}" if lines else ""


def import_torchvision() -> types.ModuleType:
    try:
        with _dynamo_imported_on_first_use():
            import torchvision
    except ImportError as exc:
        raise InputError("torchvision is not installed: pip install torchvision") from exc
    return torchvision


def _torchvision(name: str) -> nn.Module:
    torchvision = import_torchvision()
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


@contextlib.contextmanager
def _dynamo_imported_on_first_use():
    """`import torchvision` imports torch._dynamo (2-3 s, most of the CLI's start) only because
    torchvision.ops.roi_align binds `torch._dynamo.utils.is_compile_supported`, a function it
    calls in a rare fallback. While torchvision is imported, `torch._dynamo.utils` is a stand-in
    that imports the real module on the first use of any of its names; afterwards the real
    module is imported as usual by whoever needs it."""
    if "torchvision" in sys.modules or "torch._dynamo" in sys.modules:
        yield
        return

    class StandIn(types.ModuleType):
        def __getattr__(self, attribute: str):
            if attribute.startswith("__"):  # inspect and friends probe every module's dunders
                raise AttributeError(attribute)
            return getattr(_real_dynamo_utils(self), attribute)

    def is_compile_supported(device_type):
        return _real_dynamo_utils(stand_in).is_compile_supported(device_type)

    stand_in = StandIn("torch._dynamo.utils")
    stand_in.is_compile_supported = is_compile_supported
    sys.modules["torch._dynamo.utils"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("torch._dynamo.utils") is stand_in:
            del sys.modules["torch._dynamo.utils"]


def _real_dynamo_utils(stand_in: types.ModuleType) -> types.ModuleType:
    if sys.modules.get("torch._dynamo.utils") is stand_in:
        del sys.modules["torch._dynamo.utils"]
    return importlib.import_module("torch._dynamo.utils")


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


# Where training code puts the state_dict inside a checkpoint, and the prefixes wrappers add to
# its keys: DistributedDataParallel `module.`, torch.compile `_orig_mod.`, a LightningModule or
# training wrapper holding the network as `self.model`.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "module", "net")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def load_weights(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load a checkpoint into `model` with weights_only=True, unwrapped (see `unwrap_state_dict`);
    return (missing, unexpected) keys. CheckpointError when it matches none of the model's keys
    or a tensor's shape differs: weights that do not load must not be audited as if they did."""
    state = unwrap_state_dict(load_input(path), model, path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        details = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise CheckpointError(f"{path} does not fit the model: {details}") from exc
    return list(result.missing_keys), list(result.unexpected_keys)


def unwrap_state_dict(checkpoint: Any, model: nn.Module, path: str = "the checkpoint") -> dict:
    """The state_dict inside `checkpoint` (itself, or under `state_dict`, `model`, ...), its keys
    stripped of the wrapper prefixes that make more of them match `model`'s."""
    state = _find_state_dict(checkpoint)
    if state is None:
        found = ", ".join(map(str, list(checkpoint)[:8])) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path} holds no state_dict (found: {found})")
    expected = model.state_dict()
    state = _strip_wrapper_prefixes(state, expected.keys())
    matched = [key for key in state if key in expected]
    if not matched:
        raise CheckpointError(
            f"{path} matches none of the model's {len(expected)} keys: it has {len(state)} key(s) such as "
            f"{_some(list(state), 3)}; the model has keys such as {_some(list(expected), 3)}"
        )
    mismatched = [
        f"{key}: checkpoint {list(state[key].shape)}, model {list(expected[key].shape)}"
        for key in matched
        if isinstance(state[key], torch.Tensor) and state[key].shape != expected[key].shape
    ]
    if mismatched:
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        raise CheckpointError(f"{path} does not fit the model: size mismatch for {mismatched[0]}{more}")
    return state


def _find_state_dict(checkpoint: Any) -> dict | None:
    if not isinstance(checkpoint, dict):
        return None
    values = list(checkpoint.values())
    if values and all(isinstance(v, torch.Tensor) for v in values):
        return checkpoint
    for key in STATE_DICT_KEYS:
        found = _find_state_dict(checkpoint.get(key))
        if found is not None:
            return found
    return checkpoint if any(isinstance(v, torch.Tensor) for v in values) else None


def _strip_wrapper_prefixes(state: dict, expected) -> dict:
    """Of the ways to strip wrapper prefixes (nested ones too: DDP around torch.compile), the
    one under which most keys match; no stripping when nothing improves."""
    expected = set(expected)
    best, best_matches = state, sum(key in expected for key in state)
    frontier = [state]
    for _ in WRAPPER_PREFIXES:  # at most one strip of each wrapper
        frontier = [
            {key.removeprefix(prefix): value for key, value in candidate.items()}
            for candidate in frontier
            for prefix in WRAPPER_PREFIXES
            if any(key.startswith(prefix) for key in candidate)
        ]
        for candidate in frontier:
            matches = sum(key in expected for key in candidate)
            if len(candidate) == len(state) and matches > best_matches:
                best, best_matches = candidate, matches
    return best


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
        Finding("MG213", severity, "the checkpoint " + template.format(n=len(keys), keys=_some(keys)), fix,
                data={"keys": keys})
        for keys, severity, template, fix in groups
        if keys
    ]


def _some(keys: list[str], shown: int = 5) -> str:
    return ", ".join(keys[:shown]) + (f" and {len(keys) - shown} more" if len(keys) > shown else "")
