"""What `modeguard audit` hands a person: strict JSON, grouped findings, checkpoints, one-line
errors. Real subprocesses of the CLI, real files."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from torch import nn

MODELS = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn

    print("importing models.py")

    class Chatty(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(8, 8), nn.BatchNorm1d(8))])

        def forward(self, x):
            print("forward called")
            return self.body(x)

    def uncalibrated():
        torch.manual_seed(0)
        print("building")
        return Chatty().eval(), torch.randn(6, 8)

    class ShapeByMode(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            y = self.linear(x)
            return y[:, :2] if self.training else y

    def shape_by_mode():
        return ShapeByMode().eval(), torch.randn(3, 4)

    def small():
        return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)).eval(), torch.randn(4, 4)

    def exits():
        print("this factory needs a GPU")
        sys.exit(3)

    class OwnStateDict(nn.Linear):
        def state_dict(self, *args, **kwargs):
            raise RuntimeError("state_dict is not supported here\\nsecond line")

    class ExitsInForward(nn.Linear):
        def forward(self, x):
            sys.exit(4)

    def exits_in_forward():
        return ExitsInForward(4, 2).eval(), torch.randn(2, 4)

    def own_state_dict():
        return OwnStateDict(4, 2).eval(), torch.randn(2, 4)
    """
)


def run(*args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "modeguard.cli", *args], capture_output=True, text=True, env=env)


