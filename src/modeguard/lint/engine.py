"""Lint one source: decode, parse (MG100 on failure), index it, run the selected rules with the
project index, honour noqa."""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from dataclasses import dataclass

from modeguard.findings import Finding, Location, Severity
from modeguard.lint.context import FileContext
from modeguard.lint.project import ModuleSummary, ProjectIndex, summarize
from modeguard.lint.rules import ALL_RULES, RULES_BY_CODE

NOQA_RE = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.I)
INTERNAL_ERROR = "MG000"


@dataclass(frozen=True)
class Selection:
    codes: frozenset[str]
    honour_noqa: bool = True

    @classmethod
    def from_options(cls, select=None, ignore=(), extend_select=(), *, ignore_noqa=False) -> "Selection":
        def matches(code: str, patterns) -> bool:
            return any(p.upper() == "ALL" or code.startswith(p.upper()) for p in patterns)

        if select:
            chosen = {r.code for r in ALL_RULES if matches(r.code, select)}
        else:
            chosen = {r.code for r in ALL_RULES if r.default_enabled}
        chosen |= {r.code for r in ALL_RULES if matches(r.code, extend_select)}
        chosen -= {code for code in chosen if matches(code, ignore)}
        unknown = [p for p in [*(select or ()), *ignore, *extend_select] if p.upper() != "ALL" and not any(r.code.startswith(p.upper()) for r in ALL_RULES)]
        if unknown:
            from modeguard.errors import InputError

            raise InputError(f"unknown rule code or prefix: {', '.join(unknown)} (see `modeguard rules`)")
        return cls(frozenset(chosen), not ignore_noqa)


def decode(data: bytes) -> str:
    """Decode like the interpreter: BOM and encoding cookie honoured."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


def parse(path: str, data: bytes | str, selection: Selection) -> tuple[FileContext | None, list[Finding]]:
    """The one per-file step of every entry point: decode, parse and index a file (a notebook
    joins as its Python source). Returns its context, or None and the MG100 finding."""
    if isinstance(data, bytes):
        try:
            data = decode(data)
        except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
            return None, _syntax_finding(path, f"cannot decode the file: {exc}", 1, 1, selection)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences etc. are not ours to report
            tree = ast.parse(data, filename=path)
    except SyntaxError as exc:
        return None, _syntax_finding(path, f"SyntaxError: {exc.msg}", exc.lineno or 1, exc.offset or 1, selection)
    except (ValueError, MemoryError, RecursionError) as exc:  # null bytes, absurd nesting
        return None, _syntax_finding(path, f"cannot parse the file: {exc}", 1, 1, selection)
    try:
        return FileContext.build(path, data, tree), []
    except RecursionError:
        return None, _syntax_finding(path, "the file nests too deeply to analyse", 1, 1, selection)


def index_file(ctx: FileContext) -> ModuleSummary | None:
    try:
        return summarize(ctx)
    except RecursionError:
        return None


def lint_source(path: str, source: str | bytes, selection: Selection, project: ProjectIndex | None = None) -> list[Finding]:
    """Lint one file; without a project index, the file is its own project."""
    ctx, findings = parse(path, source, selection)
    if ctx is None:
        return findings
    if project is None:
        summary = index_file(ctx)
        project = ProjectIndex([summary] if summary else [])
    return check(ctx, project, selection)


def check(ctx: FileContext, project: ProjectIndex, selection: Selection) -> list[Finding]:
    """Run the selected rules on one parsed file, with the project index to look across files."""
    source = ctx.source
    rules = [
        RULES_BY_CODE[code]
        for code in sorted(selection.codes)
        if RULES_BY_CODE[code].triggers == () or any(t in source for t in RULES_BY_CODE[code].triggers)
    ]
    if not rules:
        return []
    ctx.attach(project)
    findings: list[Finding] = []
    for rule in rules:
        try:
            findings.extend(rule.check(ctx))
        except RecursionError:
            pass  # absurdly deep call chains: no finding rather than a crash
        except Exception as exc:  # noqa: BLE001 - a rule bug must not stop the run
            findings.append(
                Finding(INTERNAL_ERROR, Severity.ERROR, f"internal error in {rule.code}: {type(exc).__name__}: {exc}",
                        filename=ctx.path, location=Location(1, 1), end_location=Location(1, 1))
            )
    if not selection.honour_noqa:
        return findings
    return [f for f in findings if not _suppressed(f, ctx.lines)]


def _syntax_finding(path, message, row, column, selection) -> list[Finding]:
    if "MG100" not in selection.codes:
        return []
    rule = RULES_BY_CODE["MG100"]
    location = Location(row, max(column, 1))
    return [Finding("MG100", rule.severity, message, "fix the syntax (or exclude the file)", filename=path, location=location, end_location=location)]


def _suppressed(finding: Finding, lines: list[str]) -> bool:
    if finding.location is None or finding.code == INTERNAL_ERROR:
        return False
    row = finding.location.row
    if not 0 < row <= len(lines):
        return False
    match = NOQA_RE.search(lines[row - 1])
    if match is None:
        return False
    codes = match.group("codes")
    return codes is None or any(finding.code.startswith(c.upper()) for c in re.split(r"[,\s]+", codes) if c)
