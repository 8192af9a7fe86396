import ast
import re

from modeguard.lint.context import dotted_name
from modeguard.lint.models import MODEL_NAME_RE, NOT_TRAINED_RE
from modeguard.lint.project import NO_MODE_LAYERS, _argument_for, _neutral, short_path, related
from modeguard.lint.rule import Rule

INFERENCE_FUNC_RE = re.compile(r"^(evaluate|eval|predict|test|validate|validation|infer|inference|run_inference|run_eval|evaluation)(_|$)", re.I)
FRAMEWORK_HOOK_RE = re.compile(r"(_step$|_step_end$|^on_|_epoch_end$)")  # Lightning hooks
EVAL_LOADER_RE = re.compile(r"(test|val|valid|eval|dev|holdout)", re.I)
GRADIENT_INSPECTION_RE = re.compile(r"(gradient|saliency|attribution|grad_cam|explain|interpret)", re.I)
CALIBRATION_RE = re.compile(r"(calibrat|update_bn|running stat)", re.I)
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
    triggers = ("no_grad", "inference_mode", "backward", "eval", "test", "pred", "infer", "valid", "load", "pretrained", "weights", "generate", "sample")
    invalid = (
        "model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\nwith torch.no_grad():\n    preds = model(test_x)\n",
        "model = Net()\nmodel.load_state_dict(torch.load('ckpt.pt', weights_only=True))\nwith torch.no_grad():\n    preds = model(images)\n",
        "@torch.no_grad()\ndef predict(path):\n    net = ResNet()\n    net.load_state_dict(torch.load(path, weights_only=True))\n    return net(load_image())\n",
        "def main():\n    model = Net()\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    with torch.no_grad():\n        print(model(test_x))\n",
        "def evaluate(model, loader):\n    with torch.no_grad():\n        return [model(x) for x in loader]\n\n\ndef main():\n    model = Net()\n    evaluate(model, loader)\n",
        "model = Net()\nmodel.train()\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\nwith torch.no_grad():\n    print(model(test_x))\n",
        # an evaluator class holding the model, built with a model in training mode
        "class Predictor:\n    def __init__(self, model):\n        self.model = model\n\n    def __call__(self, x):\n"
        "        with torch.no_grad():\n            return self.model(x)\n\n\nnet = Net()\npredict = Predictor(net)\nprint(predict(x))\n",
        # last mode wins: train() after loading a checkpoint in a function that only predicts
        "def predict(path, x):\n    model = Net()\n    model.load_state_dict(torch.load(path, weights_only=True))\n"
        "    model.eval()\n    model.train()\n    with torch.no_grad():\n        return model(x)\n",
        # aliases and spellings: .cuda().half() and model.forward(x)
        "m = Net().cuda().half()\nm.load_state_dict(torch.load(p, weights_only=True))\nout = m.forward(x)\n",
        # a test loop after the training loop, without no_grad
        "def main():\n    model = Net()\n    for x, y in train_loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n"
        "    for x, y in test_loader:\n        print(model(x).argmax(1))\n",
        # a predictor built right after a trainer's train(model, data, ...) put the model back in training mode
        "class Trainer:\n    def train(self, model, data, epochs=1):\n        for x, y in data:\n            loss_fn(model(x), y).backward()\n"
        "        model.eval()\n        model.train(mode=True)\n\n\nclass Predictor:\n    def __init__(self, model):\n        self.model = model\n\n"
        "    def predict(self, x):\n        return self.model(x)\n\n\nnet = Net()\nnet.load_state_dict(torch.load(p, weights_only=True))\nnet.eval()\n"
        "trainer = Trainer()\ntrainer.train(net, data, epochs=2)\n"
        "print(Predictor(net).predict(x))\n",
        # an OpenMMLab detector built, given weights by load_checkpoint, run through its wrapper
        "from mmdet.models import build_detector\nfrom mmcv.runner import load_checkpoint\nfrom mmcv.parallel import MMDataParallel\n\n"
        "model = build_detector(cfg.model)\nload_checkpoint(model, cfg.load_from)\nwrapped = MMDataParallel(model.cuda())\n"
        "with torch.no_grad():\n    result = wrapped(return_loss=False, **data)\n",
        # a deployment wrapper whose loader builds the model by a classmethod factory and restores its weights
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.drop = nn.Dropout(0.5)\n\n"
        "    @classmethod\n    def from_config(cls, cfg):\n        return cls()\n\n\nclass Deployment:\n    def __init__(self, cfg, state):\n"
        "        self.model = self._load_model(cfg, state)\n\n    def _load_model(self, cfg, state):\n        model = Net.from_config(cfg)\n"
        "        model.load_state_dict(state)\n        return model\n\n    def _run(self, data):\n        return self.model(data)\n",
        # a wrapper that runs its caller's model and never calls eval(), while a sibling wrapper does
        "class Retriever:\n    pass\n\n\nclass HubRetriever(Retriever):\n    def __init__(self, name):\n"
        "        self.model = AutoModel.from_pretrained(name).eval()\n\n\nclass ModelRetriever(Retriever):\n    def __init__(self, model):\n"
        "        self.model = model\n\n    def embed(self, batch):\n        with torch.no_grad():\n            return self.model(**batch)\n",
        # the class's own factory puts the model in eval mode; built directly, the predictor never does
        "class Predictor:\n    def __init__(self, model, reader):\n        self._model = model\n        self._reader = reader\n\n"
        "    def predict_instance(self, instance):\n        return self._model.forward_on_instance(instance)\n\n    @classmethod\n"
        "    def from_archive(cls, archive):\n        model = archive.model\n        model.eval()\n        return cls(model, archive.reader)\n",
        # a class that trains its model in one method and samples from it in another
        "class Synth:\n    def fit(self, data):\n        self.generator = Generator()\n        for x in data:\n"
        "            self.generator(x).mean().backward()\n\n    def sample(self, n):\n        return self.generator(noise(n))\n",
    )
    valid = (
        "def calibrated_net():\n    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))\n    with torch.no_grad():\n        model(torch.randn(64, 4))  # fills the running statistics\n    return model\n\n\nnet = calibrated_net()\n",
        "model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # nothing depends on the mode\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\nwith torch.no_grad():\n    preds = model(test_x)\n",
        "model = Net()\nmodel.load_state_dict(torch.load('ckpt.pt', weights_only=True))\nmodel.eval()\nwith torch.no_grad():\n    preds = model(images)\n",
        "def evaluate(model, loader):\n    with torch.no_grad():\n        return [model(x) for x in loader]\n\n\ndef main():\n    model = Net()\n    model.eval()\n    evaluate(model, loader)\n",
        "def evaluate(model, loader):  # called from elsewhere: the caller owns the mode\n    with torch.no_grad():\n        return [model(x) for x in loader]\n",
        "class Trainer:\n    def val_start(self):\n        self.model.eval()\n\n    def validate(self, loader):\n        self.val_start()\n        with torch.no_grad():\n            return [self.model(x) for x in loader]\n",
        "class Lit(pl.LightningModule):\n    def validation_step(self, batch, idx):\n        return self.model(batch)\n",
        "model = AutoModel.from_pretrained('bert-base-uncased')\nwith torch.no_grad():\n    out = model(**inputs)\n",
        "with torch.no_grad():\n    for p, ema_p in zip(model.parameters(), ema.parameters()):\n        ema_p.mul_(0.99).add_(p, alpha=0.01)\n",
        "model.train()  # recalibrate BatchNorm: batch statistics on purpose\nwith torch.no_grad():\n    for x in loader:\n        model(x)\n",
        "def test_model_shapes():\n    model = Net()\n    with torch.no_grad():\n        assert model(x).shape == (2, 10)\n",
        # GAN progress samples inside the training loop: bookkeeping, not inference
        "for epoch in range(5):\n    for real in loader:\n        loss_fn(netD(real), netD(netG(noise()))).backward()\n"
        "        opt_d.step()\n        with torch.no_grad():\n            fake = netG(fixed_noise)\n",
        # gradient accumulation: features cached under no_grad, then the backward in an inner loop
        "model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))\nfor x, y in loader:\n    if accum == 1:\n        loss_fn(model(x), y).backward()\n    else:\n"
        "        with torch.no_grad():\n            cached = model(x)\n        for j in range(accum):\n"
        "            loss_fn(model(x[j]), cached).backward()\n    optimizer.step()\n",
        # a model without Dropout or BatchNorm: its mode changes nothing
        "model = nn.Linear(4, 2)\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n"
        "with torch.no_grad():\n    print(model(test_x))\n",
        # the mode chosen by a parameter: the eval() branch is the evaluation path
        "def run(model, loader, train):\n    model.train() if train else model.eval()\n    with torch.set_grad_enabled(train):\n"
        "        return [model(x) for x in loader]\n\n\nmodel = Net()\nrun(model, loader, train=False)\n",
        # the predictor's model is put in eval mode after the predictor is built
        "class Predictor:\n    def __init__(self, model):\n        self.model = model\n\n    def predict(self, x):\n        return self.model(x)\n\n\n"
        "net = Net()\nfor x, y in data:\n    loss_fn(net(x), y).backward()\npredictor = Predictor(net)\nnet.eval()\nprint(predictor.predict(x))\n",
        # modes switched through getattr(self, name) over the modules the class holds (skorch)
        "class NeuralNet:\n    def fit(self, data):\n        self.module_ = Net()\n        self.optimizer_ = SGD(self.module_.parameters())\n        self._set_training(True)\n        for x, y in data:\n"
        "            loss_fn(self.module_(x), y).backward()\n\n    def _set_training(self, training):\n        for name in self._modules:\n"
        "            module = getattr(self, name + '_')\n            module.train(training)\n\n    def infer(self, x):\n"
        "        return self.module_(x)\n\n    def evaluation_step(self, x, training=False):\n        self._set_training(training)\n"
        "        return self.infer(x)\n",
        # a wrapper holding its caller's model, and no sibling that owns its model's mode
        "class Retriever:\n    pass\n\n\nclass ModelRetriever(Retriever):\n    def __init__(self, model):\n        self.model = model\n\n"
        "    def embed(self, batch):\n        with torch.no_grad():\n            return self.model(**batch)\n",
        # a trainer's train() leaves the model training, but the model has no Dropout/BatchNorm
        "class Trainer:\n    def train(self, model, data, epochs=1):\n        for x, y in data:\n            loss_fn(model(x), y).backward()\n"
        "        model.eval()\n        model.train()\n\n\nnet = nn.Sequential(nn.Linear(4, 2))\ntrainer = Trainer()\n"
        "trainer.train(net, data, epochs=2)\nwith torch.no_grad():\n    print(net(x))\n",
        # backward() for input gradients (saliency) does not train the caller's model
        "class Interpreter:\n    def __init__(self, model):\n        self.model = model\n\n    def saliency_gradients(self, x):\n"
        "        x.requires_grad_()\n        self.model(x).sum().backward()\n        return x.grad\n\n    def predict(self, x):\n"
        "        with torch.no_grad():\n            return self.model(x)\n",
        # a helper whose forward is the training step (its caller runs backward() on the result)
        "class Exp:\n    def _step(self, x):\n        return self.model(x)\n\n    def load(self, p):\n"
        "        self.model.load_state_dict(torch.load(p, weights_only=True))\n\n    def train(self, loader):\n"
        "        self.model.train()\n        for x in loader:\n            loss = self._step(x)\n            loss.backward()\n",
    )

    def check(self, ctx):
        project = ctx.project
        module = project.modules.get(ctx.path)
        if module is None:
            return
        nodes = {(site.node.lineno, site.node.col_offset): site.node for site in ctx.calls}
        summaries = [(func, scope, module.functions.get(_local(func, scope))) for func, scope in ctx.functions]
        summaries.append((None, None, module.module_level))
        loops = _loops_by_function(ctx)
        restored_by_class: dict[str, frozenset[str]] = {}
        for func, scope, fs in summaries:
            if fs is None or (scope is not None and self._skip_function(ctx, func, scope)):
                continue
            if not any(item.kind == "forward" or (item.kind == "call" and item.receiver.startswith("self:")) for item in fs.items):
                continue  # runs no model itself
            if scope is not None and scope.cls is None and func.name.startswith("test_") and not project.callers(fs):
                continue  # a test function pytest calls: it builds tiny models on purpose
            events = project.events(fs)
            reported = set()
            if fs.cls is not None and fs.cls not in restored_by_class:
                restored_by_class[fs.cls] = (_restored_attributes(project, module, fs.cls), _class_training(project, module, fs.cls))
            restored, (trained, helpers) = restored_by_class.get(fs.cls, (frozenset(), ({}, frozenset())))
            if fs.name in helpers:
                trained = {}  # part of the training itself
            for site, reason in _inference_sites(fs, events, loops.get(id(func), []), nodes, restored, trained):
                receiver = site.receiver
                if receiver in reported or not self._model_receiver(ctx, project, receiver) or _not_a_module_branch(site, receiver):
                    continue
                mode, why = project.mode_at(fs, receiver, site.line, site.col, site.conds)
                if mode is None and receiver.startswith("self.") and fs.cls is not None:
                    mode, why = _class_evidence(project, module, fs, receiver)
                    if mode is None and not why and reason in ("no-grad", "function"):
                        mode, why = _sibling_evidence(project, module, fs, receiver)
                    if mode is None and not why and reason in ("no-grad", "function"):
                        mode, why = _factory_evidence(project, module, fs, receiver)
                if mode != "train" or _recalibration(ctx, fs, events, site, receiver):
                    continue
                reported.add(receiver)
                yield self.finding(
                    ctx,
                    nodes[(site.line, site.col)],
                    f"{receiver} runs inference ({_REASONS[reason]}) in training mode: {why}; "
                    f"no {receiver}.eval() on that path, so Dropout and BatchNorm behave as in training",
                    f"call {receiver}.eval() first (torch.no_grad() does not change the mode)",
                )

    @staticmethod
    def _skip_function(ctx, func, scope) -> bool:
        name = func.name
        return (
            (name.startswith("test_") and _pytest_file(ctx.path))
            or name in ("forward", "training_step")
            or FRAMEWORK_HOOK_RE.search(name) is not None
            or ctx.in_framework_class(scope)
            or ctx.is_module_class(scope.cls)
        )

    @staticmethod
    def _model_receiver(ctx, project, receiver) -> bool:
        """Not a frozen/teacher/EMA copy, not a function or class: a model instance (that it is
        a module in training mode is what the path evidence must show)."""
        frozen = project.frozen if "." in receiver else project.frozen_near(ctx.path)
        if NOT_TRAINED_RE.search(receiver) or receiver.split(".")[-1] in frozen:
            return False
        head = receiver.split(".")[0]
        return not (head in ctx.imports or (head != "self" and project.resolve(ctx.path, head) is not None))


