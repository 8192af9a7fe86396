"""guard(): the shared run-time checks on one model, each with a correct-use counterpart that
stays silent."""

import logging
from contextlib import contextmanager
import warnings

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

import modeguard


def model_with_bn():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.2), nn.Linear(8, 2))


@contextmanager
def silent():
    """Every ModeWarning becomes an error inside the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", modeguard.ModeWarning)
        yield


def test_training_mode_under_no_grad_warns_once_per_call_site():
    model = model_with_bn().train()
    with modeguard.guard(model):
        with pytest.warns(modeguard.ModeWarning, match=r"MG301.*forgot model.eval.*1 \(BatchNorm1d\)") as record:
            with torch.no_grad():
                for _ in range(3):
                    model(torch.randn(4, 4))  # one call site: one warning
        assert len(record) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.eval()
            with torch.no_grad():
                model(torch.randn(4, 4))  # correct inference: silent


def test_training_step_after_eval_is_reported_once_the_optimizer_changed_the_weights():
    model = model_with_bn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with modeguard.guard(model, on="raise"):
        model(torch.randn(4, 4)).sum().backward()  # a training step
        optimizer.step()
        model.eval()  # validation ...
        with torch.no_grad():
            model(torch.randn(4, 4))
        model(torch.randn(4, 4)).sum().backward()  # ... and training goes on in eval mode
        optimizer.step()
        with pytest.raises(modeguard.ModeError, match="MG302 .*training step in eval mode"):
            model(torch.randn(4, 4))


def test_saliency_backward_in_eval_is_silent():
    model = model_with_bn().eval()
    with modeguard.guard(model, on="raise"):
        for _ in range(3):
            x = torch.randn(4, 4, requires_grad=True)
            model(x)[:, 0].sum().backward()  # gradients reach the weights too, but nothing steps
            assert x.grad is not None


@pytest.mark.parametrize("recalibrate", ["swa_utils", "modeguard"])
def test_batchnorm_recalibration_is_silent(recalibrate):
    model = model_with_bn()
    data = [torch.randn(8, 4) for _ in range(3)]
    with silent(), modeguard.guard(model):
        if recalibrate == "swa_utils":
            torch.optim.swa_utils.update_bn(data, model)
        else:
            modeguard.recalibrate_bn(model, data, progress=False)
        model.eval()
        with torch.no_grad():
            model(data[0])


def test_a_submodule_switched_to_eval_mid_training_is_caught_on_the_next_call():
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8)), nn.Linear(8, 2)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with modeguard.guard(model, on="raise"):
        model(torch.randn(4, 4)).sum().backward()
        optimizer.step()
        model[1].eval()  # the bug: the root never flips
        with pytest.raises(modeguard.ModeError, match=r"MG303 Sequential\.1: .*eval mode while the model trains.*allow_eval"):
            model(torch.randn(4, 4))


def test_frozen_parts_are_recognised_and_allow_eval_declares_the_others():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = model_with_bn()
            self.head = nn.Linear(2, 2)

        def train(self, mode=True):
            super().train(mode)
            self.backbone.eval()  # kept in eval on purpose
            return self

        def forward(self, x):
            return self.head(self.backbone(x))

    model = Net().train()
    with pytest.warns(modeguard.ModeWarning, match="backbone.*requires_grad_\\(False\\).*allow_eval"):
        with modeguard.guard(model):
            model(torch.randn(4, 4))
    with silent(), modeguard.guard(model, allow_eval=["backbone"]):
        model(torch.randn(4, 4))
    model.backbone.requires_grad_(False)  # linear probing: frozen, recognised without allow_eval
    with silent(), modeguard.guard(model):
        model(torch.randn(4, 4)).sum().backward()


def test_mixed_modes_are_logged(caplog):
    model = model_with_bn().eval()
    model[1].train()  # BatchNorm left in training under an eval model
    with caplog.at_level(logging.WARNING, logger="modeguard"):
        with modeguard.guard(model, on="log"), torch.no_grad():
            model(torch.randn(4, 4))
    assert "MG303" in caplog.text and "stays in training mode" in caplog.text


def test_monte_carlo_dropout_is_silent():
    model = model_with_bn()
    with silent(), modeguard.guard(model):
        model.train()
        model(torch.randn(4, 4)).sum().backward()
        modeguard.predict_mc(model, torch.randn(3, 4), samples=4)
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.train()  # dropout switched on by hand
        with torch.no_grad():
            model(torch.randn(4, 4))
            model(torch.randn(4, 4))


def test_single_value_batchnorm_raises_a_mode_error_naming_the_layer():
    model = model_with_bn().train()
    with modeguard.guard(model):
        with pytest.raises(modeguard.ModeError, match=r"1: BatchNorm1d .*\[1, 8\].*model.eval\(\)"):
            model(torch.randn(1, 4))
        model.eval()
        model(torch.randn(1, 4))  # eval mode: one sample is fine


def test_remove_takes_every_hook_off():
    model = model_with_bn().train()
    before = (len(torch_module._global_forward_hooks), len(torch_module._global_forward_pre_hooks))
    handle = modeguard.guard(model)
    model(torch.randn(4, 4))
    with pytest.warns(modeguard.ModeWarning, match="MG301"):  # decided when the guard comes off
        handle.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert (len(torch_module._global_forward_hooks), len(torch_module._global_forward_pre_hooks)) == before
    with pytest.raises(ValueError, match="Expected more than 1 value"):
        model(torch.randn(1, 4))


def test_bad_arguments():
    with pytest.raises(modeguard.InputError):
        modeguard.guard(model_with_bn(), on="explode")
    with pytest.raises(modeguard.InputError):
        modeguard.guard(model_with_bn(), allow_eval=["nope"])


def test_a_guarded_submodule_is_checked_when_its_parent_is_called():
    backbone = model_with_bn()
    model = nn.Sequential(backbone, nn.Linear(2, 2)).train()
    with pytest.warns(modeguard.ModeWarning, match="MG301 Sequential"):
        with modeguard.guard(backbone), torch.no_grad():
            for _ in range(2):
                model(torch.randn(4, 4))
