"""Replays reuse what a replayed module's children returned in the eval pass only when the
child is called exactly as then: a parent whose flag changes nothing costs no recomputation of
its children, and a parent whose training branch changes a child's weights or mode still gets
the child recomputed (the measured divergence, not the eval output)."""

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
    """Reads its own flag (as a log line would) without changing its output."""

    def __init__(self):
        super().__init__()
        self.child = Logged()

    def forward(self, x):
        CALLS.append(("parent", self.training))
        return self.child(x) * 2


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
    """The calls logged during the root's own-flag replay: after ("root", True) and before the
    next root call (the training pass comes after the replays)."""
    start = CALLS.index(("root", True))
    end = next((i for i in range(start + 1, len(CALLS)) if CALLS[i][0] == "root"), len(CALLS))
    return CALLS[start + 1:end]


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