def _not_a_module_branch(site, receiver) -> bool:
    """The `else` of `if isinstance(net, nn.Module)`: there the receiver is a plain function."""
    pattern = re.compile(rf"isinstance\(\s*{re.escape(receiver)}\s*,.*Module")
    return any(not taken and pattern.search(key) for key, taken, _ in site.conds)


def _pytest_file(path: str) -> bool:
    """Where pytest collects `test_*` functions: a unit test builds tiny models on purpose."""
    parts = path.replace("\\", "/").split("/")
    name = parts[-1]
    return name.startswith("test_") or name.endswith("_test.py") or any(p in ("tests", "test", "testing") for p in parts[:-1])


def _local(func, scope) -> str:
    return f"{scope.cls.name}.{func.name}" if scope.cls is not None else func.name


def _loops_by_function(ctx) -> dict[int, list]:
    found: dict[int, list] = {}
    for loop, scope in ctx.loops:
        found.setdefault(id(scope.func), []).append(loop)
    return found


def _restored_attributes(project, module, cls_name) -> frozenset[str]:
    """`self.x` into which some method of the class loads weights (a predictor's checkpoint)."""
    cls = module.classes.get(cls_name)
    found = set()
    for name in cls.methods if cls is not None else ():
        method = module.functions.get(f"{cls_name}.{name}")
        for item in method.items if method is not None else ():
            if item.kind == "load" and item.receiver and item.receiver.startswith("self."):
                found.add(item.receiver)
            elif item.kind == "assign" and item.receiver.startswith("self.") and (item.origin or "").endswith("+weights"):
                found.add(item.receiver)
            elif item.kind == "assign" and item.receiver.startswith("self.") and _restored_by_helper(project, method, item.origin or ""):
                found.add(item.receiver)
    return frozenset(found)


