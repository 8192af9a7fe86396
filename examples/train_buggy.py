"""A small training script with the train/eval-mode bugs users hit most.

Each bug carries `# noqa` so that linting this repository stays clean; `make demo` shows them
with `modeguard check --ignore-noqa examples/`."""

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        return F.dropout(torch.relu(self.fc(x)), 0.1)  # noqa: MG105 - planted: drops in eval too


class Net(nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.blocks = [Block(dim) for _ in range(3)]  # noqa: MG107 - planted: eval() never reaches these
        self.head = nn.Linear(dim, 2)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def validate(model, loader):
    model.eval()
    with torch.no_grad():
        return sum(float(F.cross_entropy(model(x), y)) for x, y in loader)


def main(loader, val_loader):
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for epoch in range(5):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        validate(model, val_loader)  # noqa: MG102 - planted: leaves the model in eval for the next epochs


def predict(path, x):
    model = Net()
    model.load_state_dict(torch.load(path, weights_only=True))
    model.eval  # noqa: MG103 - planted: no parentheses
    with torch.no_grad():
        return model(x).argmax(-1)  # noqa: MG101 - planted: no eval() before inference
