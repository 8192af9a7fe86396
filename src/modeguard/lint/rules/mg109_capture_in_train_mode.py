import ast

from modeguard.lint.project import receiver_of as chain_root, short_path
from modeguard.lint.rule import Rule

CAPTURES = {
    "torch.jit.trace": "torch.jit.trace",
    "torch.onnx.export": "torch.onnx.export",
    "torch.export.export": "torch.export.export",
    "torch.ao.quantization.fuse_modules": "fuse_modules",
    "torch.quantization.fuse_modules": "fuse_modules",
    "torch.ao.quantization.quantize_fx.prepare_fx": "prepare_fx",
}
# LightningModule.to_onnx(file, sample, **kwargs) runs torch.onnx.export(self, sample, file, **kwargs)
# without eval() (it only restores the mode afterwards)
LIGHTNING_TO_ONNX = "to_onnx"
# torch.onnx.export's mode semantics (torch/onnx/__init__.py; torchscript_exporter/utils.py)
DYNAMO_DEFAULT = (
    "torch.onnx.export defaults to dynamo=True since torch 2.9: the export captures the model's "
    "current mode (the TorchScript exporter, the default before, switched to eval for the export itself)"
)
class CaptureInTrainMode(Rule):
    code = "MG109"
    name = "capture-in-train-mode"
    summary = "Tracing, exporting or fusing a model that was not put in eval mode"
    rationale = (
        "`torch.jit.trace`, `torch.export.export` and `fuse_modules` record the mode the model is "
        "in: traced in training mode, the exported graph keeps Dropout on and BatchNorm on batch "
        "statistics forever (and fusion needs eval). `torch.onnx.export` depends on the exporter: "
        "the TorchScript exporter (`dynamo=False`, the only one before torch 2.5 and the default "
        "before 2.9) switches the model to eval for the export unless `training=` says otherwise; "
        "the dynamo exporter (`dynamo=True`, the default since torch 2.9) ignores the deprecated "
        "`training=` and captures the current mode. Code written for the old default exports "
        "training-mode layers with a current torch. Lightning's `LightningModule.to_onnx` calls "
        "`torch.onnx.export(self, ...)` without `eval()`."
    )
    triggers = ("trace", "export", "fuse_modules", "prepare_fx", "to_onnx")
    invalid = (
        "model = Net()\nmodel.load_state_dict(torch.load(p, weights_only=True))\ntorch.onnx.export(model, x, 'm.onnx')\n",
        "def export(path):\n    net = ResNet()\n    traced = torch.jit.trace(net, torch.randn(1, 3, 224, 224))\n    traced.save(path)\n",
        # the dynamo exporter ignores training=: the model's own mode is exported
        "model = Net()\ntorch.onnx.export(model, (x,), 'm.onnx', dynamo=True, training=torch.onnx.TrainingMode.EVAL)\n",
        # the legacy exporter told to keep the model's mode
        "model = Net()\ntorch.onnx.export(model, x, 'm.onnx', dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)\n",
        # a local dict of keyword arguments choosing the dynamo exporter
        "model = Net()\noptions = {'opset_version': 18}\noptions['dynamo'] = True\ntorch.onnx.export(model, x, 'm.onnx', **options)\n",
        # a LightningModule exporting itself, built fresh by an exporter class in another method
        "class LitModel(pl.LightningModule):\n    def __init__(self):\n        super().__init__()\n        self.net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))\n\n"
        "    def export_onnx(self, path):\n        self.to_onnx(path, torch.zeros(1, 4))\n\n\n"
        "class Exporter:\n    def __init__(self):\n        self.module = LitModel()\n\n"
        "    def export(self, path):\n        self.module.export_onnx(path)\n",
    )
    valid = (
        "model = Net()\nmodel.eval()\ntorch.onnx.export(model, x, 'm.onnx')\n",
        "traced = torch.jit.trace(Net().eval(), x)\n",
        "def export(model, path):  # the caller decides the mode\n    torch.onnx.export(model, x, path)\n",
        "model = Net().eval()\nexported = torch.export.export(model, (x,))\n",
        # a fresh export wrapper, without Dropout/BatchNorm of its own, around a model in eval
        "class Export(nn.Module):\n    def __init__(self, model):\n        super().__init__()\n        self.model = model\n\n"
        "    def forward(self, x):\n        return self.model(x).softmax(-1)\n\n\n"
        "model = Net()\nmodel.eval()\nwrapper = Export(model)\ntorch.onnx.export(wrapper, x, 'm.onnx')\n",
        # the TorchScript exporter switches the model to eval for the export itself
        "model = Net()\ntorch.onnx.export(model, x, 'm.onnx', dynamo=False)\n",
        "model = Net()\ntorch.onnx.export(model, x, 'm.onnx', dynamo=False, training=torch.onnx.TrainingMode.EVAL)\n",
        # a training graph exported on purpose
        "model = Net()\ntorch.onnx.export(model, x, 'm.onnx', dynamo=False, training=TrainingMode.TRAINING)\n",
        # the exporter chosen at run time
        "model = Net()\ntorch.onnx.export(model, x, 'm.onnx', dynamo=args.dynamo)\n",
        # the exporter class puts the module it holds in eval mode first
        "class LitModel(pl.LightningModule):\n    def __init__(self):\n        super().__init__()\n        self.net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))\n\n"
        "    def export_onnx(self, path):\n        self.to_onnx(path, torch.zeros(1, 4))\n\n\n"
        "class Exporter:\n    def __init__(self):\n        self.module = LitModel()\n\n"
        "    def export(self, path):\n        self.module.eval()\n        self.module.export_onnx(path)\n",
        # a model with no mode-dependent layer (its only helper object is a NamedTuple): both modes agree
        "from typing import NamedTuple\n\n\nclass Spec(NamedTuple):\n    scale: float\n\n\n"
        "class Scale(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.spec = Spec(2.0)\n\n"
        "    def forward(self, x):\n        return x * self.spec.scale\n\n\n"
        "model = Scale()\ntraced = torch.jit.trace(model, x)\n",
        # the TorchScript exporter chosen through a local dict of keyword arguments
        "def export(path, **kwargs):\n    model = Net()\n    options = kwargs.copy()\n    options['dynamo'] = False\n"
        "    torch.onnx.export(model, x, path, **options)\n",
        "model = Net()\nlegacy = {'opset_version': 11, 'dynamo': False}\ntorch.onnx.export(model, x, 'm.onnx', **legacy)\n",
        # a fresh export wrapper exporting the model it was handed (loaded elsewhere, in its own mode)
        "class Exportable(nn.Module):\n    def __init__(self, model):\n        super().__init__()\n        self.model = CachedDecoder(model)\n\n"
        "    def export(self, x):\n        return torch.export.export(self.model, (x,))\n\n\n"
        "class Pipeline:\n    def __init__(self, decoder):\n        self.decoder = decoder\n\n"
        "    def export_decoder(self, x):\n        self.exportable = Exportable(model=self.decoder)\n        return self.exportable.export(x)\n",
    )

    def check(self, ctx):
        project = ctx.project
        module = project.modules.get(ctx.path)
        if module is None:
            return
        for site in ctx.calls:
            capture = _capture(ctx, site)
            if capture is None:
                continue
            what, target, note = capture
            if any(isinstance(n, ast.Attribute) and n.attr == "eval" for n in ast.walk(target)):
                continue  # torch.jit.trace(model.eval(), x)
            receiver = chain_root(target)
            scope = site.scope
            if scope.func is None:
                fs = module.module_level
            else:
                fs = module.functions.get(f"{scope.cls.name}.{scope.func.name}" if scope.cls else scope.func.name)
            if receiver is None or fs is None:
                continue
            mode, why = project.mode_at(fs, receiver, site.node.lineno, site.node.col_offset, scope.conds)
            if mode is None and receiver == "self":
                mode, why = _held_in_training(project, fs)
            if mode != "train":
                continue  # in eval, or no evidence on this path (the caller decides)
            ran = _forward_before(ctx, scope.func, receiver, site.node)
            if ran is not None:
                note += (
                    f"; {receiver} already ran forward in training mode at line {ran}: BatchNorm running "
                    "statistics were updated from that input, whichever exporter"
                )
            yield self.finding(
                ctx,
                site.node,
                f"{what} captures {receiver} in training mode ({why}); nothing put it in eval mode before: "
                f"the captured graph keeps training-mode Dropout/BatchNorm{note}",
                f"call {receiver}.eval() before {what}",
            )


