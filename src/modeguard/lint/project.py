"""The project index: what every file defines and what every function does to the mode of the
models it touches, so that rules see across files.

Each file is summarised once, right after it is parsed (`summarize`), into plain picklable data:
its imports, its classes and their bases, and per function a *mode program*: in source order,
the mode switches (`eval()`, `train()`), `backward()`, optimizer steps, forwards of its
parameters and `self` attributes (and in which autograd context), model assignments and the
calls it makes to other functions, with the arguments and constants it passes. `ProjectIndex`
joins the summaries, resolves imports inside the project (relative ones too), knows which
classes are `nn.Module`s across files, who calls whom, and replays a function's program with
its helpers' programs spliced in (`events`), constants propagated into `if` branches.
"""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import os
import pickle
import re
from dataclasses import dataclass, field, replace
from pathlib import PurePath

from modeguard.lint.models import MODEL_NAME_RE
from modeguard.lint.context import (
    GRAD_OFF,
    GRAD_OFF_NAME_RE,
    FOREIGN_FRAMEWORK_RE,
    MODULE_BASE_RE,
    FileContext,
    compatible,
    condition_holds,
    dotted_name,
)

# Chained calls that return the same module: `Net().to(device).eval()` is a `Net`
SAME_MODULE_METHODS = ("to", "cuda", "cpu", "half", "float", "double", "bfloat16", "train", "eval", "requires_grad_", "share_memory")
MODE_LAYER_RE = re.compile(r"(Dropout|BatchNorm)\w*$")
CONTAINERS = frozenset({"Sequential", "ModuleList", "ModuleDict"})
# helpers that build layers we cannot see: they may hold Dropout/BatchNorm
LAYER_FACTORY_RE = re.compile(r"(layer|block|norm|drop|backbone|head|stage|model|net)", re.I)
OPAQUE_BUILDER_RE = re.compile(r"(layer|block|make|build|norm|drop|create|stage|backbone|head)", re.I)
MODEL_CONSTRUCTOR_RE = re.compile(
    r"^((?=[A-Z])\w*(Net|Model|Former|Transformer|Classifier|Encoder|Decoder|Generator|Discriminator|GAN|CNN)\w*|resnet\d+|create_model|vgg\d+|mobilenet\w*|efficientnet\w*|densenet\d+|inception\w*|googlenet|alexnet|build_model|get_model)$"
)
# a model's own entry points that run its forward (`forward_on_instance`, `forward_features`);
# not the training-step ones
FORWARD_VARIANT_RE = re.compile(r"^forward_(?!train|backward|loss|step|hook|pre_hook)\w+$")
# OpenMMLab's registry builders (mmdet, mmseg, mmcls, mmaction, mmpose): a new model, in training mode
OPENMMLAB_BUILDER_RE = re.compile(r"^build_(detector|segmentor|classifier|recognizer|localizer|posenet)$")
# loaders outside the project that fill a model's weights and leave its mode alone (mmcv, timm)
WEIGHT_LOADER_RE = re.compile(r"(^|\.)load_checkpoint$")
# torch.nn layers whose behaviour depends on the mode (InstanceNorm only with running stats)
TORCH_MODE_LAYER_RE = re.compile(r"^(Dropout\w*|AlphaDropout|FeatureAlphaDropout|BatchNorm\dd|SyncBatchNorm|LazyBatchNorm\dd|Transformer\w*|MultiheadAttention)$")
TORCH_DROPOUT_KW_RE = re.compile(r"^(LSTM|GRU|RNN|InstanceNorm\dd)$")
WRAPPER_RE = re.compile(r"(DataParallel|DistributedDataParallel|DataCPU|^DDP$|^FSDP$|FullyShardedDataParallel)$")
PICKED_MODEL_MODULES = ("torchvision.models", "timm")  # `models.__dict__[arch](...)` builds one of theirs
EVAL_MODE_SOURCES = ("from_pretrained", "jit.load", "hub.load", "jit.script", "InferenceSession", "load_pretrained")
BUILTIN_NAMES = frozenset(dir(builtins))
NO_MODE_LAYERS = "has no Dropout/BatchNorm"
PLAIN_PYTHON_MODULES = frozenset({"typing", "typing_extensions", "enum", "abc", "collections", "dataclasses", "numbers"})
MEMO_LIMIT = 10_000  # replayed programs kept in memory (a site-packages run has ~10^5 functions)
MAX_CALLERS = 32  # callers followed per function (a base class __init__ may have thousands)
TRAINING_CALL_WINDOW = 15  # lines between a helper's forward and the backward() that trains it
MODE_TOKENS = (".eval(", ".train(", "backward", "no_grad", "inference_mode", ".step(", "load_state_dict", "requires_grad", "torch.load")
# packages whose functions never switch a model's mode (and are never project code)
# packages whose classes are never torch modules: `MultiOutputClassifier(SGDClassifier())` has no mode
NON_TORCH_MODEL_ROOTS = frozenset(("sklearn", "xgboost", "lightgbm", "catboost", "numpy", "scipy", "pandas", "statsmodels", "joblib", "umap", "hdbscan", "faiss", "gensim", "jax", "flax", "tensorflow", "keras"))
# bases whose methods never switch a held model's mode (a held model, not the class itself)
KNOWN_BASE_RE = re.compile(r"^((abc\.|typing\.|typing_extensions\.|enum\.|dataclasses\.)?(ABC|Generic|Protocol|NamedTuple|TypedDict|Enum|IntEnum)|torch\.nn\..*|nn\..*|(lightning\.pytorch|pytorch_lightning|lightning|pl|L)\.LightningModule)$")
EXTERNAL_ROOTS = frozenset(("torch", "numpy", "math", "os", "sys", "re", "json", "logging", "time", "random", "itertools", "functools", "collections", "warnings", "typing", "copy", "pathlib", "einops", "PIL", "cv2", "pandas", "scipy", "matplotlib"))


@dataclass(frozen=True, slots=True)
class Item:
    """One step of a function's mode program.

    kind: eval | train | backward | step | forward | call | assign | load
    receiver: the model it acts on (`model`, `self.net`), or the callee reference for a call
    """

    kind: str
    receiver: str | None
    line: int
    col: int
    conds: tuple = ()
    grad_off: bool = False
    args: tuple = ()  # call: ((parameter position or name, argument root), ...)
    constants: tuple = ()  # call: ((parameter position or name, constant), ...)
    origin: str | None = None  # assign: built | eval | alias:<root> ; forward: "used" when the result is kept
    arguments: tuple | None = None  # assign/return of a constructor call: see `constructor_arguments`


@dataclass
class FunctionSummary:
    key: str  # "<path>::Class.method"
    name: str
    cls: str | None
    path: str
    line: int
    params: tuple[str, ...]  # without self/cls
    decorators: tuple[str, ...]  # references
    grad_off: bool  # decorated with no_grad / inference_mode
    wraps_grad_off: bool  # a decorator (factory) built around no_grad / inference_mode
    items: tuple[Item, ...]
    local_names: frozenset[str] = frozenset()  # names it assigns: what is not local is a closure or global
    self_calls: tuple = ()  # a method's calls on its own object, in source order: ((attribute or "forward", line, col), ...)
    builds_mode_layers: bool = False  # builds torch.nn Dropout/BatchNorm itself (a layer factory)
    calls_builders: bool = False  # calls builders the index cannot see into (see `_opaque_builder_call`)
    none_passthrough: tuple = ()  # a function's parameters for which it returns None when given None (see `none_passthrough`)


@dataclass
class ClassSummary:
    name: str
    path: str
    line: int
    bases: tuple[str, ...]  # references
    methods: tuple[str, ...]
    owns_mode_layers: bool  # builds torch.nn Dropout/BatchNorm (or RNNs with dropout) itself
    constructs: tuple[str, ...]  # references of the other classes and layer builders it calls
    model_attrs: tuple[str, ...]  # `self.x = <model>` in __init__ (built or passed in)
    given_layers: bool = False  # its layers are its caller's: `nn.Sequential(*layers)` of a parameter, a `Type[...]` parameter
    init_signature: tuple | None = None  # its own __init__: see `init_signature`
    layer_sources: tuple = ()  # what may hold Dropout/BatchNorm, with the __init__ arguments that switch it off: see `layer_sources`


