import ast

from modeguard.findings import Severity
from modeguard.lint.context import compatible
from modeguard.lint.project import related
from modeguard.lint.rule import Rule


class EvalWithoutNoGrad(Rule):
    code = "MG110"
    name = "eval-without-no-grad"
    summary = "Inference after `.eval()` with autograd still on"
    rationale = (
        "`model.eval()` does not turn autograd off: every forward still records the graph and "
        "keeps activations for a backward pass that never comes (inference memory can drop "
        "several-fold under `torch.inference_mode()`). Not selected by default."
    )
    severity = Severity.INFO
    default_enabled = False
    triggers = (".eval(",)
    invalid = ("model.eval()\npreds = model(x)\n",)
    valid = (
        "model.eval()\nwith torch.inference_mode():\n    preds = model(x)\n",
        "model.eval()\nloss = loss_fn(model(x), y)\nloss.backward()  # saliency maps need gradients\n",
        "@torch.no_grad()\ndef predict(model, x):\n    model.eval()\n    return model(x)\n",
        # a project's own decorator around inference_mode
        "def smart_inference_mode():\n    def decorate(fn):\n        return torch.inference_mode()(fn)\n    return decorate\n\n\n"
        "@smart_inference_mode()\ndef run(model, x):\n    model.eval()\n    return model(x)\n",
        "def no_grad_eval(fn):\n    def inner(*a):\n        with torch.no_grad():\n            return fn(*a)\n    return inner\n\n\n"
        "@no_grad_eval\ndef run(net, x):\n    net.eval()\n    return net(x)\n",
    )

    def check(self, ctx):
        project = ctx.project
        module = project.modules.get(ctx.path)
        if module is None:
            return
        nodes = {(site.node.lineno, site.node.col_offset): site.node for site in ctx.calls}
        uses_grad = {
            id(site.scope.func)
            for site in ctx.calls
            if isinstance(site.node.func, ast.Attribute) and site.node.func.attr in ("backward", "grad", "requires_grad_")
        }
        targets = [(func, module.functions.get(f"{scope.cls.name}.{func.name}" if scope.cls else func.name)) for func, scope in ctx.functions]
        targets.append((None, module.module_level))
        for func, fs in targets:
            if fs is None or id(func) in uses_grad or not any(item.kind == "forward" for item in fs.items):
                continue
            events = project.events(fs)
            if any(e.kind == "backward" for e in events):
                continue
            for event in events:
                if event.kind != "forward" or event.via is not None or event.grad_off or (event.line, event.col) not in nodes:
                    continue
                receiver = event.receiver
                if receiver is None or "." in receiver:
                    continue
                mode = None
                for earlier in events:
                    if (earlier.line, earlier.col) >= (event.line, event.col):
                        break
                    if earlier.kind in ("eval", "train") and earlier.receiver and related(earlier.receiver, receiver) and compatible(earlier.conds, event.conds):
                        mode = earlier.kind if earlier.receiver == receiver or earlier.kind == "train" else mode
                if mode == "eval":
                    yield self.finding(
                        ctx,
                        nodes[(event.line, event.col)],
                        f"{receiver} runs in eval mode with autograd on: the graph and activations are kept for nothing",
                        "wrap inference in torch.inference_mode() (or torch.no_grad())",
                    )
