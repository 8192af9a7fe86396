"""BatchNorm health: never calibrated, running statistics that do not match the data, none at all."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from modeguard.runtime.inventory import is_batchnorm
from modeguard.runtime.state import named_modules

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


@dataclass(frozen=True)
class _Tensors:
    """A layer's parameters and buffers, each looked up once (`nn.Module.__getattr__` is Python
    code: hundreds of look-ups cost more than the arithmetic on them)."""

    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    tracked: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None

    @classmethod
    def of(cls, bn: nn.Module) -> "_Tensors":
        return cls(bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.weight, bn.bias)


def never_calibrated(layers: list[nn.Module], tensors: list[_Tensors] | None = None) -> list[bool]:
    """For each layer: running statistics never updated (num_batches_tracked 0 or absent, mean
    0, var 1). The tensor tests run for all candidate layers at once."""
    tensors = tensors or [_Tensors.of(bn) for bn in layers]
    result = [False] * len(layers)
    candidates = [
        i for i, t in enumerate(tensors)
        if t.running_mean is not None and (t.tracked is None or int(t.tracked) == 0)
    ]
    if len(candidates) == 1:  # one layer (guard() asks per call): no concatenation to pay for
        t = tensors[candidates[0]]
        result[candidates[0]] = bool(_placeholder(t.running_mean, t.running_var).all())
        return result
    for rows in _by_device(candidates, lambda i: tensors[i].running_mean.device):
        layers_of = _Segments([tensors[i].running_mean.shape[0] for i in rows], tensors[rows[0]].running_mean.device)
        placeholder = _placeholder(
            layers_of.flat([tensors[i].running_mean for i in rows]), layers_of.flat([tensors[i].running_var for i in rows])
        )
        for i, flag in zip(rows, layers_of.all(placeholder)):
            result[i] = flag
    return result


def _placeholder(running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    """Per channel: the statistics a BatchNorm starts with (mean 0, var 1)."""
    return (running_mean == 0) & (running_var == 1)


class _Segments:
    """Per-channel vectors of several layers, concatenated: one computation for all layers
    instead of a few dozen small operations per layer, then one reduction per layer."""

    def __init__(self, lengths: list[int], device: torch.device):
        self.count = len(lengths)
        self.lengths = lengths
        self.layer = torch.repeat_interleave(
            torch.arange(self.count, device=device), torch.tensor(lengths, device=device)
        )

    @staticmethod
    def flat(vectors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(vectors).float()  # concatenation is exact, whatever dtypes it promotes to

    def spread(self, values: list[float]) -> torch.Tensor:
        """One number per layer, repeated for each of its channels."""
        return torch.tensor(values, dtype=torch.float32, device=self.layer.device)[self.layer]

    def all(self, flags: torch.Tensor) -> list[bool]:
        misses = torch.zeros(self.count, device=flags.device).index_add_(0, self.layer, (~flags).float())
        return (misses == 0).tolist()

    def maxima(self, values: torch.Tensor) -> torch.Tensor:
        """Each layer's maximum of each row of `values` (NaN if a value is NaN)."""
        rows = values.shape[0]
        return torch.zeros(rows, self.count, device=values.device).scatter_reduce_(
            1, self.layer.expand(rows, -1), values, "amax", include_self=False
        )

    def medians(self, values: torch.Tensor) -> list[float]:
        """Each layer's median as `Tensor.median` gives it: the lower of the two middle values,
        NaN when one of its values is NaN; NaN for a layer without channels. One median per
        layer: on CPU a sort of all layers' channels together costs several times more."""
        found = [chunk.median() for chunk in values.split(self.lengths) if chunk.numel()]
        medians = iter(torch.stack(found).tolist() if found else [])
        return [next(medians) if size else math.nan for size in self.lengths]


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
        if xf.dim() >= 2 and xf.numel() and xf.is_contiguous():
            # Along each sample's contiguous values first, then across samples: on CPU one
            # reduction over dims (0, 2, 3) costs about 1.5 times as much.
            rows = xf.view(xf.shape[0], xf.shape[1], -1)
            return cls(count, mean, var, rows.amin(2).amin(0), rows.amax(2).amax(0))
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
    tensors = [_Tensors.of(bn) for bn in bns]
    healths = []
    for (name, bn), t, uncalibrated in zip(layers, tensors, never_calibrated(bns, tensors)):
        healths.append(
            BatchNormHealth(
                module=name,
                type_name=type(bn).__name__,
                momentum=bn.momentum,
                tracked_batches=None if t.tracked is None else int(t.tracked),
                has_running_stats=t.running_mean is not None,
                never_calibrated=uncalibrated,
            )
        )
    compared = [
        i for i, (name, _) in enumerate(layers)
        if tensors[i].running_mean is not None and name in observed and observed[name].count >= 2
    ]
    for rows in _by_device(compared, lambda i: tensors[i].running_mean.device):
        stats = [observed[layers[i][0]] for i in rows]
        layers_of = _Segments([s.mean.shape[0] for s in stats], stats[0].mean.device)
        eps = layers_of.spread([bns[i].eps for i in rows])
        running_mean = layers_of.flat([tensors[i].running_mean for i in rows])
        running_var = layers_of.flat([tensors[i].running_var for i in rows])
        shift = (layers_of.flat([s.mean for s in stats]) - running_mean).abs() / (running_var + eps).sqrt()
        ratio = (layers_of.flat([s.var for s in stats]) + eps) / (running_var + eps)
        for i, mean_shift, var_ratio in zip(rows, layers_of.medians(shift), layers_of.medians(ratio)):
            healths[i].mean_shift, healths[i].var_ratio = mean_shift, var_ratio
    return healths


