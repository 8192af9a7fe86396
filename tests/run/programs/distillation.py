"""Knowledge distillation: a (here random) teacher with Dropout and BatchNorm guides a small student.
Bug: the teacher is never put in eval mode, so its soft targets are noisy and its BatchNorm
statistics drift."""

import sys

import torch
from torch import nn
from torch.nn import functional as F

BUG = "--bug" in sys.argv
torch.manual_seed(0)
teacher = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 5))
student = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 5))
if not BUG:
    teacher.eval()
optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
T = 2.0
for step in range(15):
    x = torch.randn(32, 20)
    with torch.no_grad():
        soft = F.softmax(teacher(x) / T, dim=-1)  # BUG: MG301
    loss = F.kl_div(F.log_softmax(student(x) / T, dim=-1), soft, reduction="batchmean") * T * T
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print("final loss", float(loss))
