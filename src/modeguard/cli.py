"""The `modeguard` command: a thin layer over the library."""

from __future__ import annotations

import contextlib
import sys
from typing import Optional

# rich-click: click's parser, help rendered by rich, and rich imported only when help or a usage
# error is shown, so that `modeguard check` starts fast
import rich_click as click
from click.exceptions import Exit

from modeguard.errors import ModeguardError


def _print_version(ctx: click.Context, _param: click.Parameter, requested: bool) -> None:
    if requested:
        from modeguard import __version__

        click.echo(f"modeguard {__version__}")
        ctx.exit(0)


class _Commands(click.RichGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they are defined here, not alphabetical


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--version", is_flag=True, is_eager=True, expose_value=False, callback=_print_version, help="print the version and exit")
def app() -> None:
    """Catch, explain and fix PyTorch train/eval-mode bugs."""


def _console(**options):
    from rich.console import Console

    return Console(**options)


def fail(message: str) -> None:
    """A usage or input error: one line on stderr, exit code 2."""
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]error:[/] {escape(message.splitlines()[0] if message else '')}", highlight=False, soft_wrap=True)
    raise Exit(2)


@app.command()
@click.argument("spec", required=False, help="path/file.py:factory, package.module:factory, torchvision:NAME or timm:NAME; "
                "the factory returns a model or (model, example_input). Default: the bundled example.")
@click.option("--input-shape", help="shape of a random example input, e.g. 8,3,224,224")
@click.option("--input", "input_file", help="a .pt file with the example input")
@click.option("--data", help="real data: path/file.py:factory or package.module:factory returning a "
              "DataLoader or an iterable of batches (a tensor, a dict, or (input, target, ...))")
@click.option("--max-batches", default=4, help="batches of --data to use (BatchNorm health uses all)")
@click.option("--weights", help="a state_dict checkpoint (loaded with weights_only=True)")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", help="text or json")
@click.option("--seed", default=0, help="seed for the random example input and the audit's passes")
@click.option("--batch-dim", default=0, help="the input's batch dimension (1 for sequence-first models)")
@click.option("--ignore", multiple=True, help="finding codes or prefixes to leave out (comma-separated, repeatable)")
@click.option("--efficiency", is_flag=True, help="also measure what eval + no_grad save")
@click.option("--html", help="also write a self-contained HTML report to this file")
@click.option("--debug/--no-debug", default=False, help="show tracebacks")
def audit(spec, input_shape, input_file, data, max_batches, weights, output_format, seed, batch_dim, ignore, efficiency, html, debug) -> None:
    """Audit a live model: which layers make its predictions depend on train/eval mode."""
    import io

    printed = io.StringIO()
    try:
        from modeguard._lazy import require_torch

        require_torch("modeguard audit")
        # What the user's code prints is held back: it goes to stderr before the report, never
        # into stdout (--format json), and an error stays one line.
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            report, cost = _run_audit(spec, input_shape, input_file, weights, seed, batch_dim, _split(ignore), efficiency, data, max_batches)
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
    if output_format == "json":
        from modeguard.runtime.rendering import to_json

        data = report.to_dict()
        if cost is not None:
            data["efficiency"] = cost.to_dict()
        sys.stdout.write(to_json(data, indent=2) + "\n")
    else:
        console = _console()
        console.print(report)
        if cost is not None:
            console.print(cost)
    raise Exit(1 if report.errors else 0)


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


OUTPUT_FORMATS = ["concise", "full", "json", "sarif", "github"]


def _split(values) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@app.command()
@click.argument("paths", nargs=-1, help="files or directories (default: .)")
@click.option("--select", multiple=True, help="rule codes or prefixes to enable (comma-separated)")
@click.option("--ignore", multiple=True, help="rule codes or prefixes to disable")
@click.option("--extend-select", multiple=True, help="add to the selected rules")
@click.option("--exclude", multiple=True, help="extra gitignore-style patterns to skip")
@click.option("--output-format", type=click.Choice(OUTPUT_FORMATS), help="concise, full, json, sarif or github")
@click.option("--fix", is_flag=True, help="apply the safe fixes")
@click.option("--diff", is_flag=True, help="show the safe fixes as a diff, change nothing")
@click.option("--statistics", is_flag=True, help="count findings per rule")
@click.option("--exit-zero", is_flag=True, help="exit 0 even with findings")
@click.option("--ignore-noqa", is_flag=True, help="report findings on # noqa lines too")
@click.option("--no-cache", is_flag=True, help="read and analyse every file")
@click.option("--jobs", type=int, help="processes (default: one per core)")
def check(paths, select, ignore, extend_select, exclude, output_format, fix, diff, statistics, exit_zero, ignore_noqa, no_cache, jobs) -> None:
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
        fmt = output_format or config.get("output-format", "concise")
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output-format {fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        use_cache = not no_cache and config.get("cache", True) and not (fix or diff)
        findings = lint_paths(files, selection, jobs=jobs, cache_dir=Path(".modeguard_cache") if use_cache else None)
    except ModeguardError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"invalid configuration: {exc}")
    findings.sort(key=lambda f: (*_place(f), f.code))
    if fix or diff:
        findings = _apply_fixes(findings, write=fix)
    if fmt == "json":
        sys.stdout.write(output.to_json(findings) + "\n")
    elif fmt == "sarif":
        sys.stdout.write(output.to_sarif(findings) + "\n")
    elif fmt == "github":
        if findings:
            sys.stdout.write(output.to_github(findings) + "\n")
    else:
        console = _console(highlight=False, emoji=False)  # no ":name:" codes here: rich never loads its emoji table
        if statistics:
            output.print_statistics(console, findings)
        elif fmt == "full":
            output.print_full(console, findings, _source_lines(findings))
        else:
            output.print_concise(console, findings)
    if fmt in ("concise", "full") and not statistics:
        fixable = sum(1 for f in findings if f.autofix)
        if findings:
            note = f" ({fixable} fixable with --fix)" if fixable else ""
            console.print(f"Found {len(findings)} error(s){note}.", highlight=False)
        elif not (fix or diff):
            console.print("All checks passed!", style="green")
    if any(f.code == "MG000" for f in findings):
        raise Exit(2)
    raise Exit(0 if exit_zero or not findings else 1)


