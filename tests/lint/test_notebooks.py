"""`modeguard check` on Jupyter notebooks: real .ipynb files, the CLI as a subprocess."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml
from hypothesis import given, settings, strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from modeguard.lint.notebooks import Program, code_cells, python_cell

ROOT = Path(__file__).parents[2]

IMPORTS = "%matplotlib inline\n!pip install -q torch\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F"
MODEL = (
    "class Net(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.fc = nn.Linear(4, 2)\n"
    "        self.drop = nn.Dropout(0.5)\n"
    "\n"
    "    def forward(self, x):\n"
    "        return self.drop(self.fc(x))\n"
    "\n"
    "model = Net()\n"
    "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)"
)
TRAIN = (
    "%%time\n"
    "for epoch in range(3):\n"
    "    for x, y in loader:\n"
    "        optimizer.zero_grad()\n"
    "        F.cross_entropy(model(x), y).backward()\n"
    "        optimizer.step()"
)
PREDICT = "with torch.no_grad():\n    preds = model(test_x)\npreds.argmax(1)"


def check(*args, cwd):
    return subprocess.run([sys.executable, "-m", "modeguard.cli", "check", "--no-cache", *args], capture_output=True, text=True, cwd=cwd)


def findings(result):
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def training_notebook(predict=PREDICT, **extra_cells) -> nbformat.NotebookNode:
    """Markdown, imports with magics, a model, a %%time training cell, then prediction (cell 7)."""
    return new_notebook(
        cells=[
            new_markdown_cell("# Train a classifier"),
            new_code_cell(IMPORTS),
            new_code_cell(MODEL),
            new_markdown_cell("## Training"),
            new_code_cell(TRAIN, outputs=[new_output("stream", name="stdout", text="Wall time: 3 s\n")], execution_count=9),
            new_markdown_cell("## Predictions"),
            new_code_cell(predict, execution_count=2),  # run out of order: the cell order counts
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )


def write(path: Path, notebook) -> Path:
    nbformat.write(notebook, path)
    return path


# -- the classic bug, and a correct notebook ------------------------------------------------------
def test_missing_eval_in_prediction_cell_is_reported_in_that_cell(tmp_path):
    write(tmp_path / "train.ipynb", training_notebook())
    result = check("--output-format", "json", cwd=tmp_path)
    assert result.returncode == 1
    [finding] = findings(result)
    assert finding["code"] == "MG101" and finding["filename"] == "train.ipynb"
    assert finding["cell"] == 7 and finding["location"] == {"row": 2, "column": 13}
    text = check(cwd=tmp_path)
    assert text.stdout.startswith("train.ipynb:cell 7:2:13: MG101 model runs inference (under no_grad after the training loop) in training mode")
    assert "train.ipynb:cell 5:" in text.stdout  # the evidence names the training cell, not a program row
    full = check("--output-format", "full", cwd=tmp_path).stdout
    assert "   2 |     preds = model(test_x)" in full


def test_correct_notebook_passes(tmp_path):
    correct = "model.eval()\n" + PREDICT
    write(tmp_path / "train.ipynb", training_notebook(predict=correct))
    result = check(cwd=tmp_path)
    assert result.returncode == 0 and "All checks passed" in result.stdout
    # the eval() in an earlier cell counts too: cells are one program
    nb = training_notebook()
    nb.cells.insert(5, new_code_cell("model.eval()"))
    write(tmp_path / "train.ipynb", nb)
    assert check(cwd=tmp_path).returncode == 0


def test_github_and_sarif_point_at_the_stored_json_line(tmp_path):
    path = write(tmp_path / "train.ipynb", training_notebook())
    stored = path.read_text().splitlines()
    [line] = check("--output-format", "github", cwd=tmp_path).stdout.splitlines()
    head, _, message = line.partition("::MG101 ")
    json_row = int(head.split("line=")[1])
    assert '"    preds = model(test_x)\\n"' in stored[json_row - 1]
    assert message.startswith("cell 7:2:13 model runs inference")
    sarif = json.loads(check("--output-format", "sarif", cwd=tmp_path).stdout)
    [result] = sarif["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == json_row
    assert result["properties"] == {"cell": 7, "cellStartLine": 2, "cellStartColumn": 13, "cellEndLine": 2, "cellEndColumn": 26}


def test_noqa_inside_a_cell(tmp_path):
    predict = "with torch.no_grad():\n    preds = model(test_x)  # noqa: MG101 - MC dropout on purpose\n"
    write(tmp_path / "train.ipynb", training_notebook(predict=predict))
    assert check(cwd=tmp_path).returncode == 0
    assert [f["code"] for f in findings(check("--ignore-noqa", "--output-format", "json", cwd=tmp_path))] == ["MG101"]


# -- IPython syntax -------------------------------------------------------------------------------
MAGICS = [
    ("%%bash\npython train.py\nmodel(x)", "not Python: skipped"),
    ("%%capture captured\nwith torch.no_grad():\n    out = model(test_x)", "Python body: checked"),
    ("for i in range(2):\n    !echo {i}\n    %time y = i\nfiles = !ls\nmodel?\n??torch.nn\n%pip install \\\n    timm", "line magics, shell, help, continuation"),
    ("total = (1\n         % 2)\nok = 1 != 2", "modulo and != continue a statement: not magics"),
    ("    # indented cell: IPython dedents it\n    with torch.no_grad():\n        again = model(test_x)", "IPython dedents a cell whose first line is indented"),
]


def test_magics_neither_crash_nor_hide_code(tmp_path):
    nb = training_notebook(predict="x = 1")
    nb.cells.extend(new_code_cell(source) for source, _ in MAGICS)
    write(tmp_path / "magics.ipynb", nb)
    result = check("--output-format", "json", "--select", "ALL", cwd=tmp_path)
    got = [(f["code"], f["cell"], f["location"]["row"], f["location"]["column"]) for f in findings(result)]
    assert got == [("MG101", 9, 3, 11)]  # the %%capture body is checked (one finding per path)
    del nb.cells[8]  # without it, the indented cell is the first inference after training
    write(tmp_path / "magics.ipynb", nb)
    result = check("--output-format", "json", "--select", "ALL", cwd=tmp_path)
    got = [(f["code"], f["cell"], f["location"]["row"], f["location"]["column"]) for f in findings(result)]
    # column 17 in the cell as stored, 13 after IPython's dedent
    assert got == [("MG101", 11, 3, 17)]


def test_cell_lines_are_neutralised_in_place():
    nb = new_notebook(cells=[new_code_cell(source) for source, _ in MAGICS])
    cells = code_cells(json.loads(nbformat.writes(nb)))
    assert [cell.lines for cell in cells][:2] == [["", "", ""], ["", "with torch.no_grad():", "    out = model(test_x)"]]
    assert cells[2].lines == ["for i in range(2):", "    pass", "    pass", "files = None", "pass", "pass", "pass", ""]
    assert cells[4].shifts == [4, 4, 4]
    # `% 2` continues an expression: the quick reading breaks the cell, the precise one does not
    assert cells[3].lines[1] == "         pass" and 2 in cells[3].neutralised
    precise = python_cell(4, cells[3].text, precise=True)
    assert precise.lines == ["total = (1", "         % 2)", "ok = 1 != 2"] and not precise.neutralised
    ast.parse(Program.join([*cells[:3], precise, cells[4]]).source)


PYTHON = ["x = 1", "y = x % 2", "print('why?')", "z = [1,\n     2]", "if x:\n    y = 2", "s = '''\n%s\n!x\n'''"]
IPYTHON = ["%matplotlib inline", "!pip install torch", "files = !ls", "x?", "%time f()", "for i in y:\n    !echo {i}"]
CHUNKS = [[(line, False) for line in chunk.splitlines()] for chunk in PYTHON] + [
    [(line, line.lstrip()[0] in "%!" or "?" in line or "= !" in line) for line in chunk.splitlines()] for chunk in IPYTHON
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(CHUNKS), max_size=12), st.sampled_from(["", "  "]))
def test_any_mix_of_python_and_ipython_parses_with_rows_kept(chunks, indent):
    lines = [pair for chunk in chunks for pair in chunk]
    cell = python_cell(1, "\n".join(indent + line for line, _ in lines), precise=True)
    ast.parse("\n".join(cell.lines))
    assert len(cell.lines) == len(lines)
    for row, (line, magic) in enumerate(lines, 1):
        assert (row in cell.neutralised) == magic
        if not magic:
            assert cell.lines[row - 1] == line


# -- bad notebooks --------------------------------------------------------------------------------
def test_bad_notebooks_are_diagnostics_and_other_cells_still_checked(tmp_path):
    broken_cell = training_notebook()
    broken_cell.cells.insert(2, new_code_cell("def broken(:\n    pass"))
    write(tmp_path / "syntax.ipynb", broken_cell)
    (tmp_path / "invalid.ipynb").write_text('{"cells": [\n  {"cell_type": "code",}\n]}\n')
    (tmp_path / "v3.ipynb").write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [{"cells": []}], "metadata": {}}))
    (tmp_path / "zero.ipynb").write_bytes(b"")
    write(tmp_path / "no_cells.ipynb", new_notebook())
    (tmp_path / "bad_source.ipynb").write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"cell_type": "code", "source": 3}]}))
    (tmp_path / "latin1.ipynb").write_bytes('{"cells": "é"}'.encode("latin-1"))
    r_notebook = new_notebook(cells=[new_code_cell("x <- c(1, 2)\nprint(x)")], metadata={"language_info": {"name": "R"}})
    write(tmp_path / "r.ipynb", r_notebook)
    result = check("--output-format", "json", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    by_file = {}
    for f in findings(result):
        by_file.setdefault(f["filename"], []).append((f["code"], f["cell"], f["location"]["row"], f["message"]))
    assert by_file["syntax.ipynb"] == [
        ("MG100", 3, 1, "SyntaxError: invalid syntax (cell 3 skipped; the other cells were checked)"),
        ("MG101", 8, 2, by_file["syntax.ipynb"][1][3]),
    ]
    assert by_file["invalid.ipynb"] == [("MG100", None, 2, "not a notebook: invalid JSON: Expecting property name enclosed in double quotes")]
    assert by_file["v3.ipynb"][0][3].startswith("nbformat 3 notebooks are not supported: convert it with `jupyter nbconvert")
    assert by_file["zero.ipynb"][0][3] == "the file is empty: not a notebook (expected nbformat 4 JSON)"
    assert by_file["bad_source.ipynb"][0][3] == "not a notebook: cell 1 has a source that is not text"
    assert by_file["latin1.ipynb"][0][3].startswith("not a notebook: cannot decode the file")
    assert "no_cells.ipynb" not in by_file and "r.ipynb" not in by_file
    assert check("--ignore", "MG100", cwd=tmp_path).stdout.count("MG100") == 0


# -- --fix ----------------------------------------------------------------------------------------
FIXABLE = "model.eval\nwith torch.no_grad():\n    preds = model(test_x)\nlabel = 'café ☕'"


def rich_notebook():
    nb = training_notebook(predict=FIXABLE)
    nb.cells[1].outputs = [new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}, metadata={"needs_background": "light"})]
    nb.cells[2].metadata = {"tags": ["model"], "collapsed": True}
    nb.cells[0].attachments = {"diagram.png": {"image/png": "iVBORw0KGgo="}}
    nb.metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    return nb


def test_fix_rewrites_only_the_changed_cell_sources(tmp_path):
    data = json.loads(nbformat.writes(rich_notebook()))
    styles = {
        "nbformat.ipynb": dict(indent=1, sort_keys=True, ensure_ascii=False),
        "colab.ipynb": dict(indent=2, ensure_ascii=True),
        "compact.ipynb": dict(separators=(",", ":"), ensure_ascii=False),
    }
    for name, style in styles.items():
        text = json.dumps(data, **style) + ("" if name == "compact.ipynb" else "\n")
        (tmp_path / name).write_text(text, encoding="utf-8")
    before = {name: (tmp_path / name).read_text(encoding="utf-8") for name in styles}
    diff = check("--diff", cwd=tmp_path)
    assert {name: (tmp_path / name).read_text(encoding="utf-8") for name in styles} == before
    assert "--- a/colab.ipynb:cell 7\n+++ b/colab.ipynb:cell 7\n" in diff.stdout and "+model.eval()\n" in diff.stdout
    fixed = check("--fix", "--output-format", "json", cwd=tmp_path)
    assert [(f["code"], f["cell"]) for f in findings(fixed)] == [("MG101", 7)] * 3  # not fixable: reported
    assert findings(check("--output-format", "json", cwd=tmp_path)) == []  # model.eval() now runs first
    for name, style in styles.items():
        after = (tmp_path / name).read_text(encoding="utf-8")
        nbformat.validate(nbformat.reads(after, as_version=4))
        expected = json.loads(before[name])
        expected["cells"][6]["source"] = ["model.eval()\n", *expected["cells"][6]["source"][1:]]
        assert json.loads(after) == expected
        # the same bytes as writing the expected notebook in the file's own style: indent, key
        # order, ensure_ascii and the trailing newline are kept
        assert after == json.dumps(expected, **style) + ("" if name == "compact.ipynb" else "\n")
    assert "\\u2615" in (tmp_path / "colab.ipynb").read_text() and "☕" in (tmp_path / "nbformat.ipynb").read_text()


def test_fix_keeps_a_source_stored_as_one_string(tmp_path):
    data = json.loads(nbformat.writes(training_notebook(predict=FIXABLE)))
    data["cells"][6]["source"] = FIXABLE
    (tmp_path / "one.ipynb").write_text(json.dumps(data, indent=1))
    check("--fix", cwd=tmp_path)
    fixed = json.loads((tmp_path / "one.ipynb").read_text())
    assert fixed["cells"][6]["source"] == FIXABLE.replace("model.eval\n", "model.eval()\n")


def test_fix_keeps_a_bom_and_windows_line_endings(tmp_path):
    text = nbformat.writes(training_notebook(predict=FIXABLE)).replace("\n", "\r\n") + "\r\n"
    path = tmp_path / "windows.ipynb"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    check("--fix", cwd=tmp_path)
    expected = text.replace('"model.eval\\n",', '"model.eval()\\n",')
    assert expected != text and path.read_bytes() == b"\xef\xbb\xbf" + expected.encode("utf-8")


# -- discovery, configuration, cache --------------------------------------------------------------
def test_discovery_exclude_extend_include_and_checkpoints(tmp_path):
    for folder in ("notebooks", "drafts", "notebooks/.ipynb_checkpoints"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        write(tmp_path / folder / "train.ipynb", training_notebook())
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "predict").write_text("model.eval\n")
    (tmp_path / "pyproject.toml").write_text('[tool.modeguard]\nexclude = ["drafts/"]\nextend-include = ["*.ipynb", "bin/*"]\n')
    files = sorted({f["filename"] for f in findings(check("--output-format", "json", cwd=tmp_path))})
    assert files == ["bin/predict", "notebooks/train.ipynb"]
    (tmp_path / "pyproject.toml").write_text('[tool.modeguard]\nexclude = ["*.ipynb"]\n')
    assert check(cwd=tmp_path).returncode == 0
    assert check("drafts/train.ipynb", cwd=tmp_path).returncode == 1  # named explicitly: always read


def test_cache_covers_notebooks(tmp_path):
    path = write(tmp_path / "train.ipynb", training_notebook())
    run = lambda: subprocess.run([sys.executable, "-m", "modeguard.cli", "check", "--output-format", "json"], capture_output=True, text=True, cwd=tmp_path)
    first = run()
    assert [f["cell"] for f in json.loads(first.stdout)] == [7]
    assert (tmp_path / ".modeguard_cache").is_dir() and run().stdout == first.stdout
    write(path, training_notebook(predict="model.eval()\n" + PREDICT))
    assert json.loads(run().stdout) == []


def test_check_reads_notebooks_without_torch_or_nbformat(tmp_path):
    write(tmp_path / "train.ipynb", training_notebook())
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['nbformat'] = None\n"
        "from modeguard.cli import main\n"
        "sys.argv = ['modeguard', 'check', '--no-cache', '.']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "train.ipynb:cell 7:2:13: MG101" in result.stdout, result.stderr


def test_pre_commit_hook_covers_notebooks():
    [hook] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {"python", "jupyter"} <= set(hook["types_or"])
