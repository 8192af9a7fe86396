"""One positive and one negative test for every audit finding code."""

import torch
import torch.nn.functional as F
from torch import nn

from modeguard import audit
from modeguard import examples as ex


def codes(model, x, **kw):
    return audit(model, x, **kw).codes()


def finding(report, code):
    return [f for f in report.findings if f.code == code]


def calibrated(model, *batches):
    model.train()
    with torch.no_grad():
        for b in batches:
            model(b)
    return model.eval()


class Mlp(nn.Module):
    def __init__(self, p=0.2):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(p)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def data(n=16, shift=0.0, scale=1.0):
    return torch.randn(n, 8) * scale + shift


def test_clean_calibrated_model_in_eval_has_no_findings():
    model = calibrated(Mlp(), *[data(32) for _ in range(30)])
    report = audit(model, data(8))
    assert report.findings == []
    assert report.deterministic and report.batch_independent


def test_mg201_functional_dropout_named():
    report = audit(nn.Sequential(nn.Linear(16, 16), ex.FunctionalDropoutHead()).eval(), torch.randn(4, 16))
    (f,) = finding(report, "MG201")
    assert f.module == "1" and f.severity.value == "error"
    assert report.deterministic is False


def test_mg201_sdpa_dropout_and_dropout_built_in_forward():
    assert finding(audit(ex.SdpaDropoutAttention().eval(), torch.randn(2, 5, 16)), "MG201")
    (f,) = finding(audit(ex.DropoutBuiltInForward().eval(), torch.randn(4, 8)), "MG201")
    assert "constructs Dropout inside forward" in f.message


def test_mg201_negative_dropout_tied_to_mode():
    class Good(nn.Module):
        def forward(self, x):
            return F.dropout(x, 0.5, self.training)

    assert "MG201" not in codes(Good().eval(), torch.randn(4, 8))


def test_mg202_batch_statistics_mix_samples():
    report = audit(ex.BatchStatisticsNet().eval(), torch.randn(6, 8))
    (f,) = finding(report, "MG202")
    assert f.module == "norm" and report.batch_independent is False


def test_mg202_negative_running_statistics():
    report = audit(calibrated(Mlp(), data(64)), data(6))
    assert report.batch_independent and "MG202" not in report.codes()


def test_mg203_submodule_left_in_training():
    model = calibrated(Mlp(), data(64))
    model.drop.train()
    (f,) = finding(audit(model, data(4)), "MG203")
    assert f.module == "drop" and f.severity.value == "warning"


def test_mg203_frozen_submodule_under_training_root_is_info():
    model = calibrated(Mlp(), data(64)).train()
    model.bn.eval()
    (f,) = finding(audit(model, data(4)), "MG203")
    assert f.severity.value == "info"


def test_mg203_negative_uniform_mode():
    assert "MG203" not in codes(calibrated(Mlp(), data(64)), data(4))


def test_mg204_plain_list():
    report = audit(ex.PlainListBlocks().eval(), torch.randn(4, 16))
    assert [f.module for f in finding(report, "MG204")] == ["blocks[0]", "blocks[1]"]


def test_mg204_tuple_of_a_module_and_numbers_and_not_a_module_used_as_hook():
    class Tap(nn.Module):
        def forward(self, module, args, output):
            return None

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.kernel = (3, 3)  # numbers only: nothing to find
            self.head = (2, nn.Dropout(0.5))  # noqa: MG107 - a module among numbers is found
            self.linear.register_forward_hook(Tap())  # a module as hook: not a plain container

        def forward(self, x):
            return self.head[1](self.linear(x))

    report = audit(Model().eval(), torch.randn(4, 4))
    assert [(f.module, f.severity.value) for f in finding(report, "MG204")] == [("head[1]", "error")]


def test_mg204_negative_module_list_and_aliases():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Dropout(0.1)])
            self.alias = [self.blocks[0]]  # a plain list of registered modules is harmless

        def forward(self, x):
            return self.blocks[1](self.blocks[0](x))

    assert "MG204" not in codes(Wrapped().eval(), torch.randn(2, 4))