def _restored_by_helper(project, method, origin) -> bool:
    """`self.model = self._load_model(cfg, state_dict)`: a method of the class that loads
    weights into the model it returns."""
    found = project.own_method(method, origin[5:]) if origin.startswith("call:self.") else None
    helper = found[1] if found is not None and found[0] == "function" else None
    if helper is None:
        return False
    loaded = {item.receiver for item in helper.items if item.kind == "load" and item.receiver}
    return any(item.kind == "return" and (item.origin or "")[6:] in loaded for item in helper.items if (item.origin or "").startswith("alias:"))


def _class_training(project, module, cls_name):
    """`self.x` that a method of the class trains (forward with autograd on, then backward()),
    and the methods that training runs through."""
    cls = module.classes.get(cls_name)
    trained, helpers = {}, set()
    for name in cls.methods if cls is not None else ():
        method = module.functions.get(f"{cls_name}.{name}")
        if method is None:
            continue
        events = project.events(method)
        if not any(e.kind == "backward" and not e.grad_off for e in events) or _inspects_gradients(method):
            continue
        helpers.add(name)
        helpers.update(item.receiver[5:] for item in method.items if item.kind == "call" and item.receiver.startswith("self:"))
        for e in events:
            if e.kind == "forward" and not e.grad_off and e.receiver and e.receiver.startswith("self."):
                last = e.receiver.rsplit(".", 1)[-1]
                if last in project.trained or MODEL_NAME_RE.search(last):  # a model, not a callable attribute
                    trained.setdefault(e.receiver, name)
    return trained, frozenset(helpers)


