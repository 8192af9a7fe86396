"""Jupyter notebooks (`.ipynb`, nbformat 4) for `modeguard check`.

The code cells, in the order they appear (execution counts are not the order), form one
program: a notebook is run top to bottom, so a model trained in one cell and used for
prediction in another is one flow. IPython syntax (`%magic`, `%%cell magic`, `!shell`,
`x = !cmd`, `obj?`) is neutralised line for line, so every other line keeps its row and column
and the code around it still parses. Findings are mapped back to (cell, row in cell) plus the
line of the file's JSON text; fixes are spliced into the changed cells' `source` only, so every
other byte of the file (outputs, metadata, ids, indent, key order, escapes) stays as it was.

Parsed with `json` alone: the linter needs no Jupyter package at run time.
"""

from __future__ import annotations

import ast
import bisect
import io
import json
import re
import tokenize
import warnings
from dataclasses import dataclass, field, replace

from modeguard.findings import Edit, Finding, Fix, Location
from modeguard.lint.context import FileContext
from modeguard.lint.engine import Selection, parse
from modeguard.lint.project import short_path
from modeguard.lint.fixes import apply_fixes, unified_diff
from modeguard.lint.rules import RULES_BY_CODE

# cell magics whose body is Python run by this kernel; any other (%%bash, %%writefile...) is not
PYTHON_CELL_MAGICS = frozenset({"capture", "time", "timeit", "prun", "debug"})

_NEWLINE = re.compile(r"\r\n|\r|\n")  # what Python's tokenizer counts as a line break
_CELL_MAGIC = re.compile(r"%%(\w*)")
_FIRST_CODE = re.compile(r"^([ \t]*)\S", re.M)
_MAYBE_IPYTHON = re.compile(r"^[ \t]*[%!?]|\?[ \t]*$|=[ \t]*[!%]", re.M)
_IPYTHON_LINE = re.compile(
    r"(?P<indent>[ \t]*)(?:"
    r"(?P<target>[\w.\[\], \t()*]+?)[ \t]*=[ \t]*[!%]"  # files = !ls, x = %time f()
    r"|[%!?]"  # %magic, !shell, ?help
    r"|[\w.*\[\]]+\?{1,2}[ \t]*$"  # obj?, obj.attr??
    r")"
)
_SOURCE_KEY = re.compile(r'"source"\s*:\s*')
_BETWEEN_ITEMS = re.compile(r"[ \t\r\n,]*")
_NON_ASCII_ESCAPE = re.compile(r"\\u(?!00[0-7])[0-9a-fA-F]{4}")
_DECODER = json.JSONDecoder()


class NotebookError(ValueError):
    """The file is not a notebook modeguard can read; `row`/`column` point into the file."""

    def __init__(self, message: str, row: int = 1, column: int = 1):
        super().__init__(message)
        self.row, self.column = row, column


@dataclass
class Cell:
    number: int  # 1-based position among all cells, as Jupyter and VS Code count them
    text: str  # the source as stored
    python: str  # as Python sees it, every line ending in "\n": IPython syntax neutralised, IPython's dedent applied
    rows: int  # lines in `python`
    shifts: list[int] | None = None  # columns the dedent removed from each line
    neutralised: set[int] = field(default_factory=set)  # 1-based rows that held IPython syntax

    @property
    def lines(self) -> list[str]:
        return self.python.split("\n")[:-1]

    def shift(self, row: int) -> int:
        return self.shifts[row - 1] if self.shifts and 0 < row <= len(self.shifts) else 0