def test_mg205_never_calibrated_and_partial_is_error():
    fresh = Mlp().eval()
    (f,) = finding(audit(fresh, data(8)), "MG205")
    assert f.severity.value == "warning"

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = Mlp(), Mlp()

        def forward(self, x):
            return self.a(x) + self.b(x)

    model = Two()
    calibrated(model.a, data(64))
    model.eval()
    (f,) = finding(audit(model, data(8)), "MG205")
    assert f.module == "b.bn" and f.severity.value == "error"


def test_mg205_negative_after_calibration():
    assert "MG205" not in codes(calibrated(Mlp(), data(64)), data(8))


def test_mg206_shifted_statistics_with_figure():
    model = calibrated(Mlp(), *[data(64) for _ in range(30)])
    (f,) = finding(audit(model, data(16, shift=5.0, scale=4.0)), "MG206")
    assert f.module == "bn" and f.data["mean_shift"] > 1.0


def test_mg206_negative_same_distribution():
    model = calibrated(Mlp(), *[data(64) for _ in range(30)])
    assert "MG206" not in codes(model, data(16))


def test_mg207_no_running_statistics():
    (f,) = finding(audit(ex.BatchStatisticsNet().eval(), torch.randn(6, 8)), "MG207")
    assert f.module == "norm"


def test_mg207_negative():
    assert "MG207" not in codes(calibrated(Mlp(), data(64)), data(4))


def test_mg208_single_value_per_channel_reported_not_raised():
    model = calibrated(Mlp(), data(64))
    report = audit(model.train(), data(1))
    (f,) = finding(report, "MG208")
    assert f.module == "bn" and f.severity.value == "error"
    assert model.training  # still handed back in training mode
    assert finding(audit(model.eval(), data(1)), "MG208")[0].severity.value == "warning"


def test_mg208_negative_batch_of_two():
    assert "MG208" not in codes(calibrated(Mlp(), data(64)).train(), data(2))


