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
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
    weights: Optional[str] = typer.Option(None, help="a state_dict checkpoint (loaded with weights_only=True)"),
    format: AuditFormat = typer.Option(AuditFormat.text, "--format", help="text or json"),
    seed: int = typer.Option(0, help="seed for the random example input and the audit's passes"),
    ignore: List[str] = typer.Option([], help="finding codes or prefixes to leave out (repeatable)"),
    debug: bool = typer.Option(False, help="show tracebacks"),
) -> None:
    """Audit a live model: which layers make its predictions depend on train/eval mode."""
    try:
        from modeguard._lazy import require_torch

        require_torch("modeguard audit")
        report = _run_audit(spec, input_shape, input, weights, seed, ignore)
    except ModeguardError as exc:
        if debug:
            raise
        fail(str(exc))
    if format is AuditFormat.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    else:
        Console().print(report)
    raise typer.Exit(1 if report.errors else 0)


def _run_audit(spec, input_shape, input_file, weights, seed, ignore):
    import torch

    from modeguard.errors import InputError, ModelCallError
    from modeguard.runtime import loading
    from modeguard.runtime.audit import audit as run_audit

    model, example, name = loading.load_factory(spec or "modeguard.examples:demo")
    extra = []
    if weights:
        missing, unexpected = loading.load_weights(model, weights)
        extra = loading.checkpoint_findings(model, missing, unexpected)
    if input_file:
        example = loading.load_input(input_file)
    elif input_shape:
        example = torch.randn(loading.parse_shape(input_shape), generator=torch.Generator().manual_seed(seed))
    elif example is None:
        shape = loading.default_input_shape(model)
        if shape is None:
            raise InputError(f"{name} gave no example input: pass --input-shape or --input")
        example = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    try:
        report = run_audit(model, example, seed=seed, ignore=ignore, name=name)
    except ModelCallError as exc:
        raise InputError(f"{exc} (is the example input of the right shape?)") from exc
    report.findings[:0] = [f for f in extra if not any(f.code.startswith(c.upper()) for c in ignore)]
    return report


def main() -> None:
    app()


if __name__ == "__main__":
    main()
