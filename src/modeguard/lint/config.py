"""`[tool.modeguard]` in the nearest pyproject.toml."""

from __future__ import annotations

import sys
from pathlib import Path

from modeguard.errors import InputError

KEYS = {"select", "ignore", "extend-select", "exclude", "extend-exclude", "extend-include", "output-format", "cache"}


def load_config(start: Path) -> dict:
    for directory in [start, *start.parents]:
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file():
            if sys.version_info >= (3, 11):  # imported only when there is a pyproject.toml
                import tomllib
            else:  # pragma: no cover
                import tomli as tomllib
            try:
                data = tomllib.loads(pyproject.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"{pyproject}: invalid TOML: {exc}") from exc
            section = data.get("tool", {}).get("modeguard")
            if section is None:
                continue
            unknown = set(section) - KEYS
            if unknown:
                raise InputError(f"{pyproject}: unknown [tool.modeguard] key(s): {', '.join(sorted(unknown))}")
            return section
    return {}