@dataclass
class ModuleSummary:
    path: str
    imports: dict[str, str]  # local name -> absolute reference (relative imports resolved)
    functions: dict[str, FunctionSummary] = field(default_factory=dict)  # "f", "Class.method"
    classes: dict[str, ClassSummary] = field(default_factory=dict)
    module_level: FunctionSummary | None = None
    frozen: frozenset[str] = frozenset()  # receivers frozen here (requires_grad False)
    parameter_owners: frozenset[str] = frozenset()  # receivers whose .parameters() are taken (to optimise)
    # functions handing a parameter, untouched, to scaled_dot_product_attention's dropout_p:
    # local name -> (parameter, its position, line of the call)
    sdpa_dropout: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def digest(self) -> str:
        return hashlib.sha1(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    receiver: str | None
    line: int  # where it happens in the analysed function (the helper call when spliced)
    col: int
    conds: tuple = ()
    grad_off: bool = False
    via: str | None = None  # the helper it came through
    origin: str | None = None
    detail: str | None = None  # where in the helper (path:line)
    args: tuple = ()  # an unresolved call: the roots of its arguments


@functools.lru_cache(maxsize=65536)
def dotted_path(path: str) -> tuple[str, ...]:
    parts = list(PurePath(path).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    # a dot inside a folder name (`deepspeech.pytorch`) must not split it
    return tuple(p.replace(".", "_") for p in parts if p not in ("/", "") and not p.endswith(":\\"))


# -- summarising one file -------------------------------------------------------------------
def summarize(ctx: FileContext) -> ModuleSummary:
    """The file's part of the project index, from its FileContext (no extra walk of the tree)."""
    imports = {name: _absolute(ctx.path, target) for name, target in ctx.imports.items()}
    summary = ModuleSummary(ctx.path, imports)
    sites_by_func: dict[int, list] = {}
    for site in ctx.calls:
        sites_by_func.setdefault(id(site.scope.func), []).append(site)
    assigns_by_func: dict[int, list] = {}
    for node, scope in ctx.assigns:
        assigns_by_func.setdefault(id(scope.func), []).append((node, scope))
    returns_by_func: dict[int, list] = {}
    for node, scope in ctx.returns:
        returns_by_func.setdefault(id(scope.func), []).append((node, scope))
    frozen, owners = set(), set()
    lines = ctx.lines
    for func, scope in ctx.functions:
        local = f"{scope.cls.name}.{func.name}" if scope.cls is not None else func.name
        # a model's own methods (forward, blocks) matter only where they switch modes or autograd
        shallow = scope.cls is not None and scope.cls.name in ctx.module_classes and func.name != "__init__" and not any(
            token in line for line in lines[func.lineno - 1 : func.end_lineno] for token in MODE_TOKENS
        )
        fs = summary.functions.setdefault(local, _summarize_function(ctx, func, scope, local, sites_by_func, assigns_by_func, returns_by_func, frozen, owners, shallow))
        if fs.line == func.lineno:  # not a redefinition of the same name
            sites = sites_by_func.get(id(func), ())
            _add_self_calls(fs, func, scope, sites)
            # builders out of sight, or layers given by the caller (`nn.Sequential(*layers)` of a parameter)
            fs.calls_builders = any(_opaque_builder_call(site, fs.params) for site in sites) or _given_layers(func, sites)
            if scope.cls is None:
                fs.none_passthrough = none_passthrough(ctx, func, assigns_by_func.get(id(func), ()), returns_by_func.get(id(func), ()))
    summary.module_level = _summarize_function(ctx, None, None, "<module>", sites_by_func, assigns_by_func, returns_by_func, frozen, owners)
    for loop, _ in ctx.loops:
        iterated = getattr(loop, "iter", None)
        if isinstance(iterated, ast.Call) and isinstance(iterated.func, ast.Attribute) and iterated.func.attr in ("parameters", "named_parameters"):
            text = "\n".join(ctx.lines[loop.lineno - 1 : loop.end_lineno])
            root = receiver_of(iterated.func.value)
            if root and "requires_grad" in text and "False" in text:
                frozen.add(root.rsplit(".", 1)[-1])
    for cls in ctx.classes:
        summary.classes.setdefault(cls.name, _summarize_class(ctx, cls, sites_by_func, assigns_by_func))
    summary.frozen = frozenset(frozen)
    summary.sdpa_dropout = sdpa_dropout_parameters(ctx)
    summary.parameter_owners = frozenset(owners)
    return summary


def _add_self_calls(fs: FunctionSummary, func, scope, sites) -> None:
    """What `ProjectIndex` needs to follow a class's own inference methods (even where the method
    is summarised shallowly): its calls on `self`, and whether it builds Dropout/BatchNorm."""
    calls = []
    for site in sites:
        callee = site.node.func
        if scope.cls is not None and isinstance(callee, ast.Name) and callee.id == "self":
            calls.append(("forward", site.node.lineno, site.node.col_offset))
        elif scope.cls is not None and isinstance(callee, ast.Attribute) and isinstance(callee.value, ast.Name) and callee.value.id == "self":
            calls.append((callee.attr, site.node.lineno, site.node.col_offset))
        elif not fs.builds_mode_layers and (site.qualname or "").startswith("torch.nn."):
            fs.builds_mode_layers = _torch_mode_layer(site.qualname.rsplit(".", 1)[-1], site.node)
    fs.self_calls = tuple(sorted(calls, key=lambda call: call[1:]))


def sdpa_dropout_parameters(ctx: FileContext) -> dict[str, tuple[str, int, int]]:
    """Functions that pass one of their parameters, never reassigned, as the dropout_p of
    `F.scaled_dot_product_attention` (which has no training flag): whoever calls them decides
    whether attention drops in eval mode."""
    found: dict[str, tuple[str, int, int]] = {}
    if "scaled_dot_product_attention" not in ctx.source:
        return found
    for site in ctx.calls:
        func = site.scope.func
        name = site.qualname or ""
        if func is None or not name.startswith("torch") or not name.endswith("scaled_dot_product_attention"):
            continue
        given = next((k.value for k in site.node.keywords if k.arg == "dropout_p"), None)
        if given is None and len(site.node.args) > 4:
            given = site.node.args[4]  # (query, key, value, attn_mask, dropout_p, ...)
        params = _params(func)
        if not isinstance(given, ast.Name) or given.id not in params:
            continue
        if any(isinstance(t, ast.Name) and t.id == given.id for node, scope in ctx.assigns if scope.func is func for t in node.targets):
            continue  # `dropout_p = dropout_p if self.training else 0.0`: decided here
        local = f"{site.scope.cls.name}.{func.name}" if site.scope.cls is not None else func.name
        found.setdefault(local, (given.id, params.index(given.id), site.node.lineno))
    return found


def _absolute(path: str, target: str) -> str:
    if not target.startswith("."):
        return target
    level = len(target) - len(target.lstrip("."))
    base = dotted_path(path)
    if not PurePath(path).name == "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    rest = target[level:]
    return ".".join([*base, rest]) if rest else ".".join(base)


def _params(func) -> tuple[str, ...]:
    names = [a.arg for a in [*func.args.posonlyargs, *func.args.args]]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return tuple(names + [a.arg for a in func.args.kwonlyargs])


def _summarize_function(ctx, func, scope, local, sites_by_func, assigns_by_func, returns_by_func, frozen, owners, shallow=False) -> FunctionSummary:
    items: list[Item] = []
    params = _params(func) if func is not None else ()
    for site in () if shallow else sites_by_func.get(id(func), ()):
        item = _classify_site(ctx, site, frozen, owners)
        if item is not None:
            items.append(item)
    local_names = set()
    for node, a_scope in () if shallow else assigns_by_func.get(id(func), ()):
        local_names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for item in _classify_assign(ctx, node, a_scope):
            items.append(item)
    for node, r_scope in () if shallow else returns_by_func.get(id(func), ()):
        if node.value is not None:
            origin = model_value(ctx, node.value)
            if origin is not None:
                items.append(Item("return", None, node.lineno, node.col_offset, r_scope.conds, origin=origin, arguments=constructor_arguments(node.value, origin)))
    items = _through_dynamic_attributes(items, () if shallow else assigns_by_func.get(id(func), ()))
    items.sort(key=lambda i: (i.line, i.col, i.kind != "assign"))
    decorators = tuple(_reference(ctx, d) for d in (_decorator_name(x) for x in (func.decorator_list if func is not None else ())) if d)
    wraps = False
    if func is not None and any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in func.body) and func.end_lineno - func.lineno < 40:
        text = "\n".join(ctx.lines[func.lineno - 1 : func.end_lineno])
        wraps = "no_grad" in text or "inference_mode" in text
    return FunctionSummary(
        key=f"{ctx.path}::{local}",
        name=func.name if func is not None else "<module>",
        cls=scope.cls.name if scope is not None and scope.cls is not None else None,
        path=ctx.path,
        line=func.lineno if func is not None else 1,
        params=params,
        decorators=decorators,
        grad_off=bool(scope and scope.grad_off),
        wraps_grad_off=wraps,
        items=tuple(items),
        local_names=frozenset(local_names),
    )


def _through_dynamic_attributes(items: list[Item], assigns) -> list[Item]:
    """`module = getattr(self, name); module.train(flag)`: a mode switch of some attribute of
    `self` chosen at run time (skorch's `_set_training`), recorded on `self`."""
    aliases = {
        target.id
        for node, _ in assigns
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "getattr" and node.value.args and dotted_name(node.value.args[0]) == "self"
    }
    if not aliases:
        return items
    return [replace(i, receiver="self") if i.kind in ("eval", "train") and i.receiver in aliases else i for i in items]


def _decorator_name(node) -> str | None:
    return dotted_name(node.func if isinstance(node, ast.Call) else node)


def receiver_of(node: ast.AST) -> str | None:
    """`model` for `model`, `model.to(device)`, `model.module`, `self.net.cuda()`."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        node = node.func.value
    return dotted_name(node)


def _local_definitions(ctx) -> frozenset[str]:
    found = getattr(ctx, "_definitions", None)
    if found is None:
        found = frozenset([*(f.name for f, _ in ctx.functions), *(c.name for c in ctx.classes), *ctx.imports])
        ctx._definitions = found
    return found


def _instance_names(ctx) -> frozenset[str]:
    """Capitalised names the file binds to the result of a call (`Premodel = DexiNed().cuda()`):
    calling one runs a model, it does not build a class."""
    found = getattr(ctx, "_instances", None)
    if found is None:
        found = frozenset(
            target.id
            for node, _ in ctx.assigns
            for target in node.targets
            if isinstance(target, ast.Name) and target.id[:1].isupper() and isinstance(node.value, ast.Call)
        ) - _local_definitions(ctx)
        ctx._instances = found
    return found


def _classify_site(ctx, site, frozen, owners) -> Item | None:
    call = site.node
    func = call.func
    scope = site.scope
    pos = (call.lineno, call.col_offset)
    if isinstance(func, ast.Attribute):
        attr = func.attr
        receiver = receiver_of(func.value)
        if attr == "run" and receiver in _engine_evaluations(ctx):
            return Item("eval", _engine_evaluations(ctx)[receiver], *pos, scope.conds)
        if receiver is None and isinstance(func.value, ast.Call) and isinstance(func.value.func, ast.Name) and func.value.func.id == "getattr" and func.value.args:
            receiver = dotted_name(func.value.args[0])  # getattr(self, name).train(flag): some attribute of self
        if attr in ("eval", "train") and receiver is None:
            return None  # `deepcopy(model).eval()`: no name to follow
        if attr == "eval" and not call.args and not call.keywords:
            return Item("eval", receiver, *pos, scope.conds)
        if attr == "train" and _module_train_signature(call):
            arg = call.args[0] if call.args else (call.keywords[0].value if call.keywords else None)
            if isinstance(arg, ast.Constant) and arg.value is False:
                return Item("eval", receiver, *pos, scope.conds)
            if arg is None or isinstance(arg, ast.Constant) and arg.value is True:
                return Item("train", receiver, *pos, scope.conds)
            if len(call.args) <= 1 and isinstance(arg, (ast.Name, ast.Attribute, ast.Compare)):
                return Item("train", receiver, *pos, scope.conds, origin="variable")
            return None
        if attr in ("backward", "manual_backward"):
            return Item("backward", receiver, *pos, scope.conds)
        if attr == "step" and (not call.args or re.search(r"opt|scaler|solver", receiver or "", re.I)):
            return Item("step", receiver, *pos, scope.conds)
        if attr == "requires_grad_" and call.args and isinstance(call.args[0], ast.Constant) and call.args[0].value is False:
            if receiver:
                frozen.add(receiver.rsplit(".", 1)[-1])
            return None
        if attr == "load_state_dict":
            return Item("load", receiver, *pos, scope.conds)
        if attr in ("parameters", "named_parameters") and receiver:
            owners.add(receiver.rsplit(".", 1)[-1])
            return None
        if (attr in ("forward", "generate", "predict") or FORWARD_VARIANT_RE.match(attr)) and receiver:
            return Item("forward", receiver, *pos, scope.conds, scope.grad_off)
        root = dotted_name(func.value)
        if root == "self":  # a method (the index resolves it through the bases) or a submodule's forward
            return _call_item(ctx, call, f"self:{attr}", scope, pos)
        if root is not None and "." not in root and root in ctx.imports:
            target = _absolute(ctx.path, ctx.imports[root])
            if target.split(".")[0] in EXTERNAL_ROOTS and not target.startswith("torch.nn.parallel"):
                return None
            return _call_item(ctx, call, f"{target}.{attr}", scope, pos)
        if root is not None and "." not in root:
            return _call_item(ctx, call, f"obj:{root}.{attr}", scope, pos)
        if root is not None and root.startswith("self."):
            return _call_item(ctx, call, f"obj:{root}.{attr}", scope, pos)
        return None
    if isinstance(func, ast.Name):
        name = func.id
        if name in _local_definitions(ctx) or name in BUILTIN_NAMES or (name[:1].isupper() and name not in _instance_names(ctx)):
            return _call_item(ctx, call, name, scope, pos)
        return Item("forward", name, *pos, scope.conds, scope.grad_off)
    return None


def _engine_evaluations(ctx) -> dict[str, str]:
    """Ignite trainers whose epoch-end or completion handlers run `create_supervised_evaluator(model)`:
    that evaluator calls model.eval() in its step, so `trainer.run(...)` leaves model in eval mode.
    trainer name -> model."""
    found = getattr(ctx, "_engine_evaluations", None)
    if found is not None:
        return found
    found = {}
    evaluators = {
        target.id: receiver_of(node.value.args[0])
        for node, _ in ctx.assigns
        if isinstance(node.value, ast.Call) and node.value.args and (ctx.qualname(node.value.func) or "").endswith("create_supervised_evaluator")
        for target in node.targets
        if isinstance(target, ast.Name) and receiver_of(node.value.args[0])
    }
    if evaluators:
        handlers = [
            (call.func.value.id, call.args[0], call.args[1].id)  # trainer.add_event_handler(Events.X, handler)
            for call in (site.node for site in ctx.calls)
            if isinstance(call.func, ast.Attribute) and call.func.attr == "add_event_handler" and isinstance(call.func.value, ast.Name)
            and len(call.args) >= 2 and isinstance(call.args[1], ast.Name)
        ]
        bodies = {}
        for func, _ in ctx.functions:
            bodies[func.name] = func
            for decorator in func.decorator_list:  # @trainer.on(Events.X)
                if isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute) and decorator.func.attr == "on" and (
                    isinstance(decorator.func.value, ast.Name) and decorator.args
                ):
                    handlers.append((decorator.func.value.id, decorator.args[0], func.name))
        for trainer, event, name in handlers:
            if name not in bodies or not (dotted_name(event) or "").endswith(("EPOCH_COMPLETED", ".COMPLETED")):
                continue
            for node in ast.walk(bodies[name]):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run" and (
                    isinstance(node.func.value, ast.Name) and node.func.value.id in evaluators
                ):
                    found[trainer] = evaluators[node.func.value.id]
    ctx._engine_evaluations = found
    return found


def _module_train_signature(call: ast.Call) -> bool:
    """`Module.train(mode=True)` takes one argument: `trainer.train(model, data, epochs=4)` is a
    call into the project (whose own mode switches the index follows), not a mode switch."""
    return len(call.args) + len(call.keywords) <= 1 and all(k.arg == "mode" for k in call.keywords)


def _call_item(ctx, call, ref, scope, pos) -> Item:
    args, constants = [], []
    for i, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred):
            break
        _argument(arg, str(i), args, constants)
    for kw in call.keywords:
        if kw.arg:
            _argument(kw.value, kw.arg, args, constants)
    return Item("call", ref, *pos, scope.conds, scope.grad_off, tuple(args), tuple(constants))


def _argument(node, slot, args, constants) -> None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, str, int, type(None))):
        constants.append((slot, node.value))
        return
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _same_module_call(node):
        node = node.func.value  # model.to(device) passes model; helper(x) passes its result
    root = dotted_name(node)
    if root:
        args.append((slot, root))


def _classify_assign(ctx, node: ast.Assign, scope) -> list[Item]:
    if len(node.targets) != 1:
        return []
    target, value = node.targets[0], node.value
    pairs = [(target, value)]
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
        pairs = list(zip(target.elts, value.elts))  # self.net, self.target = Net(), Net()
    items = []
    for element, assigned in pairs:
        name = dotted_name(element)
        origin = model_value(ctx, assigned) if name else None
        if origin is not None:
            items.append(Item("assign", name, node.lineno, node.col_offset, scope.conds, origin=origin, arguments=constructor_arguments(assigned, origin)))
    return items


def model_value(ctx, value: ast.AST) -> str | None:
    """What an assigned or returned value says about a model's mode: "eval" (`.eval()` chained,
    `from_pretrained`, TorchScript), "alias:<root>" (`model.to(device)`, `DataParallel(model)`),
    "call:<callable>" (a constructor or factory: the index decides; "+weights" when it is given
    pretrained weights), "built:torch.load", else None."""
    if isinstance(value, (ast.Name, ast.Attribute)):
        root = dotted_name(value)
        return f"alias:{root}" if root else None
    if not isinstance(value, ast.Call):
        return None
    node = value
    chained = []
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _same_module_call(node):
        chained.append(node.func.attr)
        node = node.func.value
    if "eval" in chained:
        return "eval"
    if isinstance(node, (ast.Name, ast.Attribute)):
        return f"alias:{dotted_name(node)}" if chained and dotted_name(node) else None
    if not isinstance(node, ast.Call):
        return None
    name = ctx.qualname(node.func) or _picked_by_name(ctx, node.func)
    if not name:
        return None
    if name.startswith("."):
        name = _absolute(ctx.path, name)
    if name.endswith(EVAL_MODE_SOURCES):
        return "eval"
    if name == "torch.load":
        return "built:torch.load"
    last = name.rsplit(".", 1)[-1]
    if (WRAPPER_RE.search(last) or name == "torch.compile") and node.args:
        root = receiver_of(node.args[0])
        return f"alias:{root}" if root else None
    if name == "torch.nn.Sequential":
        shared = _shared_children(node)
        if shared:
            return f"alias:{shared}"
    if name == "copy.deepcopy" and len(node.args) == 1 and receiver_of(node.args[0]):
        return f"call:{name}+of:{receiver_of(node.args[0])}"  # a copy, in the mode of what it copies
    if name.startswith("torch.nn.") and last[:1].isupper():
        if last in CONTAINERS and _builds_mode_layer(ctx, node):
            return f"call:{name}+layers"  # nn.Sequential(nn.Linear(...), nn.Dropout(...))
        return f"call:{name}"  # a layer: mode-dependent or not (see ProjectIndex.origin_mode)
    if name.startswith("torch.") and not name.startswith("torch.hub"):
        return None
    weights = any(
        kw.arg in ("pretrained", "weights", "checkpoint_path") and not (isinstance(kw.value, ast.Constant) and kw.value.value in (False, None))
        for kw in node.keywords
    )
    return f"call:{name}" + ("+weights" if weights else "")


def _picked_by_name(ctx, func: ast.AST) -> str:
    """`models.__dict__[args.arch]` or `getattr(models, name)`: a torchvision/timm model chosen by
    name (a constructor, "pick:" + its text), else ""."""
    if isinstance(func, ast.Subscript) and isinstance(func.value, ast.Attribute) and func.value.attr == "__dict__":
        holder = func.value.value
    elif isinstance(func, ast.Call) and isinstance(func.func, ast.Name) and func.func.id == "getattr" and len(func.args) == 2:
        holder = func.args[0]
    else:
        return ""
    module = ctx.qualname(holder) or ""
    return f"pick:{ast.unparse(func)}" if module.startswith(PICKED_MODEL_MODULES) else ""


def _shared_children(node: ast.Call) -> str | None:
    """The model whose submodules a new container holds, so their modes are its modes:
    `nn.Sequential(*list(net.children())[:-2])`."""
    if len(node.args) != 1 or not isinstance(node.args[0], ast.Starred):
        return None
    for inner in ast.walk(node.args[0]):
        if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) and inner.func.attr == "children" and not inner.args:
            return receiver_of(inner.func.value)
    return None


def _builds_mode_layer(ctx: FileContext, container: ast.Call) -> bool:
    """A container built in place from layers of which one is Dropout or BatchNorm."""
    return any(
        isinstance(node, ast.Call) and MODE_LAYER_RE.search((ctx.qualname(node.func) or "").rsplit(".", 1)[-1])
        for arg in [*container.args, *(k.value for k in container.keywords)]
        for node in ast.walk(arg)
    )


def _same_module_call(call: ast.Call) -> bool:
    """`.to(device)`, `.cuda()`, `.half()`, `.eval()`, `.train()`: the module itself comes back
    (`trainer.train(model, data)` is not `Module.train`)."""
    attr = call.func.attr
    if attr not in SAME_MODULE_METHODS:
        return False
    if attr in ("train", "eval"):
        return len(call.args) <= 1 and not call.keywords and all(isinstance(a, ast.Constant) for a in call.args)
    return True


def _reference(ctx, dotted: str) -> str:
    """A dotted name as the index resolves it: through the file's imports, or "::name" (local)."""
    head, _, rest = dotted.partition(".")
    base = _absolute(ctx.path, ctx.imports[head]) if head in ctx.imports else "::" + head
    return f"{base}.{rest}" if rest else base


