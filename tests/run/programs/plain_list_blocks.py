"""A residual MLP whose blocks are built in a loop. Bug: the blocks are kept in a plain Python
list, so model.eval() never reaches their Dropout/BatchNorm (nor does the optimizer see them)."""

import sys

import torch
from torch import nn

BUG = "--bug" in sys.argv
torch.manual_seed(0)


class ResidualMLP(nn.Module):
    def __init__(self, dim=16, depth=3):
        super().__init__()
        blocks = [nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(0.3)) for _ in range(depth)]
        self.blocks = blocks if BUG else nn.ModuleList(blocks)
        self.head = nn.Linear(dim, 1)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


model = ResidualMLP()
params = list(model.parameters()) + [p for b in model.blocks for p in b.parameters()] if BUG else model.parameters()
optimizer = torch.optim.SGD(params, lr=0.01)
for step in range(10):
    x = torch.randn(16, 16)
    model.train()
    loss = (model(x) - x.mean(1, keepdim=True)).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval()
with torch.no_grad():
    x = torch.randn(4, 16)
    print("prediction", model(x).squeeze(1).tolist())  # BUG: MG307
