import ast
import re

from modeguard.lint.context import FUNCTIONAL, has_star_args, keyword, mentions_training
from modeguard.lint.rule import Rule, insert_after, replace

# name -> (default of `training`, index of `training` among the positional parameters)
DROPOUTS = {
    "dropout": (True, 2),
    "dropout1d": (True, 2),
    "dropout2d": (True, 2),
    "dropout3d": (True, 2),
    "alpha_dropout": (False, 2),
    "feature_alpha_dropout": (False, 2),
}
# A hand-rolled dropout: a Bernoulli mask drawn with a drop/keep probability, in a module
MASK_DRAWS = ("bernoulli", "bernoulli_")
DROP_NAME_RE = re.compile(r"drop|keep", re.I)


class FunctionalDropoutIgnoresMode(Rule):
    code = "MG105"
    name = "functional-dropout-ignores-mode"
    summary = "`F.dropout` without `training=` ignores `model.eval()`"
    rationale = (
        "`F.dropout` and `F.dropout1d/2d/3d` default to `training=True`: inside a module they keep "
        "dropping after `model.eval()`, so predictions are random. `F.alpha_dropout` and "
        "`F.feature_alpha_dropout` default to `training=False`: they never drop, even in "
        "training. A hard-coded `training=False` never drops either. Pass the module's mode: "
        "`training=self.training`. A hard-coded `training=True` is left alone: it is how "
        "Monte-Carlo dropout is written. A hand-rolled dropout (a Bernoulli mask drawn with the "
        "module's drop or keep probability) that never reads `self.training` keeps dropping in "
        "eval mode too: return the input unchanged unless `self.training`."
    )
    fixable = True
    triggers = ("dropout", "bernoulli")
    invalid = (
        "class Head(nn.Module):\n    def forward(self, x):\n        return F.dropout(self.fc(x), 0.2, False)\n",
        "import torch.nn.functional as F\nclass Attention(nn.Module):\n    def forward(self, x):\n        attn = self.qk(x).softmax(-1)\n        attn = F.dropout(attn, 0.1)\n        return attn @ self.v(x)\n",
        "from torch.nn import functional as F\nclass Net(nn.Module):\n    def forward(self, x):\n        return F.alpha_dropout(self.fc(x), p=0.2)\n",
        "from torch.nn.functional import dropout2d\nclass Net(nn.Module):\n    def forward(self, x):\n        return dropout2d(self.conv(x), 0.1)\n",
        # a branch that does not require training mode
        "class Net(nn.Module):\n    def forward(self, x):\n        if self.training or self.always_drop:\n            x = F.dropout(x, self.p)\n        return self.fc(x)\n",
        # a hand-rolled dropout of whole embeddings: the mask is drawn whatever the mode
        "class EmbeddingDropout(nn.Module):\n    def __init__(self, p):\n        super().__init__()\n        self.p = p\n\n"
        "    def forward(self, x):\n        mask = x.new_empty(x.size(1), 1).bernoulli_(1 - self.p) / (1 - self.p)\n        return mask * x\n",
        "class TokenDrop(nn.Module):\n    def forward(self, x):\n"
        "        keep = torch.bernoulli(torch.full(x.shape[:2], 1 - self.drop_rate, device=x.device))\n        return x * keep.unsqueeze(-1)\n",
    )
    valid = (
        "class Net(nn.Module):\n    def forward(self, x):\n        return F.dropout(x, 0.5, self.training)\n",
        "class Net(nn.Module):\n    def forward(self, x):\n        return F.dropout(x, p=0.5, training=self.training)\n",
        "class McDropout(nn.Module):\n    def forward(self, x):\n        return F.dropout(x, 0.5, training=True)  # Monte-Carlo dropout, on purpose\n",
        "def augment(x):\n    return F.dropout(x, 0.1)  # a plain function: not tied to a module's mode\n",
        "class Net(nn.Module):\n    def forward(self, x, **kw):\n        return F.dropout(x, 0.1, **kw)\n",
        # a sampling method under no_grad that drops the noise on purpose
        "class Diffusion(nn.Module):\n    @torch.no_grad()\n    def p_sample(self, x, noise_dropout=0.0):\n"
        "        noise = torch.randn_like(x)\n        return x + F.dropout(noise, p=noise_dropout)\n",
        # the hand-rolled mask only in training
        "class EmbeddingDropout(nn.Module):\n    def forward(self, x):\n        if not self.training or self.p == 0:\n            return x\n"
        "        mask = x.new_empty(x.size(1), 1).bernoulli_(1 - self.p) / (1 - self.p)\n        return mask * x\n",
        # Bernoulli sampling of a model's output (an RBM's hidden units): not dropout
        "class RBM(nn.Module):\n    def forward(self, v):\n        p_h = torch.sigmoid(self.W(v))\n        return torch.bernoulli(p_h)\n",
        # functional dropout only in the training branch
        "class Net(nn.Module):\n    def forward(self, x):\n        if self.training and self.p > 0:\n            x = F.dropout(x, self.p)\n        return self.fc(x)\n",
        "class Net(nn.Module):\n    def forward(self, x):\n        if not self.training or self.p == 0:\n            return self.fc(x)\n        else:\n            return self.fc(F.dropout(x, self.p))\n",
        # the mode decided by the caller: the helper takes it as a parameter
        "class Block(nn.Module):\n    def drop(self, x, train):\n        return x * x.new_empty(x.shape).bernoulli_(1 - self.drop_prob) if train else x\n",
    )

    def check(self, ctx):
        yield from self._hand_rolled(ctx)
        for site in ctx.calls:
            if site.qualname is None or not site.qualname.startswith(FUNCTIONAL + "."):
                continue
            name = site.qualname.rsplit(".", 1)[1]
            if name not in DROPOUTS or not _in_module_method(ctx, site.scope) or site.scope.grad_off:
                continue  # (under no_grad: sampling code that drops on purpose, not a layer)
            if _only_in_training(site.scope):
                continue
            call = site.node
            default, index = DROPOUTS[name]
            given = keyword(call, "training")
            flag = given.value if given else (call.args[index] if len(call.args) > index else None)
            if isinstance(flag, ast.Constant) and flag.value is False:
                # a hard-coded False never drops: the layer is dead in training too
                yield self.finding(
                    ctx, call, f"F.{name}(..., training=False) never drops, not even in training",
                    "pass training=self.training",
                    replace(flag, "self.training", "Pass training=self.training"),
                )
                continue
            if flag is not None or has_star_args(call):
                continue  # self.training, a variable, or True on purpose (Monte-Carlo dropout)
            if default:
                message = f"F.{name} defaults to training=True: it keeps dropping after model.eval()"
            else:
                message = f"F.{name} defaults to training=False: it never drops, even in training"
            last = call.args[-1] if call.args else None
            if call.keywords:
                last = max([*call.args, *(k.value for k in call.keywords)], key=lambda n: (n.end_lineno, n.end_col_offset))
            autofix = (
                insert_after(last, ", training=self.training", "Pass training=self.training")
                if last is not None
                else None
            )
            yield self.finding(ctx, call, message, "pass training=self.training", autofix)

    def _hand_rolled(self, ctx):
        """A Bernoulli mask drawn with a drop/keep probability in a module whose methods never
        read the mode: the module drops in eval mode too."""
        reads_mode: dict[int, bool] = {}
        for site in ctx.calls:
            func = site.node.func
            if not (isinstance(func, ast.Attribute) and func.attr in MASK_DRAWS) and site.qualname != "torch.bernoulli":
                continue
            if site.scope.grad_off or not _in_module_method(ctx, site.scope):
                continue
            cls = site.scope.cls
            probability = _drop_probability(site.node, DROP_NAME_RE.search(cls.name) is not None)
            if probability is None:
                continue
            if id(cls) not in reads_mode:
                reads_mode[id(cls)] = mentions_training(cls)
            if reads_mode[id(cls)]:
                continue
            yield self.finding(
                ctx, site.node,
                f"{cls.name}.{site.scope.func.name} draws a dropout mask (bernoulli with {probability}) and "
                f"{cls.name} never reads self.training: it keeps dropping after model.eval()",
                "return the input unchanged unless self.training",
            )


