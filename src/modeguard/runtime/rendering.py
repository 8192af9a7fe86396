"""How every run-time report reaches a person: strict JSON, grouped findings, print() and Jupyter.

One place for it, tolerant of fields it does not know: a report is any object with `to_dict()`
(JSON) and `__rich__`/`__rich_console__` (terminal, `print()`, `_repr_html_`). Imports no torch.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from modeguard.findings import Finding, Severity, sort_findings

SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
TEXT_WIDTH = 120
MODULES_SHOWN = 3
NON_FINITE_REASON = {"inf": "infinite", "-inf": "negative infinite", "nan": "not a number"}


# -- JSON ----------------------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """`value` as plain JSON data. A float that is not finite becomes null; inside a dict a
    sibling `<key>_reason` says why (unless the report already gives one), so no reader has to
    parse NaN or Infinity, which JSON does not have."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return json_safe(value.value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[str(key)] = json_safe(item)
            if isinstance(item, float) and not math.isfinite(item):
                out.setdefault(f"{key}_reason", NON_FINITE_REASON[str(item)])
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(item) for item in value]
    if hasattr(value, "to_dict"):
        return json_safe(value.to_dict())
    if hasattr(value, "tolist"):  # tensors and numpy values
        return json_safe(value.tolist())
    return str(value)


def to_json(data: Any, **dumps_options) -> str:
    """Strict JSON: `allow_nan=False` guards that no NaN/Infinity slipped past `json_safe`."""
    return json.dumps(json_safe(data), allow_nan=False, **dumps_options)


# -- findings, grouped ---------------------------------------------------------------------------
# A figure in a message; not the digits of a name such as layer1.0.bn1.
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?(?!\w|\.\w)")


@dataclass
class FindingGroup:
    """Findings that say the same thing about different modules (53 uncalibrated BatchNorm
    layers): one row for a person; `findings` keeps every module for JSON."""

    findings: list[Finding]

    @property
    def first(self) -> Finding:
        return self.findings[0]

    @property
    def modules(self) -> list[str]:
        return [f.module for f in self.findings if f.module]

    def where(self, shown: int = MODULES_SHOWN) -> str:
        modules = self.modules
        if len(self.findings) == 1:
            return modules[0] if modules else "-"
        listed = ", ".join(modules[:shown])
        more = f" and {len(modules) - shown} more" if len(modules) > shown else ""
        return f"{len(modules)} modules: {listed}{more}"

    def message(self) -> str:
        """The shared message; where the figures differ from module to module, their range."""
        messages = [f.message for f in self.findings]
        if len(set(messages)) == 1:
            return messages[0]
        texts = _NUMBER.split(messages[0])
        figures = [_NUMBER.findall(m) for m in messages]
        parts = [texts[0]]
        for position, text in enumerate(texts[1:]):
            values = sorted({row[position] for row in figures}, key=lambda figure: float(figure.rstrip("%")))
            parts.append(values[0] if len(values) == 1 else f"{values[0]} to {values[-1]}")
            parts.append(text)
        return "".join(parts)


def group_findings(findings: list[Finding]) -> list[FindingGroup]:
    """Findings with the same code, severity, fix and message (its figures aside) form one
    group, in the order of `sort_findings`."""
    groups: dict[tuple, FindingGroup] = {}
    for f in sort_findings(findings):
        key = (f.code, f.severity, f.fix, _NUMBER.sub("#", f.message), f.module is None)
        if f.module is None:
            key += (id(f),)  # a finding about the whole model stands alone
        groups.setdefault(key, FindingGroup([])).findings.append(f)
    return list(groups.values())


def findings_table(findings: list[Finding]) -> Table | Text:
    if not findings:
        return Text("No findings.", style="green")
    table = Table(title="Findings", title_justify="left", show_lines=True)
    for column in ("code", "severity", "module", "message / fix"):
        table.add_column(column, overflow="fold")
    for group in group_findings(findings):
        f = group.first
        body = Text(group.message())
        if f.fix:
            body.append(f"\nfix: {f.fix}", style="dim")
        table.add_row(f.code, Text(f.severity.value, style=SEVERITY_STYLE[f.severity]), Text(group.where()), body)
    return table


# -- print() and Jupyter -------------------------------------------------------------------------
def plain_text(renderable: Any, width: int = TEXT_WIDTH) -> str:
    """What the terminal shows, without colour: for `print()`, logs and assertion messages."""
    console = Console(width=width, file=io.StringIO(), color_system=None, highlight=False)
    console.print(renderable)
    return console.file.getvalue()


def html_fragment(renderable: Any, width: int = TEXT_WIDTH) -> str:
    """The terminal rendering as an HTML fragment with inline styles (rich's own export)."""
    console = Console(width=width, record=True, file=io.StringIO(), highlight=False)
    console.print(renderable)
    return console.export_html(
        inline_styles=True,
        code_format='<div class="modeguard-report"><pre style="font-family:monospace;line-height:1.3">{code}</pre></div>',
    )


class Presentable:
    """`print(report)` shows what the CLI shows, Jupyter shows it as HTML, `to_json()` is strict
    JSON. For report objects with `to_dict()` that render themselves with `__rich__` or
    `__rich_console__`."""

    def to_json(self, indent: int | None = 2) -> str:
        return to_json(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return plain_text(self)

    def _repr_html_(self) -> str:
        return html_fragment(self)
