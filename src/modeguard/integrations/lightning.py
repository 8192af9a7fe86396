"""`ModeGuardCallback` for Lightning 2.x: checks that every training batch runs in the modes
the model started fit with, that validation/test/predict batches run fully in eval mode, and
that modes come back after validation.

    trainer = Trainer(callbacks=[ModeGuardCallback()])
"""

from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.utilities import rank_zero_warn
except ImportError:  # the older package name
    try:
        from pytorch_lightning.callbacks import Callback
        from pytorch_lightning.utilities import rank_zero_warn
    except ImportError as exc:
        raise ImportError("ModeGuardCallback needs Lightning: pip install 'modeguard[lightning]'") from exc

from modeguard.errors import ModeError


class ModeGuardCallback(Callback):
    """At fit start, the submodules in eval mode are recorded as intentionally frozen (plus
    `allow_eval`). Each training batch must run with every other submodule in training mode;
    each validation, test and predict batch with every submodule in eval mode. Each problem is
    reported once, through Lightning's warnings (`on="raise"` raises `ModeError` instead) and,
    when the trainer has a logger, as the metric `modeguard/mode_problems`."""

    def __init__(self, *, allow_eval: tuple[str, ...] = (), on: str = "warn"):
        if on not in ("warn", "raise"):
            raise ValueError(f"on must be 'warn' or 'raise', got {on!r}")
        self.allow_eval = set(allow_eval)
        self.on = on
        self.frozen: set[str] = set()
        self.problems: list[str] = []
        self._reported: set[tuple[str, str]] = set()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.frozen = {name for name, m in pl_module.named_modules() if name and not m.training} | self.allow_eval

    def _is_frozen(self, name: str) -> bool:
        return any(name == f or name.startswith(f + ".") for f in self.frozen)

    def _report(self, trainer, phase: str, names: list[str], problem: str) -> None:
        new = [n for n in names if (phase, n) not in self._reported]
        if not new:
            return
        self._reported.update((phase, n) for n in new)
        shown = ", ".join(new[:5]) + (" ..." if len(new) > 5 else "")
        message = f"modeguard: {problem} during {phase}: {shown}"
        self.problems.append(message)
        if trainer.logger is not None:
            trainer.logger.log_metrics({"modeguard/mode_problems": float(len(self.problems))}, step=trainer.global_step)
        if self.on == "raise":
            raise ModeError(message)
        rank_zero_warn(message)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        stuck = [
            name or "<root>" for name, m in pl_module.named_modules()
            if not m.training and not (name and self._is_frozen(name))
        ]
        if stuck:
            self._report(
                trainer, "training", _outermost(stuck),
                "module(s) in eval mode that were in training mode at fit start (left in eval by "
                "validation code or a callback?)",
            )

    def _check_eval(self, trainer, pl_module, phase: str) -> None:
        training = [name or "<root>" for name, m in pl_module.named_modules() if m.training]
        if training:
            self._report(trainer, phase, _outermost(training), "module(s) in training mode")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check_eval(trainer, pl_module, "validation")

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check_eval(trainer, pl_module, "test")

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._check_eval(trainer, pl_module, "predict")


def _outermost(names: list[str]) -> list[str]:
    return [n for n in names if not any(n != o and (o == "<root>" or n.startswith(o + ".")) for o in names)]
