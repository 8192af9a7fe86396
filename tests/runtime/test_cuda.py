"""The audit on the model's CUDA device (skipped where no GPU is present, as in CI)."""

import pytest
import torch
from torch import nn

from modeguard import audit
from modeguard import examples as ex

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_audit_finds_planted_bugs_and_restores_state():
    model, x = ex.demo()
    model = model.cuda()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cuda_rng = torch.cuda.get_rng_state_all()
    report = audit(model, x)  # a CPU input is moved to the model's device
    assert report.device.startswith("cuda")
    assert {"MG201", "MG204", "MG212"} <= report.codes()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(a, b) for a, b in zip(cuda_rng, torch.cuda.get_rng_state_all()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_resnet(dtype):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None).eval().cuda().to(dtype)
    report = audit(model, torch.randn(4, 3, 64, 64))
    assert report.errors == []
    assert report.deterministic and report.batch_independent


def test_cuda_calibrated_model_is_clean():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.2), nn.Linear(16, 3)).cuda()
    with torch.no_grad():
        for _ in range(30):
            model(torch.randn(64, 8, device="cuda"))
    report = audit(model.eval(), torch.randn(8, 8))
    assert report.findings == []
