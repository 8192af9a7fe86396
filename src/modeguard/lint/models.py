"""What looks like a model in source code: shared by the rules that must know a receiver is an
nn.Module (not a DataFrame, a Trainer or a function) before they speak."""

from __future__ import annotations

import re

from modeguard.lint.context import FileContext

MODEL_NAME_RE = re.compile(
    r"(^|_)(model|net|network|classifier|generator|encoder|decoder|backbone|detector|segmenter|cnn|resnet|unet)s?$",
    re.I,
)
# models that are never trained by the loop at hand: their eval() is on purpose
NOT_TRAINED_RE = re.compile(r"(ema|teacher|target|frozen|swa|avg|average|momentum|ref|reference|critic_old)", re.I)


def looks_like_model(ctx: FileContext, func, receiver: str) -> bool:
    """A model by its name, or bound in `func` to a constructed module (`net = ResNet()`)."""
    if MODEL_NAME_RE.search(receiver.rsplit(".", 1)[-1]):
        return True
    module = ctx.project.modules.get(ctx.path) if ctx.project is not None else None
    if module is None:
        return False
    summary = module.module_level if func is None else next(
        (fs for fs in module.functions.values() if fs.line == func.lineno and fs.name == func.name), None
    )
    return summary is not None and any(
        item.kind == "assign" and item.receiver == receiver and (item.origin or "").startswith("built") for item in summary.items
    )
