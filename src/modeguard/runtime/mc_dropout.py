"""Monte-Carlo dropout: dropout on, BatchNorm and everything else in eval mode."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from modeguard.errors import InputError
from modeguard.runtime.inventory import DROPOUT_TYPES, mode_sensitive_modules
from modeguard.runtime.state import ModuleModes
from modeguard.runtime.trees import batch_size, call_model, map_tensors


def _dropout_layers(model: nn.Module) -> list[nn.Module]:
    layers = []
    for module in model.modules():
        if isinstance(module, DROPOUT_TYPES) and module.p > 0:
            layers.append(module)
        elif isinstance(module, nn.MultiheadAttention) and module.dropout > 0:
            layers.append(module)
        elif isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1:
            layers.append(module)
    return layers


@contextmanager
def mc_dropout(model: nn.Module) -> Iterator[nn.Module]:
    """Dropout layers (nn.Dropout*, MultiheadAttention's and RNN inter-layer dropout) in
    training mode, BatchNorm and everything else in eval; every flag restored on exit.
    Warns when the model has no dropout it can reach."""
    if not isinstance(model, nn.Module):
        raise InputError(f"mc_dropout() needs a torch.nn.Module, got {type(model).__name__}")
    layers = _dropout_layers(model)
    custom = [m.name for m in mode_sensitive_modules(model) if m.kind == "custom"]
    if not layers:
        warnings.warn(
            "mc_dropout: the model has no dropout layer with p > 0: predictions will not vary",
            stacklevel=3,
        )
    if custom:
        warnings.warn(
            f"mc_dropout: {', '.join(custom[:5])} branch on self.training (e.g. F.dropout(x, p, "
            "self.training)); they stay in eval mode, so that dropout stays off",
            stacklevel=3,
        )
    modes = ModuleModes.capture(model)
    try:
        model.eval()
        for layer in layers:
            layer.training = True  # noqa: MG104 - only this layer, on purpose
        yield model
    finally:
        modes.restore()


def predict_mc(
    model: nn.Module,
    x: Any,
    samples: int = 30,
    *,
    batch_replicate: bool = True,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    batch_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) over `samples` stochastic forward passes under `mc_dropout`. With
    `batch_replicate` the input is tiled into one batch of `samples * B` along `batch_dim` (one
    forward), falling back to a loop when that runs out of memory. Sequence-first models (time
    on dim 0) need `batch_dim=1`; without it, a model with sequence-first RNN/Transformer layers
    is run in a loop rather than tiled along time. `output_fn` picks the tensor from a
    structured output (e.g. `lambda o: o.logits`). Seed torch for reproducible draws."""
    if samples < 2:
        raise InputError(f"samples must be >= 2, got {samples}")
    pick = output_fn or (lambda out: out)
    if batch_dim is None:
        batch_dim = 0
        batch_replicate = batch_replicate and not _has_sequence_first_layers(model)
    size = batch_size(x, batch_dim)
    with mc_dropout(model), torch.no_grad():
        stacked = None
        if batch_replicate and size:
            try:
                tiled = map_tensors(x, lambda t: _tile(t, samples, size, batch_dim))
                out = _tensor(pick(call_model(model, tiled)))
                if out.dim() <= batch_dim or out.shape[batch_dim] != samples * size:
                    raise InputError(
                        f"the output's dim {batch_dim} has size {out.shape[batch_dim] if out.dim() > batch_dim else None}, "
                        f"not samples x batch = {samples * size}: pass the model's batch_dim"
                    )
                stacked = out.unflatten(batch_dim, (samples, size)).movedim(batch_dim, 0)
            except RuntimeError as exc:  # torch.cuda.OutOfMemoryError and the CPU allocator's
                if "out of memory" not in str(exc) and "can't allocate memory" not in str(exc):
                    raise
                stacked = None
        if stacked is None:
            stacked = torch.stack([_tensor(pick(call_model(model, x))) for _ in range(samples)])
    return stacked.mean(0), stacked.std(0)


def _tile(t: torch.Tensor, samples: int, size: int, dim: int) -> torch.Tensor:
    if t.dim() <= dim or t.shape[dim] != size:
        return t
    return t.repeat(*[samples if d == dim else 1 for d in range(t.dim())])


def _has_sequence_first_layers(model: nn.Module) -> bool:
    sequence_layers = (nn.RNNBase, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.MultiheadAttention)
    return any(isinstance(m, sequence_layers) and not getattr(m, "batch_first", True) for m in model.modules())


def _tensor(out: Any) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise InputError(f"the model returned {type(out).__name__}: pass output_fn= to pick a tensor")
    return out
