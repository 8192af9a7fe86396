"""The `modeguard` command: a thin layer over the library."""

from __future__ import annotations

import contextlib
import sys
from enum import Enum
from typing import List, Optional

import typer
from rich.console import Console

from modeguard.errors import ModeguardError

app = typer.Typer(
    add_completion=False,
    help="Catch, explain and fix PyTorch train/eval-mode bugs.",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)


class AuditFormat(str, Enum):
    text = "text"
    json = "json"


def _print_version(requested: bool) -> None:
    if requested:
        from modeguard import __version__

        typer.echo(f"modeguard {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="print the version and exit"
    ),
) -> None:
    """Catch, explain and fix PyTorch train/eval-mode bugs."""


def fail(message: str) -> None:
    """A usage or input error: one line on stderr, exit code 2."""
    from rich.markup import escape

    stderr.print(f"[bold red]error:[/] {escape(message.splitlines()[0] if message else '')}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def audit(
    spec: Optional[str] = typer.Argument(
        None,
        help="path/file.py:factory, package.module:factory, torchvision:NAME or timm:NAME; "
        "the factory returns a model or (model, example_input). Default: the bundled example.",
    ),
    input_shape: Optional[str] = typer.Option(None, help="shape of a random example input, e.g. 8,3,224,224"),
    input: Optional[str] = typer.Option(None, "--input", help="a .pt file with the example input"),
    data: Optional[str] = typer.Option(
        None, "--data", help="real data: path/file.py:factory or package.module:factory returning a "
        "DataLoader or an iterable of batches (a tensor, a dict, or (input, target, ...))",
    ),
    max_batches: int = typer.Option(4, help="batches of --data to use (BatchNorm health uses all)"),
    weights: Optional[str] = typer.Option(None, help="a state_dict checkpoint (loaded with weights_only=True)"),
    format: AuditFormat = typer.Option(AuditFormat.text, "--format", help="text or json"),
    seed: int = typer.Option(0, help="seed for the random example input and the audit's passes"),
    batch_dim: int = typer.Option(0, help="the input's batch dimension (1 for sequence-first models)"),
    ignore: List[str] = typer.Option([], help="finding codes or prefixes to leave out (comma-separated, repeatable)"),
    efficiency: bool = typer.Option(False, "--efficiency", help="also measure what eval + no_grad save"),
    html: Optional[str] = typer.Option(None, "--html", help="also write a self-contained HTML report to this file"),
    debug: bool = typer.Option(False, help="show tracebacks"),
) -> None:
    """Audit a live model: which layers make its predictions depend on train/eval mode."""
    import io

    printed = io.StringIO()
    try:
        from modeguard._lazy import require_torch

        require_torch("modeguard audit")
        # What the user's code prints is held back: it goes to stderr before the report, never
        # into stdout (--format json), and an error stays one line.
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            report, cost = _run_audit(spec, input_shape, input, weights, seed, batch_dim, _split(ignore), efficiency, data, max_batches)
    except ModeguardError as exc:
        if debug:
            sys.stderr.write(printed.getvalue())
            raise
        fail(str(exc))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - anything unforeseen (sys.exit in a forward too) is one line
        if debug:
            sys.stderr.write(printed.getvalue())
            raise
        lines = str(exc).strip().splitlines()
        fail(f"{type(exc).__name__}: {lines[0] if lines else ''} (--debug shows the traceback)")
    sys.stderr.write(printed.getvalue())
    if html:
        from pathlib import Path

        try:
            Path(html).write_text(report.to_html(), encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {html}: {exc.strerror}")
    if format is AuditFormat.json:
        from modeguard.runtime.rendering import to_json

        data = report.to_dict()
        if cost is not None:
            data["efficiency"] = cost.to_dict()
        sys.stdout.write(to_json(data, indent=2) + "\n")
    else:
        Console().print(report)
        if cost is not None:
            Console().print(cost)
    raise typer.Exit(1 if report.errors else 0)


def _run_audit(spec, input_shape, input_file, weights, seed, batch_dim, ignore, efficiency, data=None, max_batches=4):
    import torch

    from modeguard.errors import InputError, ModelCallError
    from modeguard.runtime import loading
    from modeguard.runtime.audit import audit as run_audit

    model, example, name = loading.load_factory(spec or "modeguard.examples:demo")
    extra = []
    if weights:
        missing, unexpected = loading.load_weights(model, weights)
        extra = loading.checkpoint_findings(model, missing, unexpected)
    random_input = False
    if data:
        example = loading.load_data(data)
    elif input_file:
        example = loading.load_input(input_file)
    elif input_shape:
        example = torch.randn(loading.parse_shape(input_shape), generator=torch.Generator().manual_seed(seed))
        random_input = True
    elif example is None:
        shape = loading.default_input_shape(model)
        if shape is None:
            raise InputError(f"{name} gave no example input: pass --data, --input-shape or --input")
        example = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        random_input = True
    try:
        report = run_audit(
            model, example, seed=seed, batch_dim=batch_dim, ignore=ignore, name=name,
            random_input=random_input, max_batches=max_batches,
        )
    except ModelCallError as exc:
        raise InputError(f"{exc} (is the example input of the right shape?)") from exc
    report.findings[:0] = [f for f in extra if not any(f.code.startswith(c.upper()) for c in ignore)]
    cost = None
    if efficiency:
        from modeguard.runtime.efficiency import measure_inference

        cost = measure_inference(model, example)
    return report, cost


class OutputFormat(str, Enum):
    concise = "concise"
    full = "full"
    json = "json"
    sarif = "sarif"
    github = "github"


def _split(values: Optional[List[str]]) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@app.command()
def check(
    paths: Optional[List[str]] = typer.Argument(None, help="files or directories (default: .)"),
    select: Optional[List[str]] = typer.Option(None, help="rule codes or prefixes to enable (comma-separated)"),
    ignore: Optional[List[str]] = typer.Option(None, help="rule codes or prefixes to disable"),
    extend_select: Optional[List[str]] = typer.Option(None, help="add to the selected rules"),
    exclude: Optional[List[str]] = typer.Option(None, help="extra gitignore-style patterns to skip"),
    output_format: Optional[OutputFormat] = typer.Option(None, help="concise, full, json, sarif or github"),
    fix: bool = typer.Option(False, "--fix", help="apply the safe fixes"),
    diff: bool = typer.Option(False, "--diff", help="show the safe fixes as a diff, change nothing"),
    statistics: bool = typer.Option(False, "--statistics", help="count findings per rule"),
    exit_zero: bool = typer.Option(False, "--exit-zero", help="exit 0 even with findings"),
    ignore_noqa: bool = typer.Option(False, "--ignore-noqa", help="report findings on # noqa lines too"),
    no_cache: bool = typer.Option(False, "--no-cache", help="read and analyse every file"),
    jobs: Optional[int] = typer.Option(None, help="processes (default: one per core)"),
) -> None:
    """Lint Python source for train/eval-mode bugs (rules MG1xx; see `modeguard rules`)."""
    from pathlib import Path

    from modeguard.lint import output
    from modeguard.lint.config import load_config
    from modeguard.lint.engine import Selection
    from modeguard.lint.files import discover
    from modeguard.lint.runner import lint_paths

    try:
        config = load_config(Path.cwd())
        selection = Selection.from_options(
            _split(select) or config.get("select"),
            [*_split(ignore), *config.get("ignore", [])],
            [*_split(extend_select), *config.get("extend-select", [])],
            ignore_noqa=ignore_noqa,
        )
        files = discover(
            paths or ["."],
            [*config.get("exclude", []), *config.get("extend-exclude", []), *_split(exclude)],
            config.get("extend-include", []),
        )
        use_cache = not no_cache and config.get("cache", True) and not (fix or diff)
        findings = lint_paths(files, selection, jobs=jobs, cache_dir=Path(".modeguard_cache") if use_cache else None)
        fmt = output_format or OutputFormat(config.get("output-format", "concise"))
    except ModeguardError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"invalid configuration: {exc}")
    findings.sort(key=lambda f: (*_place(f), f.code))
    console = Console(highlight=False)
    if fix or diff:
        findings = _apply_fixes(findings, write=fix, console=stderr)
    if fmt is OutputFormat.json:
        sys.stdout.write(output.to_json(findings) + "\n")
    elif fmt is OutputFormat.sarif:
        sys.stdout.write(output.to_sarif(findings) + "\n")
    elif fmt is OutputFormat.github:
        if findings:
            sys.stdout.write(output.to_github(findings) + "\n")
    elif statistics:
        output.print_statistics(console, findings)
    elif fmt is OutputFormat.full:
        output.print_full(console, findings, _source_lines(findings))
    else:
        output.print_concise(console, findings)
    if fmt in (OutputFormat.concise, OutputFormat.full) and not statistics:
        fixable = sum(1 for f in findings if f.autofix)
        if findings:
            note = f" ({fixable} fixable with --fix)" if fixable else ""
            console.print(f"Found {len(findings)} error(s){note}.", highlight=False)
        elif not (fix or diff):
            console.print("All checks passed!", style="green")
    if any(f.code == "MG000" for f in findings):
        raise typer.Exit(2)
    raise typer.Exit(0 if exit_zero or not findings else 1)


