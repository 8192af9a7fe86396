"""`modeguard audit` as users run it: a real subprocess, real files."""

import json
import subprocess
import sys
import textwrap

import torch

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def good():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.1), nn.Linear(8, 2))
        with torch.no_grad():
            for _ in range(20):
                model(torch.randn(32, 4))
        return model.eval(), torch.randn(6, 4)

    def model_only():
        return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))

    def broken():
        raise RuntimeError("cannot build")
    """
)


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "modeguard.cli", *args], capture_output=True, text=True, cwd=cwd
    )


def test_bundled_example_exits_1_with_findings():
    result = run("audit")
    assert result.returncode == 1
    assert "MG201" in result.stdout and "MG204" in result.stdout and "MG212" in result.stdout


def test_json_output(tmp_path):
    (tmp_path / "models.py").write_text(MODEL_FILE)
    result = run("audit", f"{tmp_path}/models.py:good", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["findings"] == [] and data["training"] is False
    assert {d["kind"] for d in data["divergence"]} == {"batchnorm", "dropout"}


def test_input_shape_and_input_file(tmp_path):
    (tmp_path / "models.py").write_text(MODEL_FILE)
    spec = f"{tmp_path}/models.py:model_only"
    result = run("audit", spec)
    assert result.returncode == 2 and "--input-shape" in result.stderr
    assert run("audit", spec, "--input-shape", "5,4", "--format", "json").returncode in (0, 1)
    torch.save({"input": torch.randn(3, 4)}["input"], tmp_path / "x.pt")
    result = run("audit", spec, "--input", str(tmp_path / "x.pt"), "--format", "json")
    assert json.loads(result.stdout)["model"] == spec


def test_usage_errors_are_one_line_exit_2(tmp_path):
    (tmp_path / "models.py").write_text(MODEL_FILE)
    cases = [
        ("audit", "torchvision:not_a_model"),
        ("audit", "timm:not_a_model"),
        ("audit", "no_colon_here"),
        ("audit", f"{tmp_path}/missing.py:f"),
        ("audit", f"{tmp_path}/models.py:broken"),
        ("audit", f"{tmp_path}/models.py:nothing"),
        ("audit", f"{tmp_path}/models.py:model_only", "--input-shape", "2,7"),
        ("audit", f"{tmp_path}/models.py:model_only", "--input-shape", "a,b"),
    ]
    for args in cases:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_debug_shows_traceback(tmp_path):
    result = run("audit", "torchvision:not_a_model", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_weights_missing_batchnorm_buffers(tmp_path):
    (tmp_path / "models.py").write_text(MODEL_FILE)
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    state = {k: v for k, v in model.state_dict().items() if "running" not in k}
    torch.save(state, tmp_path / "ckpt.pt")
    result = run(
        "audit", f"{tmp_path}/models.py:model_only", "--weights", str(tmp_path / "ckpt.pt"),
        "--input-shape", "4,4", "--format", "json",
    )
    assert result.returncode == 1
    findings = json.loads(result.stdout)["findings"]
    mg213 = [f for f in findings if f["code"] == "MG213"]
    assert mg213[0]["severity"] == "error" and "1.running_mean" in mg213[0]["message"]
    assert any(f["code"] == "MG205" for f in findings)


def test_weights_refuse_pickled_code(tmp_path):
    import fractions

    torch.save({"x": fractions.Fraction(1, 3)}, tmp_path / "evil.pt")  # arbitrary pickled object
    result = run("audit", "torchvision:resnet18", "--weights", str(tmp_path / "evil.pt"))
    assert result.returncode == 2 and "cannot load" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_torchvision_spec(tmp_path):
    result = run("audit", "torchvision:resnet18", "--input-shape", "2,3,32,32", "--format", "json")
    data = json.loads(result.stdout)
    assert data["training"] is True  # torchvision builds models in training mode
    assert any(f["code"] == "MG212" for f in data["findings"])


def test_weights_that_fit_give_no_checkpoint_finding(tmp_path):
    (tmp_path / "models.py").write_text(MODEL_FILE)
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    with torch.no_grad():
        model(torch.randn(64, 4))  # calibrated statistics travel with the state_dict
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    result = run(
        "audit", f"{tmp_path}/models.py:model_only", "--weights", str(tmp_path / "ckpt.pt"),
        "--input-shape", "4,4", "--format", "json",
    )
    codes = {f["code"] for f in json.loads(result.stdout)["findings"]}
    assert "MG213" not in codes and "MG205" not in codes


CUSTOM_LAYER_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class NoisyLayer(nn.Module):
        def forward(self, x):
            if self.training:
                return x + torch.randn_like(x)
            return x

    def factory():
        return nn.Sequential(nn.Linear(8, 8), NoisyLayer(), nn.Linear(8, 2)).eval(), torch.randn(4, 8)

    def batches():
        return [torch.randn(4, 8) for _ in range(3)]

    def loader():
        data = torch.utils.data.TensorDataset(torch.randn(12, 8), torch.zeros(12))
        return torch.utils.data.DataLoader(data, batch_size=4)
    """
)


def test_custom_layer_in_a_user_file_is_found(tmp_path):
    (tmp_path / "user_model.py").write_text(CUSTOM_LAYER_FILE)
    result = run("audit", "user_model.py:factory", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (mg210,) = [f for f in report["findings"] if f["code"] == "MG210"]
    assert mg210["module"] == "1" and "user_model.py:7" in mg210["message"]
    assert [(d["module"], d["kind"]) for d in report["divergence"]] == [("1", "custom")]


def test_data_option_takes_batches_or_a_dataloader(tmp_path):
    (tmp_path / "user_model.py").write_text(CUSTOM_LAYER_FILE)
    for factory, batches in (("batches", 3), ("loader", 2)):
        result = run(
            "audit", "user_model.py:factory", "--data", f"user_model.py:{factory}",
            "--max-batches", "2", "--format", "json", cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["input"].startswith(f"real data: {min(batches, 2)} batch(es)")
        assert report["random_input"] is False
    result = run("audit", "user_model.py:factory", "--data", "user_model.py:missing", cwd=tmp_path)
    assert result.returncode == 2 and "no attribute 'missing'" in result.stderr


def test_random_input_is_said_in_the_report(tmp_path):
    (tmp_path / "m.py").write_text(MODEL_FILE)
    result = run("audit", "m.py:model_only", "--input-shape", "4,4", "--format", "json", cwd=tmp_path)
    report = json.loads(result.stdout)
    assert report["random_input"] is True and "random input" in report["input"]
    assert not {"MG206", "MG211"} & {f["code"] for f in report["findings"]}


def test_batch_dim_negative_is_exit_2_and_out_of_range_is_not_tested(tmp_path):
    (tmp_path / "m.py").write_text(MODEL_FILE)
    result = run("audit", "m.py:good", "--batch-dim", "-1", cwd=tmp_path)
    assert result.returncode == 2 and "batch_dim must be 0 or more" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("audit", "m.py:good", "--batch-dim", "5", "--format", "json", cwd=tmp_path)
    report = json.loads(result.stdout)
    assert report["batch_independent_in_eval"] is None
    assert "dimension 5" in report["not_tested"]["batch_independent"]
