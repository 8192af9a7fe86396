"""End-to-end audits of real architectures built with random weights (nothing downloaded)."""

import pytest
import torch

from modeguard import audit


def test_torchvision_resnet18_in_eval_has_no_error_findings():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None).eval()
    report = audit(model, torch.randn(2, 3, 64, 64))
    assert report.errors == []
    assert report.deterministic and report.batch_independent
    assert len(report.batchnorm) == 20
    # random weights: every BatchNorm honestly reported as never calibrated (warning, not error)
    assert {f.code for f in report.findings} <= {"MG205", "MG211"}
    assert sum(f.code == "MG205" for f in report.findings) == 20
    bns = [d for d in report.divergence if d.kind == "batchnorm"]
    assert len(bns) == 20 and all(d.rel > 0 for d in bns)


def test_torchvision_resnet18_as_loaded_is_in_training_mode():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None)  # torchvision returns training mode
    report = audit(model, torch.randn(2, 3, 64, 64))
    assert "MG212" in report.codes() and model.training


def test_timm_vit_in_eval_is_clean():
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, drop_rate=0.1, drop_path_rate=0.1
    ).eval()
    report = audit(model, torch.randn(3, 3, 32, 32))
    assert report.errors == []
    assert report.deterministic and report.batch_independent
    kinds = {d.kind for d in report.divergence}
    assert "dropout" in kinds and "custom" in kinds  # timm's DropPath branches on self.training


def test_transformers_bert_from_tiny_config():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, num_labels=3,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 100, (4, 12))
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    report = audit(model, x)
    assert report.errors == []
    assert report.deterministic and report.batch_independent
    assert any(d.path == "output.logits" for d in report.train_vs_eval)
    assert any(d.kind == "dropout" and d.rel > 0 for d in report.divergence)


def test_bert_with_planted_training_mode_dropout_is_caught():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64,
    )
    model = transformers.BertModel(config).eval()
    model.encoder.layer[1].output.dropout.train()  # e.g. a callback that forgot to restore it
    ids = torch.randint(0, 100, (2, 8))
    report = audit(model, {"input_ids": ids})
    (f,) = [f for f in report.findings if f.code == "MG203"]
    assert f.module == "encoder.layer.1.output.dropout" and f.severity.value == "warning"
    # the audit's own eval passes call model.eval(), which repairs this: deterministic there
    assert report.deterministic and model.encoder.layer[1].output.dropout.training
