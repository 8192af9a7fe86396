"""Lint a project in two phases: index every file (parse once, summarise), then check every file
against the joined project index; in parallel across cores where it pays, with a cache keyed so
that a change in one file re-checks the files that depend on it."""

from __future__ import annotations

import functools
import gc
import hashlib
import os
import pickle
from itertools import repeat
from pathlib import Path

from modeguard import __version__
from modeguard.findings import Finding, Location, Severity
from modeguard.lint.context import FileContext
from modeguard.lint.engine import Selection, check, index_file, parse
from modeguard.lint.files import is_notebook
from modeguard.lint.project import ModuleSummary, ProjectIndex

# Source bytes whose trees stay in memory between the phases (a tree takes ~30x its source);
# beyond, phase 2 parses again
KEEP_TREES_BYTES = 40_000_000
PARALLEL_THRESHOLD = 64
PROJECT_KEY = "<project>"  # the cache entry holding the whole project's digest and per-file keys  # below this many files a process pool costs more than it saves


def read(path: Path, selection: Selection) -> tuple[FileContext | None, list[Finding]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [Finding("MG100", Severity.ERROR, f"cannot read the file: {exc.strerror}", filename=str(path), location=Location(1, 1), end_location=Location(1, 1))]
    if is_notebook(path):
        from modeguard.lint.notebooks import parse_notebook

        return parse_notebook(str(path), data, selection)
    return parse(str(path), data, selection)


def check_file(ctx: FileContext, project: ProjectIndex, selection: Selection) -> list[Finding]:
    """The rules on one parsed file; a notebook's findings in cell coordinates."""
    findings = check(ctx, project, selection)
    if ctx.notebook is None:
        return findings
    from modeguard.lint.notebooks import notebook_findings

    return notebook_findings(ctx.notebook, findings)


def index_one(path: Path, selection: Selection) -> tuple[ModuleSummary | None, list[Finding]]:
    """Phase 1 in a worker: the file's summary (its tree stays in the worker)."""
    ctx, problems = read(path, selection)
    return (index_file(ctx) if ctx is not None else None), problems


_worker_project: ProjectIndex | None = None


def _join(project: ProjectIndex) -> None:
    global _worker_project
    _worker_project = project


def check_one(path: Path, selection: Selection, project: ProjectIndex | None = None) -> list[Finding]:
    """Phase 2: parse again (trees do not travel between processes) and check."""
    ctx, problems = read(path, selection)
    return check_file(ctx, project or _worker_project, selection) if ctx is not None else problems


@functools.cache
def _linter_stamps() -> tuple[str, ...]:
    """The linter's own sources by mtime and size: findings cached by other rule code (an
    upgrade, an editable install being worked on) are never served. Read once per process."""
    root = Path(__file__).parent
    stamps = []
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        stamps.append(f"{path.relative_to(root)}:{stat.st_mtime_ns}:{stat.st_size}")
    return tuple(stamps)


class Cache:
    """Per file: (mtime, size) -> its summary and parse problems; and its findings under the key
    of the selection plus the summaries of every file it depends on or that depends on it."""

    def __init__(self, directory: Path | None, selection: Selection):
        self.file = directory / f"v{__version__}.pickle" if directory else None
        settings = [*sorted(selection.codes), f"noqa={selection.honour_noqa}", *_linter_stamps()]
        self.key = hashlib.sha1(",".join(settings).encode()).hexdigest()
        self.run_file = directory / f"v{__version__}.last-run.pickle" if directory else None
        self._entries: dict[str, dict] | None = None
        self.project = None

    @property
    def entries(self) -> dict[str, dict]:
        """Loaded on first use: a re-run of an unchanged project never needs the summaries."""
        if self._entries is None:
            self._entries = {}
            if self.file and self.file.is_file():
                try:
                    self._entries = pickle.loads(self.file.read_bytes())
                except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt
                    self._entries = {}
        return self._entries

    def last_run(self, files: list[Path]) -> list[Finding] | None:
        """The findings of the last run when it checked exactly these files, unchanged since,
        with the same rules."""
        if self.run_file is None or not self.run_file.is_file():
            return None
        try:
            key, stamps, findings = pickle.loads(self.run_file.read_bytes())
            if key != self.key or len(stamps) != len(files):
                return None
            if any(stamps.get(str(path)) != self._stamp(path) for path in files):
                return None
        except Exception:  # noqa: BLE001 - a missing file or a corrupt cache: lint again
            return None
        return findings

    def remember_run(self, files: list[Path], findings: list[Finding]) -> None:
        if self.run_file is None:
            return
        try:
            stamps = {str(path): self._stamp(path) for path in files}
            tmp = self.run_file.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps((self.key, stamps, findings), protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, self.run_file)
        except OSError:
            pass

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        stat = path.stat()
        return stat.st_mtime_ns, stat.st_size

    def summary(self, path: Path):
        entry = self.entries.get(str(path))
        if self.file is None or entry is None:
            return None
        try:
            if entry["stamp"] != self._stamp(path) or entry.get("key") != self.key:
                return None
        except OSError:
            return None
        return entry["summary"], entry["problems"], entry["digest"]

    def put_summary(self, path: Path, summary, problems, digest) -> None:
        try:
            self.entries[str(path)] = {"stamp": self._stamp(path), "key": self.key, "summary": summary, "problems": problems, "digest": digest, "findings": {}}
        except OSError:
            pass

    def findings(self, path: Path, key: str) -> list[Finding] | None:
        entry = self.entries.get(str(path))
        return None if entry is None else entry["findings"].get(self.key + key)

    def put_findings(self, path: Path, key: str, findings: list[Finding]) -> None:
        entry = self.entries.get(str(path))
        if entry is not None:
            entry["findings"] = {self.key + key: findings}

    @staticmethod
    def _project_digest(digests) -> str:
        return hashlib.sha1("".join(f"{p}={d};" for p, d in sorted((str(p), d) for p, d in digests.items())).encode()).hexdigest()

    def remember_project(self, digests, keys) -> None:
        self.project = (self._project_digest(digests), keys)

    def unchanged_project(self, digests):
        """When no summary changed since the last run: a function giving the cached findings."""
        stored = self.entries.get(PROJECT_KEY)
        if stored is None or stored[0] != self._project_digest(digests):
            return None
        keys = stored[1]
        found = {str(p): self.findings(Path(p), keys.get(str(p), "")) for p in digests}
        if any(v is None for p, v in found.items() if p in keys):
            return None
        return lambda files: [f for p in files for f in (found.get(str(p)) or [])]

    def save(self) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            (self.file.parent / ".gitignore").write_text("*\n")
            tmp = self.file.with_suffix(".tmp")
            if self.project is not None:
                self.entries[PROJECT_KEY] = self.project
            tmp.write_bytes(pickle.dumps(self.entries, protocol=pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, self.file)
        except OSError:
            pass  # a read-only checkout still lints


def lint_paths(files: list[Path], selection: Selection, *, jobs: int | None = None, cache_dir: Path | None = None) -> list[Finding]:
    # every file's tree stays alive until phase 2: the cyclic collector would rescan them all
    # again and again for garbage they do not make
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _lint_paths(files, selection, jobs, cache_dir)
    finally:
        if collecting:
            gc.enable()


def _lint_paths(files, selection, jobs, cache_dir) -> list[Finding]:
    cache = Cache(cache_dir, selection)
    unchanged = cache.last_run(files)
    if unchanged is not None:
        return unchanged
    findings = _lint_project(files, selection, jobs, cache)
    cache.remember_run(files, findings)
    return findings


def _lint_project(files, selection, jobs, cache) -> list[Finding]:
    jobs = jobs or os.cpu_count() or 1
    parallel = jobs > 1 and len(files) >= PARALLEL_THRESHOLD
    # phase 1: index
    contexts: dict[Path, FileContext] = {}
    summaries: dict[Path, ModuleSummary | None] = {}
    problems: dict[Path, list[Finding]] = {}
    digests: dict[Path, str] = {}
    todo = []
    for path in files:
        cached = cache.summary(path)
        if cached is None:
            todo.append(path)
        else:
            summaries[path], problems[path], digests[path] = cached
    if parallel and todo:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(index_one, todo, repeat(selection), chunksize=max(1, len(todo) // (jobs * 8))))
        for path, (summary, found) in zip(todo, results):
            summaries[path], problems[path] = summary, found
    else:
        kept = 0
        for path in todo:
            ctx, problems[path] = read(path, selection)
            if ctx is not None and kept < KEEP_TREES_BYTES:
                contexts[path] = ctx  # checked in phase 2 without parsing again
                kept += len(ctx.source)
            summaries[path] = index_file(ctx) if ctx is not None else None
    if cache.file:
        for path in todo:
            digests[path] = summaries[path].digest() if summaries[path] is not None else ""
            cache.put_summary(path, summaries[path], problems[path], digests[path])
    if cache.file and not todo:
        unchanged = cache.unchanged_project(digests)
        if unchanged is not None:  # nothing changed anywhere: every file's findings are cached
            return [*[f for p in files if summaries.get(p) is None for f in problems.get(p, [])], *unchanged(files)]
    project = ProjectIndex([s for s in summaries.values() if s is not None])
    # phase 2: check
    findings: list[Finding] = []
    keys = dependency_keys(project, {str(p): d for p, d in digests.items()}) if cache.file else {}
    if cache.file:
        cache.remember_project(digests, keys)
    to_check = []
    for path in files:
        if summaries.get(path) is None:
            findings.extend(problems.get(path, []))
            continue
        cached = cache.findings(path, keys.get(str(path), "")) if cache.file else None
        if cached is None:
            to_check.append(path)
        else:
            findings.extend(cached)
    if parallel and len(to_check) >= PARALLEL_THRESHOLD and not contexts:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, initializer=_join, initargs=(project,)) as pool:
            results = list(pool.map(check_one, to_check, repeat(selection), chunksize=max(1, len(to_check) // (jobs * 8))))
    else:
        results = [
            check_file(contexts.pop(path), project, selection) if path in contexts else check_one(path, selection, project)
            for path in to_check
        ]
    for path, result in zip(to_check, results):
        findings.extend(result)
        if cache.file and not any(f.code == "MG000" for f in result):
            cache.put_findings(path, keys.get(str(path), ""), result)
    cache.save()
    return findings


def dependency_keys(project: ProjectIndex, digests: dict[str, str]) -> dict[str, str]:
    """Per file, a hash of its own summary and of the summaries of the files it imports and that
    import it, two steps out: the cached findings of a file are reused only while none of them
    changed."""
    edges: dict[str, set[str]] = {path: set() for path in project.modules}
    for path, module in project.modules.items():
        for target in module.imports.values():
            found = project.resolve_import(path, target)
            other = _module_path(found)
            if other and other != path:
                edges[path].add(other)
                edges[other].add(path)
    keys = {}
    for path in project.modules:
        near = {path} | edges[path]
        for other in list(near):
            near |= edges[other]
        keys[path] = hashlib.sha1("".join(f"{p}={digests.get(p, '')};" for p in sorted(near)).encode()).hexdigest()
    return keys


def _module_path(found) -> str | None:
    if found is None:
        return None
    kind, value = found
    return value.path