def _capture(ctx, site) -> tuple[str, ast.AST, str] | None:
    """(what, the captured model, a note on the exporter) for a call that captures a model's
    mode, None for any other call and for an ONNX export that puts the model in eval itself."""
    call = site.node
    what = CAPTURES.get(site.qualname or "")
    if what is not None:
        if not call.args:
            return None
        if what != "torch.onnx.export":
            return what, call.args[0], ""
        note = _onnx_exporter_note(call, site.scope.func or ctx.tree)
        return None if note is None else (what, call.args[0], note)
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == LIGHTNING_TO_ONNX and isinstance(func.value, ast.Name) and func.value.id == "self"):
        return None
    cls = site.scope.cls
    if cls is None or cls.name not in ctx.framework_classes or not ctx.is_module_class(cls):
        return None  # not a LightningModule's own to_onnx
    if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == LIGHTNING_TO_ONNX for n in cls.body):
        return None  # the class's own to_onnx
    note = _onnx_exporter_note(call, site.scope.func)
    return None if note is None else ("LightningModule.to_onnx (torch.onnx.export(self, ...))", func.value, note)


def _onnx_exporter_note(call: ast.Call, scope: ast.AST | None) -> str | None:
    """What torch.onnx.export's arguments say about the mode it exports: None when the call
    itself exports in eval mode (or a training graph on purpose), else a note for the message."""
    given = _export_keywords(call, scope)
    dynamo = given.get("dynamo")
    training = given.get("training")
    mode = training.attr if isinstance(training, ast.Attribute) else None
    if dynamo is not None and not isinstance(dynamo, ast.Constant):
        return None  # the exporter is chosen at run time: no evidence either way
    if dynamo is not None:
        if dynamo.value is True:
            return " (the dynamo exporter ignores training= and captures the current mode)"
        if training is None or mode in ("EVAL", "TRAINING"):
            return None  # the TorchScript exporter switches to eval itself; TRAINING: on purpose
        return " (training=TrainingMode.PRESERVE keeps the model's mode)" if mode == "PRESERVE" else None
    if any(k.arg is None for k in call.keywords):
        return f"; {DYNAMO_DEFAULT}, unless the keyword arguments passed on choose dynamo=False"
    return f"; {DYNAMO_DEFAULT}: code written for the old default exports training-mode layers with a current torch"