def _place(finding) -> tuple:
    return finding.filename or "", finding.location.cell or 0, finding.location.row, finding.location.column


def _source_lines(findings) -> dict:
    """(filename, notebook cell or None) -> lines, for the files with findings."""
    from pathlib import Path

    from modeguard.lint.notebooks import cell_lines, is_notebook

    sources = {}
    for filename in {f.filename for f in findings if f.filename and Path(f.filename).is_file()}:
        if is_notebook(filename):
            sources.update({(filename, cell): lines for cell, lines in cell_lines(Path(filename).read_bytes()).items()})
        else:
            sources[(filename, None)] = Path(filename).read_text(errors="replace").splitlines()
    return sources


def _apply_fixes(findings, *, write: bool, console: Console):
    """Fix (or show the diff of) every file with fixable findings; return what remains."""
    from pathlib import Path

    from modeguard.lint.fixes import apply_fixes, unified_diff
    from modeguard.lint.notebooks import fix_notebook, is_notebook

    remaining = [f for f in findings if not f.autofix]
    by_file: dict[str, list] = {}
    for f in findings:
        if f.autofix:
            by_file.setdefault(f.filename, []).append(f)
    total = 0
    for filename, file_findings in by_file.items():
        path = Path(filename)
        if is_notebook(filename):
            fixed, applied, diff_text = fix_notebook(filename, path.read_bytes(), file_findings)
        else:
            before = path.read_text(encoding="utf-8")
            after, applied = apply_fixes(before, file_findings)
            fixed, diff_text = after, unified_diff(filename, before, after)
        if write:
            if isinstance(fixed, bytes):  # a notebook, spliced byte for byte
                path.write_bytes(fixed)
            else:
                path.write_text(fixed, encoding="utf-8")
            total += len(applied)
            remaining.extend(f for f in file_findings if f not in applied)
        else:
            sys.stdout.write(diff_text)
            remaining.extend(file_findings)
    if write and total:
        console.print(f"Fixed {total} error(s).", highlight=False)
    return sorted(remaining, key=_place)


