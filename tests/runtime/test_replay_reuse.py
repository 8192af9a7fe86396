"""Replays reuse what a replayed module's children returned in the eval pass only when the
child is called exactly as then: a parent whose flag changes nothing costs no recomputation of
its children, and a parent whose training branch changes a child's weights or mode still gets
the child recomputed (the measured divergence, not the eval output)."""

import random

import numpy
import pytest
import torch
from torch import nn

from modeguard import audit

DIM = 8
CALLS: list[tuple[str, bool]] = []


class Logged(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(DIM, DIM)

    def forward(self, x):
        CALLS.append(("child", self.training))
        return self.linear(x).relu()


class ReadsFlagToNoEffect(nn.Module):
    """Reads its own flag (as a log line would) without changing its output. The dropout after
    its child makes the training pass differ, so its own flag's effect is measured by a replay
    (with only that flag on, the dropout stays in eval)."""

    def __init__(self):
        super().__init__()
        self.child = Logged()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        CALLS.append(("parent", self.training))
        return self.dropout(self.child(x) * 2)


class ReadsFlagInAModeFreeModel(ReadsFlagToNoEffect):
    def __init__(self):
        super().__init__()
        self.dropout = nn.Identity()


class WritesChildWeightInTraining(nn.Module):
    """In training, scales its child's weight in place through `.data` (no version-counter
    trace) before calling it: the child's eval-pass output must not be reused."""

    def __init__(self):
        super().__init__()
        self.child = nn.Linear(DIM, DIM)

    def forward(self, x):
        if self.training:
            self.child.weight.data.mul_(0.5)
        return self.child(x)


class SwitchesChildToTraining(nn.Module):
    """In training, puts its child (with dropout) in training mode before calling it."""

    def __init__(self):
        super().__init__()
        self.child = nn.Sequential(nn.Linear(DIM, DIM), nn.Dropout(0.5))

    def forward(self, x):
        if self.training:
            self.child.train()
        return self.child(x)


def _x():
    return torch.randn(4, DIM, generator=torch.Generator().manual_seed(0))


def test_replay_of_a_parent_whose_flag_changes_nothing_reuses_its_child():
    model = ReadsFlagToNoEffect().eval()
    CALLS.clear()
    report = audit(model, _x())
    replay_calls = [
        CALLS[i + 1] for i, call in enumerate(CALLS[:-1]) if call == ("parent", True)
    ]
    assert ("parent", True) in CALLS  # the parent was replayed (and in the training pass)
    assert ("child", False) not in replay_calls  # ...but its child was not run again in eval
    assert not [f for f in report.findings if f.code == "MG210"]


def test_a_module_whose_flag_changes_nothing_in_the_training_pass_is_not_replayed():
    """In a model with no mode-dependent layer the training pass gives every module the eval
    pass's input and output: that proves each flag read changes nothing, with no replay."""
    model = ReadsFlagInAModeFreeModel().eval()
    CALLS.clear()
    report = audit(model, _x())
    assert CALLS.count(("parent", True)) == 1  # the training pass only
    assert "MG210" not in report.codes() and not report.divergence


def test_a_child_whose_weights_the_parent_changes_is_recomputed():
    model = WritesChildWeightInTraining().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = audit(model, _x())
    mg210 = [f for f in report.findings if f.code == "MG210"]
    assert [f.module for f in mg210] == ["<root>"]
    root = next(d for d in report.divergence if d.module == "<root>")
    assert root.rel is not None and root.rel > 0.1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_child_the_parent_switches_to_training_is_recomputed():
    model = SwitchesChildToTraining().eval()
    report = audit(model, _x())
    root = next(d for d in report.divergence if d.module == "<root>")
    assert root.rel is not None and root.rel > 0.1
    assert not any(m.training for m in model.modules())


class DrawsFromPythonRandom(nn.Module):
    """Draws from Python's generator even in eval (the audit seeds only torch's)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(DIM, DIM)

    def forward(self, x):
        CALLS.append(("child", self.training))
        return self.linear(x) * (1 + random.random())


class ReadsFlagAroundARandomChild(ReadsFlagToNoEffect):
    def __init__(self):
        super().__init__()
        self.child = DrawsFromPythonRandom()


@pytest.mark.parametrize("generator", ["random", "numpy"])
def test_a_child_that_draws_from_python_or_numpy_random_is_recomputed(monkeypatch, generator):
    if generator == "numpy":
        monkeypatch.setattr(random, "random", lambda: float(numpy.random.rand()))
    model = ReadsFlagAroundARandomChild().eval()
    CALLS.clear()
    audit(model, _x())
    replay_calls = [CALLS[i + 1] for i, call in enumerate(CALLS[:-1]) if call == ("parent", True)]
    assert ("child", False) in replay_calls


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(DIM, DIM)

    def forward(self, x):
        CALLS.append(("head", None))  # reads no flag: never replayed itself
        return self.linear(x)


class IgnoresTargetsInEval(nn.Module):
    """A detector's ROI heads: takes the targets, uses them only in training."""

    def __init__(self):
        super().__init__()
        self.head = Head()

    def forward(self, x, targets=None):
        out = self.head(x)
        if self.training:
            return {"loss": ((out - targets) ** 2).mean()}
        return out


class AddsTargets(nn.Module):
    def forward(self, x, targets=None):
        return x if targets is None else x + targets


class PassesTargetsOn(nn.Module):
    """Hands the targets to a child that uses them in eval mode too."""

    def __init__(self):
        super().__init__()
        self.head = Head()
        self.adds = AddsTargets()

    def forward(self, x, targets=None):
        return self.adds(self.head(x), targets)


class NeedsTargetsInTraining(nn.Module):
    """A detector's root: training needs targets, which it hands to its child."""

    def __init__(self, child: nn.Module):
        super().__init__()
        self.child = child

    def forward(self, x, targets=None):
        if self.training and targets is None:
            raise ValueError("targets should not be None in training mode")
        CALLS.append(("root", self.training))
        return self.child(x, targets)


def _root_replay_calls() -> list[tuple[str, bool]]:
    """The calls logged during the root's own-flag replay: after its ("root", True), the last
    one (the training pass comes before the replays), to the end."""
    assert CALLS.count(("root", True)) == 2  # the training pass and the replay
    start = len(CALLS) - 1 - CALLS[::-1].index(("root", True))
    return CALLS[start + 1:]


def test_root_replay_with_targets_reuses_what_a_targets_taking_child_calls_as_before():
    model = NeedsTargetsInTraining(IgnoresTargetsInEval()).eval()
    CALLS.clear()
    report = audit(model, _x(), targets=_x())
    # The child runs again (its input now holds the targets), its head does not.
    assert _root_replay_calls() == []
    assert CALLS.count(("head", None)) == 3  # eval pass, sample alone, training pass
    assert "MG209" not in report.codes()


def test_a_grandchild_handed_the_targets_is_recomputed_in_the_root_replay():
    model = NeedsTargetsInTraining(PassesTargetsOn()).eval()
    x, targets = _x(), _x()
    CALLS.clear()
    report = audit(model, x, targets=targets)
    assert _root_replay_calls() == []  # the head is reused...
    root = next(d for d in report.divergence if d.module == "<root>")
    with torch.no_grad():  # ...the grandchild that adds the targets is not
        plain = model(x)
        expected = (plain + targets - plain).abs().max().item()
    assert root.max_abs is not None and abs(root.max_abs - expected) < 1e-5


class CacheSlot:
    def __init__(self):
        self.keys = None


class KeyCache:
    """A KV cache as Hugging Face keeps one: a plain object holding plain objects, which the
    layers extend (each call replaces a slot's tensor)."""

    def __init__(self, size: int):
        self.slots = [CacheSlot() for _ in range(size)]


class CachedBlock(nn.Module):
    """Extends its slot of the cache; block 1 also reads what block 0 left there."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index
        self.linear = nn.Linear(DIM, DIM)

    def forward(self, x, cache: KeyCache):
        CALLS.append(("block", self.index))
        keys = self.linear(x)
        slot = cache.slots[self.index]
        slot.keys = keys if slot.keys is None else torch.cat([slot.keys, keys])
        return x + cache.slots[0].keys.relu()


class CachedDecoder(nn.Module):
    """Reads its flag to no effect (a replay), creates the cache and returns what is in it."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([CachedBlock(0), CachedBlock(1)])
        self.dropout = nn.Dropout(0.5)  # the training pass differs: the decoder is replayed

    def forward(self, x):
        scale = 1.0 if self.training else 1.0
        cache = KeyCache(len(self.blocks))
        for block in self.blocks:
            x = block(x, cache)
        return self.dropout(x * scale), [slot.keys for slot in cache.slots]


class AppendsToItsArgument(nn.Module):
    def forward(self, x, log: list):
        CALLS.append(("appends", None))
        log.append(x.sum(dim=1))
        return x * 2


class KeepsALog(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = AppendsToItsArgument()
        self.dropout = nn.Dropout(0.5)  # the training pass differs: the parent is replayed

    def forward(self, x):
        scale = 1.0 if self.training else 1.0
        log: list = []
        return self.dropout(self.child(x, log) * scale), torch.stack(log)


def test_a_call_that_extends_a_cache_is_reused_with_its_effect_on_the_cache():
    model = CachedDecoder().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    CALLS.clear()
    report = audit(model, _x())
    # eval pass, sample alone and training pass run both blocks; the decoder's replay none:
    # block 1 found the cache as block 0 had left it in the eval pass.
    assert CALLS.count(("block", 0)) == CALLS.count(("block", 1)) == 3
    assert "MG210" not in report.codes() and [d.module for d in report.divergence] == ["dropout"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any("forward" in vars(m) for m in model.modules())


def test_a_call_that_changes_a_list_it_was_given_is_not_reused():
    """Reusing it would leave the replay's list empty (a false MG210 before this was checked)."""
    model = KeepsALog().eval()
    CALLS.clear()
    report = audit(model, _x())
    assert CALLS.count(("appends", None)) == 4  # eval, sample alone, training, the replay
    assert "MG210" not in report.codes()


class Settings:
    """A plain object that lives outside any input (a config)."""

    def __init__(self):
        self.scale = 2.0


SETTINGS = Settings()


class AttachesSettings(nn.Module):
    def forward(self, x, cache: KeyCache):
        CALLS.append(("attaches", None))
        cache.settings = SETTINGS  # a copy of it in the replay's cache would not be SETTINGS
        return x * SETTINGS.scale


class UsesAttachedSettings(nn.Module):
    def __init__(self):
        super().__init__()
        self.child = AttachesSettings()
        self.dropout = nn.Dropout(0.5)  # the training pass differs: the parent is replayed

    def forward(self, x):
        scale = 1.0 if self.training else 1.0
        cache = KeyCache(1)
        out = self.child(x, cache)
        return self.dropout(out * scale * (1.0 if cache.settings is SETTINGS else -1.0))


def test_a_call_that_attaches_an_object_from_elsewhere_to_a_cache_is_not_reused():
    CALLS.clear()
    report = audit(UsesAttachedSettings().eval(), _x())
    assert CALLS.count(("attaches", None)) == 4  # eval, sample alone, training, the replay
    assert "MG210" not in report.codes()
