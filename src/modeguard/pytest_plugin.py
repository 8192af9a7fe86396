"""pytest plugin (entry point `pytest11`): the `modeguard_audit` fixture, and `pytest --modeguard`,
which runs every test under the run-time mode checks of `modeguard run` and fails a test that
triggers an error-level finding. Imports torch only when a test uses the fixture or the option
is given."""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("modeguard")
    group.addoption(
        "--modeguard", action="store_true", default=False,
        help="check train/eval-mode bugs while the tests run (modeguard run); an error-level finding fails its test",
    )


def pytest_configure(config):
    if config.getoption("modeguard", default=False):
        config.pluginmanager.register(_Sanitizer(), "modeguard-sanitizer")


class _Sanitizer:
    def __init__(self):
        from modeguard._lazy import require_torch

        require_torch("pytest --modeguard")
        from modeguard.runtime.sanitizer import Session

        self.session = Session().start()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        self.session.collect()  # what earlier code left undecided is not this test's
        outcome = yield
        findings = self.session.collect()
        if not findings:
            return
        from modeguard.findings import sort_findings

        text = "\n".join(
            f"{f.filename}:{f.location.row}: {f.code} {f.severity.value}: {f.message}\n    fix: {f.fix}"
            for f in sort_findings(findings)
        )
        item.add_report_section("call", "modeguard", text)
        errors = [f for f in findings if f.severity.value == "error"]
        if errors and outcome.excinfo is None:
            outcome.force_exception(AssertionError(f"modeguard found {len(errors)} train/eval-mode bug(s):\n{text}"))

    def pytest_unconfigure(self, config):
        self.session.stop()


@pytest.fixture
def modeguard_audit():
    """`modeguard_audit(model, x, **options)` returns the AuditReport; `.errors` lists what
    should fail a test."""
    from modeguard.testing import _audit

    return _audit
