"""LSTM sequence-to-sequence (sequence-first tensors), teacher forcing in training, greedy decoding
in eval. Bug: the decoder's functional dropout has no training= flag, so it drops in eval too."""

import sys

import torch
from torch import nn
from torch.nn import functional as F

BUG = "--bug" in sys.argv
torch.manual_seed(0)
VOCAB, HIDDEN, LENGTH = 12, 16, 6


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.rnn = nn.LSTM(HIDDEN, HIDDEN, num_layers=2, dropout=0.2)

    def forward(self, src):
        return self.rnn(self.embed(src))[1]


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.rnn = nn.LSTM(HIDDEN, HIDDEN, num_layers=2, dropout=0.2)
        self.out = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens, state):
        emb = self.embed(tokens)
        if BUG:
            emb = F.dropout(emb, 0.3)  # noqa: MG105 - BUG: MG305
        else:
            emb = F.dropout(emb, 0.3, training=self.training)
        out, state = self.rnn(emb, state)
        return self.out(out), state


class Seq2Seq(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.decoder = Encoder(), Decoder()

    def forward(self, src, tgt_in):
        return self.decoder(tgt_in, self.encoder(src))[0]

    @torch.no_grad()
    def greedy(self, src, steps):
        state = self.encoder(src)
        token = torch.zeros(1, src.shape[1], dtype=torch.long)
        result = []
        for _ in range(steps):
            logits, state = self.decoder(token, state)
            token = logits.argmax(-1)
            result.append(token)
        return torch.cat(result)


model = Seq2Seq()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for step in range(20):
    src = torch.randint(1, VOCAB, (LENGTH, 8))  # (time, batch)
    tgt = src.flip(0)
    tgt_in = torch.cat([torch.zeros(1, 8, dtype=torch.long), tgt[:-1]])
    model.train()
    loss = F.cross_entropy(model(src, tgt_in).reshape(-1, VOCAB), tgt.reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval()
test = torch.randint(1, VOCAB, (LENGTH, 4))
print("decoded", model.greedy(test, LENGTH).T.tolist()[0])
