"""`modeguard check` measured on real code, three tables in one run:

1. recall on confirmed real mode bugs (`corpora/bugs.json`): a bug is found when a finding of its
   rule (or one listed in `also`) lies in its file within its lines (2 lines of slack);
2. on maintained training/evaluation/export code (`corpora/maintained.json`): every finding in
   its listed files, and every error-level finding anywhere in its checkouts (the precision
   target is about those), with its hand judgment; precision per rule = true / judged;
   unjudged findings are listed apart;
3. findings per 1,000 lines on the installed torchvision, timm, transformers and Lightning.

Each (repo, commit) is checked whole, as `modeguard check DIR` would (default rules), from the
folder that `corpora/materialize.py` fills. Prints the tables and every miss, false positive and
unjudged finding; writes benchmarks/results/lint_realworld.json.

Usage: python benchmarks/lint_realworld.py [--manifests DIR] [--bugs FILE] [--maintained FILE]
                                           [--checkouts DIR] [--skip-libraries]
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections import Counter, defaultdict
from pathlib import Path

from rich.console import Console

from modeguard.findings import Severity
from modeguard.lint.engine import Selection
from modeguard.lint.files import discover
from modeguard.lint.rules import RULES_BY_CODE
from modeguard.lint.runner import lint_paths
from _results import save, table as results_table

HERE = Path(__file__).resolve().parent
PACKAGES = ("torchvision", "timm", "transformers", "lightning")
SLACK = 2


def checkout(root: Path, repo: str, commit: str) -> Path:
    return root / f"{repo.replace('/', '+')}@{commit[:12]}"


class Checker:
    """Findings per checkout, computed once and shared by both corpora."""

    def __init__(self, root: Path, selection: Selection):
        self.root = root
        self.selection = selection
        self.done: dict[tuple[str, str], dict[str, list] | None] = {}
        self.files: dict[tuple[str, str], int] = {}

    def findings(self, repo: str, commit: str) -> dict[str, list] | None:
        key = (repo, commit)
        if key not in self.done:
            folder = checkout(self.root, repo, commit)
            if not (folder / ".complete").is_file():
                self.done[key] = None
            else:
                by_path = defaultdict(list)
                files = discover([str(folder)])
                self.files[key] = len(files)
                for f in lint_paths(files, self.selection, jobs=1):
                    by_path[Path(f.filename).relative_to(folder).as_posix()].append(f)
                self.done[key] = by_path
        return self.done[key]


def score_bugs(bugs: list[dict], checker: Checker, console: Console) -> dict:
    per_rule: dict[str, Counter] = defaultdict(Counter)
    missed, absent = [], []
    mislabelled = [bug["id"] for bug in bugs if bug.get("verdict") == "mislabelled"]
    for bug in bugs:
        if bug.get("verdict") == "mislabelled":
            continue  # not a mode bug after all: its `note` says why; counted apart
        found = checker.findings(bug["repo"], bug["commit"])
        if found is None:
            absent.append(bug["id"])
            continue
        codes = {bug["rule"], *bug.get("also", ())}
        first, last = bug["lines"]
        hit = [
            f for f in found.get(bug["path"], [])
            if f.code in codes and first - SLACK <= f.location.row <= last + SLACK
        ]
        per_rule[bug["rule"]]["bugs"] += 1
        per_rule[bug["rule"]]["found"] += bool(hit)
        if not hit:
            nearby = [f"{f.code}:{f.location.row}" for f in found.get(bug["path"], [])]
            missed.append({"id": bug["id"], "rule": bug["rule"], "path": bug["path"], "lines": bug["lines"], "shape": bug.get("shape", ""), "findings_in_file": nearby})
    table = results_table("recall on confirmed real mode bugs (corpora/bugs.json)", ("rule", "bugs", "found", "recall"))
    total = Counter()
    for code in sorted(per_rule):
        c = per_rule[code]
        total.update(c)
        table.add_row(code, str(c["bugs"]), str(c["found"]), f"{c['found'] / c['bugs']:.2f}")
    if total["bugs"]:
        table.add_row("all", str(total["bugs"]), str(total["found"]), f"{total['found'] / total['bugs']:.2f}")
    console.print(table)
    for m in missed:
        console.print(f"  missed {m['id']} {m['rule']} {m['path']}:{m['lines']} ({m['shape']}) findings in file: {m['findings_in_file']}", markup=False)
    if absent:
        console.print(f"  not materialized ({len(absent)}): {', '.join(absent)}", markup=False)
    if mislabelled:
        console.print(f"  mislabelled, not counted ({len(mislabelled)}, see their notes): {', '.join(mislabelled)}", markup=False)
    return {
        "per_rule": {k: dict(v) for k, v in per_rule.items()},
        "bugs": total["bugs"],
        "found": total["found"],
        "recall": total["found"] / total["bugs"] if total["bugs"] else None,
        "missed": missed,
        "not_materialized": absent,
        "mislabelled": mislabelled,
    }


def score_maintained(maintained: dict, checker: Checker, console: Console) -> dict:
    judged = {}
    for j in maintained.get("judgments", []):
        if j.get("code"):
            judged[(j["repo"], j["path"], j["line"], j["code"])] = j
    per_rule: dict[str, Counter] = defaultdict(Counter)
    listed, unjudged, absent = [], [], []
    files = whole_files = 0
    for project in maintained.get("projects", []):
        found = checker.findings(project["repo"], project["commit"])
        if found is None:
            absent.append(project["repo"])
            continue
        files += len(project["files"])
        whole_files += checker.files[(project["repo"], project["commit"])]
        listed_paths = set(project["files"])
        for path in sorted(found):
            for f in found[path]:
                if path not in listed_paths and (f.severity is not Severity.ERROR or f.code == "MG100"):
                    continue  # outside the listed files only error-level mode findings count (MG100 is a parse error)
                j = judged.get((project["repo"], path, f.location.row, f.code))
                verdict = j["verdict"] if j else "unjudged"
                per_rule[f.code][verdict] += 1
                entry = {
                    "repo": project["repo"], "path": path, "line": f.location.row, "code": f.code, "message": f.message,
                    "verdict": verdict, "why": j.get("why", "") if j else "", "listed": path in listed_paths,
                }
                listed.append(entry)
                if j is None:
                    unjudged.append(entry)
    table = results_table(
        f"findings on maintained training/evaluation/export code (corpora/maintained.json: all findings in its {files} "
        f"listed files; error-level findings in all {whole_files} files of its {len(maintained.get('projects', [])) - len(absent)} checkouts)",
        ("rule", "level", "findings", "true", "false", "doubtful", "unjudged", "precision (true/judged)"),
    )
    error_true = error_judged = 0
    for code in sorted(per_rule):
        c = per_rule[code]
        judged_count = c["true"] + c["false"] + c["doubtful"]
        level = RULES_BY_CODE[code].severity.value if code in RULES_BY_CODE else "error"
        if level == Severity.ERROR.value:
            error_true += c["true"]
            error_judged += judged_count
        precision = f"{c['true'] / judged_count:.2f}" if judged_count else "-"
        table.add_row(code, level, str(sum(c.values())), str(c["true"]), str(c["false"]), str(c["doubtful"]), str(c["unjudged"]), precision)
    if error_judged:
        table.add_row("error-level", "", "", str(error_true), "", "", "", f"{error_true / error_judged:.2f}")
    console.print(table)
    for e in listed:
        if e["verdict"] != "true":
            console.print(f"  {e['verdict']}: {e['repo']} {e['path']}:{e['line']} {e['code']} {e['message']}", markup=False)
    missed = [j for j in maintained.get("judgments", []) if j.get("verdict") == "missed"]
    if missed:
        console.print(f"  judged misses (a bug the judges saw that no finding reports): {len(missed)}", markup=False)
    if absent:
        console.print(f"  not materialized ({len(absent)}): {', '.join(absent)}", markup=False)
    return {
        "files": files,
        "checkout_files": whole_files,
        "per_rule": {k: dict(v) for k, v in per_rule.items()},
        "error_level_precision": error_true / error_judged if error_judged else None,
        "findings": listed,
        "unjudged": unjudged,
        "judged_misses": len(missed),
        "not_materialized": absent,
    }


def score_libraries(selection: Selection, console: Console) -> list[dict]:
    table = results_table("findings on library code (installed packages)", ("package", "files", "lines", "findings", "per 1k lines"))
    results = []
    for name in PACKAGES:
        root = Path(importlib.import_module(name).__file__).parent
        files = discover([str(root)])
        lines = sum(p.read_bytes().count(b"\n") for p in files)
        findings = sorted(lint_paths(files, selection), key=lambda f: (f.filename, f.location.row))
        for f in findings:
            source = Path(f.filename).read_text(errors="replace").splitlines()[f.location.row - 1].strip()
            console.print(f"  {Path(f.filename).relative_to(root.parent)}:{f.location.row}: {f.code} {f.message}\n    | {source}", markup=False)
        table.add_row(name, str(len(files)), f"{lines:,}", str(len(findings)), f"{1000 * len(findings) / lines:.4f}")
        results.append({
            "package": name, "files": len(files), "lines": lines,
            "findings": [{"code": f.code, "file": str(Path(f.filename).relative_to(root.parent)), "row": f.location.row, "message": f.message} for f in findings],
        })
    console.print(table)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=Path, default=HERE / "corpora", help="folder with bugs.json and maintained.json")
    parser.add_argument("--bugs", type=Path, help="bugs manifest (default: MANIFESTS/bugs.json)")
    parser.add_argument("--maintained", type=Path, help="maintained-code manifest (default: MANIFESTS/maintained.json)")
    parser.add_argument("--checkouts", type=Path, default=HERE / "corpora" / "checkouts", help="materialize.py's --out folder")
    parser.add_argument("--skip-libraries", action="store_true", help="leave out the library-code table")
    args = parser.parse_args()
    console = Console(highlight=False, width=200)
    selection = Selection.from_options()
    bugs = json.loads((args.bugs or args.manifests / "bugs.json").read_text())
    maintained = json.loads((args.maintained or args.manifests / "maintained.json").read_text())
    checker = Checker(args.checkouts, selection)
    results = {
        "bugs": score_bugs(bugs, checker, console),
        "maintained": score_maintained(maintained, checker, console),
        "libraries": [] if args.skip_libraries else score_libraries(selection, console),
    }
    save("lint_realworld", results)


if __name__ == "__main__":
    main()
