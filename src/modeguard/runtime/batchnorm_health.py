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


@dataclass
class ChannelStats:
    """Per-channel count, mean, biased variance, min and max of a BatchNorm input (channels on
    dim 1): enough to judge its running statistics and to compute exactly how much its output
    changes between the modes, without keeping the activation."""

    count: int
    mean: torch.Tensor
    var: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor) -> "ChannelStats":
        x = x.detach()
        dims = [0, *range(2, x.dim())]
        count = x.numel() // x.shape[1] if x.dim() >= 2 and x.shape[1] else 0
        xf = x.float()
        # Two plain reductions: torch.var_mean over dims (0, 2, 3) is ~15x slower on CPU.
        mean = xf.mean(dim=dims)
        centered = xf - mean.view(1, -1, *[1] * (x.dim() - 2))
        var = centered.square_().mean(dim=dims)  # in place: one activation-sized buffer fewer
        return cls(count, mean, var, xf.amin(dim=dims), xf.amax(dim=dims))

    def merged(self, other: "ChannelStats") -> "ChannelStats":
        """The statistics of both inputs together (several real batches)."""
        total = self.count + other.count
        if total == 0:
            return self
        a, b = self.count / total, other.count / total
        mean = a * self.mean + b * other.mean
        var = a * (self.var + (self.mean - mean) ** 2) + b * (other.var + (other.mean - mean) ** 2)
        return ChannelStats(
            total, mean, var, torch.minimum(self.min, other.min), torch.maximum(self.max, other.max)
        )


def health_of(name: str, bn: nn.Module, observed: ChannelStats | None = None) -> BatchNormHealth:
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
    if observed is not None and has_stats and observed.count >= 2:
        running_var = bn.running_var.float()
        std = (running_var + bn.eps).sqrt()
        health.mean_shift = float(((observed.mean - bn.running_mean.float()).abs() / std).median())
        health.var_ratio = float(((observed.var + bn.eps) / (running_var + bn.eps)).median())
    return health


def mode_divergence(bn: nn.Module, observed: ChannelStats) -> tuple[float, float]:
    """(max abs, relative) difference between the layer's training- and eval-mode outputs on
    the observed input. Both are affine per channel, so the extremes lie at the channel's min
    or max: exact, with no forward pass."""
    if bn.running_mean is None:
        return 0.0, 0.0  # batch statistics in both modes
    weight = bn.weight.float() if bn.weight is not None else torch.ones_like(observed.mean)
    bias = bn.bias.float() if bn.bias is not None else torch.zeros_like(observed.mean)
    train_scale = weight / (observed.var + bn.eps).sqrt()
    eval_scale = weight / (bn.running_var.float() + bn.eps).sqrt()
    ends = torch.stack([observed.min, observed.max])
    train_out = (ends - observed.mean) * train_scale + bias
    eval_out = (ends - bn.running_mean.float()) * eval_scale + bias
    max_abs = float((train_out - eval_out).abs().max())
    scale = max(float(eval_out.abs().max()), float(train_out.abs().max()))
    return max_abs, (max_abs / scale if scale > 0 else 0.0)


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name or "<root>", m) for name, m in model.named_modules() if is_batchnorm(m)]
