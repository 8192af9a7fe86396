"""BatchNorm tools: exact recalibration (also across torch.distributed ranks), freezing,
health and cross-rank buffer checks."""

from __future__ import annotations

import functools
import hashlib
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from rich.table import Table
from torch import nn

from modeguard.errors import InputError
from modeguard.runtime import batchnorm_health as bnh
from modeguard.runtime.rendering import Presentable
from modeguard.runtime.state import ModuleModes
from modeguard.runtime.trees import batch_size, call_model, to_device

LABEL_KEYS = ("label", "labels", "target", "targets", "y")


class ChannelMoments:
    """Per-channel count, mean and sum of squared deviations (M2) in float64, combined batch by
    batch with Chan's parallel formula: the population mean and variance of every value seen,
    including the variance between batches, with each batch weighted by its size."""

    def __init__(self, channels: int, device: torch.device):
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(channels, dtype=torch.float64, device=device)

    def add(self, count: int, mean: torch.Tensor, var_biased: torch.Tensor) -> None:
        mean, m2 = mean.double(), var_biased.double() * count
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * (count / total)
        self.m2 += m2 + delta.square() * (self.count * count / total)
        self.count = total

    def all_reduce(self) -> None:
        """Sum the sufficient statistics (count, sum, sum of squares) over all ranks."""
        import torch.distributed as dist

        sums = torch.stack([self.mean * self.count, self.m2 + self.mean.square() * self.count])
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=sums.device)
        dist.all_reduce(sums)
        dist.all_reduce(count)
        self.count = int(count.item())
        if self.count:
            self.mean = sums[0] / self.count
            self.m2 = (sums[1] - self.mean.square() * self.count).clamp_min(0)

    @property
    def var(self) -> torch.Tensor:  # population (biased)
        return self.m2 / self.count


@dataclass
class LayerRecalibration:
    module: str
    samples_per_channel: int
    mean_shift: float  # max over channels of |new mean - old mean| / old std
    std_shift: float  # max over channels of |new std - old std| / old std

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class RecalibrationReport(Presentable):
    batches: int
    layers: list[LayerRecalibration] = field(default_factory=list)
    distributed_world_size: int = 1

    def __rich__(self) -> Table:
        table = Table(
            title=f"BatchNorm recalibrated on {self.batches} batch(es)"
            + (f" x {self.distributed_world_size} ranks" if self.distributed_world_size > 1 else ""),
            title_justify="left",
        )
        for column in ("layer", "values per channel", "mean moved (old std)", "std moved (old std)"):
            table.add_column(column)
        for layer in sorted(self.layers, key=lambda l: -l.mean_shift):
            table.add_row(layer.module, str(layer.samples_per_channel), f"{layer.mean_shift:.3g}", f"{layer.std_shift:.3g}")
        return table

    def to_dict(self) -> dict:
        return {"batches": self.batches, "world_size": self.distributed_world_size, "layers": [l.to_dict() for l in self.layers]}


