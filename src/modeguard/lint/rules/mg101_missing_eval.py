import ast
import re

from modeguard.lint.context import dotted_name
from modeguard.lint.models import MODEL_NAME_RE, NOT_TRAINED_RE
from modeguard.lint.project import related
from modeguard.lint.rule import Rule

INFERENCE_FUNC_RE = re.compile(r"^(evaluate|eval|predict|test|validate|validation|infer|inference|run_inference|run_eval|evaluation)(_|$)", re.I)
FRAMEWORK_HOOK_RE = re.compile(r"(_step$|_step_end$|^on_|_epoch_end$)")  # Lightning hooks
EVAL_LOADER_RE = re.compile(r"(test|val|valid|eval|dev|holdout)", re.I)
RECALIBRATION_RE = re.compile(r"(recalib|calibrat|update_bn|bn_stat|batch ?norm|\bbn\b|mc.?dropout|monte|mc_|dropout)", re.I)


class MissingEval(Rule):
    code = "MG101"
    name = "missing-eval"
    summary = "A model is used for inference without `.eval()` on that path"
    rationale = (
        "In training mode Dropout drops and BatchNorm normalizes with the statistics of the "
        "current batch, so predictions are random and depend on the rest of the batch. "
        "`torch.no_grad()`/`inference_mode()` do not change the mode. Call `model.eval()` "
        "(or use `modeguard.evaluating(model)`) before inference."
    )
    triggers = ("no_grad", "inference_mode", "def eval", "def pred", "def test", "def valid", "def infer", "load_state_dict", "torch.load", ".generate(")
    invalid = (
        "model = Net()\nmodel.load_state_dict(torch.load('ckpt.pt', weights_only=True))\nwith torch.no_grad():\n    preds = model(images)\n",
        "@torch.no_grad()\ndef predict(path):\n    net = ResNet()\n    net.load_state_dict(torch.load(path, weights_only=True))\n    return net(load_image())\n",
        "def main():\n    model = Net()\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    with torch.no_grad():\n        print(model(test_x))\n",
        "def evaluate(model, loader):\n    with torch.no_grad():\n        return [model(x) for x in loader]\n\n\ndef main():\n    model = Net()\n    evaluate(model, loader)\n",
        "model = Net()\nmodel.train()\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\nwith torch.no_grad():\n    print(model(test_x))\n",
    )
    valid = (
        "model = Net()\nmodel.load_state_dict(torch.load('ckpt.pt', weights_only=True))\nmodel.eval()\nwith torch.no_grad():\n    preds = model(images)\n",
        "def evaluate(model, loader):\n    with torch.no_grad():\n        return [model(x) for x in loader]\n\n\ndef main():\n    model = Net()\n    model.eval()\n    evaluate(model, loader)\n",
        "def evaluate(model, loader):  # called from elsewhere: the caller owns the mode\n    with torch.no_grad():\n        return [model(x) for x in loader]\n",
        "class Trainer:\n    def val_start(self):\n        self.model.eval()\n\n    def validate(self, loader):\n        self.val_start()\n        with torch.no_grad():\n            return [self.model(x) for x in loader]\n",
        "class Lit(pl.LightningModule):\n    def validation_step(self, batch, idx):\n        return self.model(batch)\n",
        "model = AutoModel.from_pretrained('bert-base-uncased')\nwith torch.no_grad():\n    out = model(**inputs)\n",
        "with torch.no_grad():\n    for p, ema_p in zip(model.parameters(), ema.parameters()):\n        ema_p.mul_(0.99).add_(p, alpha=0.01)\n",
        "model.train()  # recalibrate BatchNorm: batch statistics on purpose\nwith torch.no_grad():\n    for x in loader:\n        model(x)\n",
        "def test_model_shapes():\n    model = Net()\n    with torch.no_grad():\n        assert model(x).shape == (2, 10)\n",
    )

    def check(self, ctx):
        project = ctx.project
        module = project.modules.get(ctx.path)
        if module is None:
            return
        nodes = {(site.node.lineno, site.node.col_offset): site.node for site in ctx.calls}
        functions = {id(func): scope for func, scope in ctx.functions}
        summaries = [(func, scope, module.functions.get(_local(func, scope))) for func, scope in ctx.functions]
        summaries.append((None, None, module.module_level))
        loops = _loops_by_function(ctx)
        for func, scope, fs in summaries:
            if fs is None or (scope is not None and self._skip_function(ctx, func, scope)):
                continue
            events = project.events(fs)
            reported = set()
            for site, reason in _inference_sites(fs, events, loops.get(id(func), []), nodes):
                receiver = site.receiver
                if receiver in reported or not self._model_receiver(ctx, project, fs, func, receiver):
                    continue
                mode, why = project.mode_at(fs, receiver, site.line, site.col, site.conds)
                if mode is None and receiver.startswith("self.") and fs.cls is not None:
                    mode, why = _class_evidence(project, module, fs, receiver)
                if mode != "train" or _recalibration(ctx, fs, events, site, receiver):
                    continue
                reported.add(receiver)
                yield self.finding(
                    ctx,
                    nodes[(site.line, site.col)],
                    f"{receiver} is used for inference ({_REASONS[reason]}) in training mode: {why}; "
                    f"no {receiver}.eval() before it, so Dropout and BatchNorm still run in training mode",
                    f"call {receiver}.eval() first (torch.no_grad() does not change the mode)",
                )

    @staticmethod
    def _skip_function(ctx, func, scope) -> bool:
        name = func.name
        return (
            name.startswith("test_")
            or name in ("forward", "training_step")
            or FRAMEWORK_HOOK_RE.search(name) is not None
            or ctx.in_framework_class(scope)
            or ctx.is_module_class(scope.cls)
        )

    @staticmethod
    def _model_receiver(ctx, project, fs, func, receiver) -> bool:
        if NOT_TRAINED_RE.search(receiver) or receiver.split(".")[-1] in project.frozen:
            return False
        head = receiver.split(".")[0]
        if head in ctx.imports or (head != "self" and project.resolve(ctx.path, head) is not None):
            return False  # a function or class, not a model instance
        if MODEL_NAME_RE.search(receiver.rsplit(".", 1)[-1]):
            return True
        return any(
            item.kind == "assign" and item.receiver == receiver and (item.origin or "").startswith(("built", "call:"))
            for item in fs.items
        )


