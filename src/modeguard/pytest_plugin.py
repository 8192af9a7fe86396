"""pytest plugin (entry point `pytest11`): the `modeguard_audit` fixture. Imports torch only
when a test uses the fixture."""

from __future__ import annotations

import pytest


@pytest.fixture
def modeguard_audit():
    """`modeguard_audit(model, x, **options)` returns the AuditReport; `.errors` lists what
    should fail a test."""
    from modeguard.testing import _audit

    return _audit
