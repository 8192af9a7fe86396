"""One findings model shared by the linter (MG1xx) and the run-time audit (MG2xx)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


@dataclass(frozen=True)
class Location:
    """1-based row and column (UTF-8 bytes). In a notebook, `cell` is the 1-based position of
    the cell among all cells, `row` is inside that cell and `file_row` is the line of the
    notebook's JSON text that holds it (for tools that open the file as it is stored)."""

    row: int
    column: int
    cell: int | None = None
    file_row: int | None = None


@dataclass(frozen=True)
class Edit:
    """Replace the source between two locations (1-based rows, 1-based columns) by `content`."""

    content: str
    location: Location
    end_location: Location


@dataclass(frozen=True)
class Fix:
    message: str
    edits: tuple[Edit, ...]


@dataclass
class Finding:
    """A problem found in source code or in a live model.

    `fix` is a human hint; `autofix` (lint only) is a machine-applicable edit.
    """

    code: str
    severity: Severity
    message: str
    fix: str = ""
    module: str | None = None
    filename: str | None = None
    location: Location | None = None
    end_location: Location | None = None
    autofix: Fix | None = None
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {
            "code": self.code,
            "severity": self.severity.value,
            "module": self.module,
            "message": self.message,
            "fix": self.fix,
        }
        if self.data:
            out["data"] = self.data
        return out


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.severity.rank, f.code, f.module or ""))


def edit_to_dict(edit: Edit) -> dict:
    return asdict(edit)