def _summarize_class(ctx, cls, sites_by_func, assigns_by_func) -> ClassSummary:
    bases = tuple(_reference(ctx, b) for b in (dotted_name(x) for x in cls.bases) if b)
    methods = tuple(n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    owns = False
    model_attrs = []
    constructs = set()
    for node in cls.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for site in sites_by_func.get(id(node), ()):
            qualname = site.qualname or ""
            name = qualname.rsplit(".", 1)[-1]
            if qualname.startswith("torch.nn."):
                owns = owns or _torch_mode_layer(name, site.node)
            elif not qualname.startswith("torch.") and (
                name[:1].isupper() or OPAQUE_BUILDER_RE.search(name) or MODEL_CONSTRUCTOR_RE.search(name) or qualname.startswith(("torchvision.models.", "timm."))
            ):
                ref = dotted_name(site.node.func)
                if ref and not ref.startswith("self."):
                    constructs.add(_reference(ctx, ref))
        if node.name == "__init__":
            params = set(_params(node))
            for assign, _ in assigns_by_func.get(id(node), ()):
                target = dotted_name(assign.targets[0]) if len(assign.targets) == 1 else None
                if target is None or not target.startswith("self.") or target.count(".") != 1:
                    continue
                origin = model_value(ctx, assign.value)
                if origin and (origin.startswith(("call:", "built", "eval")) or origin.split(":", 1)[-1].split(".")[0] in params):
                    model_attrs.append(target)
                ref = dotted_name(assign.value.func) if isinstance(assign.value, ast.Call) else None
                if ref and not ref.startswith("self.") and not (ctx.qualname(assign.value.func) or "").startswith("torch."):
                    constructs.add(_reference(ctx, ref))  # `self.inc = inconv(3, 64)`: a lower-case project class
    init = next((n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "__init__"), None)
    given = init is not None and _given_layers(init, sites_by_func.get(id(init), ()))
    summary = ClassSummary(cls.name, ctx.path, cls.lineno, bases, methods, owns, tuple(sorted(constructs)), tuple(model_attrs), given)
    if owns or constructs:
        summary.init_signature = init_signature(init) if init is not None else None
        summary.layer_sources = layer_sources(ctx, cls, init, sites_by_func, assigns_by_func)
    return summary


# -- what a class's constructor arguments switch off ------------------------------------------
NOT_CONSTANT = ...  # an argument or default that is no literal
VALUE_TYPES = frozenset(("str", "int", "float", "bool", "dict", "list", "tuple"))  # None is none of them
DROPOUT_P_RE = re.compile(r"^(Dropout\dd|Dropout|AlphaDropout|FeatureAlphaDropout)$")  # first argument: the probability


def literal(node) -> object:
    """A literal's value (floats too: a dropout probability), else NOT_CONSTANT."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        value = literal(node.operand)
        return -value if isinstance(value, (int, float)) and not isinstance(value, bool) else NOT_CONSTANT
    if isinstance(node, ast.Constant) and node.value is not ... and isinstance(node.value, (bool, int, float, str, type(None))):
        return node.value
    return NOT_CONSTANT


def constructor_arguments(value, origin) -> tuple | None:
    """The arguments of the call an assignment or return makes (`Net(4, dropout=0.0).to(dev)`):
    ((slot, literal or NOT_CONSTANT), ...), slot a position ("0") or a keyword, "*"/"**" a splat.
    Kept for class names only (capitalised): for other callees the index asks no such question."""
    if not (origin or "").startswith("call:") or origin.startswith("call:torch.") or not origin.rsplit(".", 1)[-1].removeprefix("call:")[:1].isupper():
        return None
    node = value
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _same_module_call(node):
        node = node.func.value
    if not isinstance(node, ast.Call):
        return None
    found = [("*", NOT_CONSTANT) if isinstance(arg, ast.Starred) else (str(i), literal(arg)) for i, arg in enumerate(node.args)]
    found += [(kw.arg, literal(kw.value)) if kw.arg else ("**", NOT_CONSTANT) for kw in node.keywords]
    return tuple(found)


def init_signature(init) -> tuple:
    """An `__init__`'s (positional parameters, keyword-only ones, their literal defaults
    ((name, value), ...), takes *args, takes **kwargs), without self."""
    args = init.args
    positional = [a.arg for a in [*args.posonlyargs, *args.args]]
    defaults = dict(zip(reversed(positional), (literal(d) for d in reversed(args.defaults))))
    defaults.update((a.arg, literal(d)) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)
    return (tuple(positional[1:]), tuple(a.arg for a in args.kwonlyargs), tuple(defaults.items()), args.vararg is not None, args.kwarg is not None)


def layer_sources(ctx, cls, init, sites_by_func, assigns_by_func) -> tuple:
    """What in the class may hold Dropout/BatchNorm (the calls behind `owns_mode_layers` and
    `constructs`), each with the ways its `__init__`'s arguments switch it off: ((reference,
    gates), ...). A gate: ("p", name): a Dropout of probability `name` (the identity at 0);
    ("spec", name, position): a builder handed `name` as what to build (nothing for None, if the
    builder returns None for None); ("cond", name, value, negate, taken): built only in that branch of
    an `if` on `name`. Only `__init__`'s own calls are gated; functional dropout and code reading
    `self.training` (not in an assert) never are; calls of objects a method is given or iterates
    (`for norm in self.norms: x = norm(x)`) build nothing."""
    params = set(_params(init)) if init is not None else set()
    found: dict = {}
    for node in cls.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        assigns = assigns_by_func.get(id(node), ())
        stable = params if node is init else set()
        held = None
        calls = [(site.node, site.scope.conds, site.qualname or "") for site in sites_by_func.get(id(node), ())]
        if node is init:  # `self.inc = inconv(3, 64)`: a lower-case class of the project
            calls += [(a.value, scope.conds, None) for a, scope in assigns if isinstance(a.value, ast.Call) and len(a.targets) == 1 and (dotted_name(a.targets[0]) or "").startswith("self.")]
        for call, conds, qualname in calls:
            name = (qualname or "").rsplit(".", 1)[-1]
            if (qualname or "").startswith("torch.nn.functional.") and "dropout" in name:
                found.setdefault((qualname, ()), None)  # its probability and flag: not followed
                continue
            if (qualname or "").startswith("torch.nn."):
                if not _torch_mode_layer(name, call):
                    continue
                ref = qualname
            elif (qualname or "").startswith("torch.") or (qualname is not None and not (
                name[:1].isupper() or OPAQUE_BUILDER_RE.search(name) or MODEL_CONSTRUCTOR_RE.search(name) or qualname.startswith(("torchvision.models.", "timm."))
            )):
                continue
            else:
                text = dotted_name(call.func)
                if not text or text.startswith("self.") or (ctx.qualname(call.func) or "").startswith("torch."):
                    continue
                if "." not in text:
                    held = _held_objects(ctx, node) if held is None else held
                    if text in held:
                        continue
                ref = _reference(ctx, text)
            gates = _gates(call, conds, name if ref.startswith("torch.nn.") else None, stable)
            found.setdefault((ref, gates), None)
    if any("self.training" in line and not line.lstrip().startswith("assert") for line in ctx.lines[cls.lineno - 1 : cls.end_lineno]):
        found.setdefault(("self.training", ()), None)  # code that behaves by the mode itself
    if any(gates for _, gates in found):  # a parameter rebound in __init__ no longer holds the caller's value
        rebound = {name for node, _ in assigns_by_func.get(id(init), ()) for name in _bound_names(node.targets)}
        rebound |= _held_objects(ctx, init) - params
        found = {(ref, tuple(g for g in gates if g[1] not in rebound)): None for ref, gates in found}
    return tuple(found)


def _bound_names(targets) -> list[str]:
    """The plain names assignment targets bind (`a, (b, c) = ...`), not attributes or items."""
    names = []
    for target in targets:
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            names += _bound_names(target.elts)
        elif isinstance(target, ast.Starred):
            names += _bound_names([target.value])
    return names


def _held_objects(ctx, func) -> frozenset[str]:
    """Names a function's parameters or `for` loops bind: calling them runs an object, builds none."""
    names = set(_params(func))
    for loop, scope in ctx.loops:
        if scope.func is func and isinstance(loop, (ast.For, ast.AsyncFor)):
            names.update(_bound_names([loop.target]))
    return frozenset(names)


