"""Findings per 1,000 lines of `modeguard check` on the installed torchvision, timm,
transformers and Lightning sources, with every finding printed (source line included) so
false positives can be judged by hand. Writes benchmarks/results/lint_realworld.json.

Usage: python benchmarks/lint_realworld.py
"""

from __future__ import annotations

import importlib
from pathlib import Path

from rich.console import Console

from modeguard.lint.engine import Selection
from modeguard.lint.files import discover
from modeguard.lint.runner import lint_paths
from _results import save, table as results_table

PACKAGES = ("torchvision", "timm", "transformers", "lightning")


def main() -> None:
    console = Console(highlight=False)
    selection = Selection.from_options()
    table = results_table("modeguard check on real-world sources (default rules)", ("package", "files", "lines", "findings", "per 1k lines"))
    results = []
    for name in PACKAGES:
        root = Path(importlib.import_module(name).__file__).parent
        files = discover([str(root)])
        lines = sum(p.read_bytes().count(b"\n") for p in files)
        findings = lint_paths(files, selection)
        findings.sort(key=lambda f: (f.filename, f.location.row))
        for f in findings:
            source = Path(f.filename).read_text(errors="replace").splitlines()[f.location.row - 1].strip()
            rel = Path(f.filename).relative_to(root.parent)
            console.print(f"{rel}:{f.location.row}: {f.code} {f.message}\n    | {source}", markup=False)
        table.add_row(name, str(len(files)), f"{lines:,}", str(len(findings)), f"{1000 * len(findings) / lines:.4f}")
        results.append(
            {
                "package": name,
                "files": len(files),
                "lines": lines,
                "findings": [
                    {"code": f.code, "file": str(Path(f.filename).relative_to(root.parent)), "row": f.location.row, "message": f.message}
                    for f in findings
                ],
            }
        )
    console.print(table)
    save("lint_realworld", results)


if __name__ == "__main__":
    main()