def _inference_sites(fs, events, loops, nodes, restored=frozenset(), class_trained=None):
    """Direct forwards of `fs` that are inference: under no_grad/inference_mode, in an
    evaluation function, after load_state_dict, or after the training loop."""
    by_name = INFERENCE_FUNC_RE.match(fs.name) is not None
    backward = [e for e in events if e.kind == "backward" and not e.grad_off]
    # the loops that run backward() themselves, not only through a nested loop: an evaluation
    # after one of them (even inside the epoch loop) sees the model as training left it
    training_loops = [
        loop for loop in loops
        if any(
            _inside(loop, e) and not any(_contains(loop, other) and _inside(other, e) for other in loops)
            for e in backward
        )
    ]
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
            if not any((e.line, e.col) < position for e in backward):
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
        elif any(_restores(e, event.receiver) and (e.line, e.col) < position for e in events):
            yield event, "restored"
        elif fs.name != "__init__" and any(related(event.receiver, r) for r in restored):
            yield event, "restored"
        elif class_trained and fs.name != "__init__" and event.receiver in class_trained:
            yield event, "after-fit"


def _restores(event, receiver) -> bool:
    """load_state_dict, torch.load or a constructor given pretrained weights."""
    if event.kind == "load":
        return related(event.receiver, receiver)
    origin = event.origin or ""
    return event.kind == "assign" and event.receiver == receiver and (origin.endswith("+weights") or origin == "built:torch.load")


