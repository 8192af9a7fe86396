import ast
import re

from modeguard.lint.rule import Rule

SENSITIVE = re.compile(r"^(Dropout\d?d?|AlphaDropout|FeatureAlphaDropout|BatchNorm\dd|SyncBatchNorm|LazyBatchNorm\dd)$")


class LayerCreatedInForward(Rule):
    code = "MG108"
    name = "layer-created-in-forward"
    summary = "A Dropout/BatchNorm constructed inside `forward` is always in training mode"
    rationale = (
        "A layer built inside `forward` is new on every call, unregistered and in training mode: "
        "`model.eval()` never reaches it, so `nn.Dropout(p)(x)` drops at inference and "
        "`nn.BatchNorm2d(c)(x)` normalizes with batch statistics and never learns running ones."
    )
    triggers = ("Dropout", "BatchNorm")
    invalid = (
        "class Net(nn.Module):\n    def forward(self, x):\n        return nn.Dropout(0.2)(self.fc(x))\n",
        "class Net(nn.Module):\n    def forward(self, x):\n        norm = nn.BatchNorm2d(x.shape[1])\n        return norm(x)\n",
    )
    valid = (
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.drop = nn.Dropout(0.2)\n    def forward(self, x):\n        return self.drop(x)\n",
        "class Net(nn.Module):\n    def forward(self, x):\n        if self.norm is None:\n            self.norm = nn.BatchNorm2d(x.shape[1])  # registered lazily\n        return self.norm(x)\n",
    )

    def check(self, ctx):
        for site in ctx.calls:
            func = site.scope.func
            if func is None or func.name != "forward" or site.qualname is None:
                continue
            if not site.qualname.startswith("torch.nn.") or not SENSITIVE.match(site.qualname.rsplit(".", 1)[1]):
                continue
            if _assigned_to_self(func, site.node):
                continue
            layer = site.qualname.rsplit(".", 1)[1]
            yield self.finding(
                ctx,
                site.node,
                f"nn.{layer} is constructed inside forward(): it is unregistered and always in training mode",
                f"create it in __init__ (self.x = nn.{layer}(...)) and call it in forward()",
            )


def _assigned_to_self(func: ast.AST, call: ast.Call) -> bool:
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and node.value is call:
            return any(isinstance(t, ast.Attribute) for t in node.targets)
    return False