class RunFormat(str, Enum):
    full = "full"
    concise = "concise"
    json = "json"
    sarif = "sarif"
    github = "github"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    never = "never"


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def run(
    target: Optional[str] = typer.Argument(None, help="the script (or, with -m, the module's first argument)"),
    args: Optional[List[str]] = typer.Argument(None, help="the program's own arguments"),
    module: Optional[str] = typer.Option(None, "-m", "--module", help="run a module, as python -m does"),
    output_format: RunFormat = typer.Option(RunFormat.full, help="full (rich summary), concise, json, sarif or github"),
    output: Optional[str] = typer.Option(None, "--output", help="write the report to this file (default: stderr)"),
    fail_on: FailOn = typer.Option(FailOn.never, help="exit 1 (or the program's non-zero code) when findings of this severity or worse were reported"),
) -> None:
    """Run a Python program unchanged and report the train/eval-mode bugs it showed (MG3xx).
    modeguard's options come before the script; everything after it is the program's."""
    from pathlib import Path

    from modeguard._lazy import require_torch

    try:
        require_torch("modeguard run")
    except ModeguardError as exc:
        fail(str(exc))
    if module is None and target is None:
        fail("name a script (modeguard run train.py ...) or a module (modeguard run -m package.module ...)")
    if module is None and not Path(target).is_file():
        fail(f"{target}: no such file")
    if module is not None:
        import importlib.util

        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is None:
            fail(f"no module named {module!r}")
    if output:
        output = _rank_path(output)
        try:
            Path(output).write_text("", encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
    from modeguard.runtime.sanitizer import run_program

    program_args = ([target] if module and target else []) + list(args or [])
    result = run_program(module or target, program_args, as_module=module is not None)
    _write_run_report(result, output_format, output)
    worst = {FailOn.error: 0, FailOn.warning: 1, FailOn.never: -1}[fail_on]
    if result.exit_code == 0 and any(f.severity.rank <= worst for f in result.findings):
        raise typer.Exit(1)
    raise typer.Exit(result.exit_code)


def _rank_path(path: str) -> str:
    """Under torchrun each rank writes its own report: out.json -> out.rank1.json."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return path
    stem, dot, suffix = path.rpartition(".")
    rank = os.environ.get("RANK", "0")
    return f"{stem}.rank{rank}.{suffix}" if dot and "/" not in suffix else f"{path}.rank{rank}"


def _write_run_report(result, fmt: "RunFormat", output: Optional[str]) -> None:
    import io
    import os
    from pathlib import Path

    from modeguard.lint import output as reporters

    findings = sorted(result.findings, key=lambda f: (f.severity.rank, f.filename or "", f.location.row, f.code))
    rank = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    if fmt in (RunFormat.json, RunFormat.sarif, RunFormat.github):
        text = {RunFormat.json: reporters.to_json, RunFormat.sarif: reporters.to_sarif, RunFormat.github: reporters.to_github}[fmt](findings)
        text = text + "\n" if text else ""
    else:
        buffer = io.StringIO()
        console = Console(file=buffer, highlight=False, force_terminal=output is None and sys.stderr.isatty(), width=120 if output else None)
        if findings:
            console.rule(f"[bold]modeguard run{rank}: {len(findings)} mode problem(s) in {result.calls_checked} checked model call(s)", align="left")
            if fmt is RunFormat.full:
                sources = {f.filename: Path(f.filename).read_text(errors="replace").splitlines() for f in findings if f.filename and Path(f.filename).is_file()}
                reporters.print_full(console, findings, sources)
                reporters.print_statistics(console, findings)
            else:
                reporters.print_concise(console, findings)
        else:
            console.print(f"modeguard run{rank}: no mode problem in {result.calls_checked} checked model call(s)", style="green")
        text = buffer.getvalue()
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stderr.write(text)
        sys.stderr.flush()


@app.command()
def rule(code: str = typer.Argument(..., help="a rule code, e.g. MG105")) -> None:
    """Explain one rule, with examples of code it flags and code it accepts."""
    from rich.markdown import Markdown

    from modeguard.lint.rules import RULES_BY_CODE

    found = RULES_BY_CODE.get(code.upper())
    if found is None:
        fail(f"unknown rule {code!r} (see `modeguard rules`)")
    Console().print(Markdown(rule_markdown(found)))


def rule_markdown(found) -> str:
    fixable = "Fix is always available." if found.fixable else "No automatic fix."
    default = "" if found.default_enabled else " Not selected by default."
    parts = [f"# {found.name} ({found.code})", "", f"**{found.summary}**", "", found.rationale, "", f"{fixable}{default}", "", "## Flagged"]
    parts += [f"```python\n{example.rstrip()}\n```" for example in found.invalid]
    parts += ["", "## Not flagged"]
    parts += [f"```python\n{example.rstrip()}\n```" for example in found.valid]
    return "\n".join(parts)


@app.command()
def rules() -> None:
    """List every rule of the linter, and the codes `modeguard run` reports."""
    from rich.table import Table

    from modeguard.lint.rules import ALL_RULES

    from modeguard.run_codes import RUN_CODES

    table = Table("code", "name", "fix", "default", "summary")
    for r in ALL_RULES:
        table.add_row(r.code, r.name, "yes" if r.fixable else "", "yes" if r.default_enabled else "no", r.summary)
    Console().print(table)
    observed = Table("code", "name", "severity", "linter rule", "summary", title="observed by `modeguard run` and guard()", title_justify="left")
    for c in RUN_CODES.values():
        observed.add_row(c.code, c.name, c.severity.value, c.lint_rule or "", c.summary)
    Console().print(observed)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