def _gates(call, conds, torch_layer, stable) -> tuple:
    gates = [("cond", simple[0], simple[1], simple[2], taken) for _, taken, simple in conds if simple is not None and simple[0] in stable]
    if torch_layer is not None:
        p = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "p"), None)
        if DROPOUT_P_RE.match(torch_layer) and isinstance(p, ast.Name) and p.id in stable:
            gates.append(("p", p.id))
    else:
        gates += [("spec", a.id, i) for i, a in enumerate(call.args) if isinstance(a, ast.Name) and a.id in stable]
    return tuple(gates)


def none_passthrough(ctx, func, assigns, returns) -> tuple:
    """The positions of a function's parameters for which it returns None when given None: it
    returns the parameter untouched when it is None or not a string (`if not isinstance(query,
    str): return query`) before any other return, or hands it, never reassigned, to its only
    return's call that does. ((position, None, None) | (position, callee reference, its position), ...).
    `assigns` and `returns`: the function's own (ctx.assigns, ctx.returns)."""
    params = _params(func)
    guards = [
        (stmt.lineno, name) for stmt in func.body
        if isinstance(stmt, ast.If) and len(stmt.body) == 1 and isinstance(stmt.body[0], ast.Return)
        for name in [_none_test(stmt.test)] if name in params and _returns_none_or(stmt.body[0].value, name)
    ]
    last = func.body[-1] if func.body else None
    call = last.value if isinstance(last, ast.Return) and isinstance(last.value, ast.Call) and dotted_name(last.value.func) else None
    if not guards and not (call is not None and any(isinstance(a, ast.Name) and a.id in params for a in call.args)):
        return ()
    assigned = {name for node, _ in assigns for name in _bound_names(node.targets)}
    found = []
    for line, name in guards:  # an earlier return may hand back something else
        if name not in assigned and not any(node.lineno < line for node, _ in returns):
            found.append((params.index(name), None, None))
    if call is not None and len(returns) == 1:
        for i, arg in enumerate(call.args):
            if isinstance(arg, ast.Starred):
                break
            if isinstance(arg, ast.Name) and arg.id in params and arg.id not in assigned:
                found.append((params.index(arg.id), _reference(ctx, dotted_name(call.func)), i))
    return tuple(found)


def _returns_none_or(value, name: str) -> bool:
    """`return`, `return None` or `return <name>`."""
    return value is None or (isinstance(value, ast.Constant) and value.value is None) or (isinstance(value, ast.Name) and value.id == name)


