"""audit, guard, evaluating and predict_mc on Hugging Face models built from tiny configs."""

import warnings

import pytest
import torch

import modeguard

transformers = pytest.importorskip("transformers")


def tiny_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, num_labels=3,
    )
    return transformers.BertForSequenceClassification(config)


def inputs(batch=4, length=10):
    ids = torch.randint(0, 100, (batch, length), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_audit_keyword_inputs_and_model_output():
    model = tiny_bert().eval()
    report = modeguard.audit(model, inputs())
    assert report.errors == [] and report.deterministic and report.batch_independent
    paths = {d.path for d in report.train_vs_eval}
    assert "output.logits" in paths
    assert report.train_vs_eval[0].top1_agreement is not None


def test_evaluating_restores_the_training_mode_of_a_fine_tuning_model():
    model = tiny_bert().train()
    with modeguard.evaluating(model):
        out = model(**inputs())
        assert not model.training
    assert model.training and all(m.training for m in model.modules())
    assert isinstance(out, transformers.modeling_outputs.SequenceClassifierOutput)
    assert not out.logits.requires_grad


def test_guard_on_keyword_calls():
    model = tiny_bert().train()  # fine-tuning mode, then inference forgotten
    with modeguard.guard(model):
        with pytest.warns(modeguard.ModeWarning, match="forgot model.eval"):
            with torch.no_grad():
                for _ in range(2):
                    model(**inputs())
        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("error", modeguard.ModeWarning)
            with torch.no_grad():
                model(**inputs())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(modeguard.ModeError, match="training step in eval mode"):
        with modeguard.guard(model, on="raise"):
            model(**inputs()).logits.sum().backward()
            optimizer.step()
            model(**inputs())


def test_predict_mc_on_logits():
    model = tiny_bert().eval()
    torch.manual_seed(0)
    mean, std = modeguard.predict_mc(model, inputs(batch=3), samples=8, output_fn=lambda o: o.logits)
    assert mean.shape == std.shape == (3, 3) and bool((std > 0).all())
    assert not model.training
