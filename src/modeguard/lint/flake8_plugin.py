"""flake8 plugin (entry point `flake8.extension`, prefix MG): the same rules as `modeguard check`."""

from __future__ import annotations

import ast
from typing import Iterator

from modeguard import __version__
from modeguard.lint.engine import Selection, lint_source


class ModeguardFlake8:
    name = "modeguard"
    version = __version__

    def __init__(self, tree: ast.AST, filename: str = "stdin", lines: list[str] | None = None):
        self.filename = filename
        self.source = "".join(lines or [])

    def run(self) -> Iterator[tuple[int, int, str, type]]:
        # flake8 reports its own E999 for unparsable files and applies noqa itself
        for finding in lint_source(self.filename, self.source, Selection.from_options(ignore=["MG100"])):
            yield finding.location.row, finding.location.column - 1, f"{finding.code} {finding.message}", type(self)
