"""`modeguard check` as a subprocess on real files: formats, noqa, config, fixes, robustness."""

import json
import subprocess
import sys

from tests.lint.example import EXAMPLE, copy_example


def check(*args, cwd):
    return subprocess.run([sys.executable, "-m", "modeguard.cli", "check", *args], capture_output=True, text=True, cwd=cwd)


def test_example_findings_and_exit_codes(tmp_path):
    copy_example(tmp_path / "train.py")
    result = check("--output-format", "json", cwd=tmp_path)
    assert result.returncode == 1
    findings = json.loads(result.stdout)
    assert [f["code"] for f in findings] == ["MG105", "MG107", "MG102", "MG103", "MG101"]
    first = findings[0]
    assert set(first) >= {"code", "message", "filename", "location", "end_location", "fix", "url"}
    assert first["location"] == {"row": 17, "column": 16} and first["fix"]["edits"]
    assert check("--exit-zero", cwd=tmp_path).returncode == 0
    (tmp_path / "train.py").write_text("x = 1\n")
    clean = check(cwd=tmp_path)
    assert clean.returncode == 0 and "All checks passed" in clean.stdout


def test_sarif_and_github(tmp_path):
    copy_example(tmp_path / "train.py")
    sarif = json.loads(check("--output-format", "sarif", cwd=tmp_path).stdout)
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    assert run["tool"]["driver"]["name"] == "modeguard" and len(run["results"]) == 5
    ids = {r["id"] for r in run["tool"]["driver"]["rules"]}
    assert all(r["ruleId"] in ids and r["locations"][0]["physicalLocation"]["region"]["startLine"] > 0 for r in run["results"])
    github = check("--output-format", "github", cwd=tmp_path).stdout.splitlines()
    assert github[0].startswith("::error title=modeguard (MG105),file=train.py,line=17,col=16")


def test_select_ignore_noqa_and_pyproject(tmp_path):
    copy_example(tmp_path / "train.py")
    codes = lambda r: [f["code"] for f in json.loads(r.stdout)]
    assert codes(check("--select", "MG105,MG107", "--output-format", "json", cwd=tmp_path)) == ["MG105", "MG107"]
    assert "MG101" not in codes(check("--ignore", "MG101", "--output-format", "json", cwd=tmp_path))
    (tmp_path / "pyproject.toml").write_text('[tool.modeguard]\nignore = ["MG10"]\n')
    assert codes(check("--output-format", "json", cwd=tmp_path)) == []
    (tmp_path / "pyproject.toml").write_text('[tool.modeguard]\nselect = ["MG105"]\n')
    source = (tmp_path / "train.py").read_text().replace("0.1)  # drops in eval too", "0.1)  # noqa: MG105")
    (tmp_path / "train.py").write_text(source)
    assert codes(check("--output-format", "json", cwd=tmp_path)) == []
    (tmp_path / "pyproject.toml").write_text('[tool.modeguard]\nbogus = 1\n')
    bad = check(cwd=tmp_path)
    assert bad.returncode == 2 and "bogus" in bad.stderr and "Traceback" not in bad.stderr
    assert check("--select", "XX9", cwd=tmp_path).returncode == 2


def test_fix_and_diff(tmp_path):
    copy_example(tmp_path / "train.py")
    before = (tmp_path / "train.py").read_text()
    diff = check("--diff", cwd=tmp_path)
    assert "+        return F.dropout(torch.relu(self.fc(x)), 0.1, training=self.training)" in diff.stdout
    assert (tmp_path / "train.py").read_text() == before
    fixed = check("--fix", "--output-format", "json", cwd=tmp_path)
    after = (tmp_path / "train.py").read_text()
    assert "nn.ModuleList([Block(dim) for _ in range(3)])" in after and "model.eval()\n" in after
    assert [f["code"] for f in json.loads(fixed.stdout)] == ["MG102", "MG101"] or [f["code"] for f in json.loads(fixed.stdout)] == ["MG102"]
    compile(after, "train.py", "exec")


