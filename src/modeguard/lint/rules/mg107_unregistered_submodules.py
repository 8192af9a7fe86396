import ast
import re

from modeguard.lint.project import _torch_mode_layer
from modeguard.lint.rule import Rule, replace

# Losses and activations have no parameters, buffers or mode: a plain list of them is harmless.
STATELESS_RE = re.compile(r"(Loss|ReLU|GELU|SiLU|Tanh|Sigmoid|Softmax|LogSoftmax|Identity|Flatten|Parameter|Hardswish|Mish|ELU)$")
WRAPPERS = ("ModuleList", "ModuleDict", "Sequential", "ParameterList")
# torch layers with no parameters, buffers or mode (pooling, padding, reshaping, activations)
PARAMETER_FREE_RE = re.compile(
    r"^(\w*Pool\dd|LPPool\dd|Upsample\w*|Pixel(Un)?[Ss]huffle|Flatten|Unflatten|Identity|\w*Pad\dd|"
    r"ReLU6?|LeakyReLU|GELU|SiLU|Tanh|Sigmoid|Softmax\d?d?|LogSoftmax|Hardswish|Hardsigmoid|Hardtanh|Mish|ELU|Softplus)$"
)
STATE_CALLS = ("register_buffer", "register_parameter", "add_module", "register_module", "setattr", "Parameter")


