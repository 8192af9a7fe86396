from modeguard.lint.context import compatible
from modeguard.lint.models import NOT_TRAINED_RE
from modeguard.lint.project import related
from modeguard.lint.rule import Rule


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
