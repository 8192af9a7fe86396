"""`modeguard run` on realistic training programs, each with a correct and a buggy version
(`--bug`): every planted bug (a `# BUG: MGxxx` comment) is reported at its line, and nothing
else; the correct versions report nothing."""

import json
import re

import pytest

from tests.run.conftest import PROGRAMS, run_modeguard

PROGRAM_FILES = sorted(p.name for p in PROGRAMS.glob("*.py"))
MARKER = re.compile(r"#.*\bBUG:\s*(MG\d{3})")


def planted(path) -> set[tuple[str, int]]:
    return {
        (match.group(1), row)
        for row, line in enumerate(path.read_text().splitlines(), start=1)
        if (match := MARKER.search(line))
    }


def reported(program: str, *args, tmp_path) -> tuple[set[tuple[str, int]], object]:
    out = tmp_path / "report.json"
    result = run_modeguard("run", "--output-format", "json", "--output", out, PROGRAMS / program, *args)
    findings = json.loads(out.read_text())
    assert all(f["filename"].endswith(program) for f in findings), findings
    return {(f["code"], f["location"]["row"]) for f in findings}, result


def test_there_are_at_least_ten_programs_and_each_plants_a_bug():
    assert len(PROGRAM_FILES) >= 10
    assert all(planted(PROGRAMS / name) for name in PROGRAM_FILES)


@pytest.mark.parametrize("program", PROGRAM_FILES)
def test_correct_version_is_silent(program, tmp_path):
    found, result = reported(program, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert found == set()


@pytest.mark.parametrize("program", PROGRAM_FILES)
def test_buggy_version_reports_every_planted_bug_at_its_line(program, tmp_path):
    found, result = reported(program, "--bug", tmp_path=tmp_path)
    expected_exit = 1 if program == "last_batch_of_one.py" else 0  # that bug crashes the program
    assert result.returncode == expected_exit, result.stderr[-2000:]
    assert found == planted(PROGRAMS / program)