class RaisesInTraining(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if self.training:
            raise RuntimeError("training path is broken")
        return self.fc(x)


def test_mg209_raises_in_one_mode_only_and_audit_continues():
    report = audit(RaisesInTraining().eval(), torch.randn(3, 4))
    (f,) = finding(report, "MG209")
    assert "training path is broken" in f.message
    assert report.deterministic and report.batch_independent


def test_mg209_negative():
    assert "MG209" not in codes(nn.Linear(4, 4).eval(), torch.randn(3, 4))


def test_mg210_custom_training_branch_with_divergence():
    report = audit(nn.Sequential(ex.TrainingBranch()).eval(), torch.randn(4, 8))
    (f,) = finding(report, "MG210")
    assert f.module == "0" and f.severity.value == "info"
    assert report.divergence[0].module == "0" and report.divergence[0].rel > 0


class ReadsOnlyWhenConfigured(nn.Module):
    """Mentions `training`, reads it only with p > 0 (timm's `drop_rate` heads)."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        x = self.fc(x)
        if self.p > 0:
            x = F.dropout(x, self.p, training=self.training)
        return x


def test_eval_pass_captures_only_the_inputs_of_modules_that_read_their_flag(monkeypatch):
    """The sample alone, run first, shows which modules read their flag: only their inputs are
    copied for replays; with a batch of one (no sample alone) every mention is captured."""
    from modeguard.runtime import recorder

    copied = []
    original = recorder.frozen_copy
    monkeypatch.setattr(recorder, "frozen_copy", lambda obj, shared: copied.append(obj) or original(obj, shared))
    model = nn.Sequential(ReadsOnlyWhenConfigured(0.0), ReadsOnlyWhenConfigured(0.5)).eval()
    report = audit(model, torch.randn(4, 8))
    assert [args[0].shape for args, _ in copied] == [(4, 8)]  # the second module's input only
    assert [f.module for f in finding(report, "MG210")] == ["1"]
    copied.clear()
    report = audit(model, torch.randn(1, 8))
    assert len(copied) == 2
    assert [f.module for f in finding(report, "MG210")] == ["1"]


def test_mg210_negative_builtin_layers():
    assert "MG210" not in codes(calibrated(Mlp(), data(64)), data(4))


def test_mg211_train_and_eval_disagree_and_attribution_ranks_bn():
    torch.manual_seed(0)
    model = calibrated(Mlp(p=0.0), *[data(64) for _ in range(30)])
    report = audit(model, data(16, shift=3.0, scale=0.2))
    assert "MG211" in report.codes()
    assert report.divergence[0].module == "bn"


def test_mg211_negative_on_matching_data():
    model = calibrated(Mlp(p=0.0), *[data(256) for _ in range(50)])
    assert "MG211" not in codes(model, data(256))


def test_mg212_training_mode_handed_over():
    model = calibrated(Mlp(), data(64)).train()
    (f,) = finding(audit(model, data(8)), "MG212")
    assert "rel diff" in f.message and "from batchnorm, dropout layers" in f.message
    assert "MG212" not in codes(model.eval(), data(8))


def test_mg212_not_when_nothing_depends_on_the_mode():
    """Dropout(p=0) and a LayerNorm: the mode changes nothing, measured."""
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Dropout(0.0), nn.Linear(8, 2)).train()
    report = audit(model, data(4))
    assert "MG212" not in report.codes() and report.train_vs_eval[0].rel == 0.0


def test_ignore_filters_codes_and_prefixes():
    report = audit(ex.BatchStatisticsNet().eval(), torch.randn(6, 8), ignore=["MG207", "mg20"])
    assert report.findings == []


def test_nested_outputs_and_keyword_inputs():
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.drop = nn.Dropout(0.5)

        def forward(self, a, *, b):
            y = self.drop(self.fc(a + b))
            return {"logits": y, "aux": (y.sum(-1), [y * 2])}

    x = {"a": torch.randn(3, 4), "b": torch.randn(3, 4)}
    report = audit(Nested().eval(), x)
    assert {d.path for d in report.train_vs_eval} == {
        "output.logits", "output.aux[0]", "output.aux[1][0]"
    }
    assert report.deterministic and report.batch_independent


def test_divergence_lists_lstm_and_attention():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 8, num_layers=2, dropout=0.3, batch_first=True)
            self.attn = nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True)

        def forward(self, x):
            h, _ = self.rnn(x)
            return self.attn(h, h, h)[0]

    report = audit(Seq().eval(), torch.randn(3, 5, 8))
    kinds = {d.module: d.kind for d in report.divergence}
    assert kinds == {"rnn": "rnn", "attn": "attention"}
    assert all(d.rel > 0 for d in report.divergence)
    assert report.findings == []


def test_report_renders_and_serializes():
    model, x = ex.demo()
    report = audit(model, x)
    text = str(report)
    assert "MG201" in text and "Which modules make the difference" in text
    d = report.to_dict()
    assert {"model", "findings", "divergence", "batchnorm", "train_vs_eval"} <= set(d)
    assert all(set(f) >= {"code", "severity", "module", "message", "fix"} for f in d["findings"])


def test_low_precision_models():
    for dtype in (torch.bfloat16, torch.float16):
        model = calibrated(Mlp(), data(64)).to(dtype)
        report = audit(model, data(8))  # float32 input is cast to the model's dtype
        assert report.dtype == str(dtype).removeprefix("torch.")
        assert report.deterministic and report.batch_independent
        assert not report.errors


def test_batch_dim_for_sequence_first_inputs():
    # nn.TransformerEncoder without batch_first: inputs are (sequence, batch, features)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.1)
    model = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False).eval()
    x = torch.randn(5, 3, 8)
    assert audit(model, x, batch_dim=1).batch_independent is True
    # with the wrong batch dim, "samples" are sequence positions, which attention mixes
    assert audit(model, x, batch_dim=0).batch_independent is False


def test_mg202_costs_one_batched_pass_less_than_it_did():
    """The second eval pass (determinism) is recorded and is also the batched pass that
    finding the mixing module compares with: eval, sample alone, second pass, sample alone
    recorded, training pass, and the replay of BatchNorm: no third batched eval pass."""
    model = ex.BatchStatisticsNet().eval()
    passes = []
    model.fc1.register_forward_hook(lambda m, i, o: passes.append((m.training, i[0].shape[0])))
    report = audit(model, torch.randn(6, 8))
    assert finding(report, "MG202")[0].module == "norm"
    assert passes.count((False, 6)) == 2
