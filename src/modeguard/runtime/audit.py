"""`audit(model, example_input)`: how a live model depends on train/eval mode, without changing it."""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from modeguard.errors import InputError, ModelCallError
from modeguard.findings import Finding, Severity
from modeguard.runtime import batchnorm_health as bnh
from modeguard.runtime.compare import (
    compare_outputs,
    fingerprints_match,
    leaf_difference,
    tolerance,
)
from modeguard.runtime.inventory import ModeSensitive, mode_sensitive_modules
from modeguard.runtime.recorder import PassRecorder, output_print
from modeguard.runtime.report import AuditReport, ModuleDivergence
from modeguard.runtime.state import preserved
from modeguard.runtime.structure import mode_state_findings, unreached_modules
from modeguard.runtime.trees import batch_size, call_model, leaves, sample_of, take_sample, to_device

SINGLE_VALUE_ERROR = "Expected more than 1 value per channel when training"
# Train-vs-eval disagreement that means the eval predictions differ in kind, not in detail.
TOP1_AGREEMENT_LIMIT = 0.5
REL_DIFF_LIMIT = 1.0


def audit(
    model: nn.Module,
    example_input: Any,
    *,
    seed: int = 0,
    batch_dim: int = 0,
    max_samples: int = 4,
    ignore: Iterable[str] = (),
    name: str | None = None,
) -> "AuditReport":
    """Explain how `model`'s predictions depend on train/eval mode.

    `example_input` is a tensor, a tuple of positional arguments or a dict of keyword
    arguments; `batch_dim` is where its samples are stacked (1 for sequence-first inputs), and
    up to `max_samples` of them are each compared alone against the batch. The model is left bit-for-bit as it was: parameters, buffers, every
    submodule's mode, `requires_grad`, hooks and the RNG states are restored.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"audit() needs a torch.nn.Module, got {type(model).__name__}")
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
        raise InputError(
            "the model has uninitialized lazy modules; run one forward pass before auditing"
        )
    device, dtype = _device_and_dtype(model)
    example_input = to_device(example_input, device, dtype)
    auditor = _Auditor(model, example_input, seed, batch_dim, max_samples, dtype)
    with preserved(model), torch.no_grad():
        report = auditor.run(name or type(model).__name__, str(device), str(dtype).removeprefix("torch."))
    ignored = {code.upper() for code in ignore}
    report.findings = [f for f in report.findings if not any(f.code.startswith(c) for c in ignored)]
    return report


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), None


class _Auditor:
    def __init__(self, model, example_input, seed, batch_dim, max_samples, dtype):
        self.model = model
        self.x = example_input
        self.seed = seed
        self.batch_dim = batch_dim
        self.max_samples = max_samples
        self.rtol = tolerance(dtype or torch.float32)
        self.findings: list[Finding] = []

    def add(self, code, severity, message, fix="", module=None, **data) -> None:
        self.findings.append(Finding(code, Severity(severity), message, fix, module, data=data))

    def module_named(self, name: str) -> nn.Module:
        return self.model if name == "<root>" else self.model.get_submodule(name)

    def forward(self, training: bool, recorder: PassRecorder | None = None, seed_offset: int = 0):
        self.model.train(training)
        torch.manual_seed(self.seed + seed_offset)
        if recorder is None:
            return call_model(self.model, self.x)
        with recorder.recording():
            return call_model(self.model, self.x)

    def run(self, name: str, device: str, dtype: str) -> AuditReport:
        model = self.model
        report = AuditReport(name, device, dtype, model.training)
        report.mode_sensitive = mode_sensitive_modules(model)
        self.check_structure(report)
        sensitive_names = {m.name for m in report.mode_sensitive}

        batchnorms = {name for name, _ in bnh.batchnorm_layers(model)}
        first = PassRecorder(
            model, capture_inputs=sensitive_names - batchnorms, channel_stats=batchnorms
        )
        try:
            eval_out = self.forward(False, first)
        except Exception as eval_exc:  # noqa: BLE001 - the model's own error, reported
            self.eval_failed(eval_exc, report)
            report.findings = self.findings
            return report

        self.check_single_value_batchnorms(first, report.training)
        self.check_determinism(eval_out, first, report)
        if report.deterministic:
            self.check_batch_independence(eval_out, report)
        self.check_batchnorm_health(first, report)
        self.compare_train_eval(eval_out, report)
        self.attribute(report.mode_sensitive, first, report)
        report.findings = self.findings
        return report

    # -- mode state -----------------------------------------------------------------------
    def check_structure(self, report: AuditReport) -> None:
        self.findings.extend(mode_state_findings(self.model))
        for item in (m for m in report.mode_sensitive if m.kind == "custom"):
            self.add(
                "MG210",
                "info",
                f"{item.type_name} branches on self.training: its output depends on the mode",
                "check that both branches are intended; see the divergence table for its effect",
                item.name,
            )
        if report.training:
            self.add(
                "MG212",
                "warning",
                "the model was handed over in training mode: Dropout is random and BatchNorm "
                "normalizes with the statistics of each batch, so predictions depend on the batch",
                "call model.eval() before inference (modeguard.evaluating(model) restores modes)",
            )

    # -- passes ---------------------------------------------------------------------------
    def eval_failed(self, eval_exc: Exception, report: AuditReport) -> None:
        if SINGLE_VALUE_ERROR in str(eval_exc):
            self.add(
                "MG208",
                "error",
                f"even in eval mode a BatchNorm without running statistics raises on this input: "
                f"{_one_line(eval_exc)}",
                "construct BatchNorm with track_running_stats=True, or use GroupNorm/LayerNorm",
            )
            self.check_batchnorm_health(PassRecorder(self.model), report)
            return
        try:
            self.forward(True)
        except Exception as train_exc:  # noqa: BLE001
            raise ModelCallError(
                f"the model raised on the example input in both modes: {_one_line(eval_exc)}"
            ) from train_exc
        self.add(
            "MG209",
            "error",
            f"the model raises in eval mode but not in training mode: {_one_line(eval_exc)}",
            "look for code that only runs when self.training is False",
        )

    def check_single_value_batchnorms(self, first: PassRecorder, root_training: bool) -> None:
        for name, bn in bnh.batchnorm_layers(self.model):
            call = first.calls.get(name)
            if call is None or not call.input_shapes:
                continue
            shape = call.input_shapes[0]
            if len(shape) >= 2 and shape[0] * math.prod(shape[2:]) == 1:
                self.add(
                    "MG208",
                    "error" if root_training else "warning",
                    f"in training mode this {type(bn).__name__} sees one value per channel "
                    f"(input {list(shape)}) and raises '{SINGLE_VALUE_ERROR}': batch statistics "
                    "need at least two values",
                    "use eval mode for single-sample inference, batches of >= 2 in training "
                    "(drop_last=True), or modeguard.freeze_bn for this layer",
                    name,
                    input_shape=list(shape),
                )

    def check_determinism(self, eval_out, first: PassRecorder, report: AuditReport) -> None:
        second = PassRecorder(self.model)
        out2 = self.forward(False, second, seed_offset=1)
        diffs = [d for d in compare_outputs(eval_out, out2) if d.rel > self.rtol]
        report.deterministic = not diffs
        if report.deterministic:
            return
        worst = max(d.rel for d in diffs)
        changed = {
            name
            for name, call in first.calls.items()
            if name in second.calls
            and call.output_print is not None
            and second.calls[name].output_print is not None
            and not fingerprints_match(call.output_print, second.calls[name].output_print, self.rtol)
        }
        sources = self.random_modules(changed)
        unreached = {item.path: item for item in unreached_modules(self.model)}
        unreached_ids = {id(m) for item in unreached.values() for m in item.module.modules()}
        for source in sources or [None]:
            cause, fix = _randomness_cause(source, first.strays, unreached, unreached_ids)
            where = "randomness first appears in this module: " if source else "no single module could be blamed; "
            self.add(
                "MG201",
                "error",
                f"two eval-mode passes with different seeds differ (rel diff {worst:.3g}); "
                f"{where}{cause}",
                fix,
                source,
                rel_diff=worst,
            )

    def random_modules(self, candidates: set[str]) -> list[str]:
        """Innermost modules that give different outputs for the same input under two seeds."""
        recorder = PassRecorder(self.model, capture_inputs=candidates)
        self.forward(False, recorder)
        random_ones = []
        for name in candidates:
            if name not in recorder.captured:
                continue
            module = self.module_named(name)
            args, kwargs = recorder.captured[name]
            outputs = []
            for offset in (0, 1):
                torch.manual_seed(self.seed + offset)
                outputs.append(module(*args, **kwargs))
            if any(d.rel > self.rtol for d in compare_outputs(*outputs)):
                random_ones.append(name)
        return _innermost(random_ones)

    def check_batch_independence(self, eval_out, report: AuditReport) -> None:
        dim = self.batch_dim
        size = batch_size(self.x, dim)
        if size is None or size < 2:
            return
        indices = sorted({round(i * (size - 1) / max(self.max_samples - 1, 1)) for i in range(min(size, self.max_samples))})
        batched = dict(leaves(eval_out))
        for index in indices:
            self.model.eval()
            torch.manual_seed(self.seed)
            try:
                alone = dict(leaves(call_model(self.model, take_sample(self.x, index, size, dim))))
            except Exception as exc:  # noqa: BLE001 - a sample that fails alone is the finding
                report.batch_independent = False
                self.blame_batch_mixing(index, size, f"raises alone ({_one_line(exc)})")
                return
            worst = max(
                (
                    leaf_difference(p, sample, alone[p]).rel
                    for p, t in batched.items()
                    if p in alone and (sample := sample_of(t, index, size, dim)) is not None
                ),
                default=0.0,
            )
            if worst > self.rtol * 10:
                report.batch_independent = False
                self.blame_batch_mixing(index, size, f"gives a different output alone (rel diff {worst:.3g})")
                return
        report.batch_independent = True

    def blame_batch_mixing(self, index: int, size: int, symptom: str) -> None:
        batched = PassRecorder(self.model, sample=(index, size, self.batch_dim))
        self.forward(False, batched)
        alone = PassRecorder(self.model)
        self.model.eval()
        try:
            with alone.recording():
                call_model(self.model, take_sample(self.x, index, size, self.batch_dim))
            sources = _sources_of_change(batched, alone, self.rtol * 100)
        except Exception:  # noqa: BLE001 - blame the innermost module that did not return
            sources = _innermost([n for n, c in alone.calls.items() if c.output_print is None])
        for source in sources or [None]:
            self.add(
                "MG202",
                "error",
                f"in eval mode sample {index} of a batch of {size} {symptom}: samples of a batch "
                "influence each other" + (", from this module on" if source else ""),
                "BatchNorm without running statistics (track_running_stats=False) or any "
                "statistic taken across the batch mixes samples; use running statistics or a "
                "per-sample normalization (LayerNorm/GroupNorm)",
                source,
            )

    def check_batchnorm_health(self, first: PassRecorder, report: AuditReport) -> None:
        layers = bnh.batchnorm_layers(self.model)
        for name, bn in layers:
            report.batchnorm.append(bnh.health_of(name, bn, first.channel_stats.get(name)))
        uncalibrated = [h for h in report.batchnorm if h.never_calibrated]
        calibrated = [h for h in report.batchnorm if h.has_running_stats and not h.never_calibrated]
        for h in uncalibrated:
            # Some layers calibrated and others not is the strict=False / EMA-copy bug.
            self.add(
                "MG205",
                "error" if calibrated else "warning",
                "running statistics were never updated (num_batches_tracked 0, mean 0, var 1): "
                "eval mode normalizes with placeholder statistics"
                + (" while other BatchNorm layers are calibrated" if calibrated else ""),
                "load the BatchNorm buffers with the weights, or recalibrate on training data "
                "(modeguard.recalibrate_bn)",
                h.module,
            )
        for h in report.batchnorm:
            if h.shifted:
                self.add(
                    "MG206",
                    "warning",
                    f"running statistics do not match the example input: mean shift "
                    f"{h.mean_shift:.2f} running std, variance ratio {h.var_ratio:.2f} (median "
                    "over channels)",
                    "recalibrate on data like the data you predict on (modeguard.recalibrate_bn)",
                    h.module,
                    mean_shift=h.mean_shift,
                    var_ratio=h.var_ratio,
                )
            if not h.has_running_stats:
                self.add(
                    "MG207",
                    "warning",
                    "no running statistics (track_running_stats=False): eval mode normalizes "
                    "with the statistics of each batch, so predictions depend on the batch",
                    "construct it with track_running_stats=True, or use GroupNorm/LayerNorm",
                    h.module,
                )

    def compare_train_eval(self, eval_out, report: AuditReport) -> None:
        try:
            train_out = self.forward(True)
        except Exception as exc:  # noqa: BLE001
            if SINGLE_VALUE_ERROR in str(exc):
                if "MG208" not in {f.code for f in self.findings}:
                    self.add("MG208", "error" if report.training else "warning",
                             f"training mode raises: {_one_line(exc)}",
                             "use batches of >= 2 in training or eval mode for single samples")
            else:
                self.add(
                    "MG209",
                    "error",
                    f"the model raises in training mode but not in eval mode: {_one_line(exc)}",
                    "look for code that only runs when self.training is True",
                )
            return
        report.train_vs_eval = compare_outputs(eval_out, train_out)
        if not report.train_vs_eval:
            return
        primary = report.train_vs_eval[0]
        strong = (
            primary.top1_agreement is not None and primary.top1_agreement < TOP1_AGREEMENT_LIMIT
        ) or primary.rel > REL_DIFF_LIMIT
        if strong:
            agreement = (
                f", top-1 agreement {primary.top1_agreement:.0%}"
                if primary.top1_agreement is not None
                else ""
            )
            self.add(
                "MG211",
                "warning",
                f"training and eval mode predict very differently on this input (rel diff "
                f"{primary.rel:.3g}{agreement})",
                "see the divergence table: usually BatchNorm running statistics that do not "
                "match the data (recalibrate) or heavy dropout",
                rel_diff=primary.rel,
                top1_agreement=primary.top1_agreement,
            )
        if report.training:
            for f in self.findings:
                if f.code == "MG212":
                    f.message += f" (here: eval and training outputs differ by rel {primary.rel:.3g})"

    @staticmethod
    def batchnorm_divergence(item, bn, observed) -> ModuleDivergence:
        if observed.count < 2:
            return ModuleDivergence(item.name, item.kind, math.inf, math.inf, f"raises in training: {SINGLE_VALUE_ERROR}")
        max_abs, rel = bnh.mode_divergence(bn, observed)
        return ModuleDivergence(item.name, item.kind, max_abs, rel)

    def replayed_divergence(self, item, module, captured, call) -> ModuleDivergence:
        """Replay the module on its captured input with only its own flag in training mode.
        When the output matches the eval pass's fingerprint the mode changes nothing here and
        the eval replay is skipped (a model root that reads self.training costs one forward)."""
        args, kwargs = captured
        outputs = {}
        try:
            for training in (True, False):
                module.training = training  # noqa: MG104 - this module's own flag, on purpose
                torch.manual_seed(self.seed)
                outputs[training] = module(*args, **kwargs)
                if training and call.output_print is not None:
                    sampled = output_print(outputs[True])
                    if sampled is not None and fingerprints_match(call.output_print, sampled, self.rtol):
                        return ModuleDivergence(item.name, item.kind, 0.0, 0.0)
        except Exception as exc:  # noqa: BLE001 - reported as this module's divergence
            return ModuleDivergence(item.name, item.kind, math.inf, math.inf, _one_line(exc))
        finally:
            module.training = False  # noqa: MG104 - the audit runs in eval; modes restored at the end
        worst = max(compare_outputs(outputs[False], outputs[True]), key=lambda d: d.rel, default=None)
        if worst is None:
            return ModuleDivergence(item.name, item.kind, 0.0, 0.0)
        return ModuleDivergence(item.name, item.kind, worst.max_abs, worst.rel)

    def attribute(self, sensitive: list[ModeSensitive], first: PassRecorder, report: AuditReport) -> None:
        for item in sensitive:
            module = self.module_named(item.name)
            if item.name in first.channel_stats:
                report.divergence.append(self.batchnorm_divergence(item, module, first.channel_stats[item.name]))
                continue
            captured = first.captured.get(item.name)
            if captured is None:
                continue  # never called on this input
            report.divergence.append(self.replayed_divergence(item, module, captured, first.calls[item.name]))
        report.divergence.sort(key=lambda d: -d.rel)


def _randomness_cause(source, strays, unreached, unreached_ids) -> tuple[str, str]:
    """Why `source` is random in eval mode, and the fix: a layer built inside forward(),
    modules in a plain container, or a random op that ignores the mode."""
    built = sorted(
        {
            s.type_name
            for s in strays
            if s.inside == source and s.training and s.mode_sensitive and s.module_id not in unreached_ids
        }
    )
    if built:
        return (
            f"it constructs {', '.join(built)} inside forward(), in training mode, where model.eval() cannot reach",
            "create the layer in __init__ and call it in forward()",
        )
    listed = [p for p in unreached if source and (source == "<root>" or p.startswith(source + "."))]
    if listed:
        return (
            f"it calls modules kept in a plain container ({', '.join(listed)}) that model.eval() never reaches",
            "wrap the container in nn.ModuleList / nn.ModuleDict",
        )
    return (
        "a random op ignores the mode: F.dropout without training=self.training, "
        "scaled_dot_product_attention with dropout_p in eval, or torch.rand* in forward",
        "make it depend on self.training: F.dropout(x, p, self.training), dropout_p=p if self.training else 0.0",
    )


def _sources_of_change(a: PassRecorder, b: PassRecorder, rtol: float) -> list[str]:
    """Innermost modules whose input matched in both passes but whose output did not."""
    sources = []
    for name, call in a.calls.items():
        other = b.calls.get(name)
        if other is None or call.output_print is None or other.output_print is None:
            continue
        same_input = (
            call.input_print is None
            or other.input_print is not None
            and fingerprints_match(call.input_print, other.input_print, rtol)
        )
        if same_input and not fingerprints_match(call.output_print, other.output_print, rtol):
            sources.append(name)
    return _innermost(sources)


def _innermost(names: list[str]) -> list[str]:
    """Drop every module that has another listed module inside it."""
    def contains(outer: str, inner: str) -> bool:
        return outer != inner and (outer == "<root>" or inner.startswith(outer + "."))

    return sorted(n for n in names if not any(contains(n, other) for other in names))


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
