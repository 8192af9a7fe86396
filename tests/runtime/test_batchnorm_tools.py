"""recalibrate_bn, freeze_bn / unfreeze_bn, bn_health: exactness, restoration, errors."""

import copy
import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import modeguard


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 8), nn.BatchNorm1d(8, momentum=None))


def reference_stats(model, batches):
    """Exact statistics over all samples: BatchNorm layers on batch statistics, dropout off."""
    model = copy.deepcopy(model).eval()
    inputs = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm1d):
            m.train()
            m.register_forward_pre_hook(lambda mod, a, name=name: inputs.setdefault(name, []).append(a[0]))
    with torch.no_grad():
        for b in batches:
            model(b)
    return {name: (torch.cat(xs).mean(0), torch.cat(xs).var(0)) for name, xs in inputs.items()}


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(2, 40), min_size=1, max_size=6), shift=st.floats(-3, 3), seed=st.integers(0, 1000))
def test_exact_population_statistics(sizes, shift, seed):
    torch.manual_seed(seed)
    batches = [torch.randn(n, 4) * (1 + i) + shift * i for i, n in enumerate(sizes)]
    model = mlp()
    expected = reference_stats(model, batches)
    modeguard.recalibrate_bn(model, batches, progress=False)
    for name in ("1", "4"):
        bn = dict(model.named_modules())[name]
        mean, var = expected[name]
        std = var.sqrt()
        assert float(((bn.running_mean - mean).abs() / std).max()) <= 1e-5
        assert float((bn.running_var / var - 1).abs().max()) <= 1e-5


def test_modes_momentum_and_tracked_batches():
    model = mlp().train()
    model[2].eval()  # mixed on purpose
    before = [m.training for m in model.modules()]
    tracked = int(model[1].num_batches_tracked)
    report = modeguard.recalibrate_bn(model, [torch.randn(16, 4) for _ in range(3)], progress=False)
    assert [m.training for m in model.modules()] == before
    assert model[1].momentum == 0.1 and model[4].momentum is None
    assert int(model[1].num_batches_tracked) == tracked + 3 and report.batches == 3
    assert {l.module for l in report.layers} == {"1", "4"}
    assert all(l.mean_shift >= 0 and l.samples_per_channel == 48 for l in report.layers)


def test_batch_forms_and_input_fn():
    x = torch.randn(40, 4)
    model_a, model_b, model_c = mlp(), mlp(), mlp()
    modeguard.recalibrate_bn(model_a, DataLoader(TensorDataset(x, torch.zeros(40)), batch_size=16), progress=False)
    modeguard.recalibrate_bn(model_b, [{"input": x[:16], "labels": 0}, {"input": x[16:32]}, {"input": x[32:]}],
                             input_fn=lambda b: b["input"], progress=False)
    modeguard.recalibrate_bn(model_c, [x[:16], x[16:32], x[32:]], max_batches=2, progress=False)
    assert torch.allclose(model_a[1].running_mean, model_b[1].running_mean, atol=1e-6)
    assert not torch.allclose(model_a[1].running_mean, model_c[1].running_mean)


def test_errors_leave_the_model_untouched():
    with pytest.raises(modeguard.InputError, match="no BatchNorm"):
        modeguard.recalibrate_bn(nn.Linear(3, 3), [torch.randn(2, 3)])
    model = mlp()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(modeguard.InputError, match="no batch"):
        modeguard.recalibrate_bn(model, [], progress=False)

    def batches():
        yield torch.randn(8, 4)
        yield torch.randn(8, 5)  # wrong width: the model raises mid-way

    with pytest.raises(RuntimeError):
        modeguard.recalibrate_bn(model, batches(), progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model[1].momentum == 0.1 and model.training and all(not h for m in model.modules() for h in (m._forward_hooks,))


def test_quiet_without_a_terminal(capsys):
    modeguard.recalibrate_bn(mlp(), [torch.randn(8, 4)] * 3)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("layer,shape", [
    (nn.BatchNorm1d(3), (6, 3)), (nn.BatchNorm2d(3), (4, 3, 5, 5)), (nn.BatchNorm3d(3), (2, 3, 2, 3, 3)),
    (nn.SyncBatchNorm(3), (4, 3, 5, 5)),
])
def test_freeze_keeps_running_statistics_after_train(layer, shape):
    model = nn.Sequential(nn.Identity(), layer)
    if not isinstance(layer, nn.SyncBatchNorm):  # SyncBatchNorm trains only in a process group
        with torch.no_grad():
            model.train()(torch.randn(*shape) + 2)
    model.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        before = model(x)
    assert modeguard.freeze_bn(model) == ["1"]
    stats = copy.deepcopy(model.state_dict())
    model.train()  # the fine-tuning trap
    assert model.training and not model[1].training
    with torch.no_grad():
        after = model(x)
        model(torch.randn(*shape) * 5)
    assert torch.equal(before, after)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    fresh = nn.Sequential(nn.Identity(), copy.deepcopy(layer))
    fresh.load_state_dict(model.state_dict())  # strict: the keys did not change
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the frozen model still pickles
    assert modeguard.unfreeze_bn(model) == ["1"]
    model.train()
    assert model[1].training


def test_freeze_errors():
    with pytest.raises(modeguard.InputError):
        modeguard.freeze_bn(nn.Linear(2, 2))
    with pytest.raises(modeguard.InputError, match="running statistics"):
        modeguard.freeze_bn(nn.BatchNorm1d(2, track_running_stats=False))


def test_bn_health():
    model = mlp().eval()
    fresh = modeguard.bn_health(model)
    assert [h.never_calibrated for h in fresh.layers] == [True, True]
    modeguard.recalibrate_bn(model, [torch.randn(64, 4) for _ in range(4)], progress=False)
    same = modeguard.bn_health(model, [torch.randn(64, 4)])
    shifted = modeguard.bn_health(model, torch.randn(64, 4) * 5 + 10)
    assert not any(h.never_calibrated or h.shifted for h in same.layers)
    assert shifted.layers[0].shifted and shifted.layers[0].mean_shift > 1
    assert "mean shift" in str(shifted.to_dict()).replace("_", " ")


def test_recalibrate_bn_skips_a_trailing_batch_of_one_with_a_note():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    with pytest.warns(UserWarning, match="skipped 1 batch"):
        report = modeguard.recalibrate_bn(model, [torch.randn(8, 4), torch.randn(8, 4), torch.randn(1, 4)], progress=False)
    assert report.batches == 2 and int(model[1].num_batches_tracked) == 2


def test_recalibrate_bn_with_dict_batches_the_model_does_not_take_hints_input_fn():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    batches = [{"image": torch.randn(8, 4), "label": torch.zeros(8)}]
    before = model[1].running_mean.clone()
    with pytest.raises(modeguard.InputError, match="input_fn=lambda b: b\\['image'\\]"):
        modeguard.recalibrate_bn(model, batches, progress=False)
    assert torch.equal(model[1].running_mean, before)
    modeguard.recalibrate_bn(model, batches, input_fn=lambda b: b["image"], progress=False)
    assert not torch.equal(model[1].running_mean, before)
