import ast

from modeguard.lint.context import keyword, mentions_training
from modeguard.lint.rule import Rule, replace

SDPA = "torch.nn.functional.scaled_dot_product_attention"
DROPOUT_P_POSITION = 4  # (query, key, value, attn_mask, dropout_p, ...)


class SdpaDropoutIgnoresMode(Rule):
    code = "MG106"
    name = "sdpa-dropout-ignores-mode"
    summary = "`scaled_dot_product_attention(dropout_p=p)` drops in eval mode too"
    rationale = (
        "`F.scaled_dot_product_attention` has no training flag: a non-zero `dropout_p` applies "
        "whatever the module's mode, so attention is random at inference. Pass "
        "`dropout_p=p if self.training else 0.0`."
    )
    fixable = True
    triggers = ("scaled_dot_product_attention",)
    invalid = (
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop)\n",
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return F.scaled_dot_product_attention(q, k, v, None, 0.1)\n",
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        p = self.dropout\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)\n",
    )
    valid = (
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)\n",
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        p = self.attn_drop.p if self.training else 0.\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)\n",
        "def attention(q, k, v, dropout=0.0):\n    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)\n",
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)\n",
    )

    def check(self, ctx):
        for site in ctx.calls:
            if site.qualname is None or not site.qualname.endswith("scaled_dot_product_attention"):
                continue
            if site.qualname != SDPA and not site.qualname.startswith("torch"):
                continue
            call = site.node
            kw = keyword(call, "dropout_p")
            value = kw.value if kw else (call.args[DROPOUT_P_POSITION] if len(call.args) > DROPOUT_P_POSITION else None)
            if value is None or _is_zero(value) or mentions_training(value):
                continue
            func = site.scope.func
            if isinstance(value, ast.Name) and func is not None:
                params = {a.arg for a in [*func.args.args, *func.args.kwonlyargs]}
                if value.id in params:
                    continue  # the caller decides (e.g. passes 0.0 in eval)
                if _assigned_with_training(func, value.id):
                    continue
            in_method = func is not None and func.args.args and func.args.args[0].arg == "self"
            source = ast.get_source_segment(ctx.source, value)
            autofix = (
                replace(value, f"{source} if self.training else 0.0", "Apply dropout only in training")
                if in_method and source
                else None
            )
            yield self.finding(
                ctx,
                call,
                "scaled_dot_product_attention applies dropout_p in eval mode too: attention is random at inference",
                "pass dropout_p=p if self.training else 0.0",
                autofix,
            )


def _is_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in (0, 0.0, None)


def _assigned_with_training(func: ast.AST, name: str) -> bool:
    for node in ast.walk(func):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                if mentions_training(node.value) or _is_zero(node.value):
                    return True
        if isinstance(node, ast.If) and mentions_training(node.test):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in inner.targets):
                    return True
    return False
