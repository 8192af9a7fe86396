import ast

from modeguard.lint.rule import Rule, insert_after


class UncalledModeMethod(Rule):
    code = "MG103"
    name = "uncalled-mode-method"
    summary = "`model.eval` / `model.train` without parentheses does nothing"
    rationale = (
        "`model.eval` on its own line only looks up the bound method; the model stays in the mode "
        "it was in, so inference runs with Dropout on and BatchNorm using batch statistics."
    )
    fixable = True
    triggers = (".eval", ".train")
    invalid = (
        "model.load_state_dict(torch.load(path, weights_only=True))\nmodel.eval\npreds = model(x)\n",
        "def validate(net, loader):\n    net.train\n",
    )
    valid = ("model.eval()\n", "fn = model.eval\nfn()\n", "model.train(False)\n")

    def check(self, ctx):
        for stmt, _ in ctx.expression_statements:
            value = stmt.value
            if isinstance(value, ast.Attribute) and value.attr in ("eval", "train"):
                yield self.finding(
                    ctx,
                    value,
                    f"`.{value.attr}` is not called: the model's mode does not change",
                    f"call it: .{value.attr}()",
                    insert_after(value, "()", f"Call .{value.attr}()"),
                )
