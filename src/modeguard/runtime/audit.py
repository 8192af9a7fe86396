"""`audit(model, example_input)`: how a live model depends on train/eval mode, without changing it."""

from __future__ import annotations

import inspect
import math
from contextlib import nullcontext
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import torch
from torch import nn

from modeguard.errors import InputError, ModelCallError
from modeguard.findings import Finding, Severity
from modeguard.runtime import batchnorm_health as bnh
from modeguard.runtime.compare import (
    compare_outputs,
    fingerprint_difference,
    fingerprints_match,
    leaf_difference,
    tolerance,
    why_not_comparable,
    worst,
)
from modeguard.runtime.flags import FlagReads, is_user_defined, watching_flags
from modeguard.runtime.inventory import DROPOUT_TYPES, ModeSensitive, mode_sensitive_modules, reads_training_flag
from modeguard.runtime.recorder import PassRecorder, frozen_copy, output_print, shared_objects
from modeguard.runtime.report import AuditReport, ModuleDivergence
from modeguard.runtime.reuse import ChildCalls
from modeguard.runtime.state import Snapshot, named_modules, parameters_and_buffers, preserved, set_mode
from modeguard.runtime.structure import mode_state_findings, unreached_modules
from modeguard.runtime.trees import batch_size, call_model, leaves, sample_of, take_sample, to_device

SINGLE_VALUE_ERROR = "Expected more than 1 value per channel when training"
# Train-vs-eval disagreement that means the eval predictions differ in kind, not in detail
# (rel is symmetric, in [0, 2]: above 1 the two outputs point in opposite directions).
TOP1_AGREEMENT_LIMIT = 0.5
REL_DIFF_LIMIT = 1.0
DATA_DEPENDENT = {"MG206", "MG211"}  # meaningless on random input
SAMPLE_SEED_OFFSET = 1  # samples alone run under another seed than the batch: randomness shows
TARGET_WORDS = ("target", "label")


@dataclass
class AuditInput:
    """What the audit runs on: the first batch's model input, its targets (used in training-mode
    passes), further batches (for BatchNorm health) and how the input came about."""

    example: Any
    targets: Any = None
    more: list[Any] = field(default_factory=list)
    description: str = "the example input"
    random: bool = False
    targets_from_data: bool = False  # dropped when forward() takes no targets (a classifier)


