"""Which files `modeguard check` reads: ruff-like default excludes, .gitignore, config excludes."""

from __future__ import annotations

import os
from pathlib import Path

import pathspec

DEFAULT_EXCLUDES = (
    ".bzr", ".direnv", ".eggs", ".git", ".hg", ".mypy_cache", ".nox", ".pants.d", ".pytype",
    ".ruff_cache", ".svn", ".tox", ".venv", "venv", "__pypackages__", "_build", "buck-out",
    "build", "dist", "node_modules", "site-packages", ".modeguard_cache", "__pycache__",
    ".ipynb_checkpoints",
)
SOURCE_SUFFIXES = (".py", ".pyi", ".ipynb")


def discover(paths: list[str], exclude: list[str] = (), include: list[str] = ()) -> list[Path]:
    """Python files and notebooks under `paths`, and files matching the `include` patterns.
    Paths named explicitly are always read; what is found by walking skips default excludes,
    `exclude` patterns and anything .gitignore ignores."""
    excluded = pathspec.GitIgnoreSpec.from_lines([*DEFAULT_EXCLUDES, *exclude])
    included = pathspec.GitIgnoreSpec.from_lines(include) if include else None
    found: list[Path] = []
    for raw in paths:
        root = Path(raw)
        if root.is_file():
            found.append(root)
            continue
        if not root.is_dir():
            from modeguard.errors import InputError

            raise InputError(f"no such file or directory: {raw}")
        ignores: list[tuple[Path, pathspec.PathSpec]] = []
        for directory, dirnames, filenames in os.walk(root):
            here = Path(directory)
            gitignore = here / ".gitignore"
            if gitignore.is_file():
                try:
                    ignores.append((here, pathspec.GitIgnoreSpec.from_lines(gitignore.read_text(errors="replace").splitlines())))
                except Exception:  # noqa: BLE001 - a broken .gitignore only loses its patterns
                    pass

            def skip(path: Path, is_dir: bool) -> bool:
                rel = path.relative_to(root).as_posix() + ("/" if is_dir else "")
                if excluded.match_file(rel) or excluded.match_file(path.name + ("/" if is_dir else "")):
                    return True
                return any(
                    base in path.parents and spec.match_file(path.relative_to(base).as_posix() + ("/" if is_dir else ""))
                    for base, spec in ignores
                )

            dirnames[:] = sorted(d for d in dirnames if not skip(here / d, True))

            def wanted(name: str) -> bool:
                if name.endswith(SOURCE_SUFFIXES):
                    return True
                return included is not None and (included.match_file(name) or included.match_file((here / name).relative_to(root).as_posix()))

            found.extend(here / f for f in sorted(filenames) if wanted(f) and not skip(here / f, False))
    return found
