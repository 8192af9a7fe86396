"""Extract the commits named in the corpus manifests from local git mirrors into `checkouts/`:
the Python files and notebooks of each (repo, commit), one folder each. Third-party code stays
out of the repository (`checkouts/` is git-ignored).

Usage: python benchmarks/corpora/materialize.py [--mirror DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUFFIXES = (".py", ".ipynb")


def manifests() -> tuple[list[dict], dict]:
    bugs = json.loads((HERE / "bugs.json").read_text()) if (HERE / "bugs.json").is_file() else []
    maintained = json.loads((HERE / "maintained.json").read_text()) if (HERE / "maintained.json").is_file() else {"projects": [], "judgments": []}
    return bugs, maintained


def notebook_commits() -> set[tuple[str, str]]:
    """(repo, commit) of each notebook in notebooks.json, the notebook measurement."""
    path = HERE / "notebooks.json"
    return {(n["repo"], n["commit"]) for n in json.loads(path.read_text())["notebooks"]} if path.is_file() else set()


def checkout_name(repo: str, commit: str) -> str:
    return f"{repo.replace('/', '+')}@{commit[:12]}"


def mirror_dir(mirror: Path, repo: str) -> Path | None:
    base = mirror / repo.replace("/", "+")
    for candidate in (base / "repo", base):
        if (candidate / "HEAD").is_file():
            return candidate
        if (candidate / ".git" / "HEAD").is_file():  # a snapshot with a work-tree layout
            return candidate / ".git"
    return None


def extract(git_dir: Path, commit: str, target: Path) -> int:
    """Write the commit's Python files and notebooks blob by blob: snapshots may lack large
    blobs (data, images), which would make `git archive` of the whole tree fail."""
    git = ["git", f"--git-dir={git_dir}"]
    listing = subprocess.run([*git, "ls-tree", "-r", "-z", commit], capture_output=True, check=True).stdout
    count = 0
    for entry in filter(None, listing.split(b"\0")):
        meta, _, raw_name = entry.partition(b"\t")
        mode, kind, blob = meta.decode().split()
        name = raw_name.decode(errors="replace")
        if kind != "blob" or mode == "120000" or not name.endswith(SUFFIXES) or ".." in Path(name).parts:
            continue
        content = subprocess.run([*git, "cat-file", "blob", blob], capture_output=True)
        if content.returncode != 0:
            print(f"{name}: not in the mirror, skipped", file=sys.stderr)
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(content.stdout)
        count += 1
    (target / ".complete").write_text(commit + "\n")
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=Path("/work/.mirror"), help="folder of owner+name git mirrors")
    parser.add_argument("--out", type=Path, default=HERE / "checkouts")
    args = parser.parse_args()
    bugs, maintained = manifests()
    wanted = {(b["repo"], b["commit"]) for b in bugs} | {(p["repo"], p["commit"]) for p in maintained["projects"]} | notebook_commits()
    missing = []
    for repo, commit in sorted(wanted):
        target = args.out / checkout_name(repo, commit)
        if (target / ".complete").is_file():
            continue
        git_dir = mirror_dir(args.mirror, repo)
        if git_dir is None:
            missing.append(repo)
            continue
        try:
            count = extract(git_dir, commit, target)
        except subprocess.CalledProcessError as exc:
            print(f"{repo}@{commit[:12]}: {exc.stderr.decode(errors='replace').strip()}", file=sys.stderr)
            missing.append(repo)
            continue
        print(f"{repo}@{commit[:12]}: {count} files")
    if missing:
        print(f"no mirror or commit for {len(set(missing))} repositories: {', '.join(sorted(set(missing)))}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
