"""Codes of the run-time mode sanitizer (`modeguard run`, `guard()`, `pytest --modeguard`,
`%modeguard on`). Importable without torch: the reporters and the docs read it.

MG3NN is the run-time counterpart of the linter's MG1NN where one exists: the linter flags the
code that may have the bug, the sanitizer the run in which it happened."""

from __future__ import annotations

from dataclasses import dataclass

from modeguard.findings import Severity


@dataclass(frozen=True)
class RunCode:
    code: str
    name: str
    severity: Severity
    summary: str
    lint_rule: str | None  # the linter's rule for the same bug


RUN_CODES = {
    c.code: c
    for c in (
        RunCode("MG301", "inference-in-training-mode", Severity.ERROR,
                "a model with Dropout/BatchNorm ran in training mode and its outputs never reached a backward", "MG101"),
        RunCode("MG302", "training-in-eval-mode", Severity.ERROR,
                "backward through outputs computed in eval mode, and the optimizer then changed the parameters", "MG102"),
        RunCode("MG303", "submodule-mode-mismatch", Severity.ERROR,
                "a submodule with Dropout/BatchNorm is not in its model's mode (did not follow eval()/train())", "MG104"),
        RunCode("MG305", "functional-dropout-in-eval", Severity.ERROR,
                "a module in eval mode called dropout with training=True (F.dropout without training=)", "MG105"),
        RunCode("MG306", "sdpa-dropout-in-eval", Severity.ERROR,
                "a module in eval mode called scaled_dot_product_attention with dropout_p > 0", "MG106"),
        RunCode("MG307", "unregistered-submodule-in-training", Severity.ERROR,
                "a module kept in a plain list/dict ran in training mode inside a model in eval mode", "MG107"),
        RunCode("MG311", "batchnorm-single-value", Severity.ERROR,
                "BatchNorm in training mode got one value per channel (the ValueError, explained)", None),
        RunCode("MG312", "batchnorm-never-calibrated", Severity.WARNING,
                "BatchNorm ran in eval mode with running statistics that were never updated", None),
        RunCode("MG315", "random-draws-in-eval", Severity.WARNING,
                "a module in eval mode drew random numbers in its own forward code", None),
    )
}
