"""Reporters for `modeguard check`: concise, full, json (ruff-compatible), sarif, github."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

from modeguard import __version__
from modeguard.findings import Finding
from modeguard.lint.rule import DOCS_URL
from modeguard.lint.rules import ALL_RULES, RULES_BY_CODE
from modeguard.run_codes import RUN_CODES

if TYPE_CHECKING:
    from rich.console import Console


def _url(code: str) -> str | None:
    return DOCS_URL.format(code=code.lower()) if code in RULES_BY_CODE else None


def position(location) -> str:
    """`3:5`, or `cell 7:3:5` in a notebook (row and column inside cell 7)."""
    cell = f"cell {location.cell}:" if location.cell is not None else ""
    return f"{cell}{location.row}:{location.column}"


def to_json(findings: list[Finding]) -> str:
    items = []
    for f in findings:
        fix = None
        if f.autofix:
            fix = {
                "applicability": "safe",
                "message": f.autofix.message,
                "edits": [
                    {"content": e.content, "location": _loc(e.location), "end_location": _loc(e.end_location)}
                    for e in f.autofix.edits
                ],
            }
        items.append(
            {
                "code": f.code,
                "message": f.message,
                "filename": f.filename,
                "cell": f.location.cell,  # notebooks: location and edits are inside this cell
                "location": _loc(f.location),
                "end_location": _loc(f.end_location or f.location),
                "fix": fix,
                "url": _url(f.code),
                "severity": f.severity.value,
            }
        )
    return json.dumps(items, indent=2)


def _loc(location) -> dict:
    return {"row": location.row, "column": location.column}


SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def to_sarif(findings: list[Finding]) -> str:
    rules = [
        {
            "id": r.code,
            "name": r.name,
            "shortDescription": {"text": r.summary},
            "fullDescription": {"text": r.rationale},
            "helpUri": r.url,
            "defaultConfiguration": {"level": SARIF_LEVEL[r.severity.value]},
        }
        for r in ALL_RULES
    ] + [
        {
            "id": r.code,
            "name": r.name,
            "shortDescription": {"text": r.summary},
            "defaultConfiguration": {"level": SARIF_LEVEL[r.severity.value]},
            **({"relationships": [{"target": {"id": r.lint_rule}, "kinds": ["relevant"]}]} if r.lint_rule else {}),
        }
        for r in RUN_CODES.values()
    ]
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for f in findings:
        end = f.end_location or f.location
        if f.location.cell is None:
            region = {"startLine": f.location.row, "startColumn": f.location.column, "endLine": end.row, "endColumn": end.column}
        else:  # the lines of the stored JSON; the cell and the position inside it as properties
            region = {"startLine": f.location.file_row or 1, "endLine": max(end.file_row or 1, f.location.file_row or 1)}
        result = {
            "ruleId": f.code,
            "level": SARIF_LEVEL[f.severity.value],
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": (f.filename or "").replace("\\", "/")},
                        "region": region,
                    }
                }
            ],
        }
        if f.location.cell is not None:
            result["properties"] = {"cell": f.location.cell, "cellStartLine": f.location.row, "cellStartColumn": f.location.column, "cellEndLine": end.row, "cellEndColumn": end.column}
        if f.code in index:
            result["ruleIndex"] = index[f.code]
        results.append(result)
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "modeguard", "version": __version__, "informationUri": "https://github.com/modeguard/modeguard", "rules": rules}},
                "results": results,
            }
        ],
    }
    return json.dumps(sarif, indent=2)


def to_github(findings: list[Finding]) -> str:
    level = {"error": "error", "warning": "warning", "info": "notice"}
    lines = []
    for f in findings:
        end = f.end_location or f.location
        message = f.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        if f.location.cell is None:
            where = f"line={f.location.row},col={f.location.column},endLine={end.row},endColumn={end.column}"
        else:  # the line of the stored JSON; the cell position goes in the message
            where = f"line={f.location.file_row or 1}"
            message = f"{position(f.location)} {message}"
        lines.append(f"::{level[f.severity.value]} title=modeguard ({f.code}),file={f.filename},{where}::{f.code} {message}")
    return "\n".join(lines)


def print_concise(console: Console, findings: list[Finding]) -> None:
    from rich.markup import escape

    for f in findings:
        fixable = " [*]" if f.autofix else ""
        console.print(
            f"[bold]{escape(f.filename or '')}[/]:{position(f.location)}: "
            f"[bold red]{f.code}[/]{escape(fixable)} {escape(f.message)}",
            highlight=False, soft_wrap=True, markup=True,
        )


def print_full(console: Console, findings: list[Finding], sources: dict[tuple[str, int | None], list[str]]) -> None:
    """`sources`: the lines of each (filename, notebook cell or None)."""
    for f in findings:
        print_concise(console, [f])
        lines = sources.get((f.filename, f.location.cell)) or []
        if 0 < f.location.row <= len(lines):
            line = lines[f.location.row - 1].rstrip("\n")
            console.print(f"  {f.location.row:>4} | {line}", highlight=False, markup=False, soft_wrap=True)
            console.print("       | " + " " * (f.location.column - 1) + "^", highlight=False, markup=False)
        if f.fix:
            console.print(f"  help: {f.fix}", style="dim", highlight=False, markup=False, soft_wrap=True)
        console.print()


def print_statistics(console: Console, findings: list[Finding]) -> None:
    from rich.table import Table

    counts = Counter(f.code for f in findings)
    fixable = Counter(f.code for f in findings if f.autofix)
    table = Table(show_header=True, box=None)
    for column in ("count", "code", "name", "fixable"):
        table.add_column(column)
    for code, count in counts.most_common():
        rule = RULES_BY_CODE.get(code) or RUN_CODES.get(code)
        table.add_row(str(count), code, rule.name if rule else "internal-error", "[*]" if fixable[code] else "")
    console.print(table)
