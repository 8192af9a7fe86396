"""Monte-Carlo dropout: dropout on, BatchNorm in eval (buffers untouched), restored on exit."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modeguard


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.3)
        self.attn = nn.MultiheadAttention(8, 2, dropout=0.2, batch_first=True)
        self.rnn = nn.GRU(8, 8, num_layers=2, dropout=0.2, batch_first=True)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = self.drop(torch.relu(self.bn(self.fc(x)))).unsqueeze(1)
        h = self.attn(h, h, h)[0]
        return self.out(self.rnn(h)[0].squeeze(1))


def calibrated():
    model = Net()
    with torch.no_grad():
        model.train()(torch.randn(64, 6))
    return model.eval()


def test_context_switches_only_dropout_and_restores():
    model = calibrated()
    model.fc.train()  # mixed on purpose: must come back mixed
    before = [m.training for m in model.modules()]
    with modeguard.mc_dropout(model):
        assert model.drop.training and model.attn.training and model.rnn.training
        assert not model.bn.training and not model.training
    assert [m.training for m in model.modules()] == before


def test_batchnorm_buffers_unchanged_and_std_only_where_dropout_exists():
    model = calibrated()
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    x = torch.randn(5, 6)
    mean, std = modeguard.predict_mc(model, x, samples=20)
    assert mean.shape == std.shape == (5, 3) and bool((std > 0).all())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())
    plain = nn.Sequential(nn.Linear(6, 3)).eval()
    with pytest.warns(UserWarning, match="no dropout"):
        _, std = modeguard.predict_mc(plain, x, samples=5)
    assert bool((std == 0).all())


def test_reproducible_under_a_seed_and_loop_matches_replicated_shape():
    model = calibrated()
    x = torch.randn(4, 6)
    torch.manual_seed(7)
    a = modeguard.predict_mc(model, x, samples=10)
    torch.manual_seed(7)
    b = modeguard.predict_mc(model, x, samples=10)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    looped = modeguard.predict_mc(model, x, samples=10, batch_replicate=False)
    assert looped[0].shape == a[0].shape
    assert torch.allclose(looped[0], a[0], atol=0.5)  # same distribution, different draws


def test_warns_about_functional_dropout_it_cannot_reach():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return F.dropout(self.fc(x), 0.5, self.training)

    with pytest.warns(UserWarning, match="branch on self.training"):
        with modeguard.mc_dropout(Functional()):
            pass


def test_output_fn_for_structured_outputs():
    class Dict(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))

        def forward(self, x):
            return {"logits": self.net(x)}

    with pytest.raises(modeguard.InputError, match="output_fn"):
        modeguard.predict_mc(Dict(), torch.randn(2, 4), samples=3)
    mean, std = modeguard.predict_mc(Dict(), torch.randn(2, 4), samples=3, output_fn=lambda o: o["logits"])
    assert mean.shape == (2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with modeguard.mc_dropout(Dict()):
            pass


class SequenceFirst(nn.Module):
    """An LSTM tagger on (time, batch, features) inputs."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 8, num_layers=2, dropout=0.3)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.drop(self.rnn(x)[0]))


def test_predict_mc_on_a_sequence_first_model_is_not_tiled_along_time():
    torch.manual_seed(0)
    model = SequenceFirst()
    x = torch.randn(5, 4, 3)  # 5 steps, 4 sequences
    looped_mean, _ = modeguard.predict_mc(model, x, samples=200, batch_replicate=False)
    for options in ({}, {"batch_dim": 1}):  # default: falls back to the loop; batch_dim=1: tiled per sequence
        mean, std = modeguard.predict_mc(model, x, samples=200, **options)
        assert mean.shape == std.shape == (5, 4, 2)
        assert torch.allclose(mean, looped_mean, atol=0.08)
    with torch.no_grad():  # tiling along time would have made 200x longer sequences
        assert not torch.allclose(model.eval()(x.repeat(2, 1, 1))[5:], model(x), atol=1e-3)