def _place(finding) -> tuple:
    return finding.filename or "", finding.location.cell or 0, finding.location.row, finding.location.column


def _source_lines(findings) -> dict:
    """(filename, notebook cell or None) -> lines, for the files with findings."""
    from pathlib import Path

    from modeguard.lint.files import is_notebook
    from modeguard.lint.notebooks import cell_lines

    sources = {}
    for filename in {f.filename for f in findings if f.filename and Path(f.filename).is_file()}:
        if is_notebook(filename):
            sources.update({(filename, cell): lines for cell, lines in cell_lines(Path(filename).read_bytes()).items()})
        else:
            sources[(filename, None)] = Path(filename).read_text(errors="replace").splitlines()
    return sources


def _apply_fixes(findings, *, write: bool):
    """Fix (or show the diff of) every file with fixable findings; return what remains."""
    from pathlib import Path

    from modeguard.lint.fixes import apply_fixes, unified_diff
    from modeguard.lint.files import is_notebook
    from modeguard.lint.notebooks import fix_notebook

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
        _console(stderr=True).print(f"Fixed {total} error(s).", highlight=False)
    return sorted(remaining, key=_place)


FAIL_ON = {"error": 0, "warning": 1, "never": -1}  # the worst severity rank that fails the run


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
@click.argument("target", required=False, help="the script (or, with -m, the module's first argument)")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, help="the program's own arguments")
@click.option("-m", "--module", help="run a module, as python -m does")
@click.option("--output-format", type=click.Choice(["full", "concise", "json", "sarif", "github"]), default="full",
              help="full (rich summary), concise, json, sarif or github")
@click.option("--output", help="write the report to this file (default: stderr)")
@click.option("--fail-on", type=click.Choice(list(FAIL_ON)), default="never",
              help="exit 1 (or the program's non-zero code) when findings of this severity or worse were reported")
def run(target, args, module, output_format, output, fail_on) -> None:
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
    if result.exit_code == 0 and any(f.severity.rank <= FAIL_ON[fail_on] for f in result.findings):
        raise Exit(1)
    raise Exit(result.exit_code)


def _rank_path(path: str) -> str:
    """Under torchrun each rank writes its own report: out.json -> out.rank1.json."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return path
    stem, dot, suffix = path.rpartition(".")
    rank = os.environ.get("RANK", "0")
    return f"{stem}.rank{rank}.{suffix}" if dot and "/" not in suffix else f"{path}.rank{rank}"


def _write_run_report(result, fmt: str, output: Optional[str]) -> None:
    import io
    import os
    from pathlib import Path

    from modeguard.lint import output as reporters

    findings = sorted(result.findings, key=lambda f: (f.severity.rank, f.filename or "", f.location.row, f.code))
    rank = f" (rank {os.environ['RANK']})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    if fmt in ("json", "sarif", "github"):
        text = {"json": reporters.to_json, "sarif": reporters.to_sarif, "github": reporters.to_github}[fmt](findings)
        text = text + "\n" if text else ""
    else:
        buffer = io.StringIO()
        console = _console(file=buffer, highlight=False, force_terminal=output is None and sys.stderr.isatty(), width=120 if output else None)
        if findings:
            console.rule(f"[bold]modeguard run{rank}: {len(findings)} mode problem(s) in {result.calls_checked} checked model call(s)", align="left")
            if fmt == "full":
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
@click.argument("code", help="a rule code, e.g. MG105")
def rule(code: str) -> None:
    """Explain one rule, with examples of code it flags and code it accepts."""
    from rich.markdown import Markdown

    from modeguard.lint.rules import RULES_BY_CODE

    found = RULES_BY_CODE.get(code.upper())
    if found is None:
        fail(f"unknown rule {code!r} (see `modeguard rules`)")
    _console().print(Markdown(rule_markdown(found)))


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
    console = _console()
    console.print(table)
    observed = Table("code", "name", "severity", "linter rule", "summary", title="observed by `modeguard run` and guard()", title_justify="left")
    for c in RUN_CODES.values():
        observed.add_row(c.code, c.name, c.severity.value, c.lint_rule or "", c.summary)
    console.print(observed)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