def _contains(outer, inner) -> bool:
    return outer is not inner and (outer.lineno, outer.col_offset) <= (inner.lineno, inner.col_offset) and (
        (inner.end_lineno, inner.end_col_offset) <= (outer.end_lineno, outer.end_col_offset)
    )


def _inside(loop, event) -> bool:
    return (loop.lineno, loop.col_offset) <= (event.line, event.col) <= (loop.end_lineno, loop.end_col_offset)


def _evaluation_loop(loop) -> bool:
    target = getattr(loop, "iter", None)
    text = dotted_name(target.func if isinstance(target, ast.Call) else target) if target is not None else None
    if isinstance(target, ast.Call) and target.args and text in ("enumerate", "tqdm", "tqdm.tqdm", "iter", "zip"):
        text = dotted_name(target.args[0])
    return text is not None and EVAL_LOADER_RE.search(text.rsplit(".", 1)[-1]) is not None


def _class_evidence(project, module, fs, receiver):
    """An evaluator, predictor or agent class holding the model, no eval() of it in any method
    nor anywhere in the project on that name, and the evidence that it is in training mode:
    another method trains it, it is built in __init__, or the project builds the class with a
    model in training mode."""
    cls = module.classes.get(fs.cls)
    if cls is None:
        return None, ""
    methods = [m for m in (module.functions.get(f"{cls.name}.{name}") for name in cls.methods) if m is not None]
    events = {m.name: project.events(m) for m in methods}
    if any(
        (e.kind == "eval" or (e.kind == "train" and e.origin == "variable")) and related(e.receiver, receiver)
        for found in events.values() for e in found
    ):
        return None, ""  # eval(), or train(flag), somewhere in the class
    for method in methods:
        for item in method.items:
            if item.kind == "assign" and item.receiver == receiver:
                mode, why = project.origin_mode(method, item.origin or "", f"{short_path(method.path)}:{item.line}", item, 0)
                if mode == "eval" or (mode is None and why.endswith(NO_MODE_LAYERS)):
                    return None, why  # built in eval mode, or without Dropout/BatchNorm
    for method in methods:
        found = events[method.name]
        backward = None if _inspects_gradients(method) else next((e for e in found if e.kind == "backward"), None)
        last = receiver.rsplit(".", 1)[-1]
        if backward is not None and method is not fs and (last in project.trained or MODEL_NAME_RE.search(last)) and any(
            e.kind in ("forward", "train") and not e.grad_off and e.receiver not in (None, "self") and related(e.receiver, receiver)
            for e in found
        ):
            return "train", (
                f"{method.name}() trains {receiver} (backward() at {short_path(method.path)}:{backward.line}) "
                f"and no method of {cls.name} calls {receiver}.eval()"
            )
    init = module.functions.get(f"{cls.name}.__init__")
    if init is None or receiver not in cls.model_attrs:
        return None, ""
    for item in init.items:
        if item.kind != "assign" or item.receiver != receiver:
            continue
        origin = item.origin or ""
        if not origin.startswith("alias:"):
            if receiver.rsplit(".", 1)[-1] in project.evaluated:
                return None, ""  # (an eval() of that name elsewhere in the project may be this model's)
            mode, why = project.origin_mode(init, origin, f"{short_path(init.path)}:{item.line}", item, 0)
            return (mode, f"{why}; no method of {cls.name} calls {receiver}.eval()") if mode == "train" else (None, "")
        param = origin[6:].split(".")[0]
        if param not in init.params:
            return None, ""
        for caller, call in project.class_constructions(cls):
            argument = _argument_for(init, call, param)
            if argument is None:
                continue
            mode, why = project.mode_at(caller, argument, call.line, call.col, call.conds)
            if mode == "train" and not _switched_after(project, caller, argument, call):
                return "train", (
                    f"{cls.name}({argument}) is built at {short_path(caller.path)}:{call.line} with {argument} in training mode "
                    f"({why}) and no method of {cls.name} calls eval() on it"
                )
    return None, ""


