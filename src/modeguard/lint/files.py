"""Which files `modeguard check` reads: ruff-like default excludes, .gitignore, config excludes."""

from __future__ import annotations

import os
from pathlib import Path

# bare names, as gitignore patterns: a file or folder of this name at any depth
DEFAULT_EXCLUDES = frozenset((
    ".bzr", ".direnv", ".eggs", ".git", ".hg", ".mypy_cache", ".nox", ".pants.d", ".pytype",
    ".ruff_cache", ".svn", ".tox", ".venv", "venv", "__pypackages__", "_build", "buck-out",
    "build", "dist", "node_modules", "site-packages", ".modeguard_cache", "__pycache__",
    ".ipynb_checkpoints",
))
NOTEBOOK_SUFFIX = ".ipynb"
SOURCE_SUFFIXES = (".py", ".pyi", NOTEBOOK_SUFFIX)


def is_notebook(path) -> bool:
    return str(path).endswith(NOTEBOOK_SUFFIX)


def discover(paths: list[str], exclude: list[str] = (), include: list[str] = ()) -> list[Path]:
    """Python files and notebooks under `paths`, and files matching the `include` patterns.
    Paths named explicitly are always read; what is found by walking skips default excludes,
    `exclude` patterns and anything .gitignore ignores. pathspec is imported only when there
    are patterns to match: checking one file, or a tree without any, never needs it."""
    excluded = _spec(exclude)
    included = _spec(include)
    found: list[Path] = []
    for raw in paths:
        root = Path(raw)
        if root.is_file():
            found.append(root)
            continue
        if not root.is_dir():
            from modeguard.errors import InputError

            raise InputError(f"no such file or directory: {raw}")
        ignores: list[tuple[Path, object]] = []
        for directory, dirnames, filenames in os.walk(root):
            here = Path(directory)
            if ".gitignore" in filenames:
                try:
                    spec = _spec((here / ".gitignore").read_text(errors="replace").splitlines())
                except Exception:  # noqa: BLE001 - a broken .gitignore only loses its patterns
                    spec = None
                if spec is not None:
                    ignores.append((here, spec))

            def skip(path: Path, is_dir: bool) -> bool:
                if path.name in DEFAULT_EXCLUDES:
                    return True
                slash = "/" if is_dir else ""
                if excluded is not None and (
                    excluded.match_file(path.relative_to(root).as_posix() + slash) or excluded.match_file(path.name + slash)
                ):
                    return True
                return any(
                    base in path.parents and spec.match_file(path.relative_to(base).as_posix() + slash)
                    for base, spec in ignores
                )

            dirnames[:] = sorted(d for d in dirnames if not skip(here / d, True))

            def wanted(name: str) -> bool:
                if name.endswith(SOURCE_SUFFIXES):
                    return True
                return included is not None and (included.match_file(name) or included.match_file((here / name).relative_to(root).as_posix()))

            found.extend(here / f for f in sorted(filenames) if wanted(f) and not skip(here / f, False))
    return found


def _spec(lines):
    """A gitignore-style matcher for `lines`, or None when there is no pattern."""
    if not lines:
        return None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)
