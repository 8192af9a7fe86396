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
        # in a helper method that forward() calls
        "class Attn(nn.Module):\n    def forward(self, q, k):\n        return self._attend(q, k)\n\n"
        "    def _attend(self, q, k):\n        return nn.Dropout(self.p)((q @ k).softmax(-1))\n",
    )
    valid = (
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.drop = nn.Dropout(0.2)\n    def forward(self, x):\n        return self.drop(x)\n",
        "class Net(nn.Module):\n    def forward(self, x):\n        if self.norm is None:\n            self.norm = nn.BatchNorm2d(x.shape[1])  # registered lazily\n        return self.norm(x)\n",
        # a builder method that forward() does not call: it returns the layer for __init__
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.drop = self._make_drop()\n\n"
        "    def _make_drop(self):\n        return nn.Dropout(0.1)\n\n    def forward(self, x):\n        return self.drop(x)\n",
        # a helper forward() calls to build the layer it registers lazily
        "class Net(nn.Module):\n    def forward(self, x):\n        if self.norm is None:\n            self.norm = self._norm(x.shape[1])\n"
        "        return self.norm(x)\n\n    def _norm(self, c):\n        return nn.BatchNorm2d(c)\n",
    )

    def check(self, ctx):
        reached = _reached_from_forward(ctx.classes)
        for site in ctx.calls:
            func = site.scope.func
            if func is None or site.qualname is None or id(func) not in reached:
                continue
            if not site.qualname.startswith("torch.nn.") or not SENSITIVE.match(site.qualname.rsplit(".", 1)[1]):
                continue
            if _assigned_to_self(func, site.node):
                continue
            if func.name != "forward" and not _called_at_once(func, site.node):
                continue  # a helper may build the layer for forward() to register lazily
            layer = site.qualname.rsplit(".", 1)[1]
            yield self.finding(
                ctx,
                site.node,
                f"nn.{layer} is constructed inside {_where(func)}: it is unregistered and always in training mode",
                f"create it in __init__ (self.x = nn.{layer}(...)) and call it in forward()",
            )


def _assigned_to_self(func: ast.AST, call: ast.Call) -> bool:
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and node.value is call:
            return any(isinstance(t, ast.Attribute) for t in node.targets)
    return False


def _called_at_once(func: ast.AST, call: ast.Call) -> bool:
    """`nn.Dropout(p)(x)`: built and applied in one expression, never kept."""
    return any(isinstance(node, ast.Call) and node.func is call for node in ast.walk(func))


def _reached_from_forward(classes) -> set[int]:
    """forward() and the methods of its class it calls through `self.name(...)`, transitively."""
    reached: set[int] = set()
    for cls in classes:
        methods = {f.name: f for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
        todo = [methods["forward"]] if "forward" in methods else []
        while todo:
            func = todo.pop()
            if id(func) in reached:
                continue
            reached.add(id(func))
            for node in ast.walk(func):
                target = node.func if isinstance(node, ast.Call) else None
                if (
                    isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
                    and target.attr in methods and target.attr != "__init__"
                ):
                    todo.append(methods[target.attr])
    return reached


def _where(func) -> str:
    return "forward()" if func.name == "forward" else f"{func.name}(), which forward() calls"
