"""`modeguard check` on public course and tutorial notebooks (benchmarks/corpora/notebooks.json):
internal errors, every finding with its cell line and its judgment from the manifest, and what a
notebook costs against the same code as a `.py` file plus JSON parsing, side by side in one run.

Run `python benchmarks/corpora/materialize.py` first. Writes benchmarks/results/lint_notebooks.json.
Usage: python benchmarks/lint_notebooks.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console

from modeguard.lint.engine import Selection
from modeguard.lint.notebooks import Program, cell_lines, code_cells, read
from modeguard.lint.runner import lint_paths
from _results import save, table as results_table

CORPORA = Path(__file__).parent / "corpora"
REPEATS = 15


def corpus(console: Console) -> list[tuple[dict, Path]]:
    sys.path.insert(0, str(CORPORA))
    from materialize import checkout_name

    entries = json.loads((CORPORA / "notebooks.json").read_text())["notebooks"]
    found = [(e, CORPORA / "checkouts" / checkout_name(e["repo"], e["commit"]) / e["path"]) for e in entries]
    missing = [str(path) for _, path in found if not path.is_file()]
    if missing:
        console.print(f"{len(missing)} notebooks missing, run benchmarks/corpora/materialize.py first: {missing[:3]}", markup=False)
        raise SystemExit(1)
    return found


def speed(notebooks: list[Path], selection: Selection) -> dict:
    """Each notebook, the same code as a .py file (its cells joined as modeguard reads them) and
    bare JSON parsing of the notebook, timed in turn (so machine load hits all three alike);
    the best of REPEATS rounds each."""
    with tempfile.TemporaryDirectory() as folder:
        scripts = []
        for i, path in enumerate(notebooks):
            script = Path(folder) / f"n{i}.py"
            script.write_text(Program.join(code_cells(read(path.read_bytes())[1])).source, encoding="utf-8")
            scripts.append(script)
        best = [[float("inf")] * 3 for _ in notebooks]
        for _ in range(REPEATS):
            for i, (notebook, script) in enumerate(zip(notebooks, scripts)):
                for k, work in enumerate((lambda: lint_paths([notebook], selection), lambda: lint_paths([script], selection), lambda: json.loads(notebook.read_bytes()))):
                    start = time.process_time()
                    work()
                    best[i][k] = min(best[i][k], time.process_time() - start)
    total = [sum(column) for column in zip(*best)]
    ratios = sorted((n / (s + j), path.name) for (n, s, j), path in zip(best, notebooks))
    return {
        "notebooks_s": total[0],
        "scripts_s": total[1],
        "json_s": total[2],
        "ratio_total": total[0] / (total[1] + total[2]),
        "ratio_median_notebook": ratios[len(ratios) // 2][0],
        "ratio_worst_notebook": ratios[-1][0],
        "worst_notebook": ratios[-1][1],
    }


def every_notebook(found: list[tuple[dict, Path]]) -> dict:
    """Robustness: all notebooks of the checked-out commits (not only the listed ones), all rules."""
    folders = {path.parents[len(Path(entry["path"]).parts) - 1] for entry, path in found}
    notebooks = sorted(p for folder in folders for p in folder.rglob("*.ipynb"))
    findings = lint_paths(notebooks, Selection.from_options(select=["ALL"]), jobs=1)
    return {
        "notebooks": len(notebooks),
        "internal_errors": sum(1 for f in findings if f.code == "MG000"),
        "mg100": sum(1 for f in findings if f.code == "MG100"),
    }


def main() -> None:
    console = Console(highlight=False, width=160)
    manifest = json.loads((CORPORA / "notebooks.json").read_text())
    verdicts = {(j["repo"], j["path"], j["cell"], j["line"], j["code"]): j for j in manifest["judgments"]}
    found = corpus(console)
    selection = Selection.from_options()
    by_path = {str(path): entry for entry, path in found}
    findings = lint_paths([path for _, path in found], selection, jobs=1)
    findings.sort(key=lambda f: (f.filename, f.location.cell or 0, f.location.row))
    counts: Counter = Counter()
    rows = []
    for f in findings:
        entry = by_path[f.filename]
        lines = cell_lines(Path(f.filename).read_bytes()).get(f.location.cell, [])
        source = lines[f.location.row - 1].strip() if 0 < f.location.row <= len(lines) else ""
        judgment = verdicts.get((entry["repo"], entry["path"], f.location.cell, f.location.row, f.code))
        verdict = judgment["verdict"] if judgment else "unjudged"
        counts[verdict] += 1
        console.print(
            f"{entry['repo']}:{entry['path']}:cell {f.location.cell}:{f.location.row}: {f.code} {f.message}\n"
            f"    | {source}\n    {verdict}: {judgment['why'] if judgment else ''}",
            markup=False,
        )
        rows.append({"repo": entry["repo"], "path": entry["path"], "cell": f.location.cell, "line": f.location.row,
                     "code": f.code, "message": f.message, "verdict": verdict})
    cells = lines = 0
    for _, path in found:
        notebook_cells = code_cells(read(path.read_bytes())[1])
        cells += len(notebook_cells)
        lines += sum(len(c.lines) for c in notebook_cells)
    internal = sum(1 for f in findings if f.code == "MG000")
    unparsable = sum(1 for f in findings if f.code == "MG100")
    summary = results_table(
        "modeguard check on public course and tutorial notebooks (default rules)",
        ("notebooks", "repos", "code cells", "lines", "internal errors", "MG100", "findings", "true", "false", "doubtful", "unjudged"),
    )
    summary.add_row(
        str(len(found)), str(len({e["repo"] for e, _ in found})), str(cells), f"{lines:,}", str(internal), str(unparsable),
        str(len(findings)), str(counts["true"]), str(counts["false"]), str(counts["doubtful"]), str(counts["unjudged"]),
    )
    console.print(summary)
    robustness = every_notebook(found)
    console.print(
        f"every notebook of these commits, all rules: {robustness['notebooks']} notebooks, "
        f"{robustness['internal_errors']} internal errors, {robustness['mg100']} MG100 (cells that do not parse)",
        markup=False,
    )
    timing = speed([path for _, path in found], selection)
    cost = results_table(
        f"cost of a notebook vs the same code as a .py file + JSON parsing (1 process, best of {REPEATS})",
        ("notebooks", ".py files", "json.loads", "ratio (all)", "ratio (median notebook)", "ratio (worst notebook)"),
    )
    cost.add_row(
        f"{timing['notebooks_s']:.3f} s", f"{timing['scripts_s']:.3f} s", f"{timing['json_s']:.3f} s",
        f"{timing['ratio_total']:.2f}x", f"{timing['ratio_median_notebook']:.2f}x", f"{timing['ratio_worst_notebook']:.2f}x ({timing['worst_notebook']})",
    )
    console.print(cost)
    save("lint_notebooks", {"notebooks": len(found), "code_cells": cells, "lines": lines, "internal_errors": internal,
                            "mg100": unparsable, "verdicts": dict(counts), "findings": rows, "every_notebook": robustness, "speed": timing})


if __name__ == "__main__":
    main()
