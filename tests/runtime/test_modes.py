"""evaluating() / training(): switch for a block, restore every submodule's own flag."""

import pytest
import torch
from torch import nn

import modeguard


def mixed_model():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)).train()
    model[1].eval()  # a frozen BatchNorm: intentionally mixed
    return model


def flags(model):
    return [m.training for m in model.modules()]


def test_evaluating_context_restores_mixed_modes_and_turns_autograd_off():
    model = mixed_model()
    before = flags(model)
    with modeguard.evaluating(model) as m:
        assert m is model and not any(flags(model))
        assert torch.is_inference_mode_enabled()
        out = model(torch.randn(3, 4))
    assert flags(model) == before
    assert not out.requires_grad and not torch.is_inference_mode_enabled()


@pytest.mark.parametrize(
    "kwargs,inference,grad",
    [({}, True, False), ({"inference_mode": False}, False, False), ({"grad": True}, False, True)],
)
def test_autograd_choices(kwargs, inference, grad):
    model = mixed_model()
    with modeguard.evaluating(model, **kwargs):
        assert torch.is_inference_mode_enabled() == inference
        assert torch.is_grad_enabled() == grad


def test_restores_when_the_body_raises():
    model = mixed_model()
    before = flags(model)
    with pytest.raises(RuntimeError, match="boom"):
        with modeguard.evaluating(model):
            raise RuntimeError("boom")
    assert flags(model) == before and torch.is_grad_enabled()


def test_decorator_and_reentrancy():
    model = mixed_model()
    before = flags(model)
    ctx = modeguard.evaluating(model, inference_mode=False)

    @ctx
    def predict(x, depth=0):
        assert not model.training and not torch.is_grad_enabled()
        return predict(x, depth + 1) if depth < 2 else model(x)

    predict(torch.randn(2, 4))
    assert flags(model) == before


def test_training_context():
    model = mixed_model().eval()
    before = flags(model)
    with modeguard.training(model):
        assert all(flags(model)) and torch.is_grad_enabled()
    assert flags(model) == before


def test_not_a_module_is_a_typed_error():
    with pytest.raises(modeguard.InputError):
        modeguard.evaluating("model")
