"""A small GAN: the generator has BatchNorm, the discriminator Dropout. Samples are drawn inside
the training loop for monitoring (training mode on purpose), and a final set for evaluation.
Bug: the final samples are drawn without generator.eval()."""

import sys

import torch
from torch import nn

BUG = "--bug" in sys.argv
torch.manual_seed(0)
Z = 8
generator = nn.Sequential(nn.Linear(Z, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
discriminator = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Dropout(0.3), nn.Linear(32, 1))
opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
bce = nn.BCEWithLogitsLoss()
fixed_noise = torch.randn(16, Z)

for step in range(30):
    real = torch.randn(32, 2) * 0.5 + 2
    fake = generator(torch.randn(32, Z))
    d_loss = bce(discriminator(real), torch.ones(32, 1)) + bce(discriminator(fake.detach()), torch.zeros(32, 1))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = bce(discriminator(fake), torch.ones(32, 1))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    if step % 10 == 0:
        with torch.no_grad():
            monitor = generator(fixed_noise)  # batch statistics while training, on purpose
        print(step, float(monitor.mean()))

if not BUG:
    generator.eval()
with torch.no_grad():
    samples = torch.cat([generator(torch.randn(64, Z)) for _ in range(4)])  # BUG: MG301
print("sample mean", samples.mean(0).tolist())
