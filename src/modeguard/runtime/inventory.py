"""Which modules make a model's output depend on train/eval mode, and how."""

from __future__ import annotations

import types
from dataclasses import dataclass
from functools import lru_cache

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.instancenorm import _InstanceNorm

from modeguard.runtime.state import named_modules

DROPOUT_TYPES = (_DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout)


@dataclass(frozen=True)
class ModeSensitive:
    name: str
    kind: str  # batchnorm | instancenorm | dropout | attention | transformer | rnn | custom
    type_name: str
    change: str  # what differs between training and evaluation

    def to_dict(self) -> dict:
        return {"module": self.name, "kind": self.kind, "type": self.type_name, "change": self.change}


def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, _BatchNorm)


def describe(module: nn.Module) -> tuple[str, str] | None:
    """(kind, what changes between the modes) for a module that may be mode-sensitive, judged
    without running it: torch's known layers, and user-defined classes whose code reads
    `self.training` (the audit measures those instead)."""
    known = describe_known(module)
    if known is None and reads_training_flag(type(module)):
        return "custom", "its code reads self.training"
    return known


def describe_known(module: nn.Module) -> tuple[str, str] | None:
    """(kind, what changes between the modes) for torch's own mode-sensitive layers, else None."""
    if isinstance(module, _BatchNorm):
        if module.running_mean is None:
            return "batchnorm", "no running statistics: normalizes with batch statistics in both modes"
        return "batchnorm", (
            "training: batch statistics, and updates running statistics; eval: running statistics"
        )
    if isinstance(module, _InstanceNorm) and module.track_running_stats:
        return "instancenorm", "training: instance statistics; eval: tracked running statistics"
    if isinstance(module, DROPOUT_TYPES) and module.p > 0:
        return "dropout", f"training: drops with p={module.p:g}; eval: identity"
    if isinstance(module, nn.MultiheadAttention) and module.dropout > 0:
        return "attention", f"training: attention dropout p={module.dropout:g}; eval: none"
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return "transformer", "dropout in training; eval with autograd off may take the fused fast path"
    if isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1:
        return "rnn", f"training: dropout p={module.dropout:g} between layers; eval: none"
    return None


def mode_sensitive_modules(model: nn.Module, named: list[tuple[str, nn.Module]] | None = None) -> list[ModeSensitive]:
    """Mode-sensitive modules judged without running the model (see `describe`). `named`: the
    model's `named_modules`, when the caller has walked them."""
    found = []
    for name, module in named if named is not None else named_modules(model):
        described = describe(module)
        if described:
            kind, change = described
            found.append(ModeSensitive(name or "<root>", kind, type(module).__name__, change))
    return found


@lru_cache(maxsize=None)
def reads_training_flag(cls: type) -> bool:
    """True when a user-defined class's own methods load an attribute named `training`.
    Reads the compiled code, not the source file: classes defined in a script, a notebook or
    `exec` have no source for `inspect` to find."""
    if cls.__module__.startswith("torch.") or cls is nn.Module:
        return False
    for klass in cls.__mro__:
        if klass is nn.Module or klass.__module__.startswith("torch."):
            break
        for attr, value in vars(klass).items():
            if attr in ("train", "eval", "__init__"):  # setting modes is not branching on one
                continue
            if any(_loads_training(code) for code in _codes(getattr(value, "__func__", value))):
                return True
    return False


def _codes(function) -> list[types.CodeType]:
    """The code of a function and of the functions it wraps (`functools.wraps` decorators, such
    as Hugging Face's `deprecate_kwarg` around `forward`)."""
    codes = []
    while function is not None and len(codes) < 8:
        code = getattr(function, "__code__", None)
        if code is not None:
            codes.append(code)
        function = getattr(function, "__wrapped__", None)
    return codes


def _loads_training(code: types.CodeType) -> bool:
    return "training" in code.co_names or any(
        isinstance(const, types.CodeType) and _loads_training(const) for const in code.co_consts
    )