def _none_test(test) -> str | None:
    """`p is None`, `not p`, `not isinstance(p, ...)`: true for p None; the name p."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Is) and isinstance(test.left, ast.Name):
        right = test.comparators[0]
        return test.left.id if isinstance(right, ast.Constant) and right.value is None else None
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = test.operand
        if isinstance(inner, ast.Name):
            return inner.id
        if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name) and inner.func.id == "isinstance" and len(inner.args) == 2 and isinstance(inner.args[0], ast.Name):
            kinds = inner.args[1].elts if isinstance(inner.args[1], ast.Tuple) else [inner.args[1]]
            return inner.args[0].id if all(isinstance(k, ast.Name) and k.id in VALUE_TYPES for k in kinds) else None
    return None


def _given_layers(init, sites) -> bool:
    """Whether a module's layers are chosen by whoever builds it: `nn.Sequential(*layers)` (or a
    ModuleList/ModuleDict) of an `__init__` parameter, or a parameter annotated `Type[...]` (a
    module class to instantiate, like a features extractor)."""
    params = set(_params(init))
    for arg in [*init.args.args, *init.args.kwonlyargs]:
        annotation = arg.annotation.value if isinstance(arg.annotation, ast.Subscript) else None
        if dotted_name(annotation) in ("Type", "type", "typing.Type"):
            return True
    for site in sites:
        if (site.qualname or "").rsplit(".", 1)[-1] not in CONTAINERS or not (site.qualname or "").startswith("torch.nn."):
            continue
        for arg in site.node.args:
            value = arg.value if isinstance(arg, ast.Starred) else arg
            if isinstance(value, ast.Name) and value.id in params:
                return True
    return False


def _plain_python_base(text: str) -> bool:
    """A base from Python itself (`typing.NamedTuple`, `Exception`, `enum.Enum`): a class built on
    it holds no layers."""
    return text in BUILTIN_NAMES or text.split(".", 1)[0] in PLAIN_PYTHON_MODULES


def _torch_mode_layer(name: str, call: ast.Call) -> bool:
    if TORCH_MODE_LAYER_RE.match(name):
        return True
    if TORCH_DROPOUT_KW_RE.match(name):
        return any(
            kw.arg in ("dropout", "track_running_stats") and not (isinstance(kw.value, ast.Constant) and not kw.value.value)
            for kw in call.keywords
        )
    return False


# -- the project --------------------------------------------------------------------------
class ProjectIndex:
    """All summaries of a project, joined: imports resolved inside it, `nn.Module` subclasses
    across files, callers of every function, and mode programs with helpers spliced in."""

    def __init__(self, summaries: list[ModuleSummary]):
        self.modules: dict[str, ModuleSummary] = {s.path: s for s in summaries}
        self._by_suffix: dict[str, list[str]] = {}
        for path in self.modules:
            parts = dotted_path(path)
            for i in range(len(parts)):
                self._by_suffix.setdefault(".".join(parts[i:]), []).append(path)
        self._functions: dict[str, FunctionSummary] = {}
        for summary in summaries:
            for fs in summary.functions.values():
                self._functions[fs.key] = fs
            if summary.module_level is not None:
                self._functions[summary.module_level.key] = summary.module_level
        self._module_classes: dict[tuple[str, str], bool] = {}
        self._callers: dict[str, list[tuple[FunctionSummary, Item]]] | None = None
        self._events: dict[tuple, list[Event]] = {}
        self._active: set[tuple] = set()
        self._saved = None
        self._neighbours: dict[str, set[str]] | None = None
        self._subclasses: dict[tuple[str, str], list[ClassSummary]] | None = None
        self._attribute_classes: dict[tuple, ClassSummary | None] = {}
        self._root: str | None = None  # the folder holding every file of the project
        self.frozen = frozenset().union(*(s.frozen for s in summaries))
        self.trained = frozenset().union(*(s.parameter_owners for s in summaries)) | frozenset(
            item.receiver.rsplit(".", 1)[-1] for fs in self._functions.values() for item in fs.items if item.kind == "train" and item.receiver
        )
        self.evaluated = self._evaluated_names()

    # -- names --------------------------------------------------------------------------
    def resolve(self, path: str, ref: str, depth: int = 0):
        """A reference seen in `path` -> ("function", FunctionSummary) | ("class", ClassSummary)
        | ("module", ModuleSummary) | None (outside the project)."""
        module = self.modules.get(path)
        if module is None or depth > 4 or not ref:
            return None
        if ref.startswith("::"):
            name = ref[2:]
            head, _, rest = name.partition(".")
            return self._member(module, head, rest, depth)
        head, _, rest = ref.partition(".")
        if head in module.functions or head in module.classes:
            return self._member(module, head, rest, depth)
        if head in module.imports:
            target = module.imports[head] + ("." + rest if rest else "")
            return self._resolve_absolute(path, target, depth + 1)
        return self._resolve_absolute(path, ref, depth + 1) if rest else None

    def resolve_import(self, path: str, target: str):
        return self._resolve_absolute(path, target, 1)

    def neighbours(self, path: str) -> set[str]:
        """The files `path` imports from the project and the files that import it."""
        if self._neighbours is None:
            edges: dict[str, set[str]] = {p: set() for p in self.modules}
            for importer, module in self.modules.items():
                for target in module.imports.values():
                    found = self.resolve_import(importer, target)
                    other = found[1].path if found is not None else None
                    if other in edges and other != importer:
                        edges[importer].add(other)
                        edges[other].add(importer)
            self._neighbours = edges
        return self._neighbours.get(path, set())

    def frozen_near(self, path: str) -> frozenset[str]:
        """Names frozen (requires_grad False) in `path` or a file it shares imports with: a local
        variable frozen in an unrelated script of the project is another model."""
        return frozenset().union(*(self.modules[p].frozen for p in {path, *self.neighbours(path)} if p in self.modules))

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(
            _callers=None, _events={}, _active=set(), _module_classes={}, _saved=None, _neighbours=None, _subclasses=None,
            _attribute_classes={},
        )
        return state

    def _member(self, module: ModuleSummary, head: str, rest: str, depth: int):
        if not rest:
            if head in module.functions:
                return ("function", module.functions[head])
            if head in module.classes:
                return ("class", module.classes[head])
            if head in module.imports:
                return self._resolve_absolute(module.path, module.imports[head], depth + 1)
            for name, target in module.imports.items():  # `from .parts import *`
                if name.startswith("*") and target.endswith(".*"):
                    found = self._resolve_absolute(module.path, f"{target[:-2]}.{head}", depth + 1)
                    if found is not None and found[0] != "module":
                        return found
            return None
        if head in module.classes:
            return self.method(module.classes[head], rest.split(".")[0], depth)
        if head in module.imports:  # `Model.from_config` through a package's re-export
            return self._resolve_absolute(module.path, f"{module.imports[head]}.{rest}", depth + 1)
        return None

    def _resolve_absolute(self, importer: str, target: str, depth: int):
        if depth > 6:
            return None  # re-export cycles
        parts = target.split(".")
        for i in range(len(parts), 0, -1):
            candidates = self._by_suffix.get(".".join(parts[:i]))
            if not candidates:
                continue
            path = candidates[0] if len(candidates) == 1 else _nearest(importer, candidates)
            rest = parts[i:]
            if not rest:
                return ("module", self.modules[path])
            return self._member(self.modules[path], rest[0], ".".join(rest[1:]), depth + 1)
        return None

    def method(self, cls: ClassSummary, name: str, depth: int = 0):
        """A method of a project class, looked up through its project bases."""
        seen = set()
        todo = [cls]
        while todo:
            current = todo.pop(0)
            if id(current) in seen or len(seen) > 20:
                continue
            seen.add(id(current))
            fs = self.modules[current.path].functions.get(f"{current.name}.{name}")
            if fs is not None:
                return ("function", fs)
            for base in current.bases:
                found = self.resolve(current.path, base, depth + 1)
                if found and found[0] == "class":
                    todo.append(found[1])
        return None

    def is_module_class(self, cls: ClassSummary, depth: int = 0) -> bool:
        key = (cls.path, cls.name)
        if key in self._module_classes:
            return self._module_classes[key]
        self._module_classes[key] = False  # cycles
        result = False
        for base in cls.bases:
            text = base.lstrip(":")
            if FOREIGN_FRAMEWORK_RE.match(text):
                continue  # megengine's, paddle's Module
            if MODULE_BASE_RE.search(text) or text.startswith(("torch.nn.", "nn.")):
                result = True
                break
            found = self.resolve(cls.path, base) if depth < 10 else None
            if found and found[0] == "class" and self.is_module_class(found[1], depth + 1):
                result = True
                break
        self._module_classes[key] = result
        return result

    def has_mode_layers(self, cls: ClassSummary, depth: int = 0) -> bool:
        """Whether a project class may hold Dropout/BatchNorm: its own, in a project class it
        builds or inherits from, or in anything it builds that the index cannot see into and
        whose name says it may (a `*Net`, `make_layers`, `build_backbone`)."""
        key = ("layers", cls.path, cls.name)
        if key in self._module_classes:
            return self._module_classes[key]
        self._module_classes[key] = False  # cycles
        result = cls.owns_mode_layers or depth > 8
        for ref in () if result else (*cls.constructs, *cls.bases):
            result = self._may_build(cls, ref, depth)
            if result:
                break
        self._module_classes[key] = result
        return result

    def _may_build(self, cls: ClassSummary, ref: str, depth: int = 0) -> bool:
        """Whether what `cls` builds or inherits from by `ref` may hold Dropout/BatchNorm."""
        text = ref.lstrip(":")
        if text.startswith(("torch.nn.", "nn.")) or text in ("object", "ABC", "abc.ABC"):
            return False
        found = self.resolve(cls.path, ref)
        if found is not None and found[0] == "class":
            return self.has_mode_layers(found[1], depth + 1)
        if found is not None and found[0] == "function":
            return _may_build_mode_layers(found[1])
        last = text.rsplit(".", 1)[-1]
        result = text.startswith(("torchvision.models.", "timm.")) or bool(MODE_LAYER_RE.search(last) or MODEL_CONSTRUCTOR_RE.search(last) or OPAQUE_BUILDER_RE.search(last))
        return result or (ref in cls.bases and not MODULE_BASE_RE.search(text) and not _plain_python_base(text))

    def switched_off_layers(self, fs: FunctionSummary, cls: ClassSummary, event) -> str | None:
        """Why the `cls` that the call at `event` in `fs` builds holds no Dropout/BatchNorm although
        the class may: each one it may hold is switched off by the literal arguments of that call or
        the defaults it leaves (`GCN(in, hidden, layers, out)`: `dropout=0.0` is the identity,
        `norm=None` builds no norm), e.g. "dropout=0.0, norm=None". None where that cannot be shown:
        a splat or a non-literal value reaching a switch or `**kwargs`, a layer source its
        `__init__`'s parameters do not switch, a base outside the project."""
        if getattr(event, "via", None) is not None:
            return None
        arguments = next((i.arguments for i in fs.items if i.kind in ("assign", "return") and (i.line, i.col) == (event.line, event.col)), None)
        lineage = self.lineage(cls)
        owner = next((c for c in lineage if "__init__" in c.methods), None)
        if arguments is None or owner is None or owner.init_signature is None or any(c.given_layers for c in lineage):
            return None
        values = _bound_arguments(owner.init_signature, arguments)
        if values is None:
            return None
        used: dict[str, object] = {}
        for member in lineage:
            for base in member.bases:
                found = self.resolve(member.path, base)
                if not (found and found[0] == "class") and self._may_build(member, base):
                    return None
            for ref, gates in member.layer_sources:
                off = self._switch_off(member, ref, gates, values) if member is owner else None
                if off is not None:
                    used[off] = values[off]
                elif ref.startswith(("torch.nn.", "self.")) or self._may_build(member, ref):
                    return None
        return ", ".join(f"{name}={value!r}" for name, value in used.items()) or None

    def _switch_off(self, cls: ClassSummary, ref: str, gates: tuple, values: dict) -> str | None:
        """The `__init__` parameter whose value switches the layer source off (see `layer_sources`)."""
        for gate in gates:
            name = gate[1]
            value = values.get(name, NOT_CONSTANT)
            if value is NOT_CONSTANT:
                continue
            if gate[0] == "p" and isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
                return name
            if gate[0] == "cond" and condition_holds((None, gate[4], gate[1:4]), {name: value}) is False:
                return name
            if gate[0] == "spec" and value is None and self._returns_none(cls.path, ref, gate[2]):
                return name
        return None

    def _returns_none(self, path: str, ref: str, position: int, depth: int = 0) -> bool:
        """The project function `ref` returns None when its argument at `position` is None."""
        found = self.resolve(path, ref) if depth < 4 else None
        if found is None or found[0] != "function":
            return False
        fs = found[1]
        return any(
            at == position and (callee is None or self._returns_none(fs.path, callee, callee_position, depth + 1))
            for at, callee, callee_position in fs.none_passthrough
        )

    def module_class_names(self, path: str) -> set[str]:
        """Names usable in `path` that are project nn.Module subclasses (defined or imported)."""
        module = self.modules.get(path)
        if module is None:
            return set()
        names = {name for name, cls in module.classes.items() if self.is_module_class(cls)}
        for name, target in module.imports.items():
            if name[:1].isupper():
                found = self._resolve_absolute(path, target, 1)
                if found and found[0] == "class" and self.is_module_class(found[1]):
                    names.add(name)
        return names

    def lineage(self, cls: ClassSummary) -> list[ClassSummary]:
        """The class and its project bases, nearest first (the order `method` searches)."""
        found, todo = [], [cls]
        while todo and len(found) < 20:
            current = todo.pop(0)
            if any(c is current for c in found):
                continue
            found.append(current)
            for base in current.bases:
                resolved = self.resolve(current.path, base)
                if resolved and resolved[0] == "class":
                    todo.append(resolved[1])
        return found

    def test_code(self, path: str) -> bool:
        """A pytest file or a file under a tests folder, by its path inside the project (a project
        that itself lives under a folder named `test` is not all test code)."""
        if self._root is None:
            try:
                self._root = os.path.commonpath([os.path.dirname(p) for p in self.modules]) if self.modules else ""
            except ValueError:  # relative and absolute paths mixed
                self._root = ""
        return pytest_file(os.path.relpath(path, self._root) if self._root else path)

    def _test_caller(self, fs: FunctionSummary, caller: FunctionSummary) -> bool:
        """A caller in test code, of a function outside it: a unit test hands in a random model built
        to check shapes, in whatever mode; not evidence of how the project runs the function."""
        return self.test_code(caller.path) and not self.test_code(fs.path)

    def _random_test_model(self, fs: FunctionSummary, origin: str) -> bool:
        """A model built in test code without pretrained weights: random, built to check shapes or to
        time a loop; its outputs are no predictions, in either mode."""
        return not origin.endswith("+weights") and self.test_code(fs.path)

    def external_base(self, cls: ClassSummary) -> str | None:
        """A base of `cls` or of its project bases that is neither a project class nor one whose
        methods are known (object, ABC, torch.nn.Module, LightningModule...): its inherited methods
        may switch the mode (skorch's `NeuralNet` calls `_set_training(False)` in `predict`)."""
        for member in self.lineage(cls):
            for base in member.bases:
                text = base.lstrip(":")
                if _known_base(text):
                    continue
                found = self.resolve(member.path, base)
                if not (found and found[0] == "class"):
                    return text
        return None

    def subclasses(self, cls: ClassSummary) -> list[ClassSummary]:
        """Project classes that inherit from `cls`, directly or not."""
        if self._subclasses is None:
            self._subclasses = {}
            for module in self.modules.values():
                for other in module.classes.values():
                    for base in self.lineage(other)[1:]:
                        self._subclasses.setdefault((base.path, base.name), []).append(other)
        return self._subclasses.get((cls.path, cls.name), [])

    def function(self, key: str) -> FunctionSummary | None:
        return self._functions.get(key)

    def callee(self, caller: FunctionSummary, item: Item) -> FunctionSummary | None:
        ref = item.receiver or ""
        if ref.startswith("self:"):
            if caller.cls is None:
                return None
            cls = self.modules[caller.path].classes.get(caller.cls)
            found = self.method(cls, ref[5:]) if cls is not None else None
        elif ref.startswith("obj:"):
            holder, _, name = ref[4:].rpartition(".")
            cls = self._class_of(caller, holder, item.line)
            found = self.method(cls, name) if cls is not None else None
        else:
            found = self.resolve(caller.path, ref)
            if found and found[0] == "class":
                found = self.method(found[1], "__init__")
        return found[1] if found and found[0] == "function" else None

    def _is_method(self, fs: FunctionSummary, name: str) -> bool:
        cls = self.modules[fs.path].classes.get(fs.cls) if fs.cls else None
        return cls is not None and (name in cls.methods or name.startswith("_") or not name.islower())

    def _class_of(self, fs: FunctionSummary, holder: str, line: int) -> ClassSummary | None:
        """The project class of a local (`ev = Evaluator(model)`) at `line` of `fs`."""
        for item in reversed(fs.items):
            if item.kind == "assign" and item.receiver == holder and item.line <= line and (item.origin or "").startswith("call:"):
                found = self.resolve(fs.path, item.origin[5:])
                return found[1] if found and found[0] == "class" else None
        return self._attribute_class(fs, holder) if holder.startswith("self.") and holder.count(".") == 1 else None

    def attribute_assignment(self, fs: FunctionSummary, holder: str) -> tuple[FunctionSummary, Item] | None:
        """Where a method of `fs`'s class (or of a project base) binds `self.<attr>` to a built
        value (`self.model = Net(...)` in `__init__`): the one binding, None if several or none."""
        found = [
            (method, item) for method in self.class_methods(fs) for item in method.items
            if item.kind == "assign" and item.receiver == holder
        ]
        return found[0] if len(found) == 1 else None

    def _attribute_class(self, fs: FunctionSummary, holder: str) -> ClassSummary | None:
        """The project class of `self.<attr>`, bound to one construction in the class."""
        key = (fs.path, fs.cls, holder)
        if key not in self._attribute_classes:
            bound = self.attribute_assignment(fs, holder)
            found = None
            if bound is not None and (bound[1].origin or "").startswith("call:"):
                found = self.resolve(bound[0].path, bound[1].origin[5:])
            self._attribute_classes[key] = found[1] if found and found[0] == "class" else None
        return self._attribute_classes[key]

    def class_methods(self, fs: FunctionSummary) -> list[FunctionSummary]:
        """The methods of `fs`'s class and of its project bases."""
        cls = self.modules[fs.path].classes.get(fs.cls) if fs.cls else None
        chain: list[ClassSummary] = []
        while cls is not None and all(c is not cls for c in chain) and len(chain) < 10:
            chain.append(cls)
            bases = [self.resolve(cls.path, b) for b in cls.bases]
            cls = next((found[1] for found in bases if found and found[0] == "class"), None)
        functions = (self.modules[c.path].functions.get(f"{c.name}.{name}") for c in chain for name in c.methods)
        return [f for f in functions if f is not None]

    def constructed_class(self, caller: FunctionSummary, item: Item) -> ClassSummary | None:
        if item.kind != "call" or (item.receiver or "").startswith(("self:", "obj:")):
            return None
        found = self.resolve(caller.path, item.receiver)
        return found[1] if found and found[0] == "class" else None

    def callers(self, fs: FunctionSummary) -> list[tuple[FunctionSummary, Item]]:
        """Every call in the project that reaches `fs` (constructor calls reach __init__)."""
        if self._callers is None:
            self._callers = {}
            for caller in self._functions.values():
                for item in caller.items:
                    if item.kind != "call":
                        continue
                    target = self.callee(caller, item)
                    if target is not None and target is not caller:
                        self._callers.setdefault(target.key, []).append((caller, item))
        return self._callers.get(fs.key, [])

    def class_constructions(self, cls: ClassSummary) -> list[tuple[FunctionSummary, Item]]:
        found = []
        for caller in self._functions.values():
            for item in caller.items:
                if item.kind == "call" and item.receiver and item.receiver.split(".")[-1] == cls.name:
                    if self.constructed_class(caller, item) is cls:
                        found.append((caller, item))
        return found

    def is_grad_off_decorator(self, fs: FunctionSummary) -> bool:
        for ref in fs.decorators:
            if GRAD_OFF_NAME_RE.search(ref) or ref in GRAD_OFF:
                return True
            found = self.resolve(fs.path, ref)
            if found and found[0] == "function" and found[1].wraps_grad_off:
                return True
        return False

    def _evaluated_names(self) -> frozenset[str]:
        names = set()
        for fs in self._functions.values():
            for item in fs.items:
                if item.kind == "eval" and item.receiver:
                    names.add(item.receiver.rsplit(".", 1)[-1])
                elif item.kind == "call" and (item.receiver or "").endswith("evaluating"):
                    names.update(root.rsplit(".", 1)[-1] for _, root in item.args[:1])
                elif item.kind == "assign" and item.origin == "eval":
                    names.add(item.receiver.rsplit(".", 1)[-1])
        return frozenset(names)

    # -- mode programs --------------------------------------------------------------------
    def events(self, fs: FunctionSummary, constants: tuple = ()) -> list[Event]:
        """`fs`'s program with called project functions' programs spliced in at the call,
        their parameters replaced by the caller's arguments; branches that the constant
        arguments rule out are dropped."""
        key = (fs.key, constants)
        if key in self._events:
            return self._events[key]
        if key in self._active:
            return []  # recursion
        if len(self._events) > MEMO_LIMIT:
            self._events = {}  # replayed again on demand: memory stays bounded on huge trees
        self._active.add(key)
        known = dict(constants)
        out: list[Event] = []
        off = fs.grad_off or (bool(fs.decorators) and self.is_grad_off_decorator(fs))
        for item in fs.items:
            if known and any(condition_holds(c, known) is False for c in item.conds):
                continue
            if item.kind != "call":
                out.append(Event(item.kind, item.receiver, item.line, item.col, item.conds, item.grad_off or off, origin=item.origin))
                continue
            target = self.callee(fs, item)
            if target is None:
                ref = item.receiver or ""
                if ref.startswith("self:") and not self._is_method(fs, ref[5:]):
                    out.append(Event("forward", "self." + ref[5:], item.line, item.col, item.conds, item.grad_off or off))
                else:
                    out.append(Event("call", ref, item.line, item.col, item.conds, item.grad_off or off, args=tuple(r for _, r in item.args)))
                continue
            mapping = _argument_map(target, item)
            if (item.receiver or "").startswith("obj:"):
                mapping["self"] = item.receiver[4:].rsplit(".", 1)[0]
            passed = tuple(sorted({
                (target.params[int(slot)] if slot.isdigit() and int(slot) < len(target.params) else slot): value
                for slot, value in item.constants
                if not slot.isdigit() or int(slot) < len(target.params)
            }.items(), key=lambda pair: pair[0]))
            grad_off = item.grad_off or off
            for sub in self._exported(target, passed):
                receiver = _substitute(sub.receiver, mapping, target) if sub.kind in ("eval", "train", "forward") else None
                if sub.receiver is not None and receiver is None and sub.kind in ("eval", "train", "forward"):
                    continue  # a model local to the helper, or a parameter given no model
                args = tuple(a for a in (_substitute(r, mapping, target) for r in sub.args) if a)
                if sub.kind == "call" and not args:
                    continue
                out.append(Event(
                    sub.kind, receiver, item.line, item.col, item.conds + sub.conds, sub.grad_off or grad_off,
                    sub.via or target.name, sub.origin, sub.detail, args,
                ))
        self._active.discard(key)
        self._events[key] = out
        return out

    def _exported(self, fs: FunctionSummary, constants: tuple) -> list[Event]:
        """What a helper shows its callers: mode switches, backward, steps and forwards of its
        parameters and `self` (each once), in order, with its own branch tests made private."""
        key = ("exported", fs.key, constants)
        if key in self._events:
            return self._events[key]
        if (fs.key, constants) in self._active:
            return []  # recursion
        seen = set()
        out = []
        where = short_path(fs.path)
        private: dict[tuple, tuple] = {}
        params = fs.params
        for event in self.events(fs, constants):
            kind = event.kind
            if kind in ("assign", "load", "return"):
                continue
            if kind in ("eval", "train", "forward"):
                head = event.receiver.split(".", 1)[0]
                if head not in params and head != "self" and (head in fs.local_names or (kind == "forward" and not MODEL_NAME_RE.search(head))):
                    continue  # a model of its own, or a global function
            args = tuple(a for a in event.args if a.split(".", 1)[0] in params or a.startswith("self.")) if event.args else ()
            if kind == "call" and not args:
                continue
            signature = (kind, event.receiver, event.grad_off, tuple(c for c in event.conds if not c[0].startswith("\0")), args)
            if kind in ("eval", "train"):
                if out and out[-1][0] == signature:
                    continue
            elif signature in seen:
                continue
            seen.add(signature)
            conds = event.conds
            if conds:
                # the helper's own branch tests, made private to it; its callees' stay inside them
                if conds not in private:
                    private[conds] = tuple((f"\0{fs.key}:{k}", b, None) for k, b, _ in conds if not k.startswith("\0"))
                conds = private[conds]
            out.append((signature, Event(
                kind, event.receiver, event.line, event.col, conds, event.grad_off,
                event.via, event.origin, event.detail or f"{where}:{event.line}", args,
            )))
        result = [e for _, e in out]
        self._events[key] = result
        return result

    def mode_at(self, fs: FunctionSummary, receiver: str, line: int, col: int, conds: tuple = (), depth: int = 0):
        """The mode `receiver` is in at (line, col) of `fs`, with the evidence on that path:
        ("eval" | "train" | None, why). The last mode switch wins; a call outside the project
        that is handed the model may switch it (None); a parameter or `self` attribute is
        followed into the callers."""
        if depth > 4:
            return None, ""
        events = [e for e in self.events(fs) if (e.line, e.col) < (line, col) and compatible(e.conds, conds)]
        trained = None
        forwarded = False  # run with autograd on before a backward(): the model being trained
        for event in reversed(events):
            if event.kind == "forward" and trained and not event.grad_off and event.receiver and related(event.receiver, receiver):
                last = receiver.rsplit(".", 1)[-1]
                forwarded = forwarded or last in self.trained or MODEL_NAME_RE.search(last) is not None
            where = f"{short_path(fs.path)}:{event.line}"
            if event.kind == "call":
                if any(related(arg, receiver) for arg in event.args) and not _neutral(event.receiver) and not _builds(events, event, receiver):
                    return None, f"{event.receiver}() at {where} may switch it"
                continue
            if event.kind == "backward" and trained is None and not event.grad_off:
                trained = f"after training (backward() at {where})"
                continue
            if event.receiver is None or not related(event.receiver, receiver):
                continue
            if event.kind == "eval":
                return "eval", where
            if event.kind == "train" and event.origin != "variable":
                layerless = self._layerless_origin(fs, events, event, receiver, depth)
                if layerless:
                    return None, layerless  # training mode, but nothing in the model depends on it
                how = f"{event.via}() leaves it in training mode" if event.via else f"{event.receiver}.train()"
                return "train", trained or f"{how} at {where}"
            if event.kind == "assign" and event.receiver == receiver:
                switched = self._switched_since(fs, event, line, col, conds)
                if switched is not None:
                    return switched
                mode, why = self.origin_mode(fs, event.origin or "", where, event, depth)
                return mode, (trained if mode == "train" and trained else why)
        head, _, rest = receiver.partition(".")
        if head not in fs.params and head != "self":
            if forwarded:
                return "train", trained
            return self.instance_mode(fs, receiver, line, col, conds, depth) or self.global_mode(fs, receiver, line, depth)
        found = None
        passed = False  # some caller in the project hands the model in
        for caller, item in self.callers(fs)[:MAX_CALLERS]:
            argument = _argument_for(fs, item, head)
            if argument is None or (not forwarded and self._training_call(caller, item)) or self._test_caller(fs, caller):
                continue
            passed = True
            argument = argument + ("." + rest if rest else "")
            mode, why = self.mode_at(caller, argument, item.line, item.col, item.conds, depth + 1)
            if forwarded and mode is None and why.endswith(NO_MODE_LAYERS):
                return None, why  # trained here, but the model has no Dropout/BatchNorm
            if mode == "train" and found is None:
                found = ("train", f"{fs.name}() is called from {short_path(caller.path)}:{item.line} with {argument} in training mode: {why}")
        if forwarded and (passed or head == "self"):
            return "train", trained
        return found or (None, "")

    def viewed_argument(self, caller: FunctionSummary, helper: FunctionSummary, assign) -> str | None:
        """The caller's argument whose modules `helper` returns (`dnn_truncate(net, ...)` returning
        `nn.Sequential(*list(net.children())[:k])` or `copy.deepcopy(net)`), so that the result has its
        mode; None when any return may be a model of the helper's own."""
        param = self.returned_parameter(helper)
        if param is None:
            return None
        for item in caller.items:
            if item.kind == "call" and item.line == assign.line and self.callee(caller, item) is helper:
                return _argument_for(helper, item, param)
        return None

    def returned_parameter(self, helper: FunctionSummary) -> str | None:
        """The one parameter whose modules every return of `helper` hands back: the parameter
        itself, `nn.Sequential` over its children, a deepcopy of it, or a container of such parts."""
        returns = [i for i in helper.items if i.kind == "return"]
        if not returns:
            return None
        found = set()
        for item in returns:
            origin = item.origin or ""
            if not origin.startswith("alias:"):
                return None
            name = origin[6:].split(".")[0]
            sources = [name] if name in helper.params else [
                self._view_source(helper, assign) for assign in helper.items if assign.kind == "assign" and assign.receiver == name
            ]
            if not sources:
                return None
            for source in sources:
                if source is None:
                    return None
                found.add(source)
        found.discard("")
        return found.pop() if len(found) == 1 else None

    @staticmethod
    def _view_source(helper: FunctionSummary, assign: Item) -> str | None:
        """The parameter an assignment in `helper` takes modules from; "" for a container of modules
        built elsewhere (nn.Sequential without layers of its own); None for anything else."""
        origin = assign.origin or ""
        if origin.startswith("alias:"):
            root = origin[6:].split(".")[0]
            return root if root in helper.params else None
        if origin == "call:torch.nn.Sequential":
            return ""
        if origin.startswith("call:copy.deepcopy+of:"):
            root = origin.rsplit(":", 1)[-1].split(".")[0]
            return root if root in helper.params else None
        return None

    def instance_mode(self, fs: FunctionSummary, receiver: str, line: int, col: int, conds: tuple, depth: int):
        """The mode of `loader.model` where `loader = NetLoader(...)` (a project class) is built in
        `fs`: what `__init__` leaves `self.model` in, when no method of the class switches it."""
        head, _, attr = receiver.partition(".")
        if not attr or "." in attr:
            return None
        found = self.instance_class(fs, head, line, col, conds)
        if found is None:
            return None
        cls, where = found
        init = self.method(cls, "__init__")
        if init is None or any(
            item.kind in ("eval", "train") and item.receiver and related(item.receiver, f"self.{attr}")
            for name in cls.methods for method in [self.modules[cls.path].functions.get(f"{cls.name}.{name}")] if method is not None
            for item in method.items
        ):
            return None
        mode, why = self.mode_at(init[1], f"self.{attr}", 1 << 30, 0, (), depth + 1)
        if mode != "train":
            return None
        return "train", f"{cls.name}() built at {where} holds {attr} ({why}) and no method of {cls.name} switches it"

    def instance_class(self, fs: FunctionSummary, name: str, line: int, col: int, conds: tuple):
        """(project class, where) of the instance last assigned to `name` before (line, col) in `fs`."""
        for item in reversed(fs.items):
            if (item.line, item.col) >= (line, col) or item.kind != "assign" or item.receiver != name or not compatible(item.conds, conds):
                continue
            origin = item.origin or ""
            found = self.resolve(fs.path, origin[5:]) if origin.startswith("call:") else None
            return (found[1], f"{short_path(fs.path)}:{item.line}") if found is not None and found[0] == "class" else None
        return None

    def weights_source(self, fs: FunctionSummary, receiver: str, line: int, col: int, conds: tuple = (), depth: int = 0) -> str | None:
        """Where the model `receiver` at (line, col) of `fs` got trained weights, following the same
        links as `mode_at`: load_state_dict, torch.load, a pretrained constructor, an alias, a helper
        that returns modules of its argument, a project class instance whose method loads them."""
        if depth > 4:
            return None
        for event in reversed(self.events(fs)):
            if (event.line, event.col) >= (line, col) or not compatible(event.conds, conds):
                continue
            where = f"{short_path(fs.path)}:{event.line}"
            if event.kind == "load" and event.via is None and event.receiver == receiver:
                return where
            if event.kind != "assign" or event.receiver != receiver:
                continue
            origin = event.origin or ""
            if origin.endswith("+weights") or origin == "built:torch.load":
                return where
            if origin.startswith("alias:"):
                return self.weights_source(fs, origin[6:], event.line, event.col, event.conds, depth + 1)
            found = self.resolve(fs.path, origin[5:]) if origin.startswith("call:") else None
            if found is not None and found[0] == "function":
                argument = self.viewed_argument(fs, found[1], event)
                return self.weights_source(fs, argument, event.line, event.col, event.conds, depth + 1) if argument else None
            return None
        head, _, attr = receiver.partition(".")
        found = self.instance_class(fs, head, line, col, conds) if attr and "." not in attr else None
        if found is not None:
            cls = found[0]
            for name in cls.methods:
                method = self.modules[cls.path].functions.get(f"{cls.name}.{name}")
                for item in method.items if method is not None else ():
                    if item.receiver == f"self.{attr}" and (item.kind == "load" or (item.kind == "assign" and (item.origin or "").endswith("+weights"))):
                        return f"{short_path(method.path)}:{item.line}"
        return None

    def _switched_since(self, fs: FunctionSummary, assign: Event, line: int, col: int, conds: tuple):
        """An alias shares its source's modules (`m = DataParallel(net)`, `nn.Sequential(*net.children())`):
        `net.eval()` after the alias and before (line, col) switches it too."""
        origin = assign.origin or ""
        if not origin.startswith("alias:"):
            return None
        source = origin[6:]
        for event in reversed(self.events(fs)):
            if (event.line, event.col) >= (line, col) or not compatible(event.conds, conds):
                continue
            if (event.line, event.col) <= (assign.line, assign.col):
                return None
            if event.kind in ("eval", "train") and event.origin != "variable" and event.receiver and related(event.receiver, source):
                where = f"{short_path(fs.path)}:{event.line}"
                return ("eval", where) if event.kind == "eval" else ("train", f"{event.receiver}.train() at {where}")
        return None

    def global_mode(self, fs: FunctionSummary, receiver: str, line: int, depth: int):
        """The mode of a module-level model that a function uses (`fea_net(frame)` in a helper):
        its mode where the file's own top-level code calls (through its helpers) that function."""
        head = receiver.split(".", 1)[0]
        module = self.modules.get(fs.path)
        top = module.module_level if module is not None else None
        if top is None or fs is top or head in fs.local_names or not any(i.kind == "assign" and i.receiver == head for i in top.items):
            return None, ""
        events = self.events(top)
        if any(e.kind == "backward" and not e.grad_off for e in events):
            return None, ""  # a training script: helpers it calls from its loop are bookkeeping (GAN samples)
        call = self._top_level_call(fs, top)
        if call is None:
            return None, ""  # the file's top-level code never runs it
        if any(
            (e.line, e.col) == (call.line, call.col)
            and ((e.kind in ("eval", "train") and related(e.receiver, receiver)) or (e.kind == "call" and any(related(a, receiver) for a in e.args)))
            for e in events
        ):
            return None, ""  # that top-level call switches it (or hands it away) on its way
        mode, why = self.mode_at(top, receiver, call.line, call.col, call.conds, depth + 1)
        if mode != "train":
            return mode, why
        return "train", f"{fs.name}() runs the module-level {head}, called from {short_path(top.path)}:{call.line}: {why}"

    def _top_level_call(self, fs: FunctionSummary, top: FunctionSummary) -> Item | None:
        """The call in the file's top-level code from which `fs` is reached (callers of callers)."""
        frontier, seen = [fs], {fs.key}
        for _ in range(4):
            following = []
            for function in frontier:
                for caller, item in self.callers(function)[:MAX_CALLERS]:
                    if caller is top:
                        return item
                    if caller.key not in seen:
                        seen.add(caller.key)
                        following.append(caller)
            frontier = following
        return None

    def restored_globals(self, path: str) -> frozenset[str]:
        """Module-level models of `path` given weights at the top level (load_state_dict,
        torch.load, a pretrained constructor), with their aliases (`fea_net = nn.Sequential(*net.children())`)."""
        module = self.modules.get(path)
        top = module.module_level if module is not None else None
        found: set[str] = set()
        for item in top.items if top is not None else ():
            origin = item.origin or ""
            if item.kind == "load" and item.receiver and "." not in item.receiver:
                found.add(item.receiver)
            elif item.kind == "assign" and "." not in item.receiver and (
                origin.endswith("+weights") or origin == "built:torch.load" or (origin.startswith("alias:") and origin[6:].split(".")[0] in found)
            ):
                found.add(item.receiver)
        return frozenset(found)

    def _layerless_origin(self, fs: FunctionSummary, events: list[Event], switch: Event, receiver: str, depth: int) -> str | None:
        """Why the model switched by `switch` has no Dropout/BatchNorm, when its construction
        earlier in `fs` shows it (`net = BiRNN(...)`, then a helper's train())."""
        for event in reversed(events):
            if (event.line, event.col) >= (switch.line, switch.col) or event.kind != "assign" or event.receiver != receiver:
                continue
            if not compatible(event.conds, switch.conds):
                continue
            origin = event.origin or ""
            mode, why = self.origin_mode(fs, origin, f"{short_path(fs.path)}:{event.line}", event, depth + 1)
            return why if mode is None and why.endswith(NO_MODE_LAYERS) and not self._holds_passed_modules(fs, origin) else None
        return self._layerless_arguments(fs, receiver, depth)

    def _layerless_arguments(self, fs: FunctionSummary, receiver: str, depth: int) -> str | None:
        """Why the model that every caller hands in as parameter `receiver` has no Dropout/BatchNorm
        (`train_model(model, ...)` after `model = SimpleClassifier()`, a class of Linear layers):
        each caller's argument must be shown layerless where it is built; one unknown is enough
        to say nothing."""
        if receiver not in fs.params or depth > 4:
            return None
        first = None
        for caller, item in self.callers(fs)[:MAX_CALLERS]:
            if self._test_caller(fs, caller):
                continue
            argument = _argument_for(fs, item, receiver)
            if argument is None or "." in argument:
                return None
            switch = Event("call", None, item.line, item.col, item.conds)
            why = self._layerless_origin(caller, self.events(caller), switch, argument, depth + 1)
            if why is None:
                return None
            first = first or why
        return first

    def _holds_passed_modules(self, fs: FunctionSummary, origin: str) -> bool:
        """A project class built with its submodules passed in (`Seq2seq(encoder, decoder)`): its
        own layers say nothing about theirs."""
        found = self.resolve(fs.path, origin[5:].removesuffix("+weights")) if origin.startswith("call:") else None
        init = self.method(found[1], "__init__") if found is not None and found[0] == "class" else None
        if init is None:
            return False
        params = {p for p in init[1].params if MODEL_NAME_RE.search(p)}  # `encoder`, `decoder`, `backbone`
        return any(
            item.kind == "assign" and (item.receiver or "").startswith("self.") and (item.origin or "")[6:].split(".")[0] in params
            for item in init[1].items if (item.origin or "").startswith("alias:")
        )

    def _training_call(self, caller: FunctionSummary, item: Item) -> bool:
        """A call whose result is trained: a backward() follows it closely with autograd on
        (`loss = self._process_one_batch(x); loss.backward()`), no mode switch between."""
        if item.grad_off:
            return False
        for event in self.events(caller):
            if (event.line, event.col) <= (item.line, item.col):
                continue
            if event.line > item.line + TRAINING_CALL_WINDOW or event.kind in ("eval", "train"):
                return False
            if event.kind == "backward" and not event.grad_off:
                return True
        return False

    def origin_mode(self, fs: FunctionSummary, origin: str, where: str, event, depth: int):
        """The mode of a value by where it comes from (see `model_value`)."""
        if origin == "eval":
            return "eval", where
        if origin == "built:torch.load":
            mode, why = self.saved_mode()
            return mode, (f"torch.load at {where} restores a model that {why}" if mode else "")
        if origin.startswith("alias:"):
            return self.mode_at(fs, origin[6:], event.line, event.col, event.conds, depth + 1)
        if not origin.startswith("call:"):
            return None, ""
        if self._random_test_model(fs, origin):
            return None, ""
        name = origin[5:].removesuffix("+weights")
        if name.startswith("pick:"):
            return "train", f"{name[5:]}() builds a torchvision/timm model at {where}, and a new module is in training mode"
        if name.endswith("+layers"):
            return "train", f"nn.{name[:-7].rsplit('.', 1)[-1]}() with Dropout/BatchNorm is built at {where}, and a new module is in training mode"
        if name.startswith("torch.nn."):
            last = name.rsplit(".", 1)[-1]
            if TORCH_MODE_LAYER_RE.match(last):
                return "train", f"nn.{last}() is built at {where}, and a new module is in training mode"
            return None, f"nn.{last} {NO_MODE_LAYERS}"
        if _non_torch_constructor(name):
            return None, f"{name.rsplit('.', 1)[-1]}() comes from {name.split('.')[0]}: not a torch module"
        found = self.resolve(fs.path, name) or self.own_method(fs, name)
        if found is not None and found[0] == "class":
            cls = found[1]
            if not self.is_module_class(cls):
                return None, ""
            init = self.method(cls, "__init__")
            if init is not None and any(e.kind == "eval" and (e.receiver or "").split(".")[0] == "self" for e in self.events(init[1])):
                return "eval", f"{cls.name}.__init__ calls eval()"
            if init is not None and any(e.kind == "eval" or (e.kind == "assign" and e.origin == "eval") for e in self.events(init[1])):
                return None, ""  # a loader/wrapper that puts the model it holds in eval mode itself
            if not self.has_mode_layers(cls):
                return None, ("" if cls.given_layers else f"{cls.name} {NO_MODE_LAYERS}")  # given layers: unknown
            switched_off = self.switched_off_layers(fs, cls, event)
            if switched_off:
                return None, f"{cls.name}() built at {where} with {switched_off} {NO_MODE_LAYERS}"
            return "train", f"{cls.name}() is built at {where}, and a new module is in training mode"
        if found is not None and found[0] == "function":
            argument = self.viewed_argument(fs, found[1], event)
            if argument is not None:
                mode, why = self.mode_at(fs, argument, event.line, event.col, event.conds, depth + 1)
                return mode, (f"{found[1].name}() at {where} returns modules of {argument}: {why}" if mode == "train" else why)
            mode, why = self.returned_mode(found[1], where, depth + 1)
            return (mode, why) if mode is not None or why else self.class_factory_mode(found[1], where)
        if found is None:
            last = name.rsplit(".", 1)[-1]
            if name.startswith(("torchvision.models.", "timm.")) or MODEL_CONSTRUCTOR_RE.search(last) or OPENMMLAB_BUILDER_RE.search(last):
                return "train", f"{last}() is built at {where}, and a new module is in training mode"
        return None, ""

    def own_method(self, fs: FunctionSummary, name: str):
        """`self.helper` called in a method of `fs`'s class: that class's method (through its bases)."""
        if not name.startswith("self.") or fs.cls is None or name.count(".") != 1:
            return None
        cls = self.modules[fs.path].classes.get(fs.cls)
        return self.method(cls, name[5:]) if cls is not None else None

    def class_factory_mode(self, fs: FunctionSummary, where: str):
        """A classmethod of a project nn.Module class (`Model.from_config(cfg)`) that returns what
        it builds and calls no eval(): a new module, in training mode."""
        cls = self.modules[fs.path].classes.get(fs.cls) if fs.cls else None
        if cls is None or "::classmethod" not in fs.decorators or not self.is_module_class(cls):
            return None, ""
        # (a model class's method without mode tokens is summarised empty: it calls no eval())
        if any(e.kind == "eval" for e in self.events(fs)):
            return None, ""
        return "train", f"{cls.name}.{fs.name}() builds a new {cls.name} at {where}, and a new module is in training mode"

    def saved_mode(self):
        """The mode in which the project pickles whole models (`torch.save(model, f)`): a loaded
        model comes back in it. "train" if any is saved in training mode."""
        if self._saved is None:
            self._saved = (None, "")
            modes = []
            for fs in self._functions.values():
                for item in fs.items:
                    if item.kind == "call" and item.receiver == "torch.save" and item.args and item.args[0][0] == "0":
                        modes.append((self.mode_at(fs, item.args[0][1], item.line, item.col, item.conds, 3), fs, item))
            trained = [(why, fs, item) for (mode, why), fs, item in modes if mode == "train"]
            if trained:
                why, fs, item = trained[0]
                self._saved = ("train", f"{short_path(fs.path)}:{item.line} saves in training mode ({why})")
            elif modes and all(mode == "eval" for (mode, _), _, _ in modes):
                self._saved = ("eval", "the project saves in eval mode")
        return self._saved

    def returned_mode(self, fs: FunctionSummary, where: str, depth: int):
        """The mode of what a project factory returns (every return must agree)."""
        modes = []
        for item in fs.items:
            if item.kind != "return":
                continue
            origin = item.origin or ""
            if origin.startswith("alias:"):
                mode, why = self.mode_at(fs, origin[6:], item.line, item.col, item.conds, depth + 1)
            else:
                mode, why = self.origin_mode(fs, origin, f"{short_path(fs.path)}:{item.line}", item, depth + 1)
            modes.append((mode, why))
        if modes and all(mode == "train" for mode, _ in modes):
            return "train", f"{fs.name}() at {where} returns it in training mode ({modes[0][1]})"
        if any(mode == "eval" for mode, _ in modes):
            return "eval", f"{fs.name}() returns it in eval mode"
        return None, ""


