import ast

from modeguard.findings import Severity
from modeguard.lint.flow import FlowIndex, related
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
    )

    def check(self, ctx):
        flow = FlowIndex(ctx)
        uses_grad = {
            id(site.scope.func)
            for site in ctx.calls
            if isinstance(site.node.func, ast.Attribute) and site.node.func.attr in ("backward", "grad", "requires_grad_")
        }
        for site in ctx.calls:
            call = site.node
            if site.scope.grad_off or id(site.scope.func) in uses_grad or not isinstance(call.func, ast.Name):
                continue
            scope_node = site.scope.func or ctx.tree
            events = flow.events(scope_node)
            position = (call.lineno, call.col_offset)
            if any(
                e.kind == "eval" and e.receiver == call.func.id and (e.node.lineno, e.node.col_offset) < position
                for e in events
            ) and not any(e.kind == "train" and related(e.receiver, call.func.id) and (e.node.lineno, e.node.col_offset) < position for e in events):
                yield self.finding(
                    ctx,
                    call,
                    f"{call.func.id} runs in eval mode with autograd on: the graph and activations are kept for nothing",
                    "wrap inference in torch.inference_mode() (or torch.no_grad())",
                )
