"""Every rule's documented examples are its test cases: `invalid` flagged, `valid` not, and
every fix produces code that parses and is no longer flagged."""

import ast

import pytest

from modeguard.lint.engine import Selection, lint_source
from modeguard.lint.fixes import apply_fixes
from modeguard.lint.rules import ALL_RULES

CASES_INVALID = [(r.code, i, src) for r in ALL_RULES for i, src in enumerate(r.invalid)]
CASES_VALID = [(r.code, i, src) for r in ALL_RULES for i, src in enumerate(r.valid)]


def lint(code, source):
    findings = lint_source("example.py", source, Selection(frozenset({code})))
    assert not [f for f in findings if f.code == "MG000"], findings  # no rule may crash
    return findings


@pytest.mark.parametrize("code,index,source", CASES_INVALID, ids=[f"{c}-invalid-{i}" for c, i, _ in CASES_INVALID])
def test_invalid_examples_are_flagged(code, index, source):
    assert lint(code, source), f"{code} missed:\n{source}"


@pytest.mark.parametrize("code,index,source", CASES_VALID, ids=[f"{c}-valid-{i}" for c, i, _ in CASES_VALID])
def test_valid_examples_are_not_flagged(code, index, source):
    assert lint(code, source) == [], f"{code} false positive:\n{source}"


@pytest.mark.parametrize("code,index,source", CASES_INVALID, ids=[f"{c}-fix-{i}" for c, i, _ in CASES_INVALID])
def test_fixes_parse_and_silence_the_rule(code, index, source):
    findings = lint(code, source)
    if not any(f.autofix for f in findings):
        pytest.skip("no autofix for this example")
    fixed, applied = apply_fixes(source, findings)
    assert applied
    ast.parse(fixed)
    assert not [f for f in lint(code, fixed) if f.autofix], fixed


def test_every_rule_is_documented_and_tested():
    codes = [r.code for r in ALL_RULES]
    assert len(codes) == len(set(codes))
    for rule in ALL_RULES:
        assert rule.invalid and rule.valid and rule.summary and rule.rationale, rule.code