NEUTRAL_RE = re.compile(
    r"^(print|len|isinstance|type|id|str|repr|getattr|hasattr|setattr|sum|list|tuple|dict|zip|enumerate|range|sorted|iter|next"
    r"|copy\.copy|logging\.\w+|torch\.(nn\.(parallel\.)?(DataParallel|DistributedDataParallel)|compile|save|cuda\.\w+|optim\.\w+|numel)"
    r"|obj:[\w.]+\.(info|debug|warning|log|append|extend|update|add_scalar|add_scalars|add_graph|write|format)|obj:[\w.]*(optim|opt|logger|writer|wandb|meter)\w*\.\w+)$",
    re.I,
)


def _builds(events: list[Event], call: Event, receiver: str) -> bool:
    """The call is the one whose result is assigned to `receiver` (`model = build(cfg.model)`):
    it makes the model, it does not switch it."""
    return any(e.kind == "assign" and e.receiver == receiver and e.line == call.line and e.col < call.col for e in events)


def _neutral(ref: str | None) -> bool:
    """A call that cannot change a model's mode: builtins, logging, optimizers, torch.save."""
    return ref is not None and (NEUTRAL_RE.match(ref) is not None or WRAPPER_RE.search(ref.rsplit(".", 1)[-1]) is not None or WEIGHT_LOADER_RE.search(ref) is not None)


