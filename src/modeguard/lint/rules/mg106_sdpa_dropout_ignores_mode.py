import ast

from modeguard.lint.context import dotted_name, keyword, mentions_training
from modeguard.lint.project import short_path
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
        "`dropout_p=p if self.training else 0.0`. The same holds when a module hands its dropout "
        "to a project helper that passes it on to `scaled_dot_product_attention` (across files "
        "too, through a function chosen at construction)."
    )
    fixable = True
    triggers = ("scaled_dot_product_attention", "dropout")
    invalid = (
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop)\n",
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return F.scaled_dot_product_attention(q, k, v, None, 0.1)\n",
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        p = self.dropout\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)\n",
        # a helper that passes its dropout_p on, chosen at construction and kept as an attribute
        "def attention_backend():\n    def call(q, k, v, dropout_p):\n"
        "        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)\n    return call\n\n\n"
        "class Attn(nn.Module):\n    def __init__(self, p):\n        super().__init__()\n        self.p = p\n        self._attend = attention_backend()\n\n"
        "    def forward(self, q, k, v):\n        return self._attend(q, k, v, dropout_p=self.p)\n",
        # a module-level helper, called positionally
        "def attend(q, k, v, mask, p):\n    return F.scaled_dot_product_attention(q, k, v, mask, p)\n\n\n"
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return attend(q, k, v, None, self.attn_drop)\n",
    )
    valid = (
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)\n",
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        p = self.attn_drop.p if self.training else 0.\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)\n",
        "def attention(q, k, v, dropout=0.0):\n    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)\n",
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)\n",
        # the module hands the helper its dropout only in training
        "def attend(q, k, v, dropout_p):\n    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)\n\n\n"
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return attend(q, k, v, dropout_p=self.p if self.training else 0.0)\n",
        # a helper that decides itself
        "def attend(q, k, v, dropout_p, training):\n    dropout_p = dropout_p if training else 0.0\n"
        "    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)\n\n\n"
        "class Attn(nn.Module):\n    def forward(self, q, k, v):\n        return attend(q, k, v, self.p, self.training)\n",
    )

    def check(self, ctx):
        yield from self._through_helpers(ctx)
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


    def _through_helpers(self, ctx):
        """A module method handing a dropout that ignores the mode to a project function that
        passes it on to scaled_dot_product_attention."""
        project = ctx.project
        if project is None or not any(m.sdpa_dropout for m in project.modules.values()):
            return
        for site in ctx.calls:
            func, cls = site.scope.func, site.scope.cls
            if func is None or not ctx.is_module_class(cls) or not func.args.args or func.args.args[0].arg != "self":
                continue
            target = _forwarder(ctx, site.node, cls)
            if target is None:
                continue
            name, (param, index, line), path = target
            kw = keyword(site.node, param)
            value = kw.value if kw else (site.node.args[index] if len(site.node.args) > index else None)
            if value is None or isinstance(value, ast.Starred) or _is_zero(value) or mentions_training(value):
                continue
            if isinstance(value, ast.Name):
                if value.id in {a.arg for a in [*func.args.args, *func.args.kwonlyargs]} or _assigned_with_training(func, value.id):
                    continue
            source = ast.get_source_segment(ctx.source, value)
            yield self.finding(
                ctx,
                site.node,
                f"{name}() passes {param}={source} on to scaled_dot_product_attention ({short_path(path)}:{line}), "
                "which applies it in eval mode too: attention is random at inference",
                f"pass {param}={source} if self.training else 0.0",
                replace(value, f"{source} if self.training else 0.0", "Apply dropout only in training") if source else None,
            )


def _forwarder(ctx, call: ast.Call, cls: ast.ClassDef):
    """(callee text, (parameter, position, line), path) when the called project function passes
    that parameter to scaled_dot_product_attention: a function, a method of the class, or a
    function a factory returned into `self.<attr>` at construction."""
    project = ctx.project
    ref = dotted_name(call.func)
    if ref is None:
        return None
    found = None
    if ref.startswith("self.") and ref.count(".") == 1:
        attr = ref[5:]
        summary = project.modules.get(ctx.path)
        owner = summary.classes.get(cls.name) if summary is not None else None
        found = project.method(owner, attr) if owner is not None else None
        if found is None:
            product = _factory_product(ctx, cls, attr)
            return (ref, *product) if product else None
    elif not ref.startswith("self."):
        found = project.resolve(ctx.path, ref)
    if found is None or found[0] != "function":
        return None
    fs = found[1]
    local = f"{fs.cls}.{fs.name}" if fs.cls else fs.name
    forwarded = project.modules[fs.path].sdpa_dropout.get(local)
    return (ref, forwarded, fs.path) if forwarded else None


def _factory_product(ctx, cls: ast.ClassDef, attr: str):
    """((parameter, position, line), path) of the forwarding function bound to `self.<attr>` in
    the class: assigned directly, or returned (a nested function) by the factory whose call is
    assigned."""
    project = ctx.project
    for node, scope in ctx.assigns:
        if scope.cls is not cls or len(node.targets) != 1 or dotted_name(node.targets[0]) != f"self.{attr}":
            continue
        value = node.value
        if isinstance(value, (ast.Name, ast.Attribute)) and dotted_name(value):
            found = project.resolve(ctx.path, dotted_name(value))
            if found is not None and found[0] == "function":
                fs = found[1]
                forwarded = project.modules[fs.path].sdpa_dropout.get(f"{fs.cls}.{fs.name}" if fs.cls else fs.name)
                return (forwarded, fs.path) if forwarded else None
            continue
        if not isinstance(value, ast.Call) or dotted_name(value.func) is None:
            continue
        factory = project.resolve(ctx.path, dotted_name(value.func))
        if factory is None or factory[0] != "function":
            continue
        forwarders = project.modules[factory[1].path].sdpa_dropout
        for item in factory[1].items:
            returned = (item.origin or "").removeprefix("alias:") if item.kind == "return" else ""
            if returned in forwarders:
                return forwarders[returned], factory[1].path
    return None


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