def _inspects_gradients(method) -> bool:
    """A method that runs backward() for the input gradients (saliency, attributions), with no
    optimizer step: it does not train the model."""
    return GRADIENT_INSPECTION_RE.search(method.name) is not None and not any(item.kind == "step" for item in method.items)


def _passed_model(project, module, fs, receiver):
    """(class, __init__, parameter) when `receiver` is the model the caller hands to the class's
    constructor (`self.model = model`) and no method of the class switches its mode."""
    cls = module.classes.get(fs.cls)
    init = module.functions.get(f"{fs.cls}.__init__") if cls is not None else None
    if init is None or receiver.count(".") != 1:
        return None
    passed = [i for i in init.items if i.kind == "assign" and i.receiver == receiver and (i.origin or "").startswith("alias:")]
    if not passed or passed[0].origin[6:] not in init.params:
        return None
    methods = [m for m in (module.functions.get(f"{cls.name}.{name}") for name in cls.methods) if m is not None]
    if any(e.kind in ("eval", "train") and related(e.receiver, receiver) for m in methods for e in project.events(m)):
        return None
    return cls, init, passed[0].origin[6:]


def _factory_evidence(project, module, fs, receiver):
    """The class's own factory (a classmethod) puts the model in eval mode before building the
    class with it (`model.eval(); return cls(model, reader)`), its constructor never does: built
    directly, it runs its caller's model in whatever mode that model is in."""
    found = _passed_model(project, module, fs, receiver)
    if found is None:
        return None, ""
    cls, init, param = found
    for name in cls.methods:
        factory = module.functions.get(f"{cls.name}.{name}")
        if factory is None or not {"::classmethod", "::staticmethod"} & set(factory.decorators):
            continue
        for item in factory.items:
            if item.kind != "eval" or not item.receiver or "." in item.receiver:
                continue
            # then returns what it builds (`cls(model, ...)`, `predictor_class(model, ...)`)
            if any(later.kind == "return" and (later.line, later.col) > (item.line, item.col) and (later.origin or "").startswith("call:") for later in factory.items):
                return "train", (
                    f"{cls.name}.{name}() puts the model in eval mode before building a {cls.name} "
                    f"({short_path(factory.path)}:{item.line}), but {cls.name}() built directly keeps the mode of its caller's model "
                    f"(a new or trained model is in training mode) and never calls {receiver}.eval()"
                )
    return None, ""