@functools.lru_cache(maxsize=4096)
def short_path(path: str) -> str:
    parts = PurePath(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else path


def _nearest(importer: str, candidates: list[str]) -> str:
    here = dotted_path(importer)
    return max(candidates, key=lambda c: sum(1 for _ in _common(here, dotted_path(c))))


def _common(a, b):
    for x, y in zip(a, b):
        if x != y:
            return
        yield x


def _bound_arguments(signature: tuple, arguments: tuple) -> dict | None:
    """`__init__`'s parameters bound to a call's literal arguments and its literal defaults
    (NOT_CONSTANT for others); None for a splat, or a non-literal value going to *args/**kwargs."""
    positional, keyword_only, defaults, varargs, varkw = signature
    values = dict(defaults)
    for slot, value in arguments:
        if slot in ("*", "**"):
            return None
        if slot.isdigit():
            if int(slot) < len(positional):
                values[positional[int(slot)]] = value
            elif not varargs or value is NOT_CONSTANT:
                return None
        elif slot in positional or slot in keyword_only:
            values[slot] = value
        elif not varkw or value is NOT_CONSTANT:
            return None
    return values


def _argument_map(target: FunctionSummary, item: Item) -> dict[str, str]:
    mapping = {}
    for slot, root in item.args:
        if slot.isdigit():
            if int(slot) < len(target.params):
                mapping[target.params[int(slot)]] = root
        else:
            mapping[slot] = root
    return mapping


def _argument_for(fs: FunctionSummary, item: Item, param: str) -> str | None:
    if param == "self":  # self.helper() keeps the object; holder.method() passes `holder`
        ref = item.receiver or ""
        if ref.startswith("self:"):
            return "self"
        if ref.startswith("obj:"):
            return ref[4:].rsplit(".", 1)[0]
        return None
    for slot, root in item.args:
        name = fs.params[int(slot)] if slot.isdigit() and int(slot) < len(fs.params) else slot
        if name == param:
            return root
    return None


def _substitute(receiver: str | None, mapping: dict[str, str], helper: FunctionSummary) -> str | None:
    """A helper's receiver in the caller's names: its parameters replaced by the arguments,
    `self` and closure or global names kept; None for a model local to the helper."""
    if receiver is None:
        return None
    head, _, rest = receiver.partition(".")
    if head in mapping:
        return mapping[head] + ("." + rest if rest else "")
    if head == "self" or (head not in helper.params and head not in helper.local_names):
        return receiver
    return None


def related(a: str | None, b: str | None) -> bool:
    """Receivers that may be the same model: equal, one inside the other (`self.model` and
    `self.model.encoder`), or unknown."""
    if a is None or b is None:
        return True
    return a == b or a.startswith(b + ".") or b.startswith(a + ".") or a.rsplit(".", 1)[-1] == b.rsplit(".", 1)[-1]


def _non_torch_constructor(name: str) -> bool:
    """A call imported from a package that has no torch modules (sklearn, xgboost, numpy...)."""
    return name.split(".", 1)[0] in NON_TORCH_MODEL_ROOTS


def _known_base(text: str) -> bool:
    return text in BUILTIN_NAMES or KNOWN_BASE_RE.match(text) is not None or MODULE_BASE_RE.search(text) is not None


def pytest_file(path: str) -> bool:
    """Where pytest collects `test_*` functions: a unit test builds tiny models on purpose."""
    parts = path.replace("\\", "/").split("/")
    name = parts[-1]
    return name.startswith("test_") or name.endswith("_test.py") or any(p in ("tests", "test", "testing") for p in parts[:-1])


def _opaque_builder_call(site, params: tuple[str, ...]) -> bool:
    """A call inside a layer factory that may build Dropout/BatchNorm out of sight: anything but
    torch's own layers and plain helpers (`layers.append`) - a capitalised or builder-named callee,
    a parameter (`norm_layer(c)`), or a callee without a name."""
    qualname = site.qualname
    if qualname is None:
        return True
    if qualname.startswith("torch."):
        return False
    name = qualname.rsplit(".", 1)[-1]
    return (
        qualname.split(".")[0] in params or name[:1].isupper() or OPAQUE_BUILDER_RE.search(name) is not None
        or MODEL_CONSTRUCTOR_RE.search(name) is not None
    )


def _may_build_mode_layers(factory: FunctionSummary) -> bool:
    """A project function called in a class's __init__: it builds Dropout/BatchNorm itself, or its
    name says it builds layers (`make_layers`, not `make_kernel`) and it calls builders we cannot
    see into; one that builds only mode-free torch layers (`nn.InstanceNorm2d(c)`, `nn.ReLU()`) does not."""
    return factory.builds_mode_layers or (LAYER_FACTORY_RE.search(factory.name) is not None and factory.calls_builders)
