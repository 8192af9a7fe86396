"""`modeguard check` speed against bare `ast.parse` and TorchFix, side by side in one run.

Corpus: the installed torchvision and timm source trees. Prints a table and writes
benchmarks/results/lint_speed.json. Usage: python benchmarks/lint_speed.py
"""

from __future__ import annotations

import ast
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torchvision
from rich.console import Console

from modeguard.lint.engine import Selection
from modeguard.lint.files import discover
from modeguard.lint.runner import lint_paths
from _results import save, table as results_table

REPEATS = 3


def corpus() -> list[Path]:
    roots = [Path(torchvision.__file__).parent, Path(timm.__file__).parent]
    return discover([str(r) for r in roots])


def best_of(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bare_parse(files: list[Path]) -> None:
    for path in files:
        try:
            ast.parse(path.read_bytes(), filename=str(path))
        except SyntaxError:
            pass


def command(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(args, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    files = corpus()
    lines = sum(p.read_bytes().count(b"\n") for p in files)
    selection = Selection.from_options()
    cores = os.cpu_count() or 1
    parse = best_of(lambda: bare_parse(files))
    single = best_of(lambda: lint_paths(files, selection, jobs=1))
    parallel = best_of(lambda: lint_paths(files, selection, jobs=cores))
    exe = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as cache_home:
        tree = Path(cache_home) / "corpus"
        for root in (Path(torchvision.__file__).parent, Path(timm.__file__).parent):
            shutil.copytree(root, tree / root.name, ignore=shutil.ignore_patterns("__pycache__"))
        cold_cli = command(str(exe / "modeguard"), "check", "--exit-zero", str(tree))
        cached_cli = statistics.median(
            command(str(exe / "modeguard"), "check", "--exit-zero", str(tree)) for _ in range(REPEATS)
        )
        small = tree / "small.py"
        small.write_text("import torch\nmodel.eval()\nwith torch.no_grad():\n    out = model(x)\n")
        one_file = statistics.median(
            command(str(exe / "modeguard"), "check", "--no-cache", "--exit-zero", str(small)) for _ in range(REPEATS)
        )
        torchfix_single = command(str(exe / "torchfix"), "-j", "1", str(tree))
        torchfix_parallel = command(str(exe / "torchfix"), str(tree))
    rows = [
        ("bare ast.parse (read + parse), 1 process", parse),
        ("modeguard, 1 process, no cache", single),
        (f"modeguard, {cores} processes, no cache", parallel),
        ("modeguard check CLI, cold (parallel, fills cache)", cold_cli),
        ("modeguard check CLI, unchanged re-run (cache)", cached_cli),
        ("modeguard check CLI, one small file", one_file),
        ("TorchFix, 1 process", torchfix_single),
        (f"TorchFix, {cores} processes", torchfix_parallel),
    ]
    table = results_table(f"lint speed: {len(files)} files, {lines:,} lines (torchvision + timm)", ("run", "seconds", "vs bare ast.parse"))
    for name, seconds in rows:
        table.add_row(name, f"{seconds:.3f}", f"{seconds / parse:.2f}x")
    Console().print(table)
    save("lint_speed", {"files": len(files), "lines": lines, "cores": cores, "seconds": dict(rows)})


if __name__ == "__main__":
    main()
