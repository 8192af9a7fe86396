"""ModeGuardCallback with a real Lightning Trainer on CPU and planted bugs."""

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from modeguard.integrations.lightning import ModeGuardCallback  # noqa: E402


class Model(pl.LightningModule):
    def __init__(self, validation_bug=False, freeze_backbone=False):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 2))
        self.validation_bug = validation_bug
        if freeze_backbone:
            self.backbone.eval()  # intentional: must not be reported

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, idx):
        x, y = batch
        if self.validation_bug:
            self.enable_dropout_for_uncertainty()
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def enable_dropout_for_uncertainty(self):
        self.head.train()  # planted bug: a validation helper switches a submodule to training

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class LeavesHeadInEval(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.head.eval()  # planted bug (e.g. for an end-of-epoch probe): never switched back


def loader():
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)), batch_size=8)


def fit(model, callbacks, epochs=2, logger=False):
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", callbacks=callbacks, logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(model, loader(), loader())
    return trainer


def test_correct_training_is_silent_with_a_frozen_backbone():
    guard = ModeGuardCallback()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|eval mode).*")
        fit(Model(freeze_backbone=True), [guard])
    assert guard.problems == []
    assert guard.frozen == {"backbone", "backbone.0", "backbone.1", "backbone.2"}


def test_validation_helper_that_switches_to_training():
    guard = ModeGuardCallback()
    fit(Model(validation_bug=True), [guard], epochs=1)
    assert any("during validation" in p and "head" in p for p in guard.problems), guard.problems


def test_callback_that_leaves_a_module_in_eval(tmp_path):
    guard = ModeGuardCallback()
    with pytest.warns(UserWarning, match="eval mode.*during training: head"):
        trainer = fit(Model(), [LeavesHeadInEval(), guard], logger=pl.loggers.CSVLogger(tmp_path))
    assert any("during training" in p and "head" in p for p in guard.problems), guard.problems
    trainer.logger.save()
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    assert "modeguard/mode_problems" in metrics


def test_raise_mode():
    from modeguard import ModeError

    with pytest.raises(ModeError, match="head"):
        fit(Model(), [LeavesHeadInEval(), ModeGuardCallback(on="raise")])
