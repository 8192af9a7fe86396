"""guard(): the run-time checks, each with a correct-use counterpart that stays silent."""

import logging
import warnings

import pytest
import torch
from torch import nn

import modeguard


def model_with_bn():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.2), nn.Linear(8, 2))


def test_training_mode_under_no_grad_warns_once_per_call_site():
    model = model_with_bn().train()
    with modeguard.guard(model):
        with pytest.warns(modeguard.ModeWarning, match="forgot model.eval"):
            with torch.no_grad():
                for _ in range(3):
                    model(torch.randn(4, 4))  # one call site: one warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.eval()
            with torch.no_grad():
                model(torch.randn(4, 4))  # correct inference: silent


def test_backward_through_eval_outputs():
    model = model_with_bn().eval()
    with modeguard.guard(model, on="raise"):
        loss = model(torch.randn(4, 4)).sum()
        with pytest.raises(modeguard.ModeError, match="training step in eval mode"):
            loss.backward()
        model.train()
        model(torch.randn(4, 4)).sum().backward()  # a real training step: fine


def test_mixed_mode_and_allow_eval(caplog):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = model_with_bn()
            self.head = nn.Linear(2, 2)

        def train(self, mode=True):
            super().train(mode)
            self.backbone.eval()  # frozen backbone, on purpose
            return self

        def forward(self, x):
            return self.head(self.backbone(x))

    model = Net().train()
    with caplog.at_level(logging.WARNING, logger="modeguard"):
        with modeguard.guard(model, on="log"):
            model(torch.randn(4, 4))
    assert "backbone" in caplog.text and "allow_eval" in caplog.text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with modeguard.guard(model, allow_eval=["backbone"]):
            model(torch.randn(4, 4))


def test_single_value_batchnorm_raises_a_mode_error_naming_the_layer():
    model = model_with_bn().train()
    with modeguard.guard(model):
        with pytest.raises(modeguard.ModeError, match=r"1 \(BatchNorm1d\).*\[1, 8\].*model.eval\(\)"):
            model(torch.randn(1, 4))
        model.eval()
        model(torch.randn(1, 4))  # eval mode: one sample is fine


def test_remove_takes_every_hook_off():
    model = model_with_bn().train()
    handle = modeguard.guard(model)
    model(torch.randn(4, 4))
    handle.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(ValueError, match="Expected more than 1 value"):
        model(torch.randn(1, 4))


def test_bad_arguments():
    with pytest.raises(modeguard.InputError):
        modeguard.guard(model_with_bn(), on="explode")
    with pytest.raises(modeguard.InputError):
        modeguard.guard(model_with_bn(), allow_eval=["nope"])
