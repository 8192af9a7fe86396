"""Under torchrun every rank runs the sanitizer and writes its own report."""

import json
import os
import subprocess
import sys
import textwrap

from tests.run.conftest import SRC

PROGRAM = textwrap.dedent(
    """
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    torch.manual_seed(dist.get_rank())
    model = DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.2), nn.Linear(8, 2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, 4))
    dist.destroy_process_group()
    """
)


def test_each_rank_reports(tmp_path):
    program = tmp_path / "ddp.py"
    program.write_text(PROGRAM)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC), "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29731",
               "-m", "modeguard", "run", "--output-format", "json", "--output", str(tmp_path / "mode.json"), str(program)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        findings = json.loads((tmp_path / f"mode.rank{rank}.json").read_text())
        assert [(f["code"], f["location"]["row"]) for f in findings] == [("MG301", 18)]  # the prediction loop
