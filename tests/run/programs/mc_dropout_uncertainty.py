"""Monte-Carlo dropout uncertainty for a regression net with BatchNorm and Dropout: dropout on,
BatchNorm in eval (modeguard.predict_mc, and the same by hand).
Bug: the hand-written MC loop switches the whole model to training mode, BatchNorm included."""

import sys

import torch
from torch import nn

import modeguard

BUG = "--bug" in sys.argv
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(20):
    x = torch.randn(32, 4)
    loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

x_test = torch.randn(8, 4)
mean, std = modeguard.predict_mc(model, x_test, samples=10)
print("predict_mc std", float(std.mean()))

if BUG:
    model.train()
else:
    model.eval()
    for layer in model.modules():
        if isinstance(layer, nn.Dropout):
            layer.train()
with torch.no_grad():
    draws = torch.stack([model(x_test) for _ in range(10)])  # BUG: MG301
print("by hand std", float(draws.std(0).mean()))
