"""The `modeguard` command: a thin layer over the library."""

from __future__ import annotations

import json
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


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", help="print the version and exit"),
) -> None:
    """Catch, explain and fix PyTorch train/eval-mode bugs."""
    if version:
        from modeguard import __version__

        typer.echo(f"modeguard {__version__}")
        raise typer.Exit(0)


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
    ignore: List[str] = typer.Option([], help="finding codes or prefixes to leave out (repeatable)"),
    efficiency: bool = typer.Option(False, "--efficiency", help="also measure what eval + no_grad save"),
    html: Optional[str] = typer.Option(None, "--html", help="also write a self-contained HTML report to this file"),
    debug: bool = typer.Option(False, help="show tracebacks"),
) -> None:
    """Audit a live model: which layers make its predictions depend on train/eval mode."""
    try:
        from modeguard._lazy import require_torch

        require_torch("modeguard audit")
        report, cost = _run_audit(spec, input_shape, input, weights, seed, batch_dim, ignore, efficiency, data, max_batches)
    except ModeguardError as exc:
        if debug:
            raise
        fail(str(exc))
    if html:
        from pathlib import Path

        try:
            Path(html).write_text(report.to_html(), encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {html}: {exc.strerror}")
    if format is AuditFormat.json:
        data = report.to_dict()
        if cost is not None:
            data["efficiency"] = cost.to_dict()
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
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
        files = discover(paths or ["."], [*config.get("exclude", []), *config.get("extend-exclude", []), *_split(exclude)])
        use_cache = not no_cache and config.get("cache", True) and not (fix or diff)
        findings = lint_paths(files, selection, jobs=jobs, cache_dir=Path(".modeguard_cache") if use_cache else None)
        fmt = output_format or OutputFormat(config.get("output-format", "concise"))
    except ModeguardError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"invalid configuration: {exc}")
    findings.sort(key=lambda f: (f.filename or "", f.location.row, f.location.column, f.code))
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
        sources = {f.filename: Path(f.filename).read_text(errors="replace").splitlines() for f in findings if f.filename and Path(f.filename).is_file()}
        output.print_full(console, findings, sources)
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


def _apply_fixes(findings, *, write: bool, console: Console):
    """Fix (or show the diff of) every file with fixable findings; return what remains."""
    from pathlib import Path

    from modeguard.lint.fixes import apply_fixes, unified_diff

    remaining = [f for f in findings if not f.autofix]
    by_file: dict[str, list] = {}
    for f in findings:
        if f.autofix:
            by_file.setdefault(f.filename, []).append(f)
    total = 0
    for filename, file_findings in by_file.items():
        path = Path(filename)
        before = path.read_text(encoding="utf-8")
        after, applied = apply_fixes(before, file_findings)
        if write:
            path.write_text(after, encoding="utf-8")
            total += len(applied)
            remaining.extend(f for f in file_findings if f not in applied)
        else:
            sys.stdout.write(unified_diff(filename, before, after))
            remaining.extend(file_findings)
    if write and total:
        console.print(f"Fixed {total} error(s).", highlight=False)
    return sorted(remaining, key=lambda f: (f.filename or "", f.location.row, f.location.column))


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
    """List every rule."""
    from rich.table import Table

    from modeguard.lint.rules import ALL_RULES

    table = Table("code", "name", "fix", "default", "summary")
    for r in ALL_RULES:
        table.add_row(r.code, r.name, "yes" if r.fixable else "", "yes" if r.default_enabled else "no", r.summary)
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