def _only_in_training(scope) -> bool:
    """The call runs only in training mode: it sits in the branch of an `if` that requires
    `self.training` (`if self.training and p > 0:`, `else` of `if not self.training or ...:`)."""
    for text, taken, _ in scope.conds:
        try:
            test = ast.parse(text, mode="eval").body
        except SyntaxError:
            continue
        if not taken:
            if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
                test = test.operand
            elif isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
                test = ast.BoolOp(ast.And(), [v.operand for v in test.values if isinstance(v, ast.UnaryOp) and isinstance(v.op, ast.Not)])
            else:
                continue
        needed = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) else [test]
        if any(ast.unparse(v) == "self.training" for v in needed):
            return True
    return False


def _in_module_method(ctx, scope) -> bool:
    func = scope.func
    if func is None or scope.cls is None or not func.args.args or func.args.args[0].arg != "self":
        return False
    if ctx.is_module_class(scope.cls):
        return True
    # A subclass of a module class defined elsewhere (e.g. timm's): it has a forward().
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "forward" for n in scope.cls.body)


def _drop_probability(call: ast.Call, dropout_class: bool) -> str | None:
    """The drop/keep probability a Bernoulli draw uses (`1 - self.dropout`): named so, or drawn
    in a class named a dropout; None otherwise (a model's output probabilities)."""
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        text = ast.unparse(arg)
        if dropout_class or any(
            DROP_NAME_RE.search(n.attr if isinstance(n, ast.Attribute) else n.id)
            for n in ast.walk(arg) if isinstance(n, (ast.Attribute, ast.Name))
        ):
            return text if len(text) <= 60 else "its drop probability"
    return None