def _sibling_evidence(project, module, fs, receiver):
    """A wrapper that runs the model its caller hands in (`self.model = model`) and never calls
    eval(), where another subclass of the same project base puts its own `self.model` in eval
    mode itself: the project's wrappers own the mode, this one forgot (and no construction in the
    project hands it a model in eval mode)."""
    found = _passed_model(project, module, fs, receiver)
    if found is None:
        return None, ""
    cls, init, param = found
    for caller, call in project.class_constructions(cls):
        argument = _argument_for(init, call, param)
        if argument is None or project.mode_at(caller, argument, call.line, call.col, call.conds)[0] != "train":
            return None, ""  # built in the project with a model not shown to be training
    bases = {(base[1].path, base[1].name) for base in (project.resolve(cls.path, ref) for ref in cls.bases) if base and base[0] == "class"}
    for other in _subclasses(project, bases, cls):
        where = _evaluates_own(project, other, receiver)
        if where:
            return "train", (
                f"{cls.name} keeps the mode of the model its caller passes in (a new or trained model is in training mode) "
                f"and never calls {receiver}.eval(), while "
                f"{other.name}, another subclass of the same base, puts its {receiver} in eval mode at {where}"
            )
    return None, ""


def _subclasses(project, bases, cls):
    """Project classes other than `cls` with one of `bases` (path, name) as a direct base."""
    if not bases:
        return
    names = {name for _, name in bases}
    for other_module in project.modules.values():
        for other in other_module.classes.values():
            if other is cls or not any(b.lstrip(":").rsplit(".", 1)[-1] in names for b in other.bases):
                continue
            found = [project.resolve(other.path, b) for b in other.bases]
            if any(f and f[0] == "class" and (f[1].path, f[1].name) in bases for f in found):
                yield other


