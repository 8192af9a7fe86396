"""Mode events (eval, train, backward, optimizer step) in source order, following same-file
calls into helpers (a `val_start()` that calls `self.model.eval()` counts where it is called)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from modeguard.lint.context import FileContext, dotted_name

MAX_DEPTH = 3
NOT_TRAINED_RE = re.compile(r"(ema|teacher|target|frozen|swa|avg|average|momentum|ref|reference|critic_old)", re.I)


@dataclass(frozen=True)
class Event:
    kind: str  # eval | train | backward | step
    receiver: str | None
    node: ast.AST  # where it happens in the analysed function (the helper call when expanded)
    via: str | None = None  # the helper it came through


def chain_root(node: ast.AST) -> str | None:
    """`model` for `model.to(device).eval()`'s receiver `model.to(device)`."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        node = node.func.value
    return dotted_name(node)


def classify(call: ast.Call) -> Event | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        receiver = chain_root(func.value)
        if func.attr == "eval" and not call.args and not call.keywords:
            return Event("eval", receiver, call)
        if func.attr == "train":
            arg = call.args[0] if call.args else (call.keywords[0].value if call.keywords else None)
            if isinstance(arg, ast.Constant) and arg.value is False:
                return Event("eval", receiver, call)
            if len(call.args) <= 1:
                return Event("train", receiver, call)
        if func.attr in ("backward", "manual_backward"):
            return Event("backward", receiver, call)
        if func.attr == "step" and (not call.args or re.search(r"opt|scaler|solver", receiver or "", re.I)):
            return Event("step", receiver, call)  # optimizer.step(), scaler.step(optimizer)
    return None


class FlowIndex:
    def __init__(self, ctx: FileContext):
        self.ctx = ctx
        self.by_name: dict[str, list[ast.AST]] = {}
        for func, _ in ctx.functions:
            self.by_name.setdefault(func.name, []).append(func)
        self._callers: dict[str, list[tuple[ast.AST, ast.Call]]] | None = None
        self._events: dict[int, list[Event]] = {}

    def helper_of(self, call: ast.Call) -> ast.AST | None:
        func = call.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self" else None
        )
        candidates = self.by_name.get(name or "", [])
        return candidates[0] if len(candidates) == 1 else None

    def events(self, func: ast.AST | None, depth: int = 0) -> list[Event]:
        """Events in a function (None or the module: module-level code) in source order,
        helpers' events placed at the call that reaches them."""
        if isinstance(func, ast.Module):
            func = None
        key = id(func)
        if key in self._events:
            return self._events[key]
        found: list[tuple[tuple[int, int], Event]] = []
        for site in self.ctx.calls_in(func):
            inner = site.node
            position = (inner.lineno, inner.col_offset)
            event = classify(inner)
            if event is not None:
                found.append((position, event))
                continue
            helper = self.helper_of(inner)
            if helper is not None and helper is not func and depth < MAX_DEPTH:
                mapping = argument_map(helper, inner)
                for sub in self.events(helper, depth + 1):
                    receiver = _substitute(sub.receiver, mapping)
                    found.append((position, Event(sub.kind, receiver, inner, sub.via or helper.name)))
        found.sort(key=lambda item: item[0])
        events = [e for _, e in found]
        if depth == 0:
            self._events[key] = events
        return events

    def events_within(self, func: ast.AST | None, block: ast.AST) -> list[Event]:
        """The events of `func` that happen inside `block` (a loop)."""
        start = (block.lineno, block.col_offset)
        end = (block.end_lineno, block.end_col_offset)
        return [e for e in self.events(func) if start <= (e.node.lineno, e.node.col_offset) <= end]

    def callers(self, func_name: str) -> list[tuple[ast.AST, ast.Call]]:
        if self._callers is None:
            self._callers = {}
            for site in self.ctx.calls:
                helper = self.helper_of(site.node)
                if helper is not None and site.scope.func is not None:
                    self._callers.setdefault(helper.name, []).append((site.scope.func, site.node))
        return self._callers.get(func_name, [])


def related(a: str | None, b: str | None) -> bool:
    """Receivers that may be the same model: equal, or one inside the other (`self.model` and
    `self.model.encoder`), or unknown."""
    if a is None or b is None:
        return True
    return a == b or a.startswith(b + ".") or b.startswith(a + ".") or a.rsplit(".", 1)[-1] == b.rsplit(".", 1)[-1]


def argument_map(helper: ast.AST, call: ast.Call) -> dict[str, str]:
    params = [a.arg for a in helper.args.args]
    if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
        params = params[1:]
    mapping = {}
    for param, arg in zip(params, call.args):
        text = chain_root(arg)
        if text:
            mapping[param] = text
    for kw in call.keywords:
        if kw.arg and chain_root(kw.value):
            mapping[kw.arg] = chain_root(kw.value)
    return mapping


def _substitute(receiver: str | None, mapping: dict[str, str]) -> str | None:
    if receiver is None:
        return None
    head, _, rest = receiver.partition(".")
    if head in mapping:
        return mapping[head] + ("." + rest if rest else "")
    return receiver
