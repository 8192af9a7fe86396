"""What every rule carries: code, name, message, rationale and the examples that are both its
documentation (`modeguard rule MG105`) and its test cases (`invalid` must be flagged, `valid`
must not)."""

from __future__ import annotations

import ast
from typing import ClassVar, Iterator

from modeguard.findings import Edit, Finding, Fix, Location, Severity
from modeguard.lint.context import FileContext

DOCS_URL = "https://github.com/modeguard/modeguard/blob/main/docs/rules.md#{code}"


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    rationale: ClassVar[str]
    severity: ClassVar[Severity] = Severity.ERROR
    default_enabled: ClassVar[bool] = True
    fixable: ClassVar[bool] = False
    triggers: ClassVar[tuple[str, ...]] = ()  # the rule runs only on sources containing one
    invalid: ClassVar[tuple[str, ...]] = ()
    valid: ClassVar[tuple[str, ...]] = ()

    def check(self, ctx: FileContext) -> Iterator[Finding]:
        raise NotImplementedError

    def finding(
        self, ctx: FileContext, node: ast.AST, message: str, fix_hint: str = "", autofix: Fix | None = None
    ) -> Finding:
        return Finding(
            code=self.code,
            severity=self.severity,
            message=message,
            fix=fix_hint,
            filename=ctx.path,
            location=Location(node.lineno, node.col_offset + 1),
            end_location=Location(node.end_lineno or node.lineno, (node.end_col_offset or 0) + 1),
            autofix=autofix,
        )

    @property
    def url(self) -> str:
        return DOCS_URL.format(code=self.code.lower())


def insert_after(node: ast.AST, text: str, message: str) -> Fix:
    end = Location(node.end_lineno, node.end_col_offset + 1)
    return Fix(message, (Edit(text, end, end),))


def replace(node: ast.AST, text: str, message: str) -> Fix:
    return Fix(
        message,
        (Edit(text, Location(node.lineno, node.col_offset + 1), Location(node.end_lineno, node.end_col_offset + 1)),),
    )