class UnregisteredSubmodules(Rule):
    code = "MG107"
    name = "unregistered-submodules"
    summary = "Modules in a plain list/dict/tuple attribute are invisible to `model.eval()`"
    rationale = (
        "`Module.train()`/`eval()`, `.to()`, `.parameters()` and `state_dict()` only see "
        "submodules registered in `_modules`. Layers kept in a Python list stay in training "
        "mode after `model.eval()` (their Dropout keeps dropping), are not trained by an "
        "optimizer built from `model.parameters()` and are not saved. Wrap the list in "
        "`nn.ModuleList` (a dict in `nn.ModuleDict`)."
    )
    fixable = True
    triggers = ("self.",)  # the module class may be defined in another file
    invalid = (
        "class Encoder(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.blocks = [Block(d) for _ in range(4)]\n\n\nclass Block(nn.Module):\n    pass\n",
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.layers = [nn.Linear(4, 4), nn.Dropout(0.1)]\n",
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.heads = []\n        for _ in range(3):\n            self.heads.append(nn.Linear(4, 2))\n",
        # a module bound to a local name first, then appended
        "class Net(nn.Module):\n    def __init__(self, ps):\n        super().__init__()\n        self.drops = []\n"
        "        for p in ps:\n            drop = nn.Dropout(p)\n            self.drops.append(drop)\n",
        # appended under an isinstance(..., nn.Module) check
        "class Merge(nn.Module):\n    def __init__(self, layers):\n        super().__init__()\n        self.parts = []\n"
        "        for layer in layers:\n            if isinstance(layer, nn.Module):\n                self.parts.append(layer)\n",
        # a layer stored under a key of a plain dict
        "class Net(nn.Module):\n    def __init__(self, tasks):\n        super().__init__()\n        self.heads = {}\n"
        "        for task in tasks:\n            self.heads[task] = nn.Linear(8, 2)\n",
        # a list of pooling blocks, one of which also holds a BatchNorm
        "class Smooth(nn.Module):\n    def __init__(self, k):\n        super().__init__()\n        self.pool = nn.AvgPool1d(k, stride=1)\n        self.norm = nn.BatchNorm1d(8)\n\n\n"
        "class MultiSmooth(nn.Module):\n    def __init__(self, sizes):\n        super().__init__()\n        self.smooths = [Smooth(k) for k in sizes]\n",
        # a dict declared to hold modules, filled by a builder: the built ones are registered nowhere
        "class Model(nn.Module):\n    encoders: dict[str, Sequence[Encoder]]\n\n    def __init__(self, data):\n        super().__init__()\n"
        "        self.encoders = {'train': self.encoder}\n        self.encoders['valid'] = valid = self._build_encoders(data)\n\n\n"
        "class Encoder(nn.Module):\n    pass\n",
        # layers without a mode in a plain list of a class that a subclass runs: .to() and state_dict() miss them
        "class Base(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.linears = [nn.Linear(10, 10)]\n\n\n"
        "class Net(Base):\n    def forward(self, x):\n        return self.linears[0](x)\n",
    )
    valid = (
        # a class with no forward() in its family, holding layers without a mode: nothing runs it, eval() changes nothing
        "class Registered(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.linears = nn.ModuleList([nn.Linear(10, 10)])\n\n\n"
        "class Unregistered(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.linears = [nn.Linear(10, 10)]\n\n\n"
        "print(list(Registered().parameters()), list(Unregistered().parameters()))\n",
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Dropout(0.1)])\n",
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        layers = [nn.Linear(4, 4), nn.ReLU()]\n        self.body = nn.Sequential(*layers)\n",
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.blocks = [nn.Linear(4, 4)]\n        self.blocks = nn.ModuleList(self.blocks)\n",
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.sizes = [64, 128]\n        self.names = ['a', 'b']\n",
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.blocks = [nn.Linear(4, 4)]\n        for i, b in enumerate(self.blocks):\n            self.add_module(f'block{i}', b)\n",
        # a local name bound to a size, not a module, appended
        "class Net(nn.Module):\n    def __init__(self, ps):\n        super().__init__()\n        self.sizes = []\n"
        "        for p in ps:\n            size = int(p * 4)\n            self.sizes.append(size)\n",
        # each layer also registered through setattr(self, ...)
        "class Net(nn.Module):\n    def __init__(self, n):\n        super().__init__()\n        self.bns = []\n"
        "        for i in range(n):\n            bn = nn.BatchNorm1d(10)\n            setattr(self, f'bn{i}', bn)\n            self.bns.append(bn)\n",
        # a dict of references to modules registered as attributes
        "class Model(nn.Module):\n    encoders: dict[str, nn.Module]\n\n    def __init__(self):\n        super().__init__()\n"
        "        self.encoders = {}\n        self.encoders['a'] = self.enc_a = Encoder()\n        enc_b = self.build()\n        self.enc_b = enc_b\n"
        "        self.encoders['b'] = enc_b\n\n\nclass Encoder(nn.Module):\n    pass\n",
        # another framework's Module (megengine registers lists itself)
        "import megengine.module as M\n\n\nclass Stem(M.Module):\n    pass\n\n\n"
        "class Head(M.Module):\n    def __init__(self):\n        super().__init__()\n        self.stems = [Stem() for _ in range(3)]\n",
        # a list of modules with no parameters, buffers or mode: eval(), .to() and state_dict() miss nothing
        "class Smooth(nn.Module):\n    def __init__(self, k):\n        super().__init__()\n        self.k = k\n        self.pool = nn.AvgPool1d(k, stride=1)\n\n\n"
        "class Trend(nn.Module):\n    def __init__(self, k):\n        super().__init__()\n        self.smooth = Smooth(k)\n        self.act = nn.ReLU()\n\n\n"
        "class MultiTrend(nn.Module):\n    def __init__(self, sizes):\n        super().__init__()\n        self.trends = [Trend(k) for k in sizes]\n",
        # a plain dict of sizes per key
        "class Net(nn.Module):\n    def __init__(self, tasks):\n        super().__init__()\n        self.sizes = {}\n"
        "        for task in tasks:\n            self.sizes[task] = len(task)\n",
    )

    def check(self, ctx):
        assigns_of = _by_class(ctx.assigns)
        calls_of = _by_class((site.node, site.scope) for site in ctx.calls)
        for cls in ctx.classes:
            if not ctx.is_module_class(cls):
                continue
            attrs: dict[str, tuple[ast.Assign, ast.AST]] = {}
            appended: dict[str, ast.AST] = {}
            wrapped: set[str] = set()
            registers = False
            for node in assigns_of.get(id(cls), []):
                if len(node.targets) == 1:
                    attr = _self_attr(node.targets[0])
                    if attr and isinstance(node.value, (ast.List, ast.ListComp, ast.Tuple, ast.Dict, ast.DictComp)):
                        attrs.setdefault(attr, (node, node.value))
                    elif attr and _is_wrapper_call(ctx, node.value):
                        wrapped.add(attr)
            if not attrs:
                continue  # no plain container on self: nothing to report, skip the walks below
            bound = None  # names holding modules: walked only for an append of a plain name
            stored = _stored_modules(ctx, cls, assigns_of.get(id(cls), []))
            for node in calls_of.get(id(cls), []):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in ("add_module", "register_module"):
                    registers = True
                elif isinstance(func, ast.Name) and func.id == "setattr" and node.args and _is_self(node.args[0]):
                    registers = True  # setattr(self, f"fc{i}", fc): registered under another name
                elif isinstance(func, ast.Attribute) and func.attr in ("append", "extend", "insert"):
                    attr = _self_attr(func.value)
                    if attr in attrs and bound is None and any(isinstance(a, ast.Name) for a in node.args):
                        bound = _module_names(ctx, cls)
                    if attr in attrs and any(_builds_module(ctx, a) or (isinstance(a, ast.Name) and (a.id, node) in bound) for a in node.args):
                        appended.setdefault(attr, node)
                for arg in node.args:  # nn.ModuleList(self.blocks), nn.Sequential(*self.blocks)
                    inner = arg.value if isinstance(arg, ast.Starred) else arg
                    if _self_attr(inner) and _is_wrapper_call(ctx, node):
                        wrapped.add(_self_attr(inner))
            if registers:
                continue
            for attr, (assign, value) in attrs.items():
                if attr in wrapped:
                    continue
                holds_modules = _container_builds_modules(ctx, value) or (
                    attr in appended and _is_empty(value)
                )
                if holds_modules and _only_parameter_free(ctx, value):
                    continue  # nothing in them has parameters, buffers or a mode to miss
                if holds_modules and _never_run(ctx, cls) and _only_mode_free(ctx, value):
                    continue  # a class nothing runs, holding no layer with a mode
                store = stored.get(attr) if not holds_modules else None
                if not holds_modules and store is None:
                    continue
                wrapper = "ModuleDict" if isinstance(value, (ast.Dict, ast.DictComp)) else "ModuleList"
                source = ast.get_source_segment(ctx.source, value)
                autofix = None
                if source and not isinstance(value, ast.Tuple) and "nn" in ctx.imports:
                    autofix = replace(value, f"nn.{wrapper}({source})", f"Wrap in nn.{wrapper}")
                kind = type(value).__name__.replace('Comp', ' comprehension').lower()
                where = ""
                if store is not None:
                    built = ast.get_source_segment(ctx.source, store.func) or "a module"
                    where = f" ({built}(...) stored in it at line {store.lineno}, registered nowhere else)"
                yield self.finding(
                    ctx,
                    assign.targets[0],
                    f"self.{attr} holds modules in a plain {kind}{where}: "
                    "model.eval(), .to() and state_dict() never reach them",
                    f"wrap it: self.{attr} = nn.{wrapper}(...)",
                    autofix,
                )


