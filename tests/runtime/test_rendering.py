"""Reports as a person reads them: strict JSON, grouped findings, print() and Jupyter."""

import json
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from modeguard import audit, bn_health, measure_inference, recalibrate_bn
from modeguard.findings import Finding, Severity
from modeguard.runtime.rendering import findings_table, group_findings, json_safe, plain_text, to_json


def strict_loads(text: str):
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def numbers_have_reasons(data) -> None:
    """Every null that replaced a number sits next to `<key>_reason`; no float is non-finite."""
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, float):
                assert math.isfinite(value), key
            numbers_have_reasons(value)
    elif isinstance(data, list):
        for item in data:
            numbers_have_reasons(item)


ODD_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.inf, -math.inf, math.nan]))
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5), ODD_FLOATS),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children, max_size=4)),
    max_leaves=20,
)


@given(JSONISH)
def test_json_safe_is_strict_json_and_says_why_a_number_is_missing(value):
    data = strict_loads(to_json(value))
    numbers_have_reasons(data)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                assert data[key] is None and data[f"{key}_reason"] in ("infinite", "negative infinite", "not a number")


def test_json_safe_keeps_a_reason_the_report_gives():
    assert json_safe({"rel": math.inf, "rel_reason": "shapes differ"}) == {"rel": None, "rel_reason": "shapes differ"}
    assert json_safe({"x": torch.tensor([1.0, math.nan])}) == {"x": [1.0, None]}


class ModeScaled(nn.Module):
    """Eval returns x; training returns x * factor, or a different shape: any rel diff, inf and NaN included."""

    def __init__(self, factor: float, reshape: bool, zero_eval: bool):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.factor, self.reshape, self.zero_eval = factor, reshape, zero_eval

    def forward(self, x):
        y = self.linear(x)
        if not self.training:
            return y * 0 if self.zero_eval else y
        if self.reshape:
            return y[:, :2]
        return y * self.factor


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    factor=st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([math.inf, math.nan, 0.0])),
    reshape=st.booleans(),
    zero_eval=st.booleans(),
)
def test_audit_json_is_strict_whatever_the_differences(factor, reshape, zero_eval):
    model = ModeScaled(factor, reshape, zero_eval).eval()
    report = audit(model, torch.randn(3, 4))
    data = strict_loads(report.to_json())
    numbers_have_reasons(data)
    assert data["model"] == "ModeScaled"


def test_audit_json_of_outputs_that_cannot_be_compared_is_null_with_a_reason():
    report = audit(ModeScaled(2.0, reshape=True, zero_eval=False).eval(), torch.randn(3, 4))
    row = strict_loads(report.to_json())["train_vs_eval"][0]
    assert row["rel"] is None and (row.get("rel_reason") or row.get("not_comparable"))


def bn_finding(module: str, shift: float) -> Finding:
    return Finding("MG206", Severity.WARNING, f"mean shift {shift:.2f} running std, variance ratio 0.50", "recalibrate", module)


def test_repeated_findings_form_one_group_that_keeps_every_module():
    findings = [Finding("MG205", Severity.WARNING, "never updated", "recalibrate", f"layer{i}.bn") for i in range(53)]
    findings.append(Finding("MG212", Severity.WARNING, "handed over in training mode", "call eval()"))
    groups = group_findings(findings)
    assert [len(g.findings) for g in groups] == [53, 1]
    assert groups[0].where() == "53 modules: layer0.bn, layer1.bn, layer10.bn and 50 more"
    assert groups[1].where() == "-"
    text = plain_text(findings_table(findings))
    assert text.count("MG205") == 1 and "and 50 more" in text


def test_group_message_gives_the_range_of_differing_figures():
    groups = group_findings([bn_finding("a", 1.5), bn_finding("b", 3.25), bn_finding("c", 2.0)])
    assert len(groups) == 1
    assert groups[0].message() == "mean shift 1.50 to 3.25 running std, variance ratio 0.50"


def test_findings_that_say_different_things_stay_apart():
    a = Finding("MG203", Severity.WARNING, "submodule layer1.0 is in training mode", "", "layer1.0")
    b = Finding("MG203", Severity.WARNING, "submodule layer2.0 is in eval mode", "", "layer2.0")
    whole_model = [Finding("MG211", Severity.WARNING, "predict differently"), Finding("MG211", Severity.WARNING, "predict differently")]
    assert len(group_findings([a, b])) == 2  # the names inside the message are not figures
    assert len(group_findings(whole_model)) == 2


def calibrated_bn_net():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(16, 4))
    return model.eval()


def test_every_report_object_prints_and_renders_in_jupyter():
    model, x = calibrated_bn_net(), torch.randn(6, 4)
    reports = {
        "Findings": audit(model, x),
        "Inference cost by mode": measure_inference(model, x, repeats=1),
        "BatchNorm health": bn_health(model, [x]),
        "BatchNorm recalibrated on 2 batch(es)": recalibrate_bn(calibrated_bn_net(), [torch.randn(8, 4)] * 2, progress=False),
    }
    for title, report in reports.items():
        text = str(report)
        assert title in text and "Report(" not in text and "┃" in text, text
        html = report._repr_html_()
        assert html.startswith('<div class="modeguard-report">') and title in html
        assert "<script" not in html and "<html" not in html
        strict_loads(report.to_json())
    assert "│ 1 " in str(reports["BatchNorm health"])  # the layer's row, not a dataclass repr
