"""Lint many files: in parallel across cores, with a cache so an unchanged re-run is instant."""

from __future__ import annotations

import hashlib
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

from modeguard import __version__
from modeguard.findings import Finding
from modeguard.lint.engine import Selection, lint_bytes
from modeguard.lint.notebooks import is_notebook, lint_notebook

PARALLEL_THRESHOLD = 32  # below this many files a process pool costs more than it saves


def lint_file(path: Path, selection: Selection) -> list[Finding]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        from modeguard.findings import Location, Severity

        return [Finding("MG100", Severity.ERROR, f"cannot read the file: {exc.strerror}", filename=str(path), location=Location(1, 1), end_location=Location(1, 1))]
    if is_notebook(path):
        return lint_notebook(str(path), data, selection)
    return lint_bytes(str(path), data, selection)


class Cache:
    def __init__(self, directory: Path | None, selection: Selection):
        self.file = directory / f"v{__version__}.pickle" if directory else None
        settings = [*sorted(selection.codes), f"noqa={selection.honour_noqa}"]
        self.key = hashlib.sha1(",".join(settings).encode()).hexdigest()
        self.entries: dict[str, tuple[int, int, str, list[Finding]]] = {}
        if self.file and self.file.is_file():
            try:
                self.entries = pickle.loads(self.file.read_bytes())
            except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt
                self.entries = {}

    def get(self, path: Path) -> list[Finding] | None:
        entry = self.entries.get(str(path))
        if entry is None:
            return None
        stat = path.stat()
        if (stat.st_mtime_ns, stat.st_size, self.key) == entry[:3]:
            return entry[3]
        return None

    def put(self, path: Path, findings: list[Finding]) -> None:
        stat = path.stat()
        self.entries[str(path)] = (stat.st_mtime_ns, stat.st_size, self.key, findings)

    def save(self) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            (self.file.parent / ".gitignore").write_text("*\n")
            tmp = self.file.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(self.entries, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, self.file)
        except OSError:
            pass  # a read-only checkout still lints


def lint_paths(files: list[Path], selection: Selection, *, jobs: int | None = None, cache_dir: Path | None = None) -> list[Finding]:
    cache = Cache(cache_dir, selection)
    findings: list[Finding] = []
    todo = []
    for path in files:
        cached = cache.get(path) if cache.file else None
        if cached is None:
            todo.append(path)
        else:
            findings.extend(cached)
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and len(todo) >= PARALLEL_THRESHOLD:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = pool.map(lint_file, todo, repeat(selection), chunksize=max(1, len(todo) // (jobs * 8)))
            per_file = list(zip(todo, results))
    else:
        per_file = [(p, lint_file(p, selection)) for p in todo]
    for path, result in per_file:
        findings.extend(result)
        if cache.file and not any(f.code == "MG000" for f in result):
            try:
                cache.put(path, result)
            except OSError:
                pass
    cache.save()
    return findings