def _declared_module_containers(ctx, cls: ast.ClassDef) -> set[str]:
    """Attributes whose annotation says they hold modules: `reps: Mapping[str, Sequence[Representation]]`
    in the class body, `self.heads: dict[str, nn.Module] = {}` in a method."""
    declared = set()
    methods = [n.body for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for node in (s for body in (cls.body, *methods) for s in body):
        if not isinstance(node, ast.AnnAssign):
            continue
        target = node.target
        name = target.id if isinstance(target, ast.Name) and node in cls.body else _self_attr(target)
        if name and _names_module_type(ctx, node.annotation):
            declared.add(name)
    return declared


def _names_module_type(ctx, annotation: ast.AST) -> bool:
    for node in ast.walk(annotation):
        if isinstance(node, (ast.Name, ast.Attribute)):
            name = ctx.qualname(node) or ""
            last = name.rsplit(".", 1)[-1]
            if last in ctx.module_classes or (name.startswith("torch.nn.") and last[:1].isupper() and not STATELESS_RE.search(last)):
                return True
    return False


def _stored_modules(ctx, cls: ast.ClassDef, assigns: list[ast.Assign]) -> dict[str, ast.Call]:
    """attr -> the call whose module is stored by `self.attr[key] = ...` and bound to no `self`
    attribute: a layer built there, or any call when the attribute is declared to hold modules."""
    if not any(isinstance(t, ast.Subscript) for node in assigns for t in node.targets):
        return {}
    declared = _declared_module_containers(ctx, cls)
    kept_on_self = {
        node.value.id for node in assigns
        if isinstance(node.value, ast.Name) and any(_self_attr(t) for t in node.targets)
    }
    found: dict[str, ast.Call] = {}
    for node in assigns:
        value = node.value
        if not isinstance(value, ast.Call) or any(_self_attr(t) for t in node.targets):
            continue
        if any(isinstance(t, ast.Name) and t.id in kept_on_self for t in node.targets):
            continue  # `reps = build(); self.reps = reps; self.by_mode[m] = reps`: registered
        for target in node.targets:
            attr = _self_attr(target.value) if isinstance(target, ast.Subscript) else None
            if attr and (attr in declared or _builds_module(ctx, value)):
                found.setdefault(attr, value)
    return found


def _by_class(items) -> dict[int, list[ast.AST]]:
    grouped: dict[int, list[ast.AST]] = {}
    for node, scope in items:
        if scope.cls is not None:
            grouped.setdefault(id(scope.cls), []).append(node)
    return grouped


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _self_attr(node: ast.AST) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _is_wrapper_call(ctx, node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = ctx.qualname(node.func) or ""
    return name.rsplit(".", 1)[-1] in WRAPPERS


def _builds_module(ctx, node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = ctx.qualname(node.func) or ""
    last = name.rsplit(".", 1)[-1]
    if last in ctx.module_classes:
        return True
    return name.startswith("torch.nn.") and last[:1].isupper() and not STATELESS_RE.search(last)


def _module_names(ctx, cls: ast.ClassDef) -> set[tuple[str, ast.Call]]:
    """(name, call) where a call's Name argument holds a module: bound by `name = Module(...)`
    in the same method, or the call sits under `if isinstance(name, nn.Module)`."""
    found = set()
    for func in cls.body:
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        built = {
            t.id for node in ast.walk(func) if isinstance(node, ast.Assign) and _builds_module(ctx, node.value)
            for t in node.targets if isinstance(t, ast.Name)
        }
        for node in ast.walk(func):
            if isinstance(node, ast.Call):
                found.update((a.id, node) for a in node.args if isinstance(a, ast.Name) and a.id in built)
            elif isinstance(node, ast.If) and _isinstance_module(ctx, node.test):
                name = node.test.args[0].id
                found.update((name, call) for stmt in node.body for call in ast.walk(stmt) if isinstance(call, ast.Call))
    return found


def _isinstance_module(ctx, test: ast.AST) -> bool:
    return (
        isinstance(test, ast.Call) and isinstance(test.func, ast.Name) and test.func.id == "isinstance"
        and len(test.args) == 2 and isinstance(test.args[0], ast.Name)
        and (ctx.qualname(test.args[1]) or "") in ("torch.nn.Module", "torch.nn.modules.module.Module")
    )


def _container_builds_modules(ctx, value: ast.AST) -> bool:
    if isinstance(value, (ast.List, ast.Tuple)):
        return any(_builds_module(ctx, e) for e in value.elts)
    if isinstance(value, ast.Dict):
        return any(_builds_module(ctx, v) for v in value.values)
    if isinstance(value, ast.ListComp):
        return _builds_module(ctx, value.elt)
    if isinstance(value, ast.DictComp):
        return _builds_module(ctx, value.value)
    return False


def _only_parameter_free(ctx, value: ast.AST) -> bool:
    """Whether every module a list/dict literal or comprehension builds is a parameter-free torch
    layer or a class of this file that builds only such layers (`[Decompose(k) for k in sizes]`
    around an `nn.AvgPool1d`)."""
    elements = _elements(value)
    classes = {c.name: c for c in ctx.classes}
    return bool(elements) and all(_parameter_free_call(ctx, e, classes, set()) for e in elements)


def _parameter_free_call(ctx, node: ast.AST, classes: dict, seen: set) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = ctx.qualname(node.func) or ""
    if name.startswith("torch.nn."):
        return PARAMETER_FREE_RE.match(name.rsplit(".", 1)[-1]) is not None
    cls = classes.get(node.func.id) if isinstance(node.func, ast.Name) else None
    if cls is not None and cls.name in seen:
        return True  # checked already, or being checked
    if cls is None or [ctx.qualname(b) for b in cls.bases] != ["torch.nn.Module"]:
        return False
    seen.add(cls.name)
    layers = 0  # a class that builds nothing (a stub) is not known to be parameter-free
    for stmt in ast.walk(cls):
        if isinstance(stmt, ast.Call) and _last_name(stmt.func) in STATE_CALLS:
            return False  # a parameter or buffer of its own
        if isinstance(stmt, ast.Attribute) and stmt.attr == "training" and _is_self(stmt.value):
            return False  # behaves by its mode
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(stmt.value, ast.Call):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if not any(_self_attr(t) for t in targets):
                continue
            called = ctx.qualname(stmt.value.func) or ""
            if called.startswith("torch.") and not called.startswith("torch.nn."):
                continue  # a plain tensor: neither eval() nor registration changes it
            if not _parameter_free_call(ctx, stmt.value, classes, seen):
                return False
            layers += 1
    return layers > 0


def _elements(value: ast.AST) -> list[ast.AST]:
    """What a list/tuple/dict literal or comprehension holds (a comprehension: its element)."""
    if isinstance(value, (ast.List, ast.Tuple)):
        return value.elts
    if isinstance(value, ast.Dict):
        return value.values
    return [value.value if isinstance(value, ast.DictComp) else value.elt]


def _never_run(ctx, cls: ast.ClassDef) -> bool:
    """No forward() (or __call__) in the class, its bases or its subclasses, all in the project:
    calling the module raises, so nothing runs it in either mode."""
    project = ctx.project
    summary = project.modules[ctx.path].classes.get(cls.name) if project is not None and ctx.path in project.modules else None
    if summary is None or project.external_base(summary) is not None:
        return False
    family = [*project.lineage(summary), *project.subclasses(summary)]
    return not any(("forward" in c.methods or "__call__" in c.methods) or project.external_base(c) is not None for c in family)


def _only_mode_free(ctx, value: ast.AST) -> bool:
    """Every call in the list/dict's elements builds a torch layer without a mode (`nn.Linear`):
    eval() would change nothing in them."""
    elements = _elements(value)
    for element in elements:
        if not isinstance(element, ast.Call):
            return False
        for call in (n for n in ast.walk(element) if isinstance(n, ast.Call)):
            name = ctx.qualname(call.func) or ""
            last = name.rsplit(".", 1)[-1]
            if not name.startswith("torch.nn.") or _torch_mode_layer(last, call) or last in WRAPPERS:
                return False
    return bool(elements)


def _last_name(node: ast.AST) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _is_empty(value: ast.AST) -> bool:
    return isinstance(value, (ast.List, ast.Dict)) and not (getattr(value, "elts", None) or getattr(value, "keys", None))
