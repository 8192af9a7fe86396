import ast

from modeguard.lint.project import receiver_of as chain_root
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
        # a fresh export wrapper, without Dropout/BatchNorm of its own, around a model in eval
        "class Export(nn.Module):\n    def __init__(self, model):\n        super().__init__()\n        self.model = model\n\n"
        "    def forward(self, x):\n        return self.model(x).softmax(-1)\n\n\n"
        "model = Net()\nmodel.eval()\nwrapper = Export(model)\ntorch.onnx.export(wrapper, x, 'm.onnx')\n",
    )

    def check(self, ctx):
        project = ctx.project
        module = project.modules.get(ctx.path)
        if module is None:
            return
        for site in ctx.calls:
            what = CAPTURES.get(site.qualname or "")
            if what is None or not site.node.args:
                continue
            target = site.node.args[0]
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
            if mode != "train":
                continue  # in eval, or no evidence on this path (the caller decides)
            yield self.finding(
                ctx,
                site.node,
                f"{what} captures {receiver} in training mode ({why}); nothing put it in eval mode before: "
                "the captured graph keeps training-mode Dropout/BatchNorm",
                f"call {receiver}.eval() before {what}",
            )
