"""Linear probing: a pretrained (here random) CNN backbone frozen, a linear head trained on its
features. Bug: the backbone is frozen with requires_grad_(False) but left in training mode, so
its BatchNorm normalizes with batch statistics and keeps updating its running statistics."""

import sys

import torch
from torch import nn

BUG = "--bug" in sys.argv
torch.manual_seed(0)
backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
backbone.requires_grad_(False)
if not BUG:
    backbone.eval()
head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 5))
optimizer = torch.optim.SGD(head.parameters(), lr=0.1)

for step in range(10):
    x, y = torch.randn(16, 3, 12, 12), torch.randint(0, 5, (16,))
    with torch.no_grad():
        features = backbone(x)  # BUG: MG301
    head.train()
    loss = nn.functional.cross_entropy(head(features), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
head.eval()
with torch.no_grad():
    print("probe accuracy", (head(backbone(torch.randn(8, 3, 12, 12))).argmax(1) == 0).float().mean().item())  # BUG: MG301
