"""The three classic train/eval demonstrations, produced by modeguard itself.

Run: python docs/demonstrations.py  (its output is pasted into docs/demonstrations.md)
"""

import torch
from rich.console import Console
from torch import nn

import modeguard

console = Console(width=100, highlight=False)
torch.manual_seed(0)

console.rule("1. BatchNorm in training vs eval mode")
model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
with modeguard.training(model), torch.no_grad():
    for _ in range(50):
        model(torch.randn(64, 4))  # calibrate the running statistics
x = torch.randn(6, 4) * 3 + 2  # data unlike the training data
report = modeguard.audit(model.eval(), x)
console.print(report)
with modeguard.evaluating(model):
    alone = model(x[:1])
    batched = model(x)[:1]
console.print(f"eval mode: sample 0 alone == inside the batch: {torch.allclose(alone, batched, atol=1e-6)}")
with modeguard.training(model), torch.no_grad():
    a = model(x[:3])[:1]
    b = model(x)[:1]
console.print(f"training mode: sample 0 in a batch of 3 vs of 6 differs by {float((a - b).abs().max()):.3f}")
try:
    with modeguard.guard(model), modeguard.training(model):
        model(x[:1])
except modeguard.ModeError as exc:
    console.print(f"training mode, batch of one: ModeError: {exc}")

console.rule("2. Dropout randomness")
net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
x = torch.randn(1, 4)
with modeguard.training(net), torch.no_grad():
    console.print("training mode, same input, 3 calls:", [round(float(net(x)[0, 0]), 3) for _ in range(3)])
with modeguard.evaluating(net):
    console.print("eval mode, same input, 3 calls:    ", [round(float(net(x)[0, 0]), 3) for _ in range(3)])
mean, std = modeguard.predict_mc(net, torch.randn(3, 4), samples=50)
console.print(f"Monte-Carlo dropout (50 samples): predictive std per output\n{std}")

console.rule("3. What no_grad saves")
import torchvision  # noqa: E402

resnet = torchvision.models.resnet18(weights=None).eval()
console.print(modeguard.measure_inference(resnet, torch.randn(8, 3, 224, 224), repeats=5))