def test_gitignore_and_default_excludes(tmp_path):
    (tmp_path / ".gitignore").write_text("generated/\n")
    for folder in ("generated", ".venv", "pkg"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.py").write_text("model.eval\n")
    result = check("--output-format", "json", cwd=tmp_path)
    assert [f["filename"] for f in json.loads(result.stdout)] == ["pkg/m.py"]


def test_exclude_option_and_gitignores_without_patterns(tmp_path):
    (tmp_path / ".gitignore").write_text("# only a comment\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / ".gitignore").write_text("")
    for name in ("pkg/m.py", "pkg/skip_me.py", "pkg/dist/m.py", "build/m.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("model.eval\n")
    result = check("--output-format", "json", "--exclude", "skip_*.py", cwd=tmp_path)
    assert [f["filename"] for f in json.loads(result.stdout)] == ["pkg/m.py"]


def test_checking_one_file_imports_only_what_it_needs(tmp_path):
    """Start-up is most of the time of a small check: no pydantic, no pattern matcher without
    patterns, no process pool for one file, no TOML parser without a pyproject.toml."""
    (tmp_path / "a.py").write_text("import torch\nmodel.eval\n")
    code = (
        "import sys\n"
        "from modeguard.cli import main\n"
        "sys.argv = ['modeguard', 'check', '--no-cache', 'a.py']\n"
        "try:\n    main()\nfinally:\n    print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "MG103" in result.stdout
    loaded = set(result.stderr.split())
    assert "modeguard.lint.rules" in loaded  # the check did run
    unneeded = {"torch", "typer", "pydantic", "pathspec", "tomllib", "concurrent.futures.process", "rich.table",
                "rich._emoji_codes", "modeguard.lint.notebooks"}
    assert not unneeded & loaded, result.stderr


def test_broken_files_are_diagnostics_not_crashes(tmp_path):
    files = {
        "py2.py": b"print 'hello'\n",
        "latin.py": b"# -*- coding: latin-1 -*-\nname = '\xe9'\nmodel.eval\n",
        "badutf8.py": b"x = '\xff\xfe'\n",
        "nul.py": b"x = 1\x00\n",
        "empty.py": b"",
        "bom.py": b"\xef\xbb\xbfmodel.eval\n",
        "deep.py": b"x = " + b"(" * 5000 + b")" * 5000 + b"\n",
        "huge.py": b"x = 1\n" * 200_000,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = check("--output-format", "json", "--select", "ALL", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    by_file = {}
    for f in json.loads(result.stdout):
        by_file.setdefault(f["filename"], []).append(f["code"])
    assert by_file["py2.py"] == ["MG100"] and by_file["nul.py"] == ["MG100"] and by_file["badutf8.py"] == ["MG100"]
    assert by_file["latin.py"] == ["MG103"] and by_file["bom.py"] == ["MG103"]
    assert "MG000" not in {c for codes in by_file.values() for c in codes}
    assert "empty.py" not in by_file and "huge.py" not in by_file


def test_check_runs_without_torch(tmp_path):
    copy_example(tmp_path / "train.py")
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from modeguard.cli import main\n"
        "sys.argv = ['modeguard', 'check', '--no-cache', '.']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "MG105" in result.stdout


def test_audit_without_torch_says_how_to_install(tmp_path):
    code = "import sys; sys.modules['torch'] = None\nfrom modeguard.cli import main\nsys.argv = ['modeguard', 'audit']\nmain()\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "pip install 'modeguard[torch]'" in result.stderr


def test_rule_and_rules_commands(tmp_path):
    rule = subprocess.run([sys.executable, "-m", "modeguard.cli", "rule", "MG105"], capture_output=True, text=True)
    assert rule.returncode == 0 and "training=self.training" in rule.stdout
    unknown = subprocess.run([sys.executable, "-m", "modeguard.cli", "rule", "MG999"], capture_output=True, text=True)
    assert unknown.returncode == 2
    listing = subprocess.run([sys.executable, "-m", "modeguard.cli", "rules"], capture_output=True, text=True)
    assert all(f"MG1{n:02d}" in listing.stdout for n in range(11))


def test_cache_reuses_results(tmp_path):
    copy_example(tmp_path / "train.py")
    first = check("--output-format", "json", cwd=tmp_path)
    assert (tmp_path / ".modeguard_cache").is_dir()
    second = check("--output-format", "json", cwd=tmp_path)
    assert first.stdout == second.stdout


def test_ignore_noqa_shows_the_planted_bugs(tmp_path):
    (tmp_path / "train.py").write_text(EXAMPLE.read_text())  # with its noqa markers
    assert check(cwd=tmp_path).returncode == 0
    shown = check("--ignore-noqa", "--output-format", "json", cwd=tmp_path)
    assert [f["code"] for f in json.loads(shown.stdout)] == ["MG105", "MG107", "MG102", "MG103", "MG101"]


def test_statistics(tmp_path):
    copy_example(tmp_path / "train.py")
    result = check("--statistics", cwd=tmp_path)
    assert result.returncode == 1
    rows = [line.split() for line in result.stdout.splitlines() if "MG1" in line]
    assert {row[1]: row[0] for row in rows} == {"MG101": "1", "MG102": "1", "MG103": "1", "MG105": "1", "MG107": "1"}
    assert any(row[1] == "MG105" and row[-1] == "[*]" for row in rows)
