"""Tabular regression with BatchNorm; 33 samples in batches of 8.
Bug: the last batch holds a single sample and BatchNorm cannot normalize it in training mode
(the program crashes with PyTorch's ValueError; modeguard explains it). Fix: drop_last=True."""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BUG = "--bug" in sys.argv
torch.manual_seed(0)
data = TensorDataset(torch.randn(33, 5), torch.randn(33, 1))
loader = DataLoader(data, batch_size=8, shuffle=True, drop_last=not BUG)
model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
model.train()
for epoch in range(2):
    for x, y in loader:
        loss = nn.functional.mse_loss(model(x), y)  # BUG: MG311
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
print("trained")