def _evaluates_own(project, cls, receiver) -> str | None:
    """Where a method of `cls` puts its own `receiver` in eval mode (`self.model = X.eval()`)."""
    module = project.modules[cls.path]
    for name in cls.methods:
        method = module.functions.get(f"{cls.name}.{name}")
        for item in method.items if method is not None else ():
            if (item.kind == "eval" and item.receiver == receiver) or (item.kind == "assign" and item.receiver == receiver and item.origin == "eval"):
                return f"{short_path(cls.path)}:{item.line}"
    return None


def _switched_after(project, caller, argument, construction) -> bool:
    """After the holder is built with the model, the building function switches the model's
    mode or hands it to a call that may (`p = Predictor(model); model.eval()`)."""
    return any(
        (e.line, e.col) > (construction.line, construction.col)
        and ((e.kind in ("eval", "train") and related(e.receiver, argument)) or (e.kind == "call" and not _neutral(e.receiver) and any(related(a, argument) for a in e.args)))
        for e in project.events(caller)
    )


def _recalibration(ctx, fs, events, site, receiver) -> bool:
    """`model.train()` then forwards under no_grad, no backward, no eval() or checkpoint before
    the train(): BatchNorm recalibration or Monte-Carlo dropout, on purpose."""
    before = [e for e in events if (e.line, e.col) < (site.line, site.col)]
    if _says_calibration(ctx, fs, site) and not any(e.kind in ("backward", "eval", "load") for e in before):
        return True
    for event in reversed(before):
        if event.kind == "backward":
            return False
        if event.kind == "train" and related(event.receiver, receiver) and event.via is None:
            line = ctx.lines[event.line - 1] if 0 < event.line <= len(ctx.lines) else ""
            if RECALIBRATION_RE.search(line) or RECALIBRATION_RE.search(fs.name):
                return True
            if INFERENCE_FUNC_RE.match(fs.name):
                return False  # an evaluation function that puts the model in training mode
            earlier = [e for e in before if (e.line, e.col) < (event.line, event.col)]
            return not any(e.kind in ("eval", "load") and related(e.receiver, receiver) for e in earlier)
    return False


def _says_calibration(ctx, fs, site) -> bool:
    """The function's name, or a comment between its start and the forward, says the forwards
    calibrate BatchNorm statistics (a fresh model run under no_grad to fill running stats)."""
    if CALIBRATION_RE.search(fs.name):
        return True
    first = max(site.line - 40, 1)
    return any("#" in line and CALIBRATION_RE.search(line.split("#", 1)[1]) for line in ctx.lines[first - 1 : site.line])


_REASONS = {
    "after-training": "under no_grad after the training loop",
    "test-loop": "in a test loop after the training loop",
    "no-grad": "under no_grad/inference_mode",
    "function": "in an evaluation function",
    "restored": "with restored or pretrained weights",
    "after-fit": "in a method of a class that trains it elsewhere",
}