def mode_divergences(layers: list[tuple[nn.Module, "ChannelStats"]]) -> list[tuple[float, float]]:
    """For each (layer, observed input statistics): the (max abs, relative) difference between
    the layer's training- and eval-mode outputs on that input. Both are affine per channel, so
    the extremes lie at the channel's min or max: exact, with no forward pass (and computed for
    all layers at once)."""
    result = [(0.0, 0.0)] * len(layers)  # without running statistics: batch statistics in both modes
    tensors = [_Tensors.of(bn) for bn, _ in layers]
    rows_with_stats = [i for i, t in enumerate(tensors) if t.running_mean is not None]
    for rows in _by_device(rows_with_stats, lambda i: layers[i][1].mean.device):
        bns = [layers[i][0] for i in rows]
        stats = [layers[i][1] for i in rows]
        owned = [tensors[i] for i in rows]
        layers_of = _Segments([s.mean.shape[0] for s in stats], stats[0].mean.device)
        weight = layers_of.flat([t.weight if t.weight is not None else torch.ones_like(s.mean) for t, s in zip(owned, stats)])
        bias = layers_of.flat([t.bias if t.bias is not None else torch.zeros_like(s.mean) for t, s in zip(owned, stats)])
        eps = layers_of.spread([bn.eps for bn in bns])
        running_mean = layers_of.flat([t.running_mean for t in owned])
        mean = layers_of.flat([s.mean for s in stats])
        train_scale = weight / (layers_of.flat([s.var for s in stats]) + eps).sqrt()
        eval_scale = weight / (layers_of.flat([t.running_var for t in owned]) + eps).sqrt()
        differences, train_sizes, eval_sizes = [], [], []
        for ends in (layers_of.flat([s.min for s in stats]), layers_of.flat([s.max for s in stats])):
            train_out = (ends - mean) * train_scale + bias
            eval_out = (ends - running_mean) * eval_scale + bias
            differences.append((train_out - eval_out).abs())
            train_sizes.append(train_out.abs())
            eval_sizes.append(eval_out.abs())
        largest = layers_of.maxima(
            torch.stack([torch.maximum(*differences), torch.maximum(*eval_sizes), torch.maximum(*train_sizes)])
        )
        for i, (max_abs, eval_max, train_max) in zip(rows, largest.T.tolist()):
            scale = max(eval_max, train_max)
            result[i] = (max_abs, max_abs / scale if scale > 0 else 0.0)
    return result


def batchnorm_layers(model: nn.Module, named: list[tuple[str, nn.Module]] | None = None) -> list[tuple[str, nn.Module]]:
    named = named if named is not None else named_modules(model)
    return [(name or "<root>", m) for name, m in named if is_batchnorm(m)]
