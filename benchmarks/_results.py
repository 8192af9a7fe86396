"""What every benchmark script shares: a rich table to print and a JSON file to write."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def table(title: str, columns) -> Table:
    t = Table(title=title)
    for column in columns:
        t.add_column(column)
    return t


def save(name: str, data) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path