def read(data: bytes) -> tuple[str, dict]:
    """The file's text (without a BOM) and its JSON, checked just enough to be read as nbformat 4."""
    if not data or data.isspace():
        raise NotebookError("the file is empty: not a notebook (expected nbformat 4 JSON)")
    try:
        text = data.decode("utf-8-sig")
        notebook = json.loads(text)
    except UnicodeDecodeError as exc:
        raise NotebookError(f"not a notebook: cannot decode the file as UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise NotebookError(f"not a notebook: invalid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    if not isinstance(notebook, dict):
        raise NotebookError("not a notebook: the JSON is not an object")
    version = notebook.get("nbformat")
    if "worksheets" in notebook or (isinstance(version, int) and version < 4):
        raise NotebookError(
            f"nbformat {version} notebooks are not supported: convert it with "
            "`jupyter nbconvert --to notebook --nbformat 4`"
        )
    cells = notebook.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise NotebookError("not a notebook: no list of cells (expected nbformat 4)")
    return text, notebook


def is_python(notebook: dict) -> bool:
    """False for notebooks of another kernel language (R, Julia...): nothing of ours to check."""
    metadata = notebook.get("metadata") if isinstance(notebook.get("metadata"), dict) else {}
    for key in ("language_info", "kernelspec"):
        section = metadata.get(key)
        if isinstance(section, dict):
            language = section.get("name" if key == "language_info" else "language")
            if isinstance(language, str) and language:
                return language.lower() == "python"
    return True


def source_text(cell: dict, number: int) -> str:
    source = cell.get("source", "")
    try:
        return source if isinstance(source, str) else "".join(source)
    except TypeError:
        raise NotebookError(f"not a notebook: cell {number} has a source that is not text") from None


def code_cells(notebook: dict) -> list[Cell]:
    return [
        python_cell(number, source_text(cell, number))
        for number, cell in enumerate(notebook["cells"], 1)
        if cell.get("cell_type") == "code"
    ]


def _split_lines(text: str) -> list[str]:
    lines = _NEWLINE.split(text)
    return lines[:-1] if lines[-1] == "" else lines


def python_cell(number: int, text: str, *, precise: bool = False) -> Cell:
    """The cell as the Python code IPython would run, line for line. A line that starts like
    IPython syntax is neutralised at once; `precise` also makes sure it starts a statement
    (not inside brackets, a string or after a backslash), which costs a tokenizer run per
    such line and is only needed when the quick version does not parse."""
    python = text if "\r" not in text else _NEWLINE.sub("\n", text)
    if python and not python.endswith("\n"):
        python += "\n"
    cell = Cell(number, text, python, python.count("\n"))
    first = _FIRST_CODE.search(python)
    if first is None:
        return cell
    indent = first.group(1)
    maybe_ipython = ("%" in python or "!" in python or "?" in python) and _MAYBE_IPYTHON.search(python) is not None
    if not indent and not maybe_ipython:
        return cell
    lines = cell.lines
    first_row = python.count("\n", 0, first.start())
    if indent:  # IPython removes the first line's indentation from every line that starts with it
        cell.shifts = [0] * len(lines)
        for i, line in enumerate(lines):
            if line.startswith(indent):
                lines[i], cell.shifts[i] = line[len(indent):], len(indent)
    if lines[first_row].startswith("%%"):
        if _CELL_MAGIC.match(lines[first_row]).group(1) not in PYTHON_CELL_MAGICS:
            cell.python = "\n" * len(lines)  # %%bash, %%writefile...: not Python for this kernel
            cell.neutralised = set(range(1, len(lines) + 1))
            return cell
        lines[first_row] = ""
        cell.neutralised.add(first_row + 1)
    done = -1
    for i in _candidate_rows(python) if maybe_ipython else ():
        line = lines[i]
        match = _IPYTHON_LINE.match(line) if i > done else None
        if match is None or (precise and not _starts_statement(lines[:i])):
            continue
        indent, target = match.group("indent"), match.group("target")
        lines[i] = f"{indent}{target} = None" if target else f"{indent}pass"
        cell.neutralised.add(i + 1)
        done = i
        while line.endswith("\\") and done + 1 < len(lines):  # the rest of a magic continued by a backslash
            done += 1
            line, lines[done] = lines[done], ""
            cell.neutralised.add(done + 1)
    cell.python = "".join(line + "\n" for line in lines)
    return cell


def _candidate_rows(python: str) -> list[int]:
    """0-based indexes of the lines that may hold IPython syntax."""
    rows, row, position = [], 0, 0
    for match in _MAYBE_IPYTHON.finditer(python):
        row += python.count("\n", position, match.start())
        position = match.start()
        if not rows or rows[-1] != row:
            rows.append(row)
    return rows


def _starts_statement(previous: list[str]) -> bool:
    """Whether the next line starts a statement: not inside brackets, a string or after `\\`.
    IPython only reads `%`/`!`/`?` there; elsewhere `%` is modulo, `!=` a comparison."""
    if not previous:
        return True
    try:
        for _ in tokenize.generate_tokens(io.StringIO("\n".join(previous) + "\n").readline):
            pass
    except tokenize.TokenError as exc:
        return "EOF in multi-line" not in str(exc)
    except (SyntaxError, ValueError):  # a broken line before: the parse reports it
        pass
    return True


@dataclass
class Program:
    """The code cells joined into one Python source, and where each of its rows came from."""

    source: str
    cells: list[Cell]
    starts: list[int]  # the program row of each cell's first line

    @classmethod
    def join(cls, cells: list[Cell]) -> "Program":
        cells = [cell for cell in cells if cell.rows]
        starts, row = [], 1
        for cell in cells:
            starts.append(row)
            row += cell.rows
        return cls("".join(cell.python for cell in cells), cells, starts)

    def cell_at(self, row: int) -> tuple[Cell, int]:
        index = max(bisect.bisect_right(self.starts, row) - 1, 0)
        return self.cells[index], row - self.starts[index] + 1

    def to_cell(self, location: Location, file_rows: dict[int, list[int]] | None = None) -> Location:
        if not self.cells:
            return location
        cell, row = self.cell_at(location.row)
        if row > cell.rows:  # the end of the program: after the last cell's last line
            return Location(row, 1, cell.number)
        file_row = None
        if file_rows is not None:
            rows = file_rows.get(cell.number) or [1]
            file_row = rows[min(row, len(rows)) - 1]
        return Location(row, location.column + cell.shift(row), cell.number, file_row)

    def map_finding(self, finding: Finding, file_rows: dict[int, list[int]]) -> Finding:
        location = self.to_cell(finding.location, file_rows)
        end = self.to_cell(finding.end_location or finding.location, file_rows)
        return replace(finding, location=location, end_location=end, autofix=self._map_fix(finding.autofix))

    def _map_fix(self, fix: Fix | None) -> Fix | None:
        """The fix in cell coordinates, or None where it cannot be applied to one cell's text."""
        if fix is None:
            return None
        edits = []
        for edit in fix.edits:
            start, end = self.to_cell(edit.location), self.to_cell(edit.end_location)
            if start.cell != end.cell:
                return None
            cell, _ = self.cell_at(edit.location.row)
            if any(start.row < row < end.row for row in cell.neutralised):
                return None
            if "\n" in edit.content and cell.shifts:
                return None  # new lines would need IPython's dedent undone
            edits.append(Edit(edit.content, start, end))
        return Fix(fix.message, tuple(edits))


@dataclass
class NotebookSource:
    """A notebook read for linting: its code cells as one parsed program, and what it takes to
    map findings back to cells and to the lines of the file's JSON text."""

    text: str
    sources: dict[int, list[str] | str]
    program: Program
    diagnostics: list[Finding]  # cells that do not parse, each skipped while the others are checked


def parse_notebook(path: str, data: bytes, selection: Selection) -> tuple[FileContext | None, list[Finding]]:
    """The notebook's code cells parsed as one program, like `engine.parse` does for a `.py`
    file: the context carries the `NotebookSource` (`ctx.notebook`); a notebook that cannot be
    read gives None and its MG100 diagnostic."""
    try:
        text, notebook = read(data)
        cells = code_cells(notebook) if is_python(notebook) else []
    except NotebookError as exc:
        return None, _syntax_error(path, str(exc), Location(exc.row, max(exc.column, 1)), selection)
    sources = code_sources(notebook)
    del notebook  # the outputs are most of its objects: the garbage collector need not walk them
    program = Program.join(cells)
    ctx, _ = parse(path, program.source, selection)
    diagnostics: list[Finding] = []
    if ctx is None:  # some cell does not parse: check the others without it
        cells, broken = _parsable(cells)
        program = Program.join([cell for cell in cells if cell.number not in broken])
        ctx, problems = parse(path, program.source, selection)
        for cell in cells:
            if cell.number in broken:
                message, row, column = broken[cell.number]
                location = Location(row, column + cell.shift(row), cell.number)
                diagnostics += _syntax_error(path, f"{message} (cell {cell.number} skipped; the other cells were checked)", location, selection)
        if ctx is None:  # the cells parse alone but not together
            return None, diagnostics + [program.map_finding(f, {}) for f in problems]
    ctx.notebook = NotebookSource(text, sources, program, diagnostics)
    return ctx, []


def notebook_findings(notebook: NotebookSource, findings: list[Finding]) -> list[Finding]:
    """The cell diagnostics and the rules' findings on the program, in cell coordinates."""
    diagnostics = notebook.diagnostics
    if not findings and not diagnostics:
        return []
    program = notebook.program
    wanted = {f.location.cell for f in diagnostics} | {program.cell_at(f.location.row)[0].number for f in findings if program.cells}
    file_rows = source_rows(notebook.text, notebook.sources, wanted)
    placed = []
    for finding in diagnostics:
        location = _with_file_row(finding.location, file_rows)
        placed.append(replace(finding, location=location, end_location=location))
    return placed + [_cells_in_message(program.map_finding(f, file_rows), program) for f in findings]


def _cells_in_message(finding: Finding, program: Program) -> Finding:
    """Evidence that names a line of this notebook's program (`train.ipynb:21`) names its cell
    instead (`train.ipynb:cell 4:3`)."""
    name = re.escape(short_path(finding.filename))

    def in_cell(match: re.Match) -> str:
        cell, row = program.cell_at(int(match.group(2)))
        return f"{match.group(1)}:cell {cell.number}:{row}"

    return replace(finding, message=re.sub(rf"({name}):(\d+)\b", in_cell, finding.message)) if program.cells else finding


def _parsable(cells: list[Cell]) -> tuple[list[Cell], dict[int, tuple[str, int, int]]]:
    """The cells with IPython syntax read precisely where the quick reading does not parse,
    and the syntax error of each cell that still does not parse."""
    result, broken = [], {}
    for cell in cells:
        error = _cell_syntax_error(cell)
        if error is not None and cell.neutralised:
            cell = python_cell(cell.number, cell.text, precise=True)
            error = _cell_syntax_error(cell)
        if error is not None:
            broken[cell.number] = error
        result.append(cell)
    return result, broken


def _with_file_row(location: Location, file_rows: dict[int, list[int]]) -> Location:
    rows = file_rows.get(location.cell) or [1]
    return replace(location, file_row=rows[min(location.row, len(rows)) - 1])


def _cell_syntax_error(cell: Cell) -> tuple[str, int, int] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(cell.python)
    except SyntaxError as exc:
        row = min(max(exc.lineno or 1, 1), max(cell.rows, 1))
        return f"SyntaxError: {exc.msg}", row, max(exc.offset or 1, 1)
    except (ValueError, MemoryError, RecursionError) as exc:
        return f"cannot parse the cell: {exc}", 1, 1
    return None


def _syntax_error(path: str, message: str, location: Location, selection: Selection) -> list[Finding]:
    if "MG100" not in selection.codes:
        return []
    rule = RULES_BY_CODE["MG100"]
    return [Finding("MG100", rule.severity, message, "fix the notebook (or exclude it)", filename=path, location=location, end_location=location)]


# -- the file's JSON text -----------------------------------------------------------------------
def code_sources(notebook: dict) -> dict[int, list[str] | str]:
    """Cell number -> the stored `source` value, for the code cells."""
    return {
        number: cell["source"]
        for number, cell in enumerate(notebook["cells"], 1)
        if cell.get("cell_type") == "code" and "source" in cell
    }


def _source_spans(text: str, sources: dict[int, list[str] | str], last: int | None = None) -> dict[int, tuple[int, int]]:
    """Cell number -> (start, end) of its `source` value in `text`, for the code cells up to
    cell `last`. Cells are stored in order, so each search starts where the previous cell's
    source ended; a candidate counts only if it decodes to exactly that cell's source."""
    spans: dict[int, tuple[int, int]] = {}
    position = 0
    for number, source in sources.items():
        if last is not None and number > last:
            break
        for match in _SOURCE_KEY.finditer(text, position):
            try:
                value, end = _DECODER.raw_decode(text, match.end())
            except ValueError:
                continue
            if value == source:
                spans[number] = (match.end(), end)
                position = end
                break
    return spans


def _items(text: str, start: int) -> list[tuple[int, int]]:
    """(start, end) of each string in the JSON list that opens at `start`."""
    items = []
    position = start + 1
    while True:
        position = _BETWEEN_ITEMS.match(text, position).end()
        if text[position] == "]":
            return items
        _, end = _DECODER.raw_decode(text, position)
        items.append((position, end))
        position = end


def source_rows(text: str, sources: dict[int, list[str] | str], wanted: set[int]) -> dict[int, list[int]]:
    """For each wanted cell number, the line of `text` on which each of the cell's lines starts."""
    result = {}
    cursor, row = 0, 1
    for number, (start, _) in _source_spans(text, sources, max(wanted, default=0)).items():
        if number not in wanted:
            continue
        source = sources[number]
        pieces = source if isinstance(source, list) else [source]
        offsets = [s for s, _ in _items(text, start)] if isinstance(source, list) else [start]
        piece_starts, total = [], 0
        for piece in pieces:
            piece_starts.append(total)
            total += len(piece)
        rows = []
        for offset in offsets:  # increasing: count the newlines since the previous one
            row += text.count("\n", cursor, offset)
            cursor = offset
            rows.append(row)
        joined = "".join(pieces)
        line_starts = [0, *(m.end() for m in _NEWLINE.finditer(joined))]
        result[number] = [rows[bisect.bisect_right(piece_starts, s) - 1] for s in line_starts] if pieces else []
    return result


def cell_lines(data: bytes) -> dict[int, list[str]]:
    """Cell number -> its source lines, for showing a finding's line."""
    try:
        _, notebook = read(data)
    except NotebookError:
        return {}
    return {cell.number: _split_lines(cell.text) for cell in code_cells(notebook)}


def fix_notebook(path: str, data: bytes, findings: list[Finding]) -> tuple[bytes, list[Finding], str]:
    """The notebook with the safe fixes applied to its cells, the findings whose fixes were
    applied, and the per-cell diff. Only the changed cells' `source` values are rewritten."""
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    text, notebook = read(data)
    cells = notebook["cells"]
    spans = _source_spans(text, code_sources(notebook))
    by_cell: dict[int, list[Finding]] = {}
    for finding in findings:
        if finding.autofix and finding.location.cell in spans:
            by_cell.setdefault(finding.location.cell, []).append(finding)
    ensure_ascii = text.isascii() and _NON_ASCII_ESCAPE.search(text) is not None
    replacements, applied, diff = [], [], []
    for number, cell_findings in sorted(by_cell.items()):
        before = source_text(cells[number - 1], number)
        after, done = apply_fixes(before, cell_findings)
        if after == before:
            continue
        start, end = spans[number]
        replacements.append((start, end, _encode_source(text, start, end, after, ensure_ascii)))
        cells[number - 1]["source"] = after.splitlines(keepends=True) if isinstance(cells[number - 1]["source"], list) else after
        applied.extend(done)
        diff.append(unified_diff(f"{path}:cell {number}", _ending_line(before), _ending_line(after)))
    fixed = text
    for start, end, value in sorted(replacements, reverse=True):
        fixed = fixed[:start] + value + fixed[end:]
    if json.loads(fixed) != notebook:  # a splice that changed anything else is never written
        return data, [], ""
    return bom + fixed.encode("utf-8"), applied, "".join(diff)


def _ending_line(text: str) -> str:
    """Jupyter stores a cell's last line without its newline; a diff shows the lines whole."""
    return text if text.endswith("\n") or not text else text + "\n"


def _encode_source(text: str, start: int, end: int, source: str, ensure_ascii: bool) -> str:
    """`source` written in the layout of the value it replaces (list of lines or one string)."""
    if text[start] != "[":
        return json.dumps(source, ensure_ascii=ensure_ascii)
    items = _items(text, start)
    head = text[start + 1 : items[0][0]] if items else ""
    separator = text[items[0][1] : items[1][0]] if len(items) > 1 else "," + head
    tail = text[items[-1][1] : end - 1] if items else ""
    encoded = [json.dumps(line, ensure_ascii=ensure_ascii) for line in source.splitlines(keepends=True)]
    return "[" + head + separator.join(encoded) + tail + "]"
