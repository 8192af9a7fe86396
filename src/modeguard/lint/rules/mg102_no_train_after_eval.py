import re

from modeguard.lint.context import compatible
from modeguard.lint.models import NOT_TRAINED_RE
from modeguard.lint.project import related, short_path
from modeguard.lint.rule import Rule


# a training-loop hook that opens a validation run, and the hook that closes it
VALIDATION_BEGIN_RE = re.compile(r"^(?P<head>(on_)?(train_)?(valid|validation|val|eval|evaluation)_?)(?P<tail>begin|start)$")


class NoTrainAfterEval(Rule):
    code = "MG102"
    name = "no-train-after-eval"
    summary = "A training loop switches to eval and never back before the next `backward()`"
    rationale = (
        "After validation inside the training loop the model stays in eval mode unless "
        "`model.train()` is called again: the remaining epochs train without Dropout and "
        "without updating BatchNorm statistics, silently."
    )
    triggers = (".eval(", "train(False)", "backward")
    invalid = (
        "def validate(model, loader):\n    model.eval()\n    with torch.no_grad():\n        return sum(model(x).sum() for x in loader)\n\n\nfor epoch in range(10):\n    for x, y in loader:\n        loss = loss_fn(model(x), y)\n        loss.backward()\n        optimizer.step()\n    validate(model, val_loader)\n",
        "model.train()\nfor epoch in range(3):\n    for x, y in loader:\n        optimizer.zero_grad()\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    model.eval()\n    evaluate(model)\n",
        # backward() alone marks the training loop (the step is an opaque callable)
        "for epoch in range(3):\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        apply_update()\n        if step % 100 == 0:\n"
        "            model.eval()\n            evaluate(model)\n",
        # a training-logic class: the validation-begin hook switches to eval, its end hook never back
        "class Logic:\n    def train_epoch_begin(self, model):\n        model.train()\n\n    def train_step(self, model, batch):\n"
        "        model(batch).mean().backward()\n\n    def train_validation_begin(self, model):\n        model.eval()\n\n"
        "    def train_validation_end(self, model):\n        pass\n",
        # a factory returns the model in eval mode; it is wrapped in a LightningModule and fitted
        "import lightning as L\n\n\ndef build_model():\n    model = Net()\n    return model.eval()\n\n\n"
        "class Lit(L.LightningModule):\n    def __init__(self, model):\n        super().__init__()\n        self.model = model\n\n"
        "    def training_step(self, batch, idx):\n        return self.model(batch).mean()\n\n\n"
        "def main(loader):\n    model = build_model()\n    lit = Lit(model)\n    trainer = L.Trainer()\n    trainer.fit(lit, loader)\n",
    )
    valid = (
        "for epoch in range(10):\n    model.train()\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    model.eval()\n    evaluate(model)\n",
        "def validate(model, loader):\n    model.eval()\n    out = [model(x) for x in loader]\n    model.train()\n    return out\n\n\nfor epoch in range(10):\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    validate(model, val_loader)\n",
        "teacher.eval()\nfor x, y in loader:\n    with torch.no_grad():\n        t = teacher(x)\n    loss_fn(student(x), t).backward()\n    optimizer.step()\n",
        "for epoch in range(10):\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    ema_model.eval()\n    evaluate(ema_model)\n",
        # a frozen backbone put in eval() on purpose at the top of the training function
        "def train_probe(backbone, head, loader):\n    backbone.eval()  # linear probing\n    for x, y in loader:\n"
        "        with torch.no_grad():\n            f = backbone(x)\n        loss_fn(head(f), y).backward()\n        optimizer.step()\n\n\n"
        "for epoch in range(10):\n    train_probe(backbone, head, loader)\n",
        # the mode chosen by a parameter: two branches, two paths; constants decide the branch
        "def run_epoch(model, loader, mode):\n    model.train() if mode == 'train' else model.eval()\n    for x, y in loader:\n"
        "        loss = loss_fn(model(x), y)\n        if mode == 'train':\n            loss.backward()\n            optimizer.step()\n\n\n"
        "for epoch in range(10):\n    run_epoch(model, train_loader, 'train')\n    run_epoch(model, val_loader, 'val')\n",
        # the validation-end hook restores training mode
        "class Logic:\n    def train_epoch_begin(self, model):\n        model.train()\n\n    def train_step(self, model, batch):\n"
        "        model(batch).mean().backward()\n\n    def train_validation_begin(self, model):\n        model.eval()\n\n"
        "    def train_validation_end(self, model):\n        model.train()\n",
        # no hook after validation is declared: the class promises nothing about that moment
        "class Logic:\n    def train_epoch_begin(self, model):\n        model.train()\n\n    def train_step(self, model, batch):\n"
        "        model(batch).mean().backward()\n\n    def train_validation_begin(self, model):\n        model.eval()\n",
        # the LightningModule puts the model it is given back in training mode
        "import lightning as L\n\n\ndef build_model():\n    model = Net()\n    return model.eval()\n\n\n"
        "class Lit(L.LightningModule):\n    def __init__(self, model):\n        super().__init__()\n        self.model = model\n        self.model.train()\n\n"
        "    def training_step(self, batch, idx):\n        return self.model(batch).mean()\n\n\n"
        "def main(loader):\n    model = build_model()\n    lit = Lit(model)\n    trainer = L.Trainer()\n    trainer.fit(lit, loader)\n",
    )

    def check(self, ctx):
        project = ctx.project
        module = project.modules.get(ctx.path)
        if module is None:
            return
        nodes = {(site.node.lineno, site.node.col_offset): site.node for site in ctx.calls}
        loops: dict[int, list] = {}
        for loop, scope in ctx.loops:
            loops.setdefault(id(scope.func), []).append(loop)
        targets = [(func, module.functions.get(f"{scope.cls.name}.{func.name}" if scope.cls else func.name)) for func, scope in ctx.functions]
        targets.append((None, module.module_level))
        reported: set[tuple[int, int]] = set()
        yield from self._check_validation_hooks(ctx, project, module, nodes)
        yield from self._check_factory_eval_fitted(ctx, project, module, nodes)
        for func, fs in targets:
            if fs is None or id(func) not in loops:
                continue
            events = project.events(fs)
            for loop in loops[id(func)]:
                inside = [e for e in events if (loop.lineno, loop.col_offset) <= (e.line, e.col) <= (loop.end_lineno, loop.end_col_offset)]
                if not any(e.kind == "backward" and not e.grad_off for e in inside):
                    continue  # backward() alone marks a training loop
                finding = self._check_loop(ctx, project, inside, nodes, reported)
                if finding is not None:
                    yield finding

    def _check_loop(self, ctx, project, events, nodes, reported):
        cycle = events + events  # the loop body runs again
        for i, event in enumerate(events):
            if event.kind != "eval" or (event.line, event.col) in reported or (event.line, event.col) not in nodes:
                continue
            receiver = event.receiver
            if receiver is not None and (NOT_TRAINED_RE.search(receiver) or receiver.rsplit(".", 1)[-1] in project.frozen):
                continue
            if not any(e.kind == "forward" and not e.grad_off and related(e.receiver, receiver) for e in events):
                continue  # never trained here (a frozen backbone, a teacher run under no_grad)
            if receiver is not None and project.trained and receiver.rsplit(".", 1)[-1] not in project.trained:
                continue  # nothing optimises its parameters or puts it in training mode
            for later in cycle[i + 1 :]:
                if not compatible(later.conds, event.conds):
                    continue  # another branch: `model.train() if train else model.eval()`
                if later.kind == "train" and related(later.receiver, receiver):
                    break
                if later.kind == "backward" and not later.grad_off:
                    reported.add((event.line, event.col))
                    name = receiver or "the model"
                    via = f" (in {event.via}(), {event.detail})" if event.via else ""
                    return self.finding(
                        ctx,
                        nodes[(event.line, event.col)],
                        f"{name}.eval(){via} in this training loop is not followed by {name}.train() before "
                        f"the next backward() (line {later.line}): training continues without Dropout and BatchNorm updates",
                        f"call {name}.train() after evaluating (or at the top of each epoch)",
                    )
        return None

    def _check_validation_hooks(self, ctx, project, module, nodes):
        """A training-loop class (it runs backward() and calls train() in one of its hooks) whose
        validation-begin hook calls eval(), while the matching end hook, which the class or a
        project base declares, never calls train(): training resumes in eval mode until the
        hook that does call train() (often only at the next epoch)."""
        for fs in module.functions.values():
            match = VALIDATION_BEGIN_RE.match(fs.name) if fs.cls is not None else None
            cls = module.classes.get(fs.cls) if match else None
            if cls is None or project.is_module_class(cls):
                continue
            end = project.method(cls, match["head"] + "end")
            if end is None:
                continue  # no hook after validation: nothing promised to restore the mode
            end_events = project.events(end[1])
            for event in project.events(fs):
                if event.kind != "eval" or (event.line, event.col) not in nodes or event.via is not None:
                    continue
                receiver = event.receiver
                if any(e.kind == "train" and related(e.receiver, receiver) for e in end_events):
                    continue
                restorer, trainer = self._class_training(project, cls, receiver)
                if restorer is None or trainer is None:
                    continue
                yield self.finding(
                    ctx,
                    nodes[(event.line, event.col)],
                    f"{receiver}.eval() in {fs.name}() is not undone after validation: {end[1].cls}.{end[1].name}() "
                    f"({short_path(end[1].path)}:{end[1].line}) does not call {receiver}.train(), only {restorer}() does, while "
                    f"{trainer}() trains it: training that resumes before {restorer}() runs without Dropout and BatchNorm updates",
                    f"call {receiver}.train() in {match['head']}end()",
                )

    @staticmethod
    def _class_training(project, cls, receiver):
        """The hook of `cls` (or a project base) that calls `receiver.train()`, and the one that
        runs backward() with autograd on."""
        restorer = trainer = None
        todo, seen = [cls], set()
        while todo:
            current = todo.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            functions = project.modules[current.path].functions
            for name in current.methods:
                method = functions.get(f"{current.name}.{name}")
                if method is None:
                    continue
                events = project.events(method)
                if restorer is None and any(e.kind == "train" and e.origin != "variable" and related(e.receiver, receiver) for e in events):
                    restorer = name
                if (trainer is None or trainer.startswith("_")) and any(e.kind == "backward" and not e.grad_off for e in events):
                    trainer = name  # a public hook (train_step) rather than its private helper
            for base in current.bases:
                found = project.resolve(current.path, base)
                if found is not None and found[0] == "class":
                    todo.append(found[1])
        return restorer, trainer

    def _check_factory_eval_fitted(self, ctx, project, module, nodes):
        """A project factory returns its model after eval(); a caller wraps that model in a
        LightningModule that never calls train() and fits it. Lightning (since 2.2) keeps the mode
        each submodule has when fit() starts, so the whole run trains in eval mode."""
        for fs in module.functions.values():
            if not any(item.kind == "eval" for item in fs.items):
                continue
            evals = [e for e in project.events(fs) if e.kind == "eval" and e.via is None and (e.line, e.col) in nodes]
            if not evals or project.returned_mode(fs, "", 0)[0] != "eval":
                continue
            path = _fitted_in_eval(project, fs, 0)
            if path is None:
                continue
            caller, call, wrapper, wrap, fit = path
            event = evals[-1]
            where = short_path(caller.path)
            yield self.finding(
                ctx,
                nodes[(event.line, event.col)],
                f"{event.receiver}.eval() in {fs.name}() reaches training: the model it returns is built at {where}:{call.line}, "
                f"wrapped in {wrapper.name} (a LightningModule that never calls train()) at {where}:{wrap.line} "
                f"and fitted at {where}:{fit.line}; Lightning (2.2 and later) keeps the mode submodules have when fit() starts, "
                f"so it trains without Dropout and BatchNorm updates",
                f"drop the eval() from {fs.name}() or call train() on the model in {wrapper.name}.__init__",
            )


