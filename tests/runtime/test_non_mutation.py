"""audit() leaves the model and the process bit for bit as they were (Hypothesis-composed models)."""

import random

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from modeguard import ModelCallError, audit
from modeguard.examples import TrainingBranch

DIM = 8


class Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(DIM, DIM, num_layers=2, dropout=0.2, batch_first=True)

    def forward(self, x):
        return self.rnn(x.unsqueeze(1))[0].squeeze(1)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(DIM, 2, dropout=0.2, batch_first=True)

    def forward(self, x):
        s = x.unsqueeze(1)
        return self.attn(s, s, s)[0].squeeze(1)


class FunctionalDrop(nn.Module):
    def forward(self, x):
        return F.dropout(x, 0.3)  # noqa: MG105 (planted on purpose)


class Bn2d(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(x.view(x.shape[0], 2, 2, 2)).flatten(1)


LAYERS = {
    "linear": lambda: nn.Linear(DIM, DIM),
    "bn1d": lambda: nn.BatchNorm1d(DIM),
    "bn1d_cumulative": lambda: nn.BatchNorm1d(DIM, momentum=None),
    "bn1d_no_stats": lambda: nn.BatchNorm1d(DIM, track_running_stats=False),
    "bn2d": Bn2d,
    "dropout": lambda: nn.Dropout(0.3),
    "alpha_dropout": lambda: nn.AlphaDropout(0.2),
    "branch": TrainingBranch,
    "lstm": Lstm,
    "attention": Attention,
    "functional_dropout": FunctionalDrop,
}


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()},
        "modes": [m.training for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "global_hooks": (
            len(torch.nn.modules.module._global_forward_hooks),
            len(torch.nn.modules.module._global_forward_pre_hooks),
        ),
        "torch_rng": torch.get_rng_state(),
        "random": random.getstate(),
        "numpy": np.random.get_state()[1].copy(),
    }


def assert_same(before, after):
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key
        assert value.dtype == after["state"][key].dtype
    for key in ("modes", "grad", "hooks", "global_hooks", "random"):
        assert before[key] == after[key], key
    assert torch.equal(before["torch_rng"], after["torch_rng"])
    assert np.array_equal(before["numpy"], after["numpy"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layers=st.lists(st.sampled_from(sorted(LAYERS)), min_size=1, max_size=6),
    modes=st.lists(st.booleans(), min_size=7, max_size=7),
    frozen=st.lists(st.booleans(), min_size=6, max_size=6),
    batch=st.integers(1, 5),
    warm=st.booleans(),
)
def test_audit_restores_everything(layers, modes, frozen, batch, warm):
    torch.manual_seed(0)
    model = nn.Sequential(*(LAYERS[name]() for name in layers))
    if warm:
        with torch.no_grad():
            model.train()(torch.randn(16, DIM))
    for module, mode in zip(model.modules(), modes):
        module.training = mode  # mixed modes, set one flag at a time
    for param, flag in zip(model.parameters(), frozen):
        param.requires_grad_(flag)
    x = torch.randn(batch, DIM)
    before = snapshot(model)
    try:
        audit(model, x)
    except ModelCallError:
        pass  # a model that fails in both modes is reported as such; it must still be restored
    assert_same(before, snapshot(model))


def test_audit_restores_user_hooks_and_leaves_them_working():
    model = nn.Sequential(nn.Linear(DIM, DIM), nn.BatchNorm1d(DIM), nn.Dropout(0.5))
    calls = []
    model[0].register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.randn(4, DIM)
    before = snapshot(model)
    audit(model, x)
    assert_same(before, snapshot(model))
    n = len(calls)
    model(torch.randn(2, DIM))
    assert len(calls) == n + 1


def test_audit_restores_when_the_model_raises():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(DIM)

        def forward(self, x):
            self.bn(x)
            raise RuntimeError("boom")

    model = Broken().train()
    x = torch.randn(4, DIM)
    before = snapshot(model)
    try:
        audit(model, x)
    except Exception as exc:
        assert type(exc).__name__ == "ModelCallError"
    assert_same(before, snapshot(model))


def test_first_audit_in_a_fresh_process_keeps_python_random_state():
    """The lazy imports of the first call (rich draws from `random`) must not move it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import random
        import torch
        import modeguard
        random.seed(7)
        before = random.getstate()
        modeguard.audit(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).eval(), torch.randn(3, 4))
        print(random.getstate() == before)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "True", result.stderr


class WritesThroughData(nn.Module):
    """Writes its weight and a buffer through `.data` in forward: no version counter sees it."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(DIM, DIM)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.linear.weight.data.mul_(1.5)
        self.calls.data += 1
        return self.linear(x)


def test_audit_restores_parameters_written_through_data_in_forward():
    model = WritesThroughData()
    weight = model.linear.weight
    pointer = weight.data_ptr()
    x = torch.randn(3, DIM)
    before = snapshot(model)
    audit(model, x)
    assert_same(before, snapshot(model))
    assert model.linear.weight is weight and weight.data_ptr() == pointer  # the same storage, restored in place


class OwnTrain(nn.Module):
    """Overrides train(): keeps its BatchNorm frozen in eval whatever the mode asked."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(DIM)
        self.linear = nn.Linear(DIM, DIM)
        self.calls = []

    def train(self, mode=True):
        self.calls.append(mode)
        super().train(mode)
        self.bn.eval()
        return self

    def forward(self, x):
        return self.linear(self.bn(x))


@given(modes=st.lists(st.booleans(), min_size=5, max_size=5), training=st.booleans())
def test_set_mode_sets_the_flags_model_train_sets(modes, training):
    from modeguard.runtime.state import set_mode

    built = [nn.Sequential(nn.Linear(DIM, DIM), nn.Sequential(nn.Dropout(), nn.BatchNorm1d(DIM))) for _ in range(2)]
    for model in built:
        for module, mode in zip(model.modules(), modes):
            module.training = mode
    built[0].train(training)
    set_mode(built[1], training)
    assert [m.training for m in built[0].modules()] == [m.training for m in built[1].modules()]
    assert all("training" in vars(m) for m in built[1].modules())


def test_set_mode_calls_a_train_override():
    from modeguard.runtime.state import set_mode

    model = nn.Sequential(OwnTrain())
    set_mode(model, True)
    assert model[0].calls == [True]
    assert model[0].linear.training and not model[0].bn.training  # what the override decided


def test_module_walks_match_torchs_order_names_and_dedup():
    from modeguard.runtime.state import all_modules, named_modules, parameters_and_buffers

    shared = nn.Linear(DIM, DIM)
    inner = nn.Sequential(shared, nn.ReLU(), nn.Sequential(nn.Dropout(), shared))
    model = nn.Sequential(inner, nn.ModuleList([shared, inner, nn.BatchNorm1d(DIM)]), nn.ModuleDict({"a": nn.Sequential()}))
    model.add_module("absent", None)
    model[0].tied = shared  # the same module under another name
    assert all_modules(model) == list(model.modules())
    params, buffers = parameters_and_buffers(model)
    assert params == list(model.parameters()) and buffers == list(model.buffers())
    assert named_modules(model) == list(model.named_modules())
