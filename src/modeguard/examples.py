"""Bundled example models for `modeguard audit` with no SPEC, the docs and the tests.

`demo()` is the classic "my model predicts differently every time / only works in eval mode"
question: a small CNN with BatchNorm and Dropout, handed over in training mode, with three
planted bugs that `.eval()` alone does not fix. Each other factory plants one bug.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassicNet(nn.Module):
    """Conv-BatchNorm-ReLU features and a Dropout classifier: correct on its own."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class FunctionalDropoutHead(nn.Module):
    """Bug: F.dropout defaults to training=True, so it keeps dropping after model.eval()."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        return F.dropout(F.relu(self.fc(x)), 0.3)  # noqa: MG105 (planted on purpose)


class PlainListBlocks(nn.Module):
    """Bug: blocks in a Python list are not submodules; model.eval() never reaches them."""

    def __init__(self, dim: int = 16, depth: int = 2):
        super().__init__()
        self.blocks = [nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.2)) for _ in range(depth)]  # noqa: MG107 (planted on purpose)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


class BuggyNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = ClassicNet(16)
        self.refine = PlainListBlocks(16)
        self.head = FunctionalDropoutHead(16)
        self.out = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.out(self.head(self.refine(self.net(x))))


def digits_like_batch(batch: int = 8, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, 8, 8, generator=generator) * 16.0


def demo() -> tuple[nn.Module, torch.Tensor]:
    """BuggyNet after a few training-mode batches (calibrated BatchNorm), still in training mode."""
    torch.manual_seed(0)
    model = BuggyNet().train()  # calibrate BatchNorm: batch statistics on purpose
    with torch.no_grad():
        for seed in range(20):
            model(digits_like_batch(32, seed))
    return model, digits_like_batch(8, seed=100)


class BatchStatisticsNet(nn.Module):
    """Bug: BatchNorm without running statistics normalizes each batch by itself in eval too."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.norm = nn.BatchNorm1d(16, track_running_stats=False)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


class DropoutBuiltInForward(nn.Module):
    """Bug: a Dropout constructed inside forward is in training mode forever."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return nn.Dropout(0.2)(self.fc(x))  # noqa: MG108 (planted on purpose)


class SdpaDropoutAttention(nn.Module):
    """Bug: scaled_dot_product_attention's dropout_p applies in eval mode too."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)  # noqa: MG106 (planted on purpose)


class TrainingBranch(nn.Module):
    """A custom layer that branches on self.training (adds noise in training)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        x = self.fc(x)
        if self.training:
            x = x + 0.1 * torch.randn_like(x)
        return x
