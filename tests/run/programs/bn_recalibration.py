"""A weight-averaged (EMA) copy of the model, as in SWA/EMA training: only the parameters are
averaged, so its BatchNorm statistics must be recomputed before it is evaluated
(swa_utils.update_bn; modeguard.recalibrate_bn and fvcore's update_bn_stats are used on the base
model too). Bug: the EMA copy is evaluated without recalibration: its BatchNorm running
statistics were never updated."""

import copy
import sys

import torch
from fvcore.nn import update_bn_stats
from torch import nn
from torch.optim.swa_utils import update_bn

import modeguard

BUG = "--bug" in sys.argv
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 2))
ema = copy.deepcopy(model).requires_grad_(False)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loader = [(torch.randn(16, 6) + 1, torch.randint(0, 2, (16,))) for _ in range(6)]

for epoch in range(3):
    model.train()
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 0.1)

if not BUG:
    update_bn(loader, ema)
    modeguard.recalibrate_bn(model, loader, progress=False)
    model.train()
    update_bn_stats(model, iter([x for x, _ in loader]), num_iters=len(loader))
ema.eval()
model.eval()
with torch.no_grad():
    for x, y in loader[:2]:
        ema_acc = (ema(x).argmax(1) == y).float().mean()  # BUG: MG312
        acc = (model(x).argmax(1) == y).float().mean()
print("ema", float(ema_acc), "model", float(acc))
