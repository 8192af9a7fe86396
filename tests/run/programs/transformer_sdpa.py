"""A small transformer classifier with a hand-written attention block (the timm/nanoGPT shape).
Bug: scaled_dot_product_attention gets a fixed dropout_p, which also drops in eval mode."""

import sys

import torch
from torch import nn
from torch.nn import functional as F

BUG = "--bug" in sys.argv
torch.manual_seed(0)


class Attention(nn.Module):
    def __init__(self, dim, heads, p=0.1):
        super().__init__()
        self.heads, self.p = heads, p
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if BUG:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p)  # noqa: MG106 - BUG: MG306
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Classifier(nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.attn = Attention(dim, heads=2)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        h = self.embed(x)
        h = self.norm(h + self.attn(h))
        return self.head(self.drop(h.mean(1)))


model = Classifier()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step in range(10):
    x, y = torch.randn(8, 6, 4), torch.randint(0, 3, (8,))
    model.train()
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval()
with torch.no_grad():
    x = torch.randn(4, 6, 4)
    print("same twice:", torch.equal(model(x), model(x)))
