"""`modeguard run` / `python -m modeguard run`: the program runs as Python would run it (argv,
__main__, stdout, exit code, exceptions); the report goes to stderr or --output in each format."""

import json
import textwrap

from tests.run.conftest import program_env, run_modeguard

PROGRAM = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn

    print("argv", sys.argv[1:], __name__)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.2), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
    if "--eval" in sys.argv:
        model.eval()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 4))
    if "--raise" in sys.argv:
        raise KeyError("the program's own error")
    sys.exit(int(sys.argv[1]))
    """
)
PREDICT_LINE = 16


def write(tmp_path, text=PROGRAM, name="train.py"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_program_runs_unchanged_and_the_report_goes_to_stderr(tmp_path):
    result = run_modeguard("run", write(tmp_path), "7", "--lr", "3", "--output", "x", "--help")
    assert result.stdout == "argv ['7', '--lr', '3', '--output', 'x', '--help'] __main__\n"  # its options are its own
    assert result.returncode == 7
    assert f"train.py:{PREDICT_LINE}:1: MG301" in result.stderr
    assert "inference-in-training-mode" in result.stderr  # the summary table


def test_a_correct_program_is_silent_and_keeps_its_exit_code(tmp_path):
    result = run_modeguard("run", "--fail-on", "error", write(tmp_path), "0", "--eval")
    assert result.returncode == 0
    assert "no mode problem" in result.stderr and "MG3" not in result.stderr


def test_fail_on_error_makes_a_clean_exit_fail_when_bugs_were_seen(tmp_path):
    assert run_modeguard("run", "--fail-on", "error", write(tmp_path), "0").returncode == 1
    assert run_modeguard("run", write(tmp_path), "0").returncode == 0


def test_the_programs_exception_propagates_with_its_traceback(tmp_path):
    result = run_modeguard("run", write(tmp_path), "0", "--raise")
    assert result.returncode == 1
    assert "KeyError: \"the program's own error\"" in result.stderr
    assert 'train.py", line' in result.stderr and "runpy" not in result.stderr
    assert "MG301" in result.stderr  # the findings are still reported


def test_module_mode_runs_a_package_module(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write(package, name="train.py")
    result = run_modeguard("run", "-m", "pkg.train", "5", cwd=tmp_path)
    assert result.stdout == "argv ['5'] __main__\n"
    assert result.returncode == 5
    assert f"train.py:{PREDICT_LINE}:1: MG301" in result.stderr


def test_machine_formats_and_output_file(tmp_path):
    program = write(tmp_path)
    out = tmp_path / "report.sarif"
    run_modeguard("run", "--output-format", "sarif", "--output", out, program, "0")
    sarif = json.loads(out.read_text())
    (result,) = sarif["runs"][0]["results"]
    assert result["ruleId"] == "MG301" and result["level"] == "error"
    assert result["locations"][0]["physicalLocation"]["region"]["startLine"] == PREDICT_LINE
    rule = sarif["runs"][0]["tool"]["driver"]["rules"][result["ruleIndex"]]
    assert rule["name"] == "inference-in-training-mode"
    assert rule["relationships"][0]["target"]["id"] == "MG101"  # the linter's rule for the same bug
    github = run_modeguard("run", "--output-format", "github", program, "0")
    assert github.stderr.startswith(f"::error title=modeguard (MG301),file={program},line={PREDICT_LINE},")
    report = json.loads(run_modeguard("run", "--output-format", "json", program, "0").stderr)
    assert [f["code"] for f in report] == ["MG301"]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    for args in (["run", tmp_path / "missing.py"], ["run", "-m", "no_such_module_here"], ["run"]):
        result = run_modeguard(*args)
        assert result.returncode == 2
        assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_results_and_random_streams_are_the_same_as_without_modeguard(tmp_path):
    program = write(tmp_path, textwrap.dedent(
        """
        import torch
        from torch import nn
        from torch.nn import functional as F

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.3), nn.Linear(8, 2))

            def forward(self, x):
                return F.dropout(self.body(x), 0.1)  # random in eval too: modeguard only watches it

        torch.manual_seed(0)
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            model(torch.randn(8, 4)).pow(2).mean().backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            print(model(torch.randn(3, 4)).tolist(), torch.rand(2).tolist())
        print(model.body[1].running_mean.tolist(), [m.training for m in model.modules()])
        """
    ), name="same.py")
    import subprocess
    import sys

    plain = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, env=program_env(), timeout=120)
    checked = run_modeguard("run", program)
    assert plain.returncode == checked.returncode == 0
    assert checked.stdout == plain.stdout
    assert "MG305" in checked.stderr
