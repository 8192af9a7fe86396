"""measure_inference(): what eval + no_grad save, without changing the model."""

import torch
from torch import nn

import modeguard


def test_four_configurations_and_what_autograd_keeps():
    model = nn.Sequential(nn.Linear(64, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 10))
    with torch.no_grad():
        model(torch.randn(32, 64))
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = modeguard.measure_inference(model, torch.randn(128, 64), repeats=3)
    rows = {(r.mode, r.autograd): r for r in report.rows}
    assert list(rows) == [("train", "grad"), ("eval", "grad"), ("eval", "no_grad"), ("eval", "inference_mode")]
    assert rows["eval", "grad"].saved_for_backward_bytes > 128 * 256 * 4  # activations kept
    assert rows["eval", "no_grad"].saved_for_backward_bytes == 0
    assert rows["eval", "inference_mode"].saved_for_backward_bytes == 0
    assert all(r.latency_s > 0 for r in report.rows)
    # the train+grad pass updated BatchNorm statistics; they are restored bit for bit
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not model.training
    assert "inference_mode" in str(report.to_dict())
