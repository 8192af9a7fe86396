import ast

from modeguard.lint.flow import NOT_TRAINED_RE, FlowIndex, chain_root, related
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
    triggers = (".eval(", "train(False)")
    invalid = (
        "def validate(model, loader):\n    model.eval()\n    with torch.no_grad():\n        return sum(model(x).sum() for x in loader)\n\n\nfor epoch in range(10):\n    for x, y in loader:\n        loss = loss_fn(model(x), y)\n        loss.backward()\n        optimizer.step()\n    validate(model, val_loader)\n",
        "model.train()\nfor epoch in range(3):\n    for x, y in loader:\n        optimizer.zero_grad()\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    model.eval()\n    evaluate(model)\n",
    )
    valid = (
        "for epoch in range(10):\n    model.train()\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    model.eval()\n    evaluate(model)\n",
        "def validate(model, loader):\n    model.eval()\n    out = [model(x) for x in loader]\n    model.train()\n    return out\n\n\nfor epoch in range(10):\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    validate(model, val_loader)\n",
        "teacher.eval()\nfor x, y in loader:\n    with torch.no_grad():\n        t = teacher(x)\n    loss_fn(student(x), t).backward()\n    optimizer.step()\n",
        "for epoch in range(10):\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    ema_model.eval()\n    evaluate(ema_model)\n",
    )

    def check(self, ctx):
        flow = FlowIndex(ctx)
        trained = _trained_receivers(ctx, flow)
        reported: set[int] = set()
        for loop, scope in ctx.loops:
            events = flow.events_within(scope.func, loop)
            kinds = {e.kind for e in events}
            if not {"backward", "step"} <= kinds:
                continue
            cycle = events + events  # the loop body runs again
            for i, event in enumerate(events):
                if event.kind != "eval" or id(event.node) in reported:
                    continue
                if NOT_TRAINED_RE.search(event.receiver or "") or not _is_trained(event.receiver, trained):
                    continue
                for later in cycle[i + 1 :]:
                    if later.kind == "train" and related(later.receiver, event.receiver):
                        break
                    if later.kind == "backward":
                        reported.add(id(event.node))
                        via = f" (in {event.via}())" if event.via else ""
                        yield self.finding(
                            ctx,
                            event.node,
                            f"{event.receiver or 'the model'}.eval(){via} in this training loop is not "
                            "followed by .train() before the next backward(): training continues "
                            "without Dropout and BatchNorm updates",
                            f"call {event.receiver or 'model'}.train() after evaluating (or at the top of each epoch)",
                        )
                        break

def _trained_receivers(ctx, flow) -> set[str]:
    names = set()
    for site in ctx.calls:
        func = site.node.func
        if isinstance(func, ast.Attribute) and func.attr in ("parameters", "train", "named_parameters"):

            root = chain_root(func.value)
            if root:
                names.add(root.rsplit(".", 1)[-1])
    return names

def _is_trained(receiver: str | None, trained: set[str]) -> bool:
    return receiver is None or receiver.rsplit(".", 1)[-1] in trained or not trained