def _fitted_in_eval(project, fs, depth):
    """(caller, the call of the factory, the LightningModule class, its construction, the fit()
    call) when what `fs` returns is wrapped by a caller in a LightningModule without train()
    and fitted."""
    if depth > 3:
        return None
    for caller, item in project.callers(fs)[:16]:
        if caller is fs:
            continue
        if project.returned_mode(caller, "", 0)[0] == "eval":
            found = _fitted_in_eval(project, caller, depth + 1)
            if found is not None:
                return found
            continue
        bound = next((i.receiver for i in caller.items if i.kind == "assign" and i.line == item.line and (i.origin or "").startswith("call:")), None)
        if bound is None:
            continue
        for wrap in caller.items:
            if wrap.kind != "call" or wrap.line < item.line or not any(root == bound for _, root in wrap.args):
                continue
            cls = project.constructed_class(caller, wrap)
            if cls is None or not _is_lightning(project, cls, 0) or _calls_train(project, cls):
                continue
            instance = next((i.receiver for i in caller.items if i.kind == "assign" and i.line == wrap.line and (i.origin or "").startswith("call:")), None)
            fit = next(
                (i for i in caller.items if i.kind == "call" and i.line > wrap.line and (i.receiver or "").endswith(".fit") and any(root == instance for _, root in i.args)),
                None,
            )
            if instance is not None and fit is not None:
                return caller, item, cls, wrap, fit
    return None


def _is_lightning(project, cls, depth) -> bool:
    for base in cls.bases:
        if base.endswith("LightningModule"):
            return True
        found = project.resolve(cls.path, base) if depth < 5 else None
        if found is not None and found[0] == "class" and _is_lightning(project, found[1], depth + 1):
            return True
    return False


def _calls_train(project, cls) -> bool:
    """Some method of the class calls train() on itself or an attribute."""
    for name in cls.methods:
        method = project.modules[cls.path].functions.get(f"{cls.name}.{name}")
        if method is not None and any(e.kind == "train" and (e.receiver or "").split(".")[0] == "self" for e in project.events(method)):
            return True
    return False