def strict_loads(text: str):
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def one_line_exit_2(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def models(tmp_path) -> str:
    (tmp_path / "models.py").write_text(MODELS)
    return f"{tmp_path}/models.py"


def test_prints_of_the_user_code_stay_off_the_json(tmp_path):
    result = run("audit", f"{models(tmp_path)}:uncalibrated", "--format", "json")
    data = strict_loads(result.stdout)
    assert "forward called" in result.stderr and "building" in result.stderr
    assert sum(f["code"] == "MG205" for f in data["findings"]) == 4  # JSON keeps every module


def test_repeated_findings_print_as_one_group(tmp_path):
    result = run("audit", f"{models(tmp_path)}:uncalibrated")
    assert result.returncode == 0, result.stderr  # warnings only
    assert result.stdout.count("MG205") == 1
    assert "4 modules: body.1, body.3, body.5 and 1 more" in result.stdout


def test_ignore_takes_comma_separated_and_repeated_codes(tmp_path):
    spec = f"{models(tmp_path)}:uncalibrated"
    codes = {f["code"] for f in strict_loads(run("audit", spec, "--format", "json").stdout)["findings"]}
    assert {"MG205", "MG211"} <= codes
    for ignore in (["--ignore", "MG205,MG211"], ["--ignore", "MG205", "--ignore", "MG211"]):
        data = strict_loads(run("audit", spec, "--format", "json", *ignore).stdout)
        assert not {f["code"] for f in data["findings"]} & {"MG205", "MG211"}, ignore


def test_outputs_that_cannot_be_compared_are_null_with_a_reason_in_json(tmp_path):
    result = run("audit", f"{models(tmp_path)}:shape_by_mode", "--format", "json")
    row = strict_loads(result.stdout)["train_vs_eval"][0]
    assert row["rel"] is None and (row.get("rel_reason") or row.get("not_comparable"))
    assert "Infinity" not in result.stdout and "NaN" not in result.stdout


def test_a_factory_that_calls_sys_exit_is_one_line_exit_2(tmp_path):
    line = one_line_exit_2(run("audit", f"{models(tmp_path)}:exits"))
    assert "called sys.exit(3)" in line and "this factory needs a GPU" in line


def test_an_import_that_raises_is_one_line_exit_2(tmp_path):
    (tmp_path / "bad.py").write_text("import torch\nraise ImportError('no module named apex\\nsecond line')\n")
    line = one_line_exit_2(run("audit", f"{tmp_path}/bad.py:model"))
    assert "importing" in line and "ImportError: no module named apex" in line


def test_any_other_exception_in_user_code_is_one_line_exit_2(tmp_path):
    ckpt = save_small_checkpoint(tmp_path, lambda sd: sd)
    line = one_line_exit_2(run("audit", f"{models(tmp_path)}:own_state_dict", "--weights", ckpt))
    assert line == "error: RuntimeError: state_dict is not supported here (--debug shows the traceback)"
    debug = run("audit", f"{models(tmp_path)}:own_state_dict", "--weights", ckpt, "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "importing models.py" in debug.stderr


def test_sys_exit_in_the_forward_is_one_line_exit_2(tmp_path):
    assert one_line_exit_2(run("audit", f"{models(tmp_path)}:exits_in_forward")) == (
        "error: SystemExit: 4 (--debug shows the traceback)"
    )


def save_small_checkpoint(tmp_path, transform):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    with torch.no_grad():
        model(torch.randn(64, 4))  # calibrated: a loaded checkpoint leaves no MG205
    path = tmp_path / "ckpt.pt"
    torch.save(transform(model.state_dict()), path)
    return str(path)


def test_a_lightning_checkpoint_loads(tmp_path):
    ckpt = save_small_checkpoint(tmp_path, lambda sd: {"epoch": 1, "state_dict": {f"model.{k}": v for k, v in sd.items()}})
    data = strict_loads(run("audit", f"{models(tmp_path)}:small", "--weights", ckpt, "--format", "json").stdout)
    assert not {f["code"] for f in data["findings"]} & {"MG205", "MG213"}


def test_a_checkpoint_matching_no_key_is_exit_2_naming_the_keys(tmp_path):
    ckpt = save_small_checkpoint(tmp_path, lambda sd: {f"encoder.{k}": v for k, v in sd.items()})
    line = one_line_exit_2(run("audit", f"{models(tmp_path)}:small", "--weights", ckpt))
    assert "matches none of the model's 9 keys" in line and "encoder.0.weight" in line and "0.weight" in line


def test_a_shape_mismatch_is_exit_2_naming_the_tensor(tmp_path):
    ckpt = save_small_checkpoint(tmp_path, lambda sd: {**sd, "2.weight": torch.zeros(3, 8)})
    line = one_line_exit_2(run("audit", f"{models(tmp_path)}:small", "--weights", ckpt))
    assert "size mismatch for 2.weight: checkpoint [3, 8], model [2, 8]" in line


def test_a_partial_match_lists_the_keys(tmp_path):
    def partial(sd):
        kept = {k: v for k, v in sd.items() if not k.startswith("2.")}
        return {**kept, "head.weight": torch.zeros(2, 8)}

    ckpt = save_small_checkpoint(tmp_path, partial)
    data = strict_loads(run("audit", f"{models(tmp_path)}:small", "--weights", ckpt, "--format", "json").stdout)
    mg213 = {f["message"].split(":")[0]: f["data"]["keys"] for f in data["findings"] if f["code"] == "MG213"}
    assert mg213 == {"the checkpoint lacks 2 key(s)": ["2.weight", "2.bias"],
                     "the checkpoint has 1 key(s) the model does not": ["head.weight"]}


def test_a_torchvision_spec_does_not_import_dynamo_and_dynamo_still_works():
    program = textwrap.dedent(
        """
        import sys, torch
        from modeguard.runtime.loading import load_factory
        load_factory("torchvision:resnet18")
        assert "torch._dynamo" not in sys.modules
        roi_align = sys.modules["torchvision.ops.roi_align"]
        assert roi_align.is_compile_supported("cpu") is True  # the real function, imported on use
        import torch._dynamo.utils
        assert type(sys.modules["torch._dynamo.utils"]).__name__ == "module"
        assert torch.compile(lambda t: t * 2, backend="eager")(torch.ones(2)).tolist() == [2.0, 2.0]
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_version_needs_no_command():
    result = subprocess.run([sys.executable, "-m", "modeguard.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("modeguard "), result.stderr
