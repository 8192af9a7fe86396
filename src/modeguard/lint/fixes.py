"""Apply the safe autofixes of a file's findings."""

from __future__ import annotations

import difflib

from modeguard.findings import Finding


def apply_fixes(source: str, findings: list[Finding]) -> tuple[str, list[Finding]]:
    """The fixed source and the findings whose fixes were applied (a fix overlapping an earlier
    one is left for the next run, like ruff)."""
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(row: int, column: int) -> int:
        # ast columns count UTF-8 bytes; the string is indexed by characters
        line = lines[row - 1] if row - 1 < len(lines) else ""
        chars = len(line.encode()[: column - 1].decode(errors="ignore"))
        return starts[row - 1] + chars

    taken: list[tuple[int, int]] = []
    chosen: list[tuple[int, int, str]] = []
    applied: list[Finding] = []
    for finding in sorted((f for f in findings if f.autofix), key=lambda f: (f.location.row, f.location.column)):
        spans = [
            (offset(e.location.row, e.location.column), offset(e.end_location.row, e.end_location.column), e.content)
            for e in finding.autofix.edits
        ]
        if any(start < b and a < end or start == a for start, end, _ in spans for a, b in taken):
            continue
        taken.extend((start, end) for start, end, _ in spans)
        chosen.extend(spans)
        applied.append(finding)
    fixed = source
    for start, end, content in sorted(chosen, reverse=True):
        fixed = fixed[:start] + content + fixed[end:]
    return fixed, applied


def unified_diff(path: str, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
    )
