"""One pass over a parsed file that indexes what every rule asks about, with names resolved
through the file's imports. Rules query the index instead of walking the tree again."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modeguard.lint.notebooks import NotebookSource

GRAD_OFF = {"torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad", "torch.autograd.grad_mode.no_grad"}
GRAD_SWITCH = {"torch.set_grad_enabled", "torch.autograd.set_grad_enabled", "torch.autograd.grad_mode.set_grad_enabled"}
# A project's own decorator around no_grad/inference_mode (`@smart_inference_mode()`, `@torch_no_grad`)
GRAD_OFF_NAME_RE = re.compile(r"(^|[._])(no_grad|inference_mode)$")
FUNCTIONAL = "torch.nn.functional"
MODULE_BASE_RE = re.compile(r"(^|\.)(Module|LightningModule|Sequential|ModuleList|ModuleDict|PreTrainedModel)$")
# other frameworks' module bases (`megengine.module.Module`, `paddle.nn.Layer`): not torch's nn.Module
FOREIGN_FRAMEWORK_RE = re.compile(r"^(megengine|paddle|jittor|oneflow|mindspore|mxnet|chainer|tensorflow|keras|flax|haiku|jax)\.")
FRAMEWORK_BASE_RE = re.compile(r"Lightning|(^|\.)Trainer$|PreTrainedModel|(^|\.)Callback$")


@dataclass
class Scope:
    func: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    cls: ast.ClassDef | None = None
    grad_off: bool = False
    # the enclosing `if` tests: (text of the test, branch taken, (parameter, value) when the
    # test is `p`, `not p` or `p == constant`), so that two branches are two paths
    conds: tuple = ()


@dataclass
class CallSite:
    node: ast.Call
    qualname: str | None  # the callee, resolved through imports ("torch.nn.functional.dropout")
    scope: Scope


@dataclass
class FileContext:
    path: str
    source: str
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)
    calls: list[CallSite] = field(default_factory=list)
    functions: list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, Scope]] = field(default_factory=list)
    classes: list[ast.ClassDef] = field(default_factory=list)
    assigns: list[tuple[ast.Assign, Scope]] = field(default_factory=list)
    returns: list[tuple[ast.Return, Scope]] = field(default_factory=list)
    expression_statements: list[tuple[ast.Expr, Scope]] = field(default_factory=list)
    loops: list[tuple[ast.For | ast.While, Scope]] = field(default_factory=list)
    module_classes: set[str] = field(default_factory=set)
    framework_classes: set[str] = field(default_factory=set)
    notebook: "NotebookSource | None" = None  # set for a notebook's joined code cells
    project: object = None  # the ProjectIndex the file is checked against
    _lines: list[str] | None = None
    _calls_by_function: dict[int, list[CallSite]] | None = None

    @classmethod
    def build(cls, path: str, source: str, tree: ast.Module) -> "FileContext":
        ctx = cls(path, source, tree)
        _Indexer(ctx).visit_body(tree.body, Scope())
        for site in ctx.calls:  # resolved after the walk: imports anywhere in the file count
            site.qualname = ctx.qualname(site.node.func)
        ctx._classify_classes()
        return ctx

    def attach(self, project) -> None:
        """Join the project: classes imported from other files count as modules, and functions
        decorated with the project's own no_grad/inference_mode decorators run with autograd off."""
        if self.project is project:
            return
        self.project = project
        self.module_classes |= project.module_class_names(self.path)
        module = project.modules.get(self.path)
        if module is None:
            return
        decorated = set()
        for func, scope in self.functions:
            if scope.grad_off or not func.decorator_list:
                continue
            local = f"{scope.cls.name}.{func.name}" if scope.cls is not None else func.name
            summary = module.functions.get(local)
            if summary is not None and summary.decorators and project.is_grad_off_decorator(summary):
                decorated.add(id(func))
                scope.grad_off = True
        if decorated:
            for site in self.calls:
                if id(site.scope.func) in decorated:
                    site.scope.grad_off = True

    def calls_in(self, func: ast.AST | None) -> list[CallSite]:
        """Calls whose innermost enclosing function is `func` (None: module level)."""
        if self._calls_by_function is None:
            self._calls_by_function = {}
            for site in self.calls:
                self._calls_by_function.setdefault(id(site.scope.func), []).append(site)
        return self._calls_by_function.get(id(func), [])

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = self.source.splitlines()
        return self._lines

    # -- names --------------------------------------------------------------------------
    def qualname(self, node: ast.AST) -> str | None:
        """`F.dropout` -> `torch.nn.functional.dropout` through the file's imports; the
        conventional aliases F, nn and torch are assumed when the file does not import them."""
        dotted = dotted_name(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        head = self.imports.get(head) or {"F": FUNCTIONAL, "nn": "torch.nn"}.get(head, head)
        return f"{head}.{rest}" if rest else head

    def is_module_class(self, cls: ast.ClassDef | None) -> bool:
        return cls is not None and cls.name in self.module_classes

    def in_framework_class(self, scope: Scope) -> bool:
        return scope.cls is not None and scope.cls.name in self.framework_classes

    def _classify_classes(self) -> None:
        bases = {c.name: [self.qualname(b) or "" for b in c.bases] for c in self.classes}
        changed = True
        while changed:
            changed = False
            for name, quals in bases.items():
                if name in self.module_classes:
                    continue
                if any(
                    (MODULE_BASE_RE.search(q) and not FOREIGN_FRAMEWORK_RE.match(q)) or q.startswith("torch.nn.") or q in self.module_classes
                    for q in quals
                ):
                    self.module_classes.add(name)
                    changed = True
        for name, quals in bases.items():
            if any(FRAMEWORK_BASE_RE.search(q) or q in self.framework_classes for q in quals):
                self.framework_classes.add(name)


# Leaves and operator tokens hold nothing a rule asks about: the walk does not descend into them.
_LEAVES = (ast.expr_context, ast.Constant, ast.Name, ast.operator, ast.cmpop, ast.unaryop, ast.boolop, ast.alias)


class _Indexer:
    """A hand-rolled walk (several times faster than ast.NodeVisitor or ast.walk) that tracks
    the enclosing function, class and whether autograd is off."""

    def __init__(self, ctx: FileContext):
        self.ctx = ctx

    def visit_body(self, body: list[ast.stmt], scope: Scope) -> None:
        for stmt in body:
            self.visit(stmt, scope)

    def visit(self, node: ast.AST, scope: Scope) -> None:
        ctx = self.ctx
        kind = type(node)
        if kind is ast.Call:
            ctx.calls.append(CallSite(node, None, scope))
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            for deco in node.decorator_list:
                self.visit(deco, scope)
            grad_off = scope.grad_off or any(self._grad_off(d) for d in node.decorator_list)
            inner = Scope(node, scope.cls, grad_off)
            ctx.functions.append((node, inner))
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    self.visit(default, scope)
            self.visit_body(node.body, inner)
            return
        elif kind is ast.ClassDef:
            ctx.classes.append(node)
            for child in [*node.bases, *node.keywords, *node.decorator_list]:
                self.visit(child, scope)
            self.visit_body(node.body, Scope(None, node, scope.grad_off))
            return
        elif kind is ast.With or kind is ast.AsyncWith:
            grad_off = scope.grad_off
            for item in node.items:
                self.visit(item.context_expr, scope)
                if self._grad_off(item.context_expr):
                    grad_off = True
            self.visit_body(node.body, Scope(scope.func, scope.cls, grad_off, scope.conds) if grad_off != scope.grad_off else scope)
            return
        elif kind is ast.If or kind is ast.IfExp:
            self.visit(node.test, scope)
            test = _condition(node.test, self.ctx)
            then = Scope(scope.func, scope.cls, scope.grad_off, (*scope.conds, (*test[:1], True, test[1])))
            other = Scope(scope.func, scope.cls, scope.grad_off, (*scope.conds, (*test[:1], False, test[1])))
            if kind is ast.IfExp:
                self.visit(node.body, then)
                self.visit(node.orelse, other)
            else:
                self.visit_body(node.body, then)
                self.visit_body(node.orelse, other)
            return
        elif kind is ast.Import:
            for alias in node.names:
                if alias.asname:
                    ctx.imports[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    ctx.imports[head] = head
            return
        elif kind is ast.ImportFrom:
            if node.module or node.level:
                prefix = "." * node.level + (node.module or "")
                for alias in node.names:
                    target = f"{prefix}.{alias.name}" if node.module else f"{prefix}{alias.name}"
                    ctx.imports["*" + prefix if alias.name == "*" else alias.asname or alias.name] = target  # one key per star import
            return
        elif kind is ast.Assign:
            ctx.assigns.append((node, scope))
        elif kind is ast.Return:
            ctx.returns.append((node, scope))
        elif kind is ast.Expr:
            ctx.expression_statements.append((node, scope))
        elif kind is ast.For or kind is ast.While or kind is ast.AsyncFor:
            ctx.loops.append((node, scope))
        for attr in node._fields:
            value = getattr(node, attr, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, ast.AST) and not isinstance(item, _LEAVES):
                        self.visit(item, scope)
            elif isinstance(value, ast.AST) and not isinstance(value, _LEAVES):
                self.visit(value, scope)

    def _grad_off(self, expr: ast.AST) -> bool:
        target = expr.func if isinstance(expr, ast.Call) else expr
        name = self.ctx.qualname(target)
        if name in GRAD_SWITCH and isinstance(expr, ast.Call) and expr.args:
            return isinstance(expr.args[0], ast.Constant) and expr.args[0].value is False
        return name is not None and (name in GRAD_OFF or GRAD_OFF_NAME_RE.search(name) is not None)


def _condition(test: ast.AST, ctx: FileContext) -> tuple[str, tuple | None]:
    """The key of an `if` test and, for `p`, `not p`, `p == c`, `p != c`, its (name, value) form."""
    key = f"{test.lineno}:{test.col_offset}"
    if test.lineno == test.end_lineno:
        key = ctx.lines[test.lineno - 1][test.col_offset:test.end_col_offset]
    negate = False
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test, negate = test.operand, True
    if isinstance(test, ast.Name):
        return key, (test.id, True, negate)
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.left, ast.Name):
        right = test.comparators[0]
        if isinstance(right, ast.Constant) and isinstance(test.ops[0], (ast.Eq, ast.NotEq, ast.Is, ast.IsNot)):
            return key, (test.left.id, right.value, negate ^ isinstance(test.ops[0], (ast.NotEq, ast.IsNot)))
    return key, None


def condition_holds(cond: tuple, constants: dict) -> bool | None:
    """Whether one recorded `if` branch is taken given constant arguments (None: unknown)."""
    _, taken, simple = cond
    if simple is None or simple[0] not in constants:
        return None
    name, value, negate = simple
    actual = constants[name]
    truth = bool(actual) if value is True else actual == value
    return (truth ^ negate) == taken


def compatible(a: tuple, b: tuple) -> bool:
    """Two events can happen on one path: no `if` test taken one way by one and the other way by the other."""
    if not a or not b:
        return True
    taken = {key: branch for key, branch, _ in a}
    return all(taken.get(key, branch) == branch for key, branch, _ in b)


def dotted_name(node: ast.AST) -> str | None:
    """`self.model.encoder` for that attribute chain; None unless it ends in a plain name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def keyword(call: ast.Call, name: str) -> ast.keyword | None:
    return next((k for k in call.keywords if k.arg == name), None)


def has_star_args(call: ast.Call) -> bool:
    return any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords)


def mentions_training(node: ast.AST) -> bool:
    return any(
        (isinstance(n, ast.Attribute) and n.attr == "training")
        or (isinstance(n, ast.Name) and "train" in n.id.lower())
        for n in ast.walk(node)
    )
