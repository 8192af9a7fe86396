"""The rule registry: one module per rule."""

from modeguard.lint.rule import Rule
from modeguard.lint.rules.mg100_syntax_error import SyntaxErrorRule
from modeguard.lint.rules.mg101_missing_eval import MissingEval
from modeguard.lint.rules.mg102_no_train_after_eval import NoTrainAfterEval
from modeguard.lint.rules.mg103_uncalled_mode_method import UncalledModeMethod
from modeguard.lint.rules.mg104_training_attribute_assignment import TrainingAttributeAssignment
from modeguard.lint.rules.mg105_functional_dropout_ignores_mode import FunctionalDropoutIgnoresMode
from modeguard.lint.rules.mg106_sdpa_dropout_ignores_mode import SdpaDropoutIgnoresMode
from modeguard.lint.rules.mg107_unregistered_submodules import UnregisteredSubmodules
from modeguard.lint.rules.mg108_layer_created_in_forward import LayerCreatedInForward
from modeguard.lint.rules.mg109_capture_in_train_mode import CaptureInTrainMode
from modeguard.lint.rules.mg110_eval_without_no_grad import EvalWithoutNoGrad

ALL_RULES: tuple[Rule, ...] = (
    SyntaxErrorRule(),
    MissingEval(),
    NoTrainAfterEval(),
    UncalledModeMethod(),
    TrainingAttributeAssignment(),
    FunctionalDropoutIgnoresMode(),
    SdpaDropoutIgnoresMode(),
    UnregisteredSubmodules(),
    LayerCreatedInForward(),
    CaptureInTrainMode(),
    EvalWithoutNoGrad(),
)
RULES_BY_CODE = {rule.code: rule for rule in ALL_RULES}
