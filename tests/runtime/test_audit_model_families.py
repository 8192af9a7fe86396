"""The audit on the shapes of model users bring: classes without source, helpers that read the
flag, detectors, generative models with caches, stateful models, real data."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modeguard import InputError, audit
from modeguard.runtime.state import ModuleModes, TensorState

EXEC_SOURCE = """
import torch
from torch import nn

class Noisy(nn.Module):
    def forward(self, x):
        if self.training:
            return x + torch.randn_like(x)
        return x
"""


def finding(report, code):
    return [f for f in report.findings if f.code == code]


def test_custom_layer_defined_by_exec_is_measured_and_named():
    namespace = {}
    exec(EXEC_SOURCE, namespace)  # no source file: inspect.getsource fails on this class
    model = nn.Sequential(nn.Linear(4, 4), namespace["Noisy"](), nn.Linear(4, 2)).eval()
    report = audit(model, torch.randn(3, 4))
    (f,) = finding(report, "MG210")
    assert f.module == "1" and "reads self.training at <string>:7" in f.message
    assert [(d.module, d.kind) for d in report.divergence] == [("1", "custom")]
    assert report.divergence[0].rel > 0.1
    assert [m.name for m in report.mode_sensitive] == ["1"]


class HelperReadsFlag(nn.Module):
    """Reads self.training only in a helper forward() never calls (timm's reset_classifier)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def describe_mode(self):
        return "training" if self.training else "eval"

    def forward(self, x):
        return self.fc(x)


class ReadsFlagToNoEffect(nn.Module):
    """Reads self.training in forward(), but both branches compute the same thing."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        scale = 1.0 if self.training else 1.0
        return self.fc(x) * scale


@pytest.mark.parametrize("cls", [HelperReadsFlag, ReadsFlagToNoEffect])
def test_flag_read_that_changes_nothing_gives_no_mg210(cls):
    report = audit(cls().eval(), torch.randn(3, 4))
    assert "MG210" not in report.codes()
    assert report.divergence == [] and report.mode_sensitive == []


def test_training_root_whose_mode_changes_nothing_gets_no_mg212():
    report = audit(ReadsFlagToNoEffect().train(), torch.randn(3, 4))
    assert "MG212" not in report.codes()


def test_relative_difference_stays_bounded_near_zero():
    class NearZeroInEval(nn.Module):
        def forward(self, x):
            return x * (1.0 if self.training else 1e-9)

    report = audit(NearZeroInEval().eval(), torch.randn(3, 4))
    assert 0.99 < report.train_vs_eval[0].rel <= 1.0
    assert 0.99 < report.divergence[0].rel <= 1.0


@pytest.fixture(scope="module")
def detector():
    torchvision = pytest.importorskip("torchvision")
    from modeguard.runtime.loading import no_pretrained_weights

    builder = torchvision.models.get_model_builder("fasterrcnn_mobilenet_v3_large_320_fpn")
    torch.manual_seed(0)
    return builder(**no_pretrained_weights(builder), min_size=64, max_size=64).eval()


def test_detector_in_eval_needs_targets_for_training_but_is_no_error(detector):
    images = torch.rand(2, 3, 64, 64)
    report = audit(detector, images)
    assert report.errors == []
    assert report.train_vs_eval_note.startswith("not compared: training mode needs targets")
    assert report.deterministic is True
    assert all(d.error is None or "targets" not in d.error for d in report.divergence)


def test_detector_with_targets_reports_not_comparable(detector):
    images = torch.rand(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    report = audit(detector, images, targets=targets)
    assert report.errors == []
    assert report.train_vs_eval_note.startswith("not comparable: the outputs share no tensor")
    assert "output.loss_classifier" in report.train_vs_eval_note
    for row in report.divergence:  # never a silent 0.0 or inf for outputs of different kinds
        assert row.error is not None or (row.rel is not None and math.isfinite(row.rel))
    (root,) = [d for d in report.divergence if d.module == "<root>"]
    assert root.error.startswith("not comparable")
    train = audit(detector.train(), images, targets=targets)
    detector.eval()
    assert "MG212" in train.codes() and not train.errors


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def test_gpt2_with_use_cache_gives_finite_rows(transformers):
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=32)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    report = audit(model, {"input_ids": torch.randint(0, 100, (2, 12)), "use_cache": True})
    assert report.divergence and all(d.error is None and math.isfinite(d.rel) for d in report.divergence)
    assert all(d.comparable and math.isfinite(d.rel) for d in report.train_vs_eval)
    assert report.deterministic and report.batch_independent and not report.errors


def test_t5_with_use_cache_gives_finite_rows(transformers):
    config = transformers.T5Config(
        num_layers=2, num_decoder_layers=2, d_model=32, d_ff=64, num_heads=2, d_kv=16, vocab_size=100
    )
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    ids = torch.randint(0, 100, (2, 10))
    report = audit(model, {"input_ids": ids, "decoder_input_ids": ids[:, :6], "use_cache": True})
    assert report.divergence and all(d.error is None and math.isfinite(d.rel) for d in report.divergence)
    assert report.deterministic and not report.errors


class HiddenStateCarrier(nn.Module):
    """Keeps its GRU hidden state on self between calls (stateful inference)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 4, batch_first=True)
        self.hidden = None

    def forward(self, x):
        out, self.hidden = self.rnn(x, self.hidden)
        return out


