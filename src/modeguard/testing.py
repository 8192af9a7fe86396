"""Assertions for test suites: each fails with the audit's explanation.

    from modeguard.testing import assert_no_mode_findings
    assert_no_mode_findings(model.eval(), example_batch, ignore=["MG210"])
"""

from __future__ import annotations

from typing import Any, Iterable

from modeguard._lazy import require_torch
from modeguard.findings import Finding, Severity


def _explain(title: str, findings: list[Finding]) -> str:
    """The title, then the findings exactly as `modeguard audit` prints them."""
    from modeguard.runtime.rendering import findings_table, plain_text

    return f"{title}\n{plain_text(findings_table(findings))}"


def _audit(model, x, **options):
    require_torch("modeguard.testing")
    from modeguard.runtime.audit import audit

    return audit(model, x, **options)


def assert_deterministic_in_eval(model: Any, x: Any, **options) -> None:
    """Two eval-mode passes under different seeds give the same output (no MG201)."""
    report = _audit(model, x, **options)
    if not report.deterministic:
        raise AssertionError(_explain("the model is not deterministic in eval mode:", [f for f in report.findings if f.code == "MG201"]))


def assert_batch_independent(model: Any, x: Any, **options) -> None:
    """In eval mode each sample gives the same output alone as inside the batch (no MG202)."""
    report = _audit(model, x, **options)
    if report.batch_independent is False:
        raise AssertionError(_explain("samples of a batch influence each other in eval mode:", [f for f in report.findings if f.code == "MG202"]))


def assert_mode_consistent(model: Any, *, allow: Iterable[str] = ()) -> None:
    """Every submodule is in the root's mode (MG203) and reachable by `.eval()` (MG204);
    `allow` names submodules whose own mode is intended (a frozen backbone)."""
    require_torch("modeguard.testing")
    from modeguard.runtime.structure import mode_state_findings

    allowed = tuple(allow)
    findings = [
        f for f in mode_state_findings(model)
        if not any(f.module == a or (f.module or "").startswith(a + ".") for a in allowed)
    ]
    if findings:
        raise AssertionError(_explain("the model's modes are not consistent:", findings))


def assert_no_mode_findings(
    model: Any, x: Any, *, ignore: Iterable[str] = (), min_severity: str = "warning", **options
) -> None:
    """The audit reports nothing at `min_severity` or worse, apart from the `ignore`d codes."""
    report = _audit(model, x, ignore=ignore, **options)
    worst = Severity(min_severity).rank
    findings = [f for f in report.findings if f.severity.rank <= worst]
    if findings:
        raise AssertionError(_explain(f"modeguard audit found {len(findings)} problem(s):", findings))
