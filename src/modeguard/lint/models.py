"""What looks like a model in source code: shared by the rules that must know a receiver is an
nn.Module (not a DataFrame, a Trainer or a function) before they speak."""

from __future__ import annotations

import ast
import re

from modeguard.lint.context import FileContext
from modeguard.lint.flow import chain_root

MODEL_NAME_RE = re.compile(
    r"(^|_)(model|net|network|classifier|generator|encoder|decoder|backbone|detector|segmenter|cnn|resnet|unet)s?$",
    re.I,
)
MODEL_CONSTRUCTOR_RE = re.compile(
    r"^((?=[A-Z])\w*(Net|Model|Former|Transformer|Classifier|Encoder)\w*|resnet\d+|create_model|vgg\d+|mobilenet\w*|efficientnet\w*)$"
)
EVAL_MODE_SOURCES = ("from_pretrained", "jit.load", "hub.load", "jit.script", "InferenceSession")


def builds_model(ctx: FileContext, call: ast.Call) -> bool:
    """`Net()`, `torchvision.models.resnet18()`, `timm.create_model()`, `torch.load(...)`."""
    name = ctx.qualname(call.func) or ""
    last = name.rsplit(".", 1)[-1]
    return (
        last in ctx.module_classes
        or name.startswith(("torchvision.models.", "timm."))
        or name == "torch.load"
        or MODEL_CONSTRUCTOR_RE.search(last) is not None
    )


def model_origin(ctx: FileContext, func: ast.AST | None, receiver: str) -> str | None:
    """"built" when `func` (None or the module: module level) constructs or loads the model
    bound to `receiver`; "eval" when it arrives in eval mode (`.eval()` chained, Hugging Face
    `from_pretrained`, TorchScript); None when it comes from elsewhere."""
    if isinstance(func, ast.Module):
        func = None
    for node, scope in ctx.assigns:
        if scope.func is not func or not isinstance(node.value, ast.Call):
            continue
        if not any(chain_root(t) == receiver for t in node.targets):
            continue
        value = node.value
        if any(isinstance(n, ast.Attribute) and n.attr == "eval" for n in ast.walk(value)):
            return "eval"
        if any((ctx.qualname(n.func) or "").endswith(EVAL_MODE_SOURCES) for n in ast.walk(value) if isinstance(n, ast.Call)):
            return "eval"
        if builds_model(ctx, value):
            return "built"
    return None


def looks_like_model(ctx: FileContext, func: ast.AST | None, receiver: str) -> bool:
    return MODEL_NAME_RE.search(receiver.rsplit(".", 1)[-1]) is not None or model_origin(ctx, func, receiver) == "built"