def test_stateful_model_is_replayed_from_identical_state_and_left_as_it_was():
    model = HiddenStateCarrier().eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 4))
    held = model.hidden
    before = held.clone()
    report = audit(model, torch.randn(2, 3, 4))
    assert report.deterministic is True and "MG201" not in report.codes()
    assert model.hidden is held and torch.equal(model.hidden, before)


def calibrated_classifier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    model.train()
    with torch.no_grad():
        for _ in range(50):
            model(torch.randn(64, 8) * 2 + 1)
    return model.eval()


def test_audit_on_a_dataloader_uses_real_batches_and_drops_classifier_targets():
    model = calibrated_classifier()
    data = torch.randn(40, 8) * 2 + 1
    loader = DataLoader(TensorDataset(data, torch.zeros(40, dtype=torch.long)), batch_size=8)
    report = audit(model, loader, max_batches=3)
    assert report.input.startswith("real data: 3 batch(es)") and not report.random_input
    assert report.findings == [] and report.batch_independent
    shifted = DataLoader(TensorDataset(data * 0.1 - 5, torch.zeros(40, dtype=torch.long)), batch_size=8)
    assert "MG206" in audit(model, shifted).codes()


def test_random_input_is_said_and_data_dependent_findings_left_out():
    model = calibrated_classifier()
    noise = torch.randn(8, 8) * 0.1 - 5  # far from the calibration data
    given = audit(model, noise)
    assert "MG206" in given.codes() and given.batchnorm[0].mean_shift > 1
    report = audit(model, noise, random_input=True)
    assert report.random_input and "random input" in report.input
    assert not {"MG206", "MG211"} & report.codes()
    # The shift from noise is no figure about the data either; the layer's calibration still is.
    health = report.batchnorm[0]
    assert health.mean_shift is None and health.var_ratio is None and not health.never_calibrated
    assert [d.rel for d in report.divergence] == [d.rel for d in given.divergence]  # closed forms kept
    assert "random input" in str(report)


def test_audit_without_input_uses_random_input_of_the_usual_shape():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    report = audit(model)
    assert report.random_input and "[4, 3, 224, 224]" in report.input


def test_batch_dim_out_of_range_is_not_tested_and_negative_is_refused():
    model = calibrated_classifier()
    report = audit(model, torch.randn(4, 8), batch_dim=5)
    assert report.batch_independent is None
    assert "dimension 5" in report.not_tested["batch_independent"]
    assert "not tested (" in str(report)
    with pytest.raises(InputError, match="batch_dim"):
        audit(model, torch.randn(4, 8), batch_dim=-1)


def test_explicit_targets_the_model_cannot_take_are_refused():
    with pytest.raises(InputError, match="takes no targets"):
        audit(calibrated_classifier(), torch.randn(4, 8), targets=torch.zeros(4))


def test_class_swap_for_watching_is_undone():
    namespace = {}
    exec(EXEC_SOURCE, namespace)
    model = nn.Sequential(nn.Linear(4, 4), namespace["Noisy"]()).eval()
    modes, tensors = ModuleModes.capture(model), TensorState.capture(model)
    audit(model, torch.randn(3, 4))
    assert type(model[1]) is namespace["Noisy"]
    assert [flag for _, flag in modes.flags] == [m.training for m in model.modules()]
    assert all(torch.equal(live, saved) for live, saved in tensors.tensors)


def test_lightning_module_root_gets_no_mg210():
    lightning = pytest.importorskip("lightning")

    class Classifier(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

        def forward(self, x):
            return self.net(x)

    report = audit(Classifier().eval(), torch.randn(3, 4))
    assert report.findings == [] and report.mode_sensitive == []


class ReadsFlagOverBatchNorm(nn.Module):
    """Reads its flag to no effect, around a BatchNorm child (timm LeViT's bias cache)."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(x) * (1.0 if self.training else 1.0)


def test_replay_is_not_fooled_by_buffers_the_training_pass_updates():
    model = nn.Sequential(nn.Linear(4, 4), ReadsFlagOverBatchNorm()).eval()
    report = audit(model, torch.randn(8, 4) * 3 + 2)
    assert "MG210" not in report.codes()
    assert [d.kind for d in report.divergence] == ["batchnorm"]
