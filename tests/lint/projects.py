"""Small projects on disk for the whole-project tests: write the files, lint the folder as
`modeguard check DIR` would (default rules)."""

import textwrap
from pathlib import Path

from modeguard.lint.engine import Selection
from modeguard.lint.files import discover
from modeguard.lint.runner import lint_paths

SELECTION = Selection.from_options()


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def check(root: Path, cache: Path | None = None) -> list[tuple[str, int, str, str]]:
    """(path relative to root, row, code, message) of every finding, sorted."""
    findings = lint_paths(discover([str(root)]), SELECTION, jobs=1, cache_dir=cache)
    return sorted((Path(f.filename).relative_to(root).as_posix(), f.location.row, f.code, f.message) for f in findings)
