"""FGSM adversarial training with a saliency map at the end: adversarial examples and the
saliency map are computed with gradients through the model in eval mode (no optimizer step),
the training steps run in training mode.
Bug: after crafting the attack in eval mode the training step forgets model.train()."""

import sys

import torch
from torch import nn
from torch.nn import functional as F

BUG = "--bug" in sys.argv
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Dropout(0.25), nn.Linear(8 * 6 * 6, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)


def fgsm(x, y, eps=0.1):
    model.eval()
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()  # weights get gradients, nothing steps them. BUG: MG312 (BN never trained)
    return (x + eps * x.grad.sign()).detach()


for step in range(8):
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    x_adv = fgsm(x, y)  # noqa: MG102 - the buggy version omits model.train() below
    if not BUG:
        model.train()
    optimizer.zero_grad()  # the attack's gradients on the weights are discarded
    loss = F.cross_entropy(model(torch.cat([x, x_adv])), torch.cat([y, y]))  # BUG: MG302
    loss.backward()
    optimizer.step()

model.eval()
image = torch.randn(1, 1, 8, 8, requires_grad=True)
model(image)[0].max().backward()
print("saliency peak", float(image.grad.abs().max()))
