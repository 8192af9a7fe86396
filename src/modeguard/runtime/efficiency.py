"""`measure_inference(model, x)`: what eval mode and no_grad/inference_mode buy for this model."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.table import Table
from torch import nn

from modeguard.errors import InputError
from modeguard.runtime.rendering import Presentable
from modeguard.runtime.state import preserved
from modeguard.runtime.trees import call_model, to_device

CONFIGS = (
    ("train", "grad", True, contextlib.nullcontext),
    ("eval", "grad", False, contextlib.nullcontext),
    ("eval", "no_grad", False, torch.no_grad),
    ("eval", "inference_mode", False, torch.inference_mode),
)


@dataclass
class InferenceCost:
    mode: str
    autograd: str
    latency_s: float  # median of the repeats
    saved_for_backward_bytes: int  # tensors autograd keeps for a backward pass
    peak_memory_bytes: int | None  # CUDA: peak allocated; CPU: peak resident-set growth

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class InferenceReport(Presentable):
    device: str
    rows: list[InferenceCost]

    def __rich__(self) -> Table:
        table = Table(title=f"Inference cost by mode ({self.device})", title_justify="left")
        for column in ("mode", "autograd", "latency (ms)", "saved for backward", "peak memory", "latency vs train+grad"):
            table.add_column(column)
        base = self.rows[0].latency_s
        for r in self.rows:
            table.add_row(
                r.mode, r.autograd, f"{1000 * r.latency_s:.2f}", _bytes(r.saved_for_backward_bytes),
                "-" if r.peak_memory_bytes is None else _bytes(r.peak_memory_bytes), f"{r.latency_s / base:.2f}x",
            )
        return table

    def to_dict(self) -> dict:
        return {"device": self.device, "rows": [r.to_dict() for r in self.rows]}


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _saved_bytes(fn, model: nn.Module) -> tuple[Any, int]:
    """Bytes of the distinct activations autograd keeps for backward (weights, saved by
    reference, are not counted)."""
    seen = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    total = 0

    def pack(tensor):
        nonlocal total
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def _rss_peak_bytes() -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _release_freed_memory() -> None:
    """Hand memory freed by earlier passes back to the OS (glibc keeps it otherwise), so the
    next pass's resident-set growth is its own."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    _release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak resident set
        return True
    except OSError:
        return False


def measure_inference(model: nn.Module, example_input: Any, *, repeats: int = 10) -> InferenceReport:
    """Latency (median of `repeats`) and memory for (train, grad), (eval, grad), (eval,
    no_grad), (eval, inference_mode). The model is left exactly as it was."""
    if not isinstance(model, nn.Module):
        raise InputError(f"measure_inference() needs a torch.nn.Module, got {type(model).__name__}")
    param = next(iter([*model.parameters(), *model.buffers()]), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else None
    x = to_device(example_input, device, dtype)
    cuda = device.type == "cuda"
    rows = []
    with preserved(model):
        for mode, autograd, training, context in CONFIGS:
            model.train(training)
            with context():
                call_model(model, x)  # warm-up
                times = []
                for _ in range(repeats):
                    if cuda:
                        torch.cuda.synchronize(device)
                    start = time.perf_counter()
                    out = call_model(model, x)
                    if cuda:
                        torch.cuda.synchronize(device)
                    times.append(time.perf_counter() - start)
                    del out
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                    out, saved = _saved_bytes(lambda: call_model(model, x), model)
                    peak = torch.cuda.max_memory_allocated(device) - before
                else:
                    resettable = _reset_rss_peak()
                    before = _rss_peak_bytes()
                    out, saved = _saved_bytes(lambda: call_model(model, x), model)
                    after = _rss_peak_bytes()
                    peak = after - before if resettable and before is not None and after is not None else None
                del out
            rows.append(InferenceCost(mode, autograd, statistics.median(times), saved, peak))
    return InferenceReport(str(device), rows)
