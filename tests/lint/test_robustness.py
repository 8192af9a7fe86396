"""The linter never crashes: every .py file of the installed site-packages (torch,
transformers, numpy, ...) gives findings or diagnostics, never an internal error."""

import sysconfig
from pathlib import Path

from modeguard.lint.engine import INTERNAL_ERROR, Selection
from modeguard.lint.files import discover
from modeguard.lint.runner import lint_paths


def test_whole_site_packages_without_internal_errors():
    site = Path(sysconfig.get_paths()["purelib"])
    files = [p for p in discover([str(site)]) if p.suffix == ".py"]
    assert len(files) > 5000  # torch, transformers, timm, numpy, ... are all there
    findings = lint_paths(files, Selection.from_options(select=["ALL"]))
    internal = [f for f in findings if f.code == INTERNAL_ERROR]
    assert internal == [], internal[:5]
