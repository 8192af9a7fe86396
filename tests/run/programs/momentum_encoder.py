"""MoCo-style contrastive learning: the query encoder is trained, the key encoder is an EMA copy
kept in training mode on purpose (its BatchNorm uses batch statistics, as in MoCo) and updated
from the query encoder. A kNN monitor then embeds a few samples.
Bug: the monitor embeds with the query encoder still in training mode."""

import copy
import sys

import torch
from torch import nn
from torch.nn import functional as F

BUG = "--bug" in sys.argv
torch.manual_seed(0)
encoder_q = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 8))
encoder_k = copy.deepcopy(encoder_q).requires_grad_(False)
optimizer = torch.optim.SGD(encoder_q.parameters(), lr=0.05)
queue = F.normalize(torch.randn(64, 8), dim=1)


def momentum_update(m=0.9):
    for p_q, p_k in zip(encoder_q.parameters(), encoder_k.parameters()):
        p_k.data = p_k.data * m + p_q.data * (1 - m)


for step in range(15):
    x = torch.randn(16, 16)
    view_q, view_k = x + 0.1 * torch.randn_like(x), x + 0.1 * torch.randn_like(x)
    q = F.normalize(encoder_q(view_q), dim=1)
    with torch.no_grad():
        momentum_update()
        k = F.normalize(encoder_k(view_k), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.2
    loss = F.cross_entropy(logits, torch.zeros(16, dtype=torch.long))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    queue = torch.cat([k, queue])[:64]

if not BUG:
    encoder_q.eval()
bank = torch.randn(40, 16)
with torch.no_grad():
    features = torch.cat([encoder_q(chunk) for chunk in bank.split(10)])  # BUG: MG301
print("monitor feature norm", float(features.norm(dim=1).mean()))