def _export_keywords(call: ast.Call, scope: ast.AST | None) -> dict[str, ast.AST]:
    """The keyword arguments of a call, with those a local dict passed as `**options` holds by
    the call (`options = {'dynamo': False}`, `options = kwargs.copy(); options['dynamo'] = False`)."""
    given: dict[str, ast.AST] = {}
    for kw in call.keywords:
        if kw.arg is not None:
            given[kw.arg] = kw.value
        elif isinstance(kw.value, ast.Name) and scope is not None:
            given.update(_dict_writes(scope, kw.value.id, call))
    return given


def _dict_writes(scope: ast.AST, name: str, call: ast.Call) -> dict[str, ast.AST]:
    """The constant-keyed entries written into the local dict `name` before `call`: its last
    literal (`name = {...}`, `name = dict(...)`; a copy starts empty) and the `name['key'] = v` after it."""
    writes: dict[str, ast.AST] = {}
    assigns = sorted(
        (n for n in ast.walk(scope) if isinstance(n, ast.Assign) and len(n.targets) == 1 and (n.lineno, n.col_offset) < (call.lineno, call.col_offset)),
        key=lambda n: (n.lineno, n.col_offset),
    )
    for node in assigns:
        target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and target.id == name:
            writes = {}
            if isinstance(value, ast.Dict):
                writes = {k.value: v for k, v in zip(value.keys, value.values) if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict":
                writes = {k.arg: k.value for k in value.keywords if k.arg is not None}
        elif isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == name:
            key = target.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                writes[key.value] = value
    return writes


def _forward_before(ctx, func, receiver: str, capture: ast.Call) -> int | None:
    """The line of a forward of `receiver` (`model(x)`, `model.forward(x)`) before the capture
    in the same function."""
    for site in ctx.calls_in(func):
        node = site.node
        if (node.lineno, node.col_offset) >= (capture.lineno, capture.col_offset):
            continue
        target = node.func.value if isinstance(node.func, ast.Attribute) and node.func.attr == "forward" else node.func
        if chain_root(target) == receiver and isinstance(target, (ast.Name, ast.Attribute)):
            return node.lineno
    return None


def _held_in_training(project, fs):
    """The mode of `self` in a method that the project calls on an attribute of another object
    (`self.module.export_onnx(...)`), that object's class having built the module in training
    mode, with no method of it putting the module in eval mode. (Only `self`: a submodule of a
    fresh wrapper may be a model handed in, in whatever mode its loader left it.)"""
    for caller, item in project.callers(fs)[:32]:
        ref = item.receiver or ""
        if not ref.startswith("obj:self."):
            continue
        holder = ref[4:].rsplit(".", 1)[0]
        mode, why = project.mode_at(caller, holder, item.line, item.col, item.conds)
        if mode is not None:
            return mode, why
        bound = project.attribute_assignment(caller, holder)
        if bound is None or _evaluated_in_class(project, caller, holder):
            continue
        method, assign = bound
        where = f"{short_path(method.path)}:{assign.line}"
        mode, why = project.origin_mode(method, assign.origin or "", where, assign, 1)
        if mode == "train":
            return mode, f"{caller.name}() calls {fs.name}() on {holder} at {short_path(caller.path)}:{item.line}; {why}"
    return None, ""


def _evaluated_in_class(project, fs, holder: str) -> bool:
    """Whether a method of `fs`'s class (or a project base) puts `self.<attr>` in eval mode."""
    return any(
        event.kind == "eval" and (event.receiver == holder or (event.receiver or "").startswith(holder + "."))
        for method in project.class_methods(fs) for event in project.events(method)
    )