def default_input(batch: Any) -> Any:
    """A tensor is the input; a tuple/list's first element is; a dict is passed as keyword
    arguments, without its label keys."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise InputError("an empty batch")
        return batch[0]
    if isinstance(batch, dict):
        return {k: v for k, v in batch.items() if k not in LABEL_KEYS}
    return batch


def _distributed_world_size() -> int:
    if "torch.distributed" not in sys.modules:
        return 1
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _tracking_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = bnh.batchnorm_layers(model)
    if not layers:
        raise InputError(f"{type(model).__name__} has no BatchNorm layer: there is nothing to recalibrate")
    tracking = [(name, bn) for name, bn in layers if bn.running_mean is not None]
    if not tracking:
        raise InputError("no BatchNorm layer keeps running statistics (track_running_stats=False)")
    return tracking


def _progress(iterable, total: int | None, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return iterable
    from rich.progress import track

    return track(iterable, description="recalibrating BatchNorm", total=total, transient=True)


def recalibrate_bn(
    model: nn.Module,
    data: Iterable,
    *,
    max_batches: int | None = None,
    input_fn: Callable[[Any], Any] | None = None,
    progress: bool = True,
) -> RecalibrationReport:
    """Recompute every BatchNorm's running statistics as the exact population statistics of
    the activations it sees over `data` (sample-weighted mean; variance including the variance
    between batches; stored unbiased, like PyTorch). Only the BatchNorm layers run in training
    mode (Dropout stays off); every mode and momentum is restored, `num_batches_tracked` grows
    by the number of batches. Under torch.distributed the statistics of all ranks' data are
    combined, so every rank ends with identical buffers. A batch that raises leaves the model
    exactly as it was."""
    layers = _tracking_layers(model)
    modes = ModuleModes.capture(model)
    saved = [(bn, bn.momentum, bn.running_mean.clone(), bn.running_var.clone(),
              None if bn.num_batches_tracked is None else bn.num_batches_tracked.clone()) for _, bn in layers]
    moments: dict[str, ChannelMoments] = {}

    def record(name: str, bn: nn.Module, args, output) -> None:
        x = args[0]
        count = x.numel() // x.shape[1]
        # momentum 1.0: the layer's own kernel just stored this batch's mean and unbiased var
        var_biased = bn.running_var * ((count - 1) / count)
        moments.setdefault(name, ChannelMoments(x.shape[1], bn.running_mean.device)).add(count, bn.running_mean, var_biased)

    handles = []
    batches = single = 0
    first_param = next(iter([*model.parameters(), *model.buffers()]))
    to_input = input_fn or default_input
    try:
        model.eval()
        for name, bn in layers:
            bn.train()
            bn.momentum = 1.0
            handles.append(bn.register_forward_hook(functools.partial(record, name)))
        total = None
        if hasattr(data, "__len__"):
            total = len(data) if max_batches is None else min(len(data), max_batches)
        with torch.no_grad():
            for batch in _progress(data, total, progress):
                if max_batches is not None and batches >= max_batches:
                    break
                inputs = to_input(batch)
                if batch_size(inputs) == 1:
                    single += 1  # BatchNorm cannot take one sample in training mode
                    continue
                _call_with_batch(model, to_device(inputs, first_param.device, None), batch, input_fn)
                batches += 1
        if single:
            warnings.warn(f"recalibrate_bn: skipped {single} batch(es) of one sample (BatchNorm needs at least "
                          "two values per channel); DataLoader(drop_last=True) avoids them", stacklevel=2)
        world = _distributed_world_size()
        if world > 1:
            # every rank reduces every layer in the same order, even one that saw no data
            for name, bn in layers:
                moments.setdefault(name, ChannelMoments(bn.num_features, bn.running_mean.device)).all_reduce()
            count = torch.tensor([batches], dtype=torch.float64, device=first_param.device)
            torch.distributed.all_reduce(count)
            total_batches = int(count.item())
        else:
            total_batches = batches
        if total_batches == 0:
            raise InputError("the data gave no batch: the model is left unchanged")
    except BaseException:
        for handle in handles:
            handle.remove()
        _restore(saved)
        modes.restore()
        raise
    for handle in handles:
        handle.remove()
    report = RecalibrationReport(batches, distributed_world_size=world)
    with torch.no_grad():
        for (name, bn), (_, momentum, old_mean, old_var, old_tracked) in zip(layers, saved):
            bn.momentum = momentum
            stats = moments.get(name)
            if stats is None or stats.count < 2:  # never reached by this data: keep it as it was
                bn.running_mean.copy_(old_mean)
                bn.running_var.copy_(old_var)
                if old_tracked is not None:
                    bn.num_batches_tracked.copy_(old_tracked)
                continue
            unbiased = stats.var * (stats.count / (stats.count - 1))
            old_std = (old_var.double() + bn.eps).sqrt()
            report.layers.append(
                LayerRecalibration(
                    name,
                    stats.count,
                    float(((stats.mean - old_mean.double()).abs() / old_std).max()),
                    float(((unbiased + bn.eps).sqrt() - old_std).abs().div(old_std).max()),
                )
            )
            bn.running_mean.copy_(stats.mean.to(bn.running_mean.dtype))
            bn.running_var.copy_(unbiased.to(bn.running_var.dtype))
            if old_tracked is not None:
                bn.num_batches_tracked.copy_(old_tracked + total_batches)
    modes.restore()
    return report


def _call_with_batch(model: nn.Module, inputs: Any, batch: Any, input_fn) -> None:
    """A dict batch that the model does not take as keyword arguments gets a hint, not a bare
    TypeError."""
    try:
        call_model(model, inputs)
    except TypeError as exc:
        if isinstance(batch, dict) and input_fn is None:
            raise InputError(
                f"{type(model).__name__} does not take this dict batch (keys {sorted(batch)}) as keyword "
                f"arguments ({exc}): pass input_fn= to pick its input, e.g. input_fn=lambda b: b[{next(iter(batch))!r}]"
            ) from exc
        raise


def _restore(saved) -> None:
    with torch.no_grad():
        for bn, momentum, mean, var, tracked in saved:
            bn.momentum = momentum
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            if tracked is not None:
                bn.num_batches_tracked.copy_(tracked)


# -- freezing ------------------------------------------------------------------------------
def _stay_in_eval(bn: nn.Module, mode: bool = True) -> nn.Module:
    """Replaces a frozen layer's train(): whatever the parent asks, it stays in eval mode."""
    nn.Module.train(bn, False)
    return bn


