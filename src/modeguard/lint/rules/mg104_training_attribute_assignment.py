import ast

from modeguard.lint.project import receiver_of as chain_root
from modeguard.lint.models import looks_like_model
from modeguard.lint.rule import Rule

MODULE_ITERATORS = ("modules", "named_modules", "children", "named_children")


class TrainingAttributeAssignment(Rule):
    code = "MG104"
    name = "training-attribute-assignment"
    summary = "`x.training = <bool>` changes one module only, not its children"
    rationale = (
        "`Module.train()`/`eval()` recurse through all submodules; assigning `.training` sets the "
        "flag of that one object, so its Dropout and BatchNorm children keep their old mode."
    )
    triggers = (".training",)
    invalid = (
        "model.training = False\npreds = model(x)\n",
        "class Runner:\n    def predict(self, x):\n        self.net.training = False\n        return self.net(x)\n",
    )
    valid = (
        "class Trainer:\n    def fit(self):\n        self.training = True  # a state flag, not nn.Module.training\n",
        "trainer.training = False\n",
        "class M(nn.Module):\n    def train(self, mode=True):\n        super().train(mode)\n        self.backbone.training = False\n        return self\n",
        "for m in model.modules():\n    m.training = False\n",
        "model.eval()\n",
        "for name, m in model.named_modules():\n    if isinstance(m, nn.BatchNorm2d):\n        m.training = False\n",
    )

    def check(self, ctx):
        loop_targets = _module_loop_targets(ctx)
        for assign, scope in ctx.assigns:
            if scope.func is not None and scope.func.name in ("train", "eval", "__init__"):
                continue
            if not (isinstance(assign.value, ast.Constant) and isinstance(assign.value.value, bool)):
                continue
            for target in assign.targets:
                if not (isinstance(target, ast.Attribute) and target.attr == "training"):
                    continue
                if isinstance(target.value, ast.Name) and target.value.id in loop_targets:
                    continue  # for m in model.modules(): m.training = ... reaches every module
                if not _is_module(ctx, scope, target.value):
                    continue  # e.g. Lightning's Trainer.training is a state flag, not a module
                method = "train()" if assign.value.value else "eval()"
                yield self.finding(
                    ctx,
                    target,
                    f"assigning .training = {assign.value.value} does not reach the submodules",
                    f"call .{method} (it recurses), or loop over .modules()",
                )


def _is_module(ctx, scope, receiver_node) -> bool:
    receiver = chain_root(receiver_node)
    if receiver is None:
        return False
    if receiver == "self":
        return ctx.is_module_class(scope.cls)
    return looks_like_model(ctx, scope.func, receiver)


def _module_loop_targets(ctx) -> set[str]:
    names = set()
    for loop, _ in ctx.loops:
        if isinstance(loop, ast.For) and isinstance(loop.iter, ast.Call):
            func = loop.iter.func
            if isinstance(func, ast.Attribute) and func.attr in MODULE_ITERATORS:
                for node in ast.walk(loop.target):
                    if isinstance(node, ast.Name):
                        names.add(node.id)
    return names
