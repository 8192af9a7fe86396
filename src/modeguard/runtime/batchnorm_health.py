"""BatchNorm health: never calibrated, running statistics that do not match the data, none at all."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modeguard.runtime.inventory import is_batchnorm

# Median over channels of |batch mean - running mean| / running std above which the running
# statistics do not describe the data; and the factor by which the variances may differ.
MEAN_SHIFT_LIMIT = 1.0
VAR_RATIO_LIMIT = 4.0


@dataclass
class BatchNormHealth:
    module: str
    type_name: str
    momentum: float | None
    tracked_batches: int | None
    has_running_stats: bool
    never_calibrated: bool
    mean_shift: float | None = None  # median over channels, in running standard deviations
    var_ratio: float | None = None  # median over channels of batch var / running var

    @property
    def shifted(self) -> bool:
        if self.mean_shift is None or self.var_ratio is None or self.never_calibrated:
            return False
        return (
            self.mean_shift > MEAN_SHIFT_LIMIT
            or not 1 / VAR_RATIO_LIMIT <= self.var_ratio <= VAR_RATIO_LIMIT
        )

    def to_dict(self) -> dict:
        return {
            "module": self.module,
            "type": self.type_name,
            "momentum": self.momentum,
            "tracked_batches": self.tracked_batches,
            "has_running_stats": self.has_running_stats,
            "never_calibrated": self.never_calibrated,
            "mean_shift": self.mean_shift,
            "var_ratio": self.var_ratio,
        }


def is_never_calibrated(bn: nn.Module) -> bool:
    if bn.running_mean is None:
        return False
    tracked = bn.num_batches_tracked
    return (
        (tracked is None or int(tracked) == 0)
        and bool(torch.all(bn.running_mean == 0))
        and bool(torch.all(bn.running_var == 1))
    )


def channel_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel mean and biased variance of a BatchNorm input (channels on dim 1)."""
    if x.dim() < 2:
        return None
    values = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)
    if values.shape[1] < 2:
        return None
    return values.mean(1), values.var(1, unbiased=False)


def health_of(name: str, bn: nn.Module, observed: torch.Tensor | None = None) -> BatchNormHealth:
    has_stats = bn.running_mean is not None
    tracked = bn.num_batches_tracked
    health = BatchNormHealth(
        module=name,
        type_name=type(bn).__name__,
        momentum=bn.momentum,
        tracked_batches=None if tracked is None else int(tracked),
        has_running_stats=has_stats,
        never_calibrated=is_never_calibrated(bn),
    )
    stats = channel_statistics(observed) if observed is not None and has_stats else None
    if stats is not None:
        mean, var = stats
        running_var = bn.running_var.float()
        std = (running_var + bn.eps).sqrt()
        health.mean_shift = float(((mean - bn.running_mean.float()).abs() / std).median())
        health.var_ratio = float(((var + bn.eps) / (running_var + bn.eps)).median())
    return health


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name or "<root>", m) for name, m in model.named_modules() if is_batchnorm(m)]