def audit(
    model: nn.Module,
    data: Any = None,
    *,
    targets: Any = None,
    max_batches: int = 4,
    random_input: bool = False,
    seed: int = 0,
    batch_dim: int = 0,
    max_samples: int = 1,
    ignore: Iterable[str] = (),
    name: str | None = None,
) -> "AuditReport":
    """Explain how `model`'s predictions depend on train/eval mode.

    `data` is one example input (a tensor, a tuple of positional arguments or a dict of keyword
    arguments), or real data: a DataLoader or any other iterable of batches, of which the first
    `max_batches` are used (a batch is a tensor, a dict of keyword arguments, or a tuple
    `(input, target, ...)`). Without `data` the audit runs on random input of the model's usual
    shape and leaves out the findings that depend on the data; `random_input=True` says that a
    given example is such noise too. `targets` are passed to the training-mode passes (after the
    positional inputs, or merged into a dict input): detection models need them in training.
    `batch_dim` is where samples are stacked (1 for sequence-first inputs); up to `max_samples`
    of them are each compared alone against the batch. The model is left bit-for-bit as it was:
    parameters, buffers, tensor attributes, every submodule's mode, `requires_grad`, hooks and
    the RNG states are restored.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"audit() needs a torch.nn.Module, got {type(model).__name__}")
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in parameters_and_buffers(model)[0]):
        raise InputError(
            "the model has uninitialized lazy modules; run one forward pass before auditing"
        )
    if batch_dim < 0:
        raise InputError(f"batch_dim must be 0 or more (the input's batch dimension), got {batch_dim}")
    if max_batches < 1:
        raise InputError(f"max_batches must be at least 1, got {max_batches}")
    device, dtype = _device_and_dtype(model)
    with preserved(model) as snapshot, torch.no_grad():
        inputs = prepare_input(model, data, targets, max_batches, random_input, seed)
        inputs.example = to_device(inputs.example, device, dtype)
        inputs.targets = to_device(inputs.targets, device, dtype)
        inputs.more = [to_device(batch, device, dtype) for batch in inputs.more]
        if inputs.targets is not None and not takes_targets(model, inputs.example, inputs.targets):
            if not inputs.targets_from_data:
                raise InputError(f"{type(model).__name__}.forward() takes no targets argument")
            inputs.targets = None
        auditor = _Auditor(model, inputs, seed, batch_dim, max_samples, dtype, snapshot)
        report = auditor.run(name or type(model).__name__, str(device), str(dtype).removeprefix("torch."))
    ignored = {code.upper() for code in ignore}
    report.findings = [f for f in report.findings if not any(f.code.startswith(c) for c in ignored)]
    return report


def prepare_input(model, data, targets, max_batches, random_input, seed) -> AuditInput:
    if data is None:
        from modeguard.runtime.loading import default_input_shape

        shape = default_input_shape(model)
        if shape is None:
            raise InputError(f"no input given and {type(model).__name__} has no known input shape: pass one")
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        return AuditInput(noise, targets, description=_random_description(shape), random=True)
    if not is_data_source(data):
        if random_input:
            return AuditInput(data, targets, description=_random_description(_shape_of(data)), random=True)
        return AuditInput(data, targets)
    batches = []
    for batch in data:
        batches.append(split_batch(batch))
        if len(batches) == max_batches:
            break
    if not batches:
        raise InputError("the data gave no batch")
    (example, first_targets), *rest = batches
    return AuditInput(
        example,
        first_targets if targets is None else targets,
        [example for example, _ in rest],
        f"real data: {len(batches)} batch(es) from {type(data).__name__}",
        targets_from_data=targets is None,
    )


def takes_targets(model: nn.Module, example: Any, targets: Any) -> bool:
    """Whether forward() accepts the example with the targets added (a detector does, a
    classifier does not); True when its signature cannot be read."""
    call = with_targets(example, targets)
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return True
    args, kwargs = (((), call) if isinstance(call, dict) else (call, {}))
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def is_data_source(data: Any) -> bool:
    """A DataLoader, generator or other iterable of batches, as opposed to one example input."""
    if isinstance(data, (torch.Tensor, tuple, list, dict, str, bytes)):
        return False
    return isinstance(data, torch.utils.data.DataLoader) or isinstance(data, Iterable)


def split_batch(batch: Any) -> tuple[Any, Any]:
    """(model input, targets) of a batch: a tensor or a dict is all input; a tuple or list is
    `(input, target, ...)`, its input passed as one argument (a list of images stays a list)."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise InputError("the data gave an empty batch")
        first = batch[0]
        example = first if isinstance(first, dict) else (first,)
        return example, batch[1] if len(batch) > 1 else None
    return batch, None


def with_targets(example: Any, targets: Any) -> Any:
    """The example with targets added, the way training-mode passes get them."""
    if targets is None:
        return example
    if isinstance(example, dict):
        if not isinstance(targets, dict):
            raise InputError("with a dict (keyword) input, targets must be a dict of keyword arguments too")
        return {**example, **targets}
    if isinstance(example, tuple):
        return (*example, targets)
    return (example, targets)


def _random_description(shape) -> str:
    return (
        f"random input (torch.randn{'' if shape is None else ' ' + str(list(shape))}): findings "
        "that depend on the data (MG206, MG211) and BatchNorm statistics' shift from it are "
        "left out; audit real data to get them"
    )


