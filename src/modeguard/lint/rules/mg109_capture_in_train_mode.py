import ast

from modeguard.lint.flow import FlowIndex, chain_root, related
from modeguard.lint.models import model_origin
from modeguard.lint.rule import Rule

CAPTURES = {
    "torch.jit.trace": "torch.jit.trace",
    "torch.onnx.export": "torch.onnx.export",
    "torch.export.export": "torch.export.export",
    "torch.ao.quantization.fuse_modules": "fuse_modules",
    "torch.quantization.fuse_modules": "fuse_modules",
    "torch.ao.quantization.quantize_fx.prepare_fx": "prepare_fx",
}


class CaptureInTrainMode(Rule):
    code = "MG109"
    name = "capture-in-train-mode"
    summary = "Tracing, exporting or fusing a model that was not put in eval mode"
    rationale = (
        "`torch.jit.trace`, `torch.onnx.export`, `torch.export.export` and `fuse_modules` "
        "record the mode the model is in: traced in training mode, the exported graph keeps "
        "Dropout on and BatchNorm on batch statistics forever (and fusion needs eval)."
    )
    triggers = ("trace", "export", "fuse_modules", "prepare_fx")
    invalid = (
        "model = Net()\nmodel.load_state_dict(torch.load(p, weights_only=True))\ntorch.onnx.export(model, x, 'm.onnx')\n",
        "def export(path):\n    net = ResNet()\n    traced = torch.jit.trace(net, torch.randn(1, 3, 224, 224))\n    traced.save(path)\n",
    )
    valid = (
        "model = Net()\nmodel.eval()\ntorch.onnx.export(model, x, 'm.onnx')\n",
        "traced = torch.jit.trace(Net().eval(), x)\n",
        "def export(model, path):  # the caller decides the mode\n    torch.onnx.export(model, x, path)\n",
        "model = Net().eval()\nexported = torch.export.export(model, (x,))\n",
    )

    def check(self, ctx):
        flow = FlowIndex(ctx)
        for site in ctx.calls:
            what = CAPTURES.get(site.qualname or "")
            if what is None or not site.node.args:
                continue
            target = site.node.args[0]
            if any(isinstance(n, ast.Attribute) and n.attr == "eval" for n in ast.walk(target)):
                continue  # torch.jit.trace(model.eval(), x)
            receiver = chain_root(target)
            func = site.scope.func
            scope_node = func if func is not None else ctx.tree
            if receiver is None or model_origin(ctx, func, receiver) != "built":
                continue  # passed in: the caller decides the mode
            position = (site.node.lineno, site.node.col_offset)
            events = flow.events(scope_node)
            if any(
                e.kind == "eval" and related(e.receiver, receiver) and (e.node.lineno, e.node.col_offset) < position
                for e in events
            ):
                continue
            yield self.finding(
                ctx,
                site.node,
                f"{what} captures {receiver} in its current mode, and nothing put it in eval mode: "
                "the captured graph keeps training-mode Dropout/BatchNorm",
                f"call {receiver}.eval() before {what}",
            )
