"""Image classification, a CNN with BatchNorm and Dropout: train, validate each epoch.
Bug: validation switches to eval and the next epoch trains in eval mode (no model.train())."""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BUG = "--bug" in sys.argv
torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
    nn.Flatten(), nn.Dropout(0.3), nn.Linear(8 * 16, 4),
)
train = DataLoader(TensorDataset(torch.randn(64, 3, 8, 8), torch.randint(0, 4, (64,))), batch_size=16, shuffle=True)
val = DataLoader(TensorDataset(torch.randn(32, 3, 8, 8), torch.randint(0, 4, (32,))), batch_size=16)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.CrossEntropyLoss()

model.train()
for epoch in range(3):
    if not BUG:
        model.train()
    for x, y in train:
        loss = loss_fn(model(x), y)  # BUG: MG302
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in val:
            correct += (model(x).argmax(1) == y).sum().item()
    print(f"epoch {epoch}: val accuracy {correct / 32:.2f}")