def _is_frozen(bn: nn.Module) -> bool:
    return "train" in vars(bn)


def freeze_bn(module: nn.Module) -> list[str]:
    """Freeze every BatchNorm in `module` (the module itself too): it normalizes with its
    running statistics and never updates them, even after a later `model.train()` (the
    fine-tuning trap: requires_grad=False does not stop running-statistic updates). Affine
    weights keep their requires_grad. The state_dict is unchanged. Returns the frozen names."""
    frozen = []
    for name, bn in bnh.batchnorm_layers(module):
        if bn.running_mean is None:
            raise InputError(f"{name} has no running statistics (track_running_stats=False): it cannot be frozen")
        bn.train = functools.partial(_stay_in_eval, bn)  # picklable, unlike a lambda
        nn.Module.train(bn, False)
        frozen.append(name)
    if not frozen:
        raise InputError(f"{type(module).__name__} has no BatchNorm layer to freeze")
    return frozen


def unfreeze_bn(module: nn.Module) -> list[str]:
    """Undo `freeze_bn`: the layers follow `train()`/`eval()` again, starting in `module`'s mode."""
    thawed = []
    for name, bn in bnh.batchnorm_layers(module):
        if _is_frozen(bn):
            del bn.train
            bn.train(module.training)
            thawed.append(name)
    return thawed


# -- health and ranks ------------------------------------------------------------------------
@dataclass
class BatchNormHealthReport(Presentable):
    layers: list[bnh.BatchNormHealth]

    def __rich__(self) -> Table:
        from modeguard.runtime.report import batchnorm_table

        return batchnorm_table(self.layers, limit=len(self.layers))

    def to_dict(self) -> dict:
        return {"layers": [h.to_dict() for h in self.layers]}


def bn_health(
    model: nn.Module, data: Iterable | None = None, *, max_batches: int = 8, input_fn: Callable | None = None
) -> BatchNormHealthReport:
    """Per layer: calibrated or never, momentum, tracked batches and (with `data`) how far the
    running statistics are from the data's, in eval mode: the audit's MG205/MG206 logic. The
    model is not changed."""
    layers = bnh.batchnorm_layers(model)
    if not layers:
        raise InputError(f"{type(model).__name__} has no BatchNorm layer")
    observed: dict[str, ChannelMoments] = {}
    if data is not None:
        if isinstance(data, (torch.Tensor, dict)):
            data = [data]
        first_param = next(iter([*model.parameters(), *model.buffers()]))
        modes = ModuleModes.capture(model)
        handles = [bn.register_forward_pre_hook(functools.partial(_observe, observed, name)) for name, bn in layers]
        try:
            model.eval()
            with torch.no_grad():
                for i, batch in enumerate(data):
                    if i >= max_batches:
                        break
                    call_model(model, to_device((input_fn or default_input)(batch), first_param.device, None))
        finally:
            for handle in handles:
                handle.remove()
            modes.restore()
    stats = {name: _as_channel_stats(moments) for name, moments in observed.items()}
    return BatchNormHealthReport(bnh.healths_of(layers, {name: s for name, s in stats.items() if s is not None}))


def _observe(observed, name, bn, args):
    x = args[0]
    if x.dim() < 2:
        return
    stats = bnh.ChannelStats.of(x)
    observed.setdefault(name, ChannelMoments(x.shape[1], x.device)).add(stats.count, stats.mean, stats.var)


def _as_channel_stats(moments: ChannelMoments | None) -> bnh.ChannelStats | None:
    if moments is None or moments.count == 0:
        return None
    empty = torch.empty(0)
    return bnh.ChannelStats(moments.count, moments.mean.float(), moments.var.float(), empty, empty)


def _digest(tensor: torch.Tensor) -> int:
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return int.from_bytes(hashlib.sha256(raw).digest()[:7], "big")  # fits an int64


def check_buffers_synced(model: nn.Module) -> list[str]:
    """Under torch.distributed: the names of buffers whose contents differ between ranks
    (compared by all-gathered SHA-256 digests); empty when every rank holds the same."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise InputError("check_buffers_synced needs an initialized torch.distributed process group")
    names = [name for name, _ in model.named_buffers()]
    digests = torch.tensor([_digest(buf) for _, buf in model.named_buffers()], dtype=torch.int64)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    gathered = [torch.empty_like(digests, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digests.to(device))
    stacked = torch.stack([g.cpu() for g in gathered])
    return [name for i, name in enumerate(names) if not bool((stacked[:, i] == stacked[0, i]).all())]
