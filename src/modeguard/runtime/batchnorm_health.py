"""BatchNorm health: never calibrated, running statistics that do not match the data, none at all."""

from __future__ import annotations

import math
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
    return never_calibrated([bn])[0]


def never_calibrated(layers: list[nn.Module]) -> list[bool]:
    """For each layer: running statistics never updated (num_batches_tracked 0 or absent, mean
    0, var 1). The tensor tests run for all candidate layers at once."""
    result = [False] * len(layers)
    candidates = [
        i for i, bn in enumerate(layers)
        if bn.running_mean is not None and (bn.num_batches_tracked is None or int(bn.num_batches_tracked) == 0)
    ]
    for rows in _by_device(candidates, lambda i: layers[i].running_mean.device):
        matrix = _Rows([len(layers[i].running_mean) for i in rows], layers[rows[0]].running_mean.device)
        mean = matrix.padded([layers[i].running_mean for i in rows], 0.0)
        var = matrix.padded([layers[i].running_var for i in rows], 1.0)
        for i, flag in zip(rows, ((mean == 0) & (var == 1)).all(dim=1).tolist()):
            result[i] = flag
    return result


class _Rows:
    """Per-channel vectors of several layers as the rows of one matrix, padded: one computation
    for all layers instead of a few dozen small operations per layer (`pad_sequence` copies
    row by row; one concatenation and one masked write do not)."""

    def __init__(self, lengths: list[int], device: torch.device):
        counts = torch.tensor(lengths, device=device)
        self.real = torch.arange(max(lengths, default=0), device=device) < counts[:, None]

    def padded(self, vectors: list[torch.Tensor], fill: float) -> torch.Tensor:
        matrix = torch.full(self.real.shape, fill, dtype=torch.float32, device=self.real.device)
        return matrix.masked_scatter_(self.real, torch.cat([v.float() for v in vectors]))  # row-major order


def _by_device(rows: list[int], device_of) -> list[list[int]]:
    groups: dict[torch.device, list[int]] = {}
    for row in rows:
        groups.setdefault(device_of(row), []).append(row)
    return list(groups.values())


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


def healths_of(layers: list[tuple[str, nn.Module]], observed: dict[str, "ChannelStats"]) -> list[BatchNormHealth]:
    """The health of each (name, layer); with its observed input statistics, how far its running
    statistics are from them (median over channels), for all layers at once."""
    bns = [bn for _, bn in layers]
    healths = []
    for (name, bn), uncalibrated in zip(layers, never_calibrated(bns)):
        tracked = bn.num_batches_tracked
        healths.append(
            BatchNormHealth(
                module=name,
                type_name=type(bn).__name__,
                momentum=bn.momentum,
                tracked_batches=None if tracked is None else int(tracked),
                has_running_stats=bn.running_mean is not None,
                never_calibrated=uncalibrated,
            )
        )
    compared = [
        i for i, (name, bn) in enumerate(layers)
        if bn.running_mean is not None and name in observed and observed[name].count >= 2
    ]
    for rows in _by_device(compared, lambda i: bns[i].running_mean.device):
        stats = [observed[layers[i][0]] for i in rows]
        matrix = _Rows([len(s.mean) for s in stats], stats[0].mean.device)
        eps = torch.tensor([bns[i].eps for i in rows], dtype=torch.float32, device=stats[0].mean.device)[:, None]
        running_mean = matrix.padded([bns[i].running_mean for i in rows], 0.0)
        running_var = matrix.padded([bns[i].running_var for i in rows], 1.0)
        mean = matrix.padded([s.mean for s in stats], 0.0)
        var = matrix.padded([s.var for s in stats], 1.0)
        shift = (mean - running_mean).abs() / (running_var + eps).sqrt()
        ratio = (var + eps) / (running_var + eps)
        for field, values in (("mean_shift", shift), ("var_ratio", ratio)):
            for i, median in zip(rows, _row_medians(values, matrix.real)):
                setattr(healths[i], field, median)
    return healths


def _row_medians(values: torch.Tensor, real: torch.Tensor) -> list[float]:
    """Each row's median over its real entries, as `Tensor.median` gives it (the lower of the
    two middle values; NaN when a real entry is NaN)."""
    has_nan = (values.isnan() & real).any(dim=1)
    medians = values.masked_fill(~real, math.nan).nanmedian(dim=1).values
    return torch.where(has_nan, math.nan, medians).tolist()


def mode_divergences(layers: list[tuple[nn.Module, "ChannelStats"]]) -> list[tuple[float, float]]:
    """For each (layer, observed input statistics): the (max abs, relative) difference between
    the layer's training- and eval-mode outputs on that input. Both are affine per channel, so
    the extremes lie at the channel's min or max: exact, with no forward pass (and computed for
    all layers at once)."""
    result = [(0.0, 0.0)] * len(layers)  # without running statistics: batch statistics in both modes
    rows_with_stats = [i for i, (bn, _) in enumerate(layers) if bn.running_mean is not None]
    for rows in _by_device(rows_with_stats, lambda i: layers[i][1].mean.device):
        bns = [layers[i][0] for i in rows]
        stats = [layers[i][1] for i in rows]
        matrix = _Rows([len(s.mean) for s in stats], stats[0].mean.device)
        weight = matrix.padded([bn.weight if bn.weight is not None else torch.ones_like(s.mean) for bn, s in zip(bns, stats)], 0.0)
        bias = matrix.padded([bn.bias if bn.bias is not None else torch.zeros_like(s.mean) for bn, s in zip(bns, stats)], 0.0)
        eps = torch.tensor([bn.eps for bn in bns], dtype=torch.float32, device=weight.device)[:, None]
        running_mean = matrix.padded([bn.running_mean for bn in bns], 0.0)
        mean = matrix.padded([s.mean for s in stats], 0.0)
        # Padded channels have weight 0: both outputs 0 there, which changes no maximum.
        train_scale = weight / (matrix.padded([s.var for s in stats], 1.0) + eps).sqrt()
        eval_scale = weight / (matrix.padded([bn.running_var for bn in bns], 1.0) + eps).sqrt()
        largest_diff, largest_train, largest_eval = [], [], []
        for ends in (matrix.padded([s.min for s in stats], 0.0), matrix.padded([s.max for s in stats], 0.0)):
            train_out = (ends - mean) * train_scale + bias
            eval_out = (ends - running_mean) * eval_scale + bias
            largest_diff.append((train_out - eval_out).abs().amax(dim=1))
            largest_train.append(train_out.abs().amax(dim=1))
            largest_eval.append(eval_out.abs().amax(dim=1))
        maxima = torch.stack([torch.maximum(*largest_diff), torch.maximum(*largest_eval), torch.maximum(*largest_train)])
        for i, (max_abs, eval_max, train_max) in zip(rows, maxima.T.tolist()):
            scale = max(eval_max, train_max)
            result[i] = (max_abs, max_abs / scale if scale > 0 else 0.0)
    return result


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name or "<root>", m) for name, m in model.named_modules() if is_batchnorm(m)]