def _local(func, scope) -> str:
    return f"{scope.cls.name}.{func.name}" if scope.cls is not None else func.name


def _loops_by_function(ctx) -> dict[int, list]:
    found: dict[int, list] = {}
    for loop, scope in ctx.loops:
        found.setdefault(id(scope.func), []).append(loop)
    return found


def _inference_sites(fs, events, loops, nodes):
    """Direct forwards of `fs` that are inference: under no_grad/inference_mode, in an
    evaluation function, after load_state_dict, or after the training loop."""
    by_name = INFERENCE_FUNC_RE.match(fs.name) is not None
    backward = [e for e in events if e.kind == "backward"]
    training_loops = [loop for loop in loops if any(_inside(loop, e) for e in backward)]
    trains = bool(backward)
    for event in events:
        if event.kind != "forward" or event.via is not None or event.receiver is None:
            continue
        if (event.line, event.col) not in nodes:
            continue
        position = (event.line, event.col)
        if trains:
            # a training function: its no_grad forwards inside the loop are bookkeeping (GAN
            # samples, targets); only what runs after the training loop is inference
            if any(_inside(loop, event) for loop in training_loops):
                continue
            if not backward or position < max((e.line, e.col) for e in backward):
                continue
            end = max([(loop.end_lineno, loop.end_col_offset) for loop in training_loops], default=(0, 0))
            if position < end:
                continue
            if event.grad_off:
                yield event, "after-training"
            elif any(_inside(loop, event) and _evaluation_loop(loop) for loop in loops):
                yield event, "test-loop"
            continue
        if event.grad_off:
            yield event, "no-grad"
        elif by_name:
            yield event, "function"
        elif any(e.kind == "load" and related(e.receiver, event.receiver) and (e.line, e.col) < position for e in events):
            yield event, "restored"


def _inside(loop, event) -> bool:
    return (loop.lineno, loop.col_offset) <= (event.line, event.col) <= (loop.end_lineno, loop.end_col_offset)


def _evaluation_loop(loop) -> bool:
    target = getattr(loop, "iter", None)
    text = dotted_name(target.func if isinstance(target, ast.Call) else target) if target is not None else None
    if isinstance(target, ast.Call) and target.args and text in ("enumerate", "tqdm", "tqdm.tqdm", "iter", "zip"):
        text = dotted_name(target.args[0])
    return text is not None and EVAL_LOADER_RE.search(text.rsplit(".", 1)[-1]) is not None


def _class_evidence(project, module, fs, receiver):
    """An evaluator/predictor class holding the model: no eval() of it in any method, and the
    project builds the class with a model in training mode (or builds the model in __init__)."""
    cls = module.classes.get(fs.cls)
    if cls is None or receiver not in cls.model_attrs:
        return None, ""
    for name in cls.methods:
        method = module.functions.get(f"{cls.name}.{name}")
        if method is None:
            continue
        if any(e.kind == "eval" and related(e.receiver, receiver) for e in project.events(method)):
            return None, ""
    init = module.functions.get(f"{cls.name}.__init__")
    if init is None:
        return None, ""
    for item in init.items:
        if item.kind == "assign" and item.receiver == receiver:
            origin = item.origin or ""
            if origin.startswith("built"):
                return "train", f"{receiver} is built in {cls.name}.__init__ at line {item.line} and no method of {cls.name} calls eval() on it"
            if origin.startswith("alias:"):
                param = origin[6:].split(".")[0]
                if param not in init.params:
                    return None, ""
                for caller, call in project.class_constructions(cls):
                    from modeguard.lint.project import _argument_for, _short

                    argument = _argument_for(init, call, param)
                    if argument is None:
                        continue
                    mode, why = project.mode_at(caller, argument, call.line, call.col, call.conds)
                    if mode == "train":
                        return "train", (
                            f"{cls.name}({argument}) is built at {_short(caller.path)}:{call.line} with {argument} in training mode "
                            f"({why}) and no method of {cls.name} calls eval() on it"
                        )
    return None, ""


def _recalibration(ctx, fs, events, site, receiver) -> bool:
    """`model.train()` then forwards under no_grad, no backward, no eval() or checkpoint before
    the train(): BatchNorm recalibration or Monte-Carlo dropout, on purpose."""
    before = [e for e in events if (e.line, e.col) < (site.line, site.col)]
    for event in reversed(before):
        if event.kind == "backward":
            return False
        if event.kind == "train" and related(event.receiver, receiver) and event.via is None:
            line = ctx.lines[event.line - 1] if 0 < event.line <= len(ctx.lines) else ""
            if RECALIBRATION_RE.search(line) or RECALIBRATION_RE.search(fs.name):
                return True
            earlier = [e for e in before if (e.line, e.col) < (event.line, event.col)]
            return not any(e.kind in ("eval", "load") and related(e.receiver, receiver) for e in earlier)
    return False


_REASONS = {
    "after-training": "under no_grad after the training loop",
    "test-loop": "in a test loop after the training loop",
    "no-grad": "under no_grad/inference_mode",
    "function": "in an evaluation function",
    "restored": "after load_state_dict",
}