def _shape_of(example: Any):
    tensors = [t for _, t in leaves(example, "input")]
    return tuple(tensors[0].shape) if len(tensors) == 1 else None


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    for tensor in chain(model.parameters(), model.buffers()):  # lazily: the first one decides
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), None


class _Auditor:
    def __init__(self, model, inputs: AuditInput, seed, batch_dim, max_samples, dtype, snapshot: Snapshot):
        self.model = model
        self.inputs = inputs
        self.x = inputs.example
        self.seed = seed
        self.batch_dim = batch_dim
        self.max_samples = max_samples
        self.rtol = tolerance(dtype or torch.float32)
        self.findings: list[Finding] = []
        self.snapshot = snapshot
        self.attributes = snapshot.attributes
        self._shared: dict[int, Any] | None = None
        self.reuse: ChildCalls | None = None
        self.batchnorm_layers: list[tuple[str, nn.Module]] = []
        self.module_order: dict[str, int] = {}
        self.modules_by_name: dict[str, nn.Module] = {"<root>": model}
        self.first_alone: dict[str, torch.Tensor] | Exception | None = None

    @property
    def shared(self) -> dict[int, Any]:
        """The model's modules, parameters and buffers, which copies of captured inputs share:
        looked up only when some module's input is captured."""
        if self._shared is None:
            self._shared = shared_objects(self.model, self.snapshot.modules)
        return self._shared

    def add(self, code, severity, message, fix="", module=None, **data) -> None:
        self.findings.append(Finding(code, Severity(severity), message, fix, module, data=data))

    def module_named(self, name: str) -> nn.Module:
        return self.modules_by_name[name] if name in self.modules_by_name else self.model.get_submodule(name)

    def prepare(self, training: bool, seed_offset: int = 0) -> None:
        """The captured state before a pass: modes, seed, and any hidden state kept on `self`."""
        set_mode(self.model, training)  # model.train(training) at a fraction of its cost
        self.attributes.restore()
        _seed(self.seed + seed_offset)

    def forward(self, training: bool, recorder: PassRecorder | None = None, seed_offset: int = 0, example=None):
        """One pass from the captured state."""
        self.prepare(training, seed_offset)
        return self.call(recorder, example)

    def call(self, recorder: PassRecorder | None = None, example=None):
        example = self.x if example is None else example
        if recorder is None:
            return call_model(self.model, example)
        with recorder.recording():
            return call_model(self.model, example)

    def run(self, name: str, device: str, dtype: str) -> AuditReport:
        model = self.model
        report = AuditReport(name, device, dtype, model.training)
        report.input = self.inputs.description
        report.random_input = self.inputs.random
        walked = named_modules(model)  # walked once for the whole audit
        self.findings.extend(mode_state_findings(model, walked))
        self.batchnorm_layers = bnh.batchnorm_layers(model, walked)
        batchnorms = {name for name, _ in self.batchnorm_layers}
        known = {item.name: item for item in mode_sensitive_modules(model, walked) if item.kind != "custom"}
        modules = [(name or "<root>", m) for name, m in walked]
        self.modules_by_name = dict(modules)
        self.module_order = {name: i for i, (name, _) in enumerate(modules)}
        # The eval pass captures the inputs of torch's known layers and of the user-defined
        # modules that read their own flag, for replays. Which those are, the first sample alone
        # tells: it runs first, its flag reads watched. Without it (a batch of one, or a sample
        # that raises alone), every class whose code mentions `training` is captured.
        indices, size, _ = self.sample_indices()
        self.first_alone = None
        reads_alone = None
        if indices:
            self.prepare(False, SAMPLE_SEED_OFFSET)  # outside the watch: HF's train() reads the flag
            with watching_flags(model, skip=batchnorms, named=walked) as reads_alone:
                self.first_alone = self.output_alone(indices[0], size)
        if reads_alone is not None and not isinstance(self.first_alone, Exception):
            may_read = set(reads_alone.lines) | set(reads_alone.unwatched)
        else:
            may_read = {name for name, m in modules if is_user_defined(m) and reads_training_flag(type(m))}
        capture = (set(known) | may_read) - batchnorms
        first = PassRecorder(
            model, capture_inputs=capture, channel_stats=batchnorms, only=batchnorms | capture,
            shared=self.shared if capture else {}, named=walked,
        )
        # Replays reuse what their children computed in this pass (see reuse.py); with nothing
        # captured there is no replay to serve.
        self.reuse = ChildCalls(
            model, [self.module_named(n) for n in capture], self.snapshot.tensors,
            self.snapshot.stateful_modules(), self.shared,
            descend=_takes_targets_argument if self.inputs.targets is not None else lambda child: False,
        ) if capture else None
        try:
            # Prepared outside the watch: a model's own train() (Hugging Face's reads the flag)
            # is the audit's call, not a read in forward.
            self.prepare(False)
            with watching_flags(model, skip=batchnorms, named=walked) as reads, (
                self.reuse.recording() if self.reuse else nullcontext()
            ):
                eval_out = self.eval_out = self.call(first)
        except Exception as eval_exc:  # noqa: BLE001 - the model's own error, reported
            self.eval_failed(eval_exc, report)
            report.findings = self.findings
            return report
        late = (set(reads.lines) | set(reads.unwatched)) - capture - batchnorms
        if late:  # read in the batch, not alone (or through code outside the class): one more pass
            more = PassRecorder(model, capture_inputs=late, only=late, shared=self.shared)
            self.forward(False, more)
            first.captured.update(more.captured)
            first.calls.update({name: more.calls[name] for name in more.captured})

        self.check_single_value_batchnorms(first, report.training)
        self.check_determinism_and_batch_independence(eval_out, report)
        # The running statistics' shift from noise says nothing about the data (as MG206).
        self.check_batchnorm_health({} if self.inputs.random else self.channel_stats(first, batchnorms), report)
        set_mode(model, False)  # each replay switches one module's own flag; the rest stays in eval
        self.attribute_known_layers(known, first, report)
        readers = [
            name for name, _ in modules
            if name in first.captured and name not in known and (reads.read(name) or name in reads.unwatched)
        ]
        # The training pass fingerprints the modules that read their own flag: one that saw the
        # eval pass's input and gave its output with every flag on needs no replay.
        train_record = PassRecorder(model, only=set(readers), fingerprinted=set(readers))
        train_out, train_exc = self.training_pass(train_record)
        replayed = [name for name in readers if not self.same_in_training(name, first, train_record, train_exc)]
        if replayed:
            # The training pass updated BatchNorm buffers (and any state kept on modules) that
            # the replays would otherwise run with.
            self.snapshot.tensors.restore()
            self.attributes.restore()
            set_mode(model, False)
            self.attribute_readers(replayed, reads, first, report)
        self.reuse = None  # what the replays reused
        self.compare_train_eval(eval_out, train_out, train_exc, report)
        report.mode_sensitive.sort(key=lambda item: self.module_order[item.name])
        report.divergence.sort(key=lambda d: -(d.rel if d.rel is not None else math.inf))
        self.check_handed_over_in_training(report)
        if self.inputs.random:
            self.findings = [f for f in self.findings if f.code not in DATA_DEPENDENT]
        report.findings = self.findings
        return report

    def channel_stats(self, first: PassRecorder, batchnorms: set[str]) -> dict:
        """BatchNorm input statistics over every batch: the first pass's, plus one eval pass
        per further batch of real data."""
        stats = dict(first.channel_stats)
        for example in self.inputs.more:
            recorder = PassRecorder(self.model, channel_stats=batchnorms, only=batchnorms)
            self.forward(False, recorder, example=example)
            for name, observed in recorder.channel_stats.items():
                stats[name] = stats[name].merged(observed) if name in stats else observed
        return stats

    # -- mode state -----------------------------------------------------------------------
    def check_handed_over_in_training(self, report: AuditReport) -> None:
        """MG212, only when the output was measured to depend on the mode."""
        if not report.training:
            return
        measured = [
            d for d in report.divergence if d.error or d.rel is None or d.rel > self.rtol
        ]
        overall = worst(report.train_vs_eval)
        if overall is not None and not report.train_vs_eval_note:
            if overall.rel <= self.rtol:
                return  # layers may differ, the predictions do not (convnext's 1e-6 layer scale)
        elif not measured:
            return
        kinds = sorted({d.kind for d in measured})
        effect = f"rel diff {overall.rel:.3g} between the modes" if overall else "measured layer by layer"
        self.add(
            "MG212",
            "warning",
            "the model was handed over in training mode and its predictions depend on the mode "
            f"(here: {effect}" + (f"; from {', '.join(kinds)} layers" if kinds else "") + ")",
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
            self.check_batchnorm_health({}, report)
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
        for name, bn in self.batchnorm_layers:
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

    def check_determinism_and_batch_independence(self, eval_out, report: AuditReport) -> None:
        """One sample alone, under another seed, against the batch: when it matches, the model
        is deterministic and batch-independent in eval for one extra pass of one sample. Else
        a second full pass under that seed tells randomness from samples mixing."""
        status, index, detail = self.compare_sample_alone(eval_out)
        if status == "same":
            report.deterministic = report.batch_independent = True
            return
        size = batch_size(self.x, self.batch_dim)
        # The second pass is recorded for that sample: when it proves the model deterministic,
        # it is also the batched pass that finding where samples mix compares with.
        batched = PassRecorder(self.model, sample=(index, size, self.batch_dim)) if status == "differs" else None
        self.check_determinism(eval_out, self.forward(False, batched, seed_offset=SAMPLE_SEED_OFFSET), report)
        if not report.deterministic:
            return
        if status == "untested":
            report.not_tested["batch_independent"] = detail
            return
        if self.blame_batch_mixing(batched, index, size, detail):
            report.batch_independent = False
        else:
            report.not_tested["batch_independent"] = (
                f"sample {index} alone {detail.removeprefix('gives ')}, but every module's output "
                "matches within float error: the difference comes from discrete steps after them "
                "(sorting, NMS, thresholds) amplifying float noise"
            )

    def check_determinism(self, eval_out, eval_out2, report: AuditReport) -> None:
        diffs = [d for d in compare_outputs(eval_out, eval_out2) if not d.comparable or d.rel > self.rtol]
        report.deterministic = not diffs
        if report.deterministic:
            return
        worst_rel = max((d.rel for d in diffs if d.comparable), default=None)
        figure = f"rel diff {worst_rel:.3g}" if worst_rel is not None else diffs[0].not_comparable
        # Rare path: two fully recorded passes to find where the randomness enters.
        first, second = PassRecorder(self.model), PassRecorder(self.model)
        self.forward(False, first)
        self.forward(False, second, seed_offset=1)
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
                f"two eval-mode passes with different seeds differ ({figure}); {where}{cause}",
                fix,
                source,
                rel_diff=worst_rel,
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
            outputs = []
            for offset in (0, 1):
                args, kwargs = frozen_copy(recorder.captured[name], recorder.shared)
                _seed(self.seed + offset)
                outputs.append(module(*args, **kwargs))
            if any(not d.comparable or d.rel > self.rtol for d in compare_outputs(*outputs)):
                random_ones.append(name)
        return _innermost(random_ones)

    def sample_indices(self) -> tuple[list[int], int | None, str | None]:
        """The samples compared alone against the batch, the batch size, and why none is."""
        dim = self.batch_dim
        size = batch_size(self.x, dim)
        if size is None or size < 2:
            reason = (
                f"the input has no batch of two or more along dim {dim}"
                if size is not None or any(t.dim() > dim for _, t in leaves(self.x, "input"))
                else f"no input tensor has a dimension {dim} (--batch-dim)"
            )
            return [], size, reason
        count = min(size, self.max_samples)
        # The last sample first: a statistic taken across the batch changes every sample.
        return sorted({size - 1 - round(i * (size - 1) / max(count - 1, 1)) for i in range(count)}), size, None

    def output_alone(self, index: int, size: int) -> dict[str, torch.Tensor] | Exception:
        """The model's output leaves for one sample alone (from the prepared state), or what it raised."""
        try:
            return dict(leaves(call_model(self.model, take_sample(self.x, index, size, self.batch_dim))))
        except Exception as exc:  # noqa: BLE001 - a sample that fails alone is the finding
            return exc

    def compare_sample_alone(self, eval_out) -> tuple[str, int | None, str | None]:
        """("same" | "differs" | "untested", sample index, symptom or reason)."""
        indices, size, reason = self.sample_indices()
        if not indices:
            return "untested", None, reason
        compared = 0
        for index in indices:
            if index == indices[0] and self.first_alone is not None:
                alone = self.first_alone  # run before the eval pass
            else:
                self.prepare(False, SAMPLE_SEED_OFFSET)
                alone = self.output_alone(index, size)
            if isinstance(alone, Exception):
                return "differs", index, f"raises alone ({_one_line(alone)})"
            diffs = [
                leaf_difference(path, sample, alone[path])
                for path, sample in per_sample_leaves(eval_out, index, size, self.batch_dim).items()
                if path in alone
            ]
            diffs = [d for d in diffs if d.comparable]
            compared += len(diffs)
            worst_rel = max((d.rel for d in diffs), default=0.0)
            if worst_rel > self.rtol * 10:
                return "differs", index, f"gives a different output alone (rel diff {worst_rel:.3g})"
        if not compared:
            return "untested", None, f"no output tensor could be matched to a sample along dim {self.batch_dim}"
        return "same", None, None

    def blame_batch_mixing(self, batched: PassRecorder, index: int, size: int, symptom: str) -> bool:
        """MG202 for the modules where samples start to mix, from the batched pass `batched`
        (recorded for sample `index`); False (nothing reported) when a sample alone returns but
        no module's output changes beyond float error."""
        alone = PassRecorder(self.model)
        set_mode(self.model, False)
        self.attributes.restore()
        try:
            with alone.recording():
                call_model(self.model, take_sample(self.x, index, size, self.batch_dim))
            sources = _sources_of_change(batched, alone, self.rtol * 100)
            if not sources:
                return False
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
        return True

    def check_batchnorm_health(self, observed: dict, report: AuditReport) -> None:
        report.batchnorm.extend(bnh.healths_of(self.batchnorm_layers, observed))
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
                    f"running statistics do not match the {'data' if self.inputs.more else 'example input'}: mean shift "
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

    def training_pass(self, recorder: PassRecorder) -> tuple[Any, Exception | None]:
        """The whole model in training mode (with the targets): its output, or what it raised."""
        try:
            return self.forward(True, recorder, example=with_targets(self.x, self.inputs.targets)), None
        except Exception as exc:  # noqa: BLE001 - reported by compare_train_eval
            return None, exc

    def same_in_training(self, name: str, first: PassRecorder, train_record: PassRecorder, train_exc) -> bool:
        """Whether the module got the eval pass's input in the training pass and gave the eval
        pass's output: with every flag on, so its own flag alone changes nothing either."""
        eval_call, train_call = first.calls.get(name), train_record.calls.get(name)
        if train_exc is not None or eval_call is None or train_call is None:
            return False
        if eval_call.output_print is None or train_call.output_print is None or train_call.input_print is None:
            return False
        eval_input = output_print(first.captured[name])
        return (
            eval_input is not None
            and fingerprints_match(eval_input, train_call.input_print, self.rtol)
            and fingerprints_match(eval_call.output_print, train_call.output_print, self.rtol)
        )

    def compare_train_eval(self, eval_out, train_out, exc: Exception | None, report: AuditReport) -> None:
        targets = self.inputs.targets
        if exc is not None:
            if SINGLE_VALUE_ERROR in str(exc):
                if "MG208" not in {f.code for f in self.findings}:
                    self.add("MG208", "error" if report.training else "warning",
                             f"training mode raises: {_one_line(exc)}",
                             "use batches of >= 2 in training or eval mode for single samples")
            elif targets is None and _needs_targets(str(exc)):
                report.train_vs_eval_note = (
                    f"not compared: training mode needs targets ({_one_line(exc)}); pass "
                    "targets= or data that yields (input, target)"
                )
            else:
                self.add(
                    "MG209",
                    "error",
                    f"the model raises in training mode but not in eval mode: {_one_line(exc)}",
                    "look for code that only runs when self.training is True",
                )
            return
        report.train_vs_eval = compare_outputs(eval_out, train_out)
        unrelated = why_not_comparable(eval_out, train_out)
        if unrelated:
            report.train_vs_eval_note = f"not comparable: {unrelated}"
            return
        primary = next((d for d in report.train_vs_eval if d.comparable), None)
        if primary is None:
            report.train_vs_eval_note = f"not comparable: {report.train_vs_eval[0].not_comparable}"
            return
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

    def batchnorm_divergences(self, known: dict, observed: dict) -> dict[str, ModuleDivergence]:
        """The closed-form divergence of every known BatchNorm with observed input statistics."""
        rows = {}
        computed = []
        for name, stats in observed.items():
            item = known.get(name)
            if item is None:
                continue
            if stats.count < 2:
                rows[name] = ModuleDivergence(name, item.kind, None, None, f"raises in training: {SINGLE_VALUE_ERROR}")
            else:
                computed.append((name, item))
        differences = bnh.mode_divergences([(self.module_named(name), observed[name]) for name, _ in computed])
        for (name, item), (max_abs, rel) in zip(computed, differences):
            rows[name] = ModuleDivergence(name, item.kind, max_abs, rel)
        return rows

    def replayed_divergence(self, name, kind, module, captured, call) -> ModuleDivergence:
        """Replay the module on a private copy of its captured input (caches included) with only
        its own flag in training mode, and compare with the eval pass's fingerprint of its output
        (up to 4096 evenly spaced values per tensor, all of a small one). An eval replay runs
        only when the two differ in structure, to say why they are not comparable."""
        outputs = {}
        try:
            for training in (True, False):
                if not training and module is self.model:
                    outputs[False] = self.eval_out  # the root's eval replay is the first pass
                    break
                # A private copy: the module may change its arguments (a dropout in place, a cache).
                args, kwargs = captured if _leaves_arguments_alone(module) else frozen_copy(captured, self.shared)
                if training and module is self.model and self.inputs.targets is not None:
                    args, kwargs = _with_call_targets(args, kwargs, self.inputs.targets)
                module.training = training  # noqa: MG104 - this module's own flag, on purpose
                _seed(self.seed)  # the seed of the pass that captured the input
                with self.reuse.reusing(module) if self.reuse else nullcontext():
                    outputs[training] = module(*args, **kwargs)
                if training and call.output_print is not None:
                    sampled = output_print(outputs[True])
                    if sampled is not None and sampled.shape == call.output_print.shape:
                        max_abs, rel = fingerprint_difference(call.output_print, sampled)
                        return ModuleDivergence(name, kind, max_abs, rel)
        except Exception as exc:  # noqa: BLE001 - reported as this module's divergence
            return ModuleDivergence(name, kind, None, None, f"raises in training: {_one_line(exc)}")
        finally:
            module.training = False  # noqa: MG104 - the audit runs in eval; modes restored at the end
        unrelated = why_not_comparable(outputs[False], outputs[True])
        if unrelated:
            return ModuleDivergence(name, kind, None, None, f"not comparable: {unrelated}")
        diffs = compare_outputs(outputs[False], outputs[True])
        largest = worst(diffs)
        if largest is None:
            reason = next((d.not_comparable for d in diffs if not d.comparable), None)
            if reason:
                return ModuleDivergence(name, kind, None, None, f"not comparable: {reason}")
            return ModuleDivergence(name, kind, 0.0, 0.0)
        return ModuleDivergence(name, kind, largest.max_abs, largest.rel)

    def attribute_known_layers(self, known: dict, first: PassRecorder, report: AuditReport) -> None:
        """The divergence rows of torch's known layers: BatchNorm by closed form, the others
        by replay."""
        closed_forms = self.batchnorm_divergences(known, first.channel_stats)
        for name, item in known.items():
            report.mode_sensitive.append(item)
            if name in closed_forms:
                report.divergence.append(closed_forms[name])
            elif name in first.captured:
                report.divergence.append(
                    self.replayed_divergence(name, item.kind, self.module_named(name), first.captured[name], first.calls[name])
                )

    def attribute_readers(self, names: list[str], reads: FlagReads, first: PassRecorder, report: AuditReport) -> None:
        """MG210 and a divergence row for each user-defined module (of `names`, which read their
        own flag) whose replay with only its own flag on changes its output."""
        for name in names:
            module = self.module_named(name)
            measured = self.replayed_divergence(name, "custom", module, first.captured[name], first.calls[name])
            if measured.error is None and measured.rel <= self.rtol:
                continue  # reads the flag, but switching it changes nothing here
            if _needs_targets(measured.error) and (self.inputs.targets is None or module is not self.model):
                continue  # training mode needs targets (only the root gets them): a property
            where = reads.where(name)
            report.mode_sensitive.append(
                ModeSensitive(
                    name,
                    "custom",
                    type(module).__name__,
                    "its own training flag changes its output" + (f" (read at {where})" if where else ""),
                )
            )
            report.divergence.append(measured)
            effect = measured.error or f"rel diff {measured.rel:.3g}"
            self.add(
                "MG210",
                "info",
                f"{type(module).__name__}'s output depends on its own training flag ({effect})"
                + (f": it reads self.training at {where}" if where else ""),
                "check that both branches are intended; see the divergence table for its effect",
                name,
            )


def per_sample_leaves(out: Any, index: int, size: int, dim: int) -> dict[str, torch.Tensor]:
    """The output tensors of sample `index`, under the paths they have when it runs alone: a
    slice of each batched tensor, or item `index` of a per-sample list (detections)."""
    if isinstance(out, list) and len(out) == size and dim == 0:
        return dict(leaves(out[index], "output[0]"))
    return {p: s for p, t in leaves(out) if (s := sample_of(t, index, size, dim)) is not None}


def _seed(seed: int) -> None:
    """torch.manual_seed without its per-call cost when CUDA is not initialized (it records a
    stack trace for a deferred CUDA seeding); CUDA devices in use are seeded too."""
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


def _leaves_arguments_alone(module: nn.Module) -> bool:
    """torch's dropout layers that do not work in place: replayed on the captured input itself."""
    return not is_user_defined(module) and isinstance(module, DROPOUT_TYPES) and not module.inplace


def _needs_targets(error: str | None) -> bool:
    return bool(error) and any(word in error.lower() for word in TARGET_WORDS)


def _takes_targets_argument(module: nn.Module) -> bool:
    """Whether forward() has a parameter named like targets or labels: the root's replay may
    hand it the targets (a detector's transform, RPN and ROI heads)."""
    try:
        names = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return any(word in name.lower() for name in names for word in TARGET_WORDS)


def _with_call_targets(args: tuple, kwargs: dict, targets: Any) -> tuple[tuple, dict]:
    if isinstance(targets, dict) and not args:
        return args, {**kwargs, **targets}
    return (*args, targets), kwargs


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
