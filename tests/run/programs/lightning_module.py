"""A LightningModule (BatchNorm + Dropout) trained with validation each epoch.
Bug: a hook meant to freeze BatchNorm statistics puts the whole trainable backbone in eval."""

import sys
import warnings

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BUG = "--bug" in sys.argv
warnings.filterwarnings("ignore")
torch.manual_seed(0)


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.backbone(x))

    def on_train_epoch_start(self):
        if BUG:
            self.backbone.eval()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)  # BUG: MG303

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))  # BUG: MG312 (never updated: the backbone trained in eval)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


data = TensorDataset(torch.randn(64, 10), torch.randint(0, 3, (64,)))
trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Classifier(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))
print("done")
