"""modeguard.testing assertions and the pytest plugin's fixture."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from modeguard import examples as ex
from modeguard.testing import (
    assert_batch_independent,
    assert_deterministic_in_eval,
    assert_mode_consistent,
    assert_no_mode_findings,
)


def calibrated():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.2), nn.Linear(16, 3))
    with torch.no_grad():
        for _ in range(30):
            model(torch.randn(64, 8))
    return model.eval()


def test_passing_model_passes_every_assertion():
    model, x = calibrated(), torch.randn(8, 8)
    assert_deterministic_in_eval(model, x)
    assert_batch_independent(model, x)
    assert_mode_consistent(model)
    assert_no_mode_findings(model, x)


def test_failures_carry_the_explanation():
    with pytest.raises(AssertionError, match=r"MG201 │ error\s+│ 1 +│(.|\n)*fix: "):
        assert_deterministic_in_eval(nn.Sequential(nn.Linear(16, 16), ex.FunctionalDropoutHead()).eval(), torch.randn(4, 16))
    with pytest.raises(AssertionError, match=r"MG202 │ error\s+│ norm +│"):
        assert_batch_independent(ex.BatchStatisticsNet().eval(), torch.randn(6, 8))
    model = calibrated()
    model[2].train()
    with pytest.raises(AssertionError, match=r"MG203 │ warning\s+│ 2 +│"):
        assert_mode_consistent(model)
    assert_mode_consistent(model, allow=["2"])
    with pytest.raises(AssertionError, match="MG207"):
        assert_no_mode_findings(ex.BatchStatisticsNet().eval(), torch.randn(6, 8), ignore=["MG202"])
    assert_no_mode_findings(ex.BatchStatisticsNet().eval(), torch.randn(6, 8), ignore=["MG202", "MG207"])


def test_pytest_plugin_fixture(tmp_path):
    (tmp_path / "test_model.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        def test_audit(modeguard_audit):
            report = modeguard_audit(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).eval(), torch.randn(3, 4))
            assert report.errors == [] and report.deterministic
    '''))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_assertion_message_reads_as_the_cli_prints(tmp_path):
    """The findings in an assertion message are the CLI's findings table, character for character."""
    (tmp_path / "models.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        def uncalibrated():
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 8), nn.BatchNorm1d(8)).eval(), torch.randn(6, 8)
    '''))
    cli = subprocess.run([sys.executable, "-m", "modeguard.cli", "audit", f"{tmp_path}/models.py:uncalibrated"],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"})
    assert cli.returncode == 0, cli.stderr  # warnings only
    sys.path.insert(0, str(tmp_path))
    try:
        import models
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(AssertionError) as raised:
        assert_no_mode_findings(*models.uncalibrated())
    table = str(raised.value).split("\n", 1)[1]
    assert "2 modules: 1, 3" in table and table.strip() in cli.stdout
