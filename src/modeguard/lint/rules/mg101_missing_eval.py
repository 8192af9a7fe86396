import ast
import re

from modeguard.lint.flow import NOT_TRAINED_RE, FlowIndex, argument_map, chain_root, related
from modeguard.lint.models import looks_like_model, model_origin
from modeguard.lint.rule import Rule

INFERENCE_FUNC_RE = re.compile(r"^(evaluate|eval|predict|test|validate|validation|infer|inference|run_inference|run_eval|evaluation)(_|$)", re.I)
FRAMEWORK_HOOK_RE = re.compile(r"(_step$|_step_end$|^on_|_epoch_end$)")  # Lightning hooks


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
        flow = FlowIndex(ctx)
        evaluated_anywhere = _evaluated_receivers(ctx)
        for func, scope in [*ctx.functions, (ctx.tree, None)]:
            if scope is not None and self._skip_function(ctx, func, scope):
                continue
            body_events = flow.events(func)
            kinds = {e.kind for e in body_events}
            for site, reason in self._inference_sites(ctx, func, scope, body_events):
                is_generate = isinstance(site.func, ast.Attribute) and site.func.attr == "generate"
                receiver = chain_root(site.func.value if is_generate else site.func)
                if receiver is None or NOT_TRAINED_RE.search(receiver):
                    continue
                if receiver.split(".")[-1] in flow.by_name or receiver in ctx.imports:
                    continue  # a function or method, not a model instance
                origin = model_origin(ctx, func, receiver)
                if origin == "eval" or not looks_like_model(ctx, func, receiver):
                    continue
                before = [e for e in body_events if (e.node.lineno, e.node.col_offset) < (site.lineno, site.col_offset)]
                if any(e.kind == "eval" and related(e.receiver, receiver) for e in before):
                    continue
                if _deliberately_in_training(before, receiver):
                    continue
                if "backward" in kinds and reason != "after-training":
                    continue  # a training function: its no_grad blocks are bookkeeping
                if not _made_here(ctx, func, receiver, origin):
                    if receiver in evaluated_anywhere or receiver.split(".")[-1] in evaluated_anywhere:
                        continue  # eval() elsewhere on this model (a caller, a setup method)
                    callers = flow.callers(func.name) if func is not ctx.tree else []
                    if not any(_caller_builds_model_without_eval(flow, func, receiver, caller, call) for caller, call in callers):
                        continue  # the model comes from outside this file, or callers switch to eval
                yield self.finding(
                    ctx,
                    site,
                    f"{receiver} is used for inference ({_REASONS[reason]}) without {receiver}.eval() on this path: "
                    "Dropout and BatchNorm still run in training mode",
                    f"call {receiver}.eval() first (torch.no_grad() does not change the mode)",
                )

    @staticmethod
    def _skip_function(ctx, func, scope) -> bool:
        name = func.name
        return (
            name.startswith("test_")
            or name in ("forward", "__call__", "training_step")
            or FRAMEWORK_HOOK_RE.search(name) is not None
            or ctx.in_framework_class(scope)
            or ctx.is_module_class(scope.cls)
        )

    def _inference_sites(self, ctx, func, scope, events):
        name = getattr(func, "name", "")
        by_name = scope is not None and INFERENCE_FUNC_RE.match(name) is not None
        own = None if func is ctx.tree else func
        loads = [
            s.node for s in ctx.calls
            if s.scope.func is own and isinstance(s.node.func, ast.Attribute) and s.node.func.attr == "load_state_dict"
        ]
        last_backward = max(((e.node.lineno, e.node.col_offset) for e in events if e.kind == "backward"), default=None)
        for site in ctx.calls:
            if site.scope.func is not (None if func is ctx.tree else func):
                continue
            call = site.node
            is_generate = isinstance(call.func, ast.Attribute) and call.func.attr == "generate"
            if not (isinstance(call.func, (ast.Name, ast.Attribute)) and (is_generate or not isinstance(call.func, ast.Attribute) or _self_attr_call(call))):
                continue
            position = (call.lineno, call.col_offset)
            if last_backward is not None and position > last_backward and (site.scope.grad_off or is_generate):
                yield call, "after-training"
            elif site.scope.grad_off:
                yield call, "no-grad"
            elif by_name:
                yield call, "function"
            elif any((load.lineno, load.col_offset) < position for load in loads):
                yield call, "restored"


_REASONS = {
    "after-training": "after the training loop",
    "no-grad": "under no_grad/inference_mode",
    "function": "in an evaluation function",
    "restored": "after load_state_dict",
}


def _self_attr_call(call: ast.Call) -> bool:
    func = call.func
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self"


def _deliberately_in_training(before: list, receiver: str) -> bool:
    """`model.train()` with no backward() after it, then a no_grad forward: BatchNorm
    recalibration (swa_utils.update_bn) or Monte-Carlo dropout, on purpose."""
    for event in reversed(before):
        if event.kind == "backward":
            return False
        if event.kind == "train" and related(event.receiver, receiver):
            return True
    return False


def _evaluated_receivers(ctx) -> set[str]:
    found = set()
    for site in ctx.calls:
        func = site.node.func
        if isinstance(func, ast.Attribute) and (func.attr == "eval" or func.attr == "train" and site.node.args and isinstance(site.node.args[0], ast.Constant) and site.node.args[0].value is False):
            root = chain_root(func.value)
            if root:
                found.update({root, root.rsplit(".", 1)[-1]})
        if site.qualname and site.qualname.endswith("evaluating") and site.node.args:
            root = chain_root(site.node.args[0])
            if root:
                found.update({root, root.rsplit(".", 1)[-1]})
    return found


def _made_here(ctx, func, receiver: str, origin: str | None) -> bool:
    """The function constructs or loads (load_state_dict) the model itself: its mode is its job."""
    if origin == "built":
        return True
    own = None if isinstance(func, ast.Module) else func
    return any(
        isinstance(site.node.func, ast.Attribute)
        and site.node.func.attr == "load_state_dict"
        and chain_root(site.node.func.value) == receiver
        for site in ctx.calls_in(own)
    )


def _caller_builds_model_without_eval(flow, func, receiver, caller, call) -> bool:
    """The caller passes a model it made itself and never switched it to eval first."""
    ctx = flow.ctx
    argument = argument_map(func, call).get(receiver.split(".")[0])
    if argument is None:
        return False
    origin = model_origin(ctx, caller, argument)
    if origin == "eval" or not _made_here(ctx, caller, argument, origin):
        return False
    return not any(
        e.kind == "eval" and related(e.receiver, argument) and (e.node.lineno, e.node.col_offset) < (call.lineno, call.col_offset)
        for e in flow.events(caller)
    )
