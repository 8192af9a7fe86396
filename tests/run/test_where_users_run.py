"""The sanitizer where users run code: pytest --modeguard, IPython cells, DataLoader workers;
and it keeps no tensor alive."""

import gc
import os
from contextlib import redirect_stdout
from io import StringIO
import subprocess
import sys
import textwrap
import weakref

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

from modeguard.runtime.sanitizer import Session
from tests.run.conftest import SRC, run_modeguard


def model_with_bn():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.2), nn.Linear(8, 2))


def test_pytest_option_fails_the_test_that_shows_a_mode_bug(tmp_path):
    (tmp_path / "test_model.py").write_text(textwrap.dedent(
        """
        import torch
        from torch import nn

        def make():
            return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.2), nn.Linear(8, 2))

        def test_predicts_in_training_mode():
            model = make()
            with torch.no_grad():
                for _ in range(2):
                    assert model(torch.randn(4, 4)).shape == (4, 2)

        def test_predicts_in_eval_mode():
            model = make()
            model(torch.randn(4, 4)).sum().backward()
            model.eval()
            with torch.no_grad():
                for _ in range(2):
                    assert model(torch.randn(4, 4)).shape == (4, 2)
        """
    ))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_model.py"]
    plain = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180)
    assert "2 passed" in plain.stdout, plain.stdout
    checked = subprocess.run([*command, "--modeguard"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180)
    assert "1 failed, 1 passed" in checked.stdout, checked.stdout
    assert "FAILED test_model.py::test_predicts_in_training_mode" in checked.stdout
    assert "test_model.py:12: MG301 error" in checked.stdout


def test_ipython_reports_each_cell():
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell("%load_ext modeguard")
        shell.run_cell("%modeguard on")
        cells = [
            "import torch\nfrom torch import nn\n"
            "model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))\n"
            "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
            "for _ in range(3):\n    model(torch.randn(8, 4)).sum().backward(); opt.step()\n",
            "with torch.no_grad():\n    preds = [model(torch.randn(4, 4)) for _ in range(3)]\n",
            "model.eval()\nwith torch.no_grad():\n    preds = [model(torch.randn(4, 4)) for _ in range(3)]\n",
        ]
        reports = []
        for cell in cells:
            with redirect_stdout(StringIO()) as out:
                assert shell.run_cell(cell).success
            reports.append(out.getvalue())
        assert reports[0] == "" and reports[2] == ""
        assert "MG301" in reports[1] and "(line 2)" in reports[1]
    finally:
        shell.run_cell("%modeguard off")
        InteractiveShell.clear_instance()
    assert not torch_module._global_forward_pre_hooks


def test_dataloader_workers_are_untouched(tmp_path):
    program = tmp_path / "workers.py"
    program.write_text(textwrap.dedent(
        """
        import torch
        from torch import nn
        from torch.nn.modules import module
        from torch.utils.data import DataLoader, Dataset

        class Augmented(Dataset):
            def __init__(self):
                self.noise = nn.Sequential(nn.Dropout(0.5))  # a module run in the worker, in training mode

            def __len__(self):
                return 8

            def __getitem__(self, i):
                with torch.no_grad():
                    x = self.noise(torch.ones(4))
                return x, len(module._global_forward_pre_hooks)

        if __name__ == "__main__":
            hooks = [int(h) for _, h in DataLoader(Augmented(), batch_size=2, num_workers=2) for h in h]
            print("hooks in workers:", set(hooks), "in main:", len(module._global_forward_pre_hooks))
        """
    ))
    result = run_modeguard("run", program)
    assert result.returncode == 0, result.stderr
    assert "hooks in workers: {0} in main: 1" in result.stdout
    assert "no mode problem" in result.stderr


def test_the_sanitizer_keeps_no_tensor_alive():
    session = Session().start()
    refs = []
    try:
        model = model_with_bn()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            x = torch.randn(4, 4)
            out = model(x)
            out.sum().backward()
            optimizer.step()
            refs += [weakref.ref(x), weakref.ref(out)]
        with torch.no_grad():
            kept = [model(torch.randn(4, 4)) for _ in range(2)]  # outputs never reach a backward
        model.eval()
        saliency_input = torch.randn(4, 4, requires_grad=True)
        model(saliency_input).sum().backward()
        refs += [weakref.ref(t) for t in (*kept, saliency_input)]
        refs += [weakref.ref(p) for p in model.parameters()] + [weakref.ref(b) for b in model.buffers()]
        refs.append(weakref.ref(model))
        del model, optimizer, x, out, kept, saliency_input
        gc.collect()
        assert [r for r in refs if r() is not None] == []
    finally:
        findings = session.stop()
    assert [f.code for f in findings] == ["MG301"]
    assert not torch_module._global_forward_pre_hooks and not torch_module._global_forward_hooks
