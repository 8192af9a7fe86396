"""The audit's result: findings plus the measurements that explain them."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

from modeguard.findings import Finding, Severity, sort_findings
from modeguard.runtime.batchnorm_health import BatchNormHealth
from modeguard.runtime.compare import LeafDifference
from modeguard.runtime.inventory import ModeSensitive
from modeguard.runtime.rendering import Presentable, findings_table


@dataclass
class ModuleDivergence:
    """How much one module's own output changes when only it switches to training mode."""

    module: str
    kind: str
    max_abs: float | None
    rel: float | None
    error: str | None = None  # "raises in training: ..." or "not comparable: ..."; no figures then

    def to_dict(self) -> dict:
        return {
            "module": self.module,
            "kind": self.kind,
            "max_abs": self.max_abs,
            "rel": self.rel,
            "error": self.error,
        }


@dataclass
class AuditReport(Presentable):
    model: str
    device: str
    dtype: str
    training: bool
    findings: list[Finding] = field(default_factory=list)
    mode_sensitive: list[ModeSensitive] = field(default_factory=list)
    train_vs_eval: list[LeafDifference] = field(default_factory=list)
    divergence: list[ModuleDivergence] = field(default_factory=list)
    deterministic: bool | None = None
    batch_independent: bool | None = None
    batchnorm: list[BatchNormHealth] = field(default_factory=list)
    input: str = "the example input"  # what the audit ran on
    random_input: bool = False
    train_vs_eval_note: str | None = None  # why the outputs were not (fully) compared
    not_tested: dict[str, str] = field(default_factory=dict)  # check -> reason

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "training": self.training,
            "input": self.input,
            "random_input": self.random_input,
            "findings": [f.to_dict() for f in sort_findings(self.findings)],
            "mode_sensitive": [m.to_dict() for m in self.mode_sensitive],
            "train_vs_eval": [d.to_dict() for d in self.train_vs_eval],
            "train_vs_eval_note": self.train_vs_eval_note,
            "divergence": [d.to_dict() for d in self.divergence],
            "deterministic_in_eval": self.deterministic,
            "batch_independent_in_eval": self.batch_independent,
            "not_tested": self.not_tested,
            "batchnorm": [h.to_dict() for h in self.batchnorm],
        }

    def _repr_html_(self) -> str:
        from modeguard.runtime.html import render_fragment

        return render_fragment(self)

    def to_html(self) -> str:
        """A self-contained HTML document (no network, no scripts)."""
        from modeguard.runtime.html import render_html

        return render_html(self)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        mode = "training" if self.training else "eval"
        yield Text.assemble(
            ("modeguard audit ", "bold"),
            (self.model, "bold magenta"),
            f"  ({self.device}, {self.dtype}, handed over in {mode} mode)",
        )
        yield Text(f"input: {self.input}", style="yellow" if self.random_input else "")
        yield Text(
            f"{len(self.mode_sensitive)} mode-sensitive module(s); "
            f"deterministic in eval: {_yes_no(self.deterministic)}; "
            f"batch-independent in eval: "
            f"{_yes_no(self.batch_independent, self.not_tested.get('batch_independent'))}"
        )
        if self.train_vs_eval_note:
            yield Text(f"training vs eval output: {self.train_vs_eval_note}")
        if self.train_vs_eval:
            yield _train_vs_eval_table(self.train_vs_eval)
        if self.divergence:
            yield _divergence_table(self.divergence)
        if self.batchnorm:
            yield batchnorm_table(self.batchnorm)
        yield findings_table(self.findings)


def _yes_no(value: bool | None, reason: str | None = None) -> str:
    if value is None:
        return f"not tested ({reason})" if reason else "not tested"
    return "yes" if value else "NO"


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return "inf" if x == float("inf") else f"{x:.3g}"


def _train_vs_eval_table(diffs: list[LeafDifference]) -> Table:
    table = Table(title="Output: training vs eval mode", title_justify="left")
    for column in ("output", "max abs diff", "rel diff", "top-1 agreement"):
        table.add_column(column)
    for d in diffs[:10]:
        top1 = "-" if d.top1_agreement is None else f"{d.top1_agreement:.0%}"
        rel = _fmt(d.rel) if d.comparable else f"not comparable: {d.not_comparable}"
        table.add_row(d.path, _fmt(d.max_abs), rel, top1)
    return table


def _divergence_table(divergence: list[ModuleDivergence], limit: int = 12) -> Table:
    table = Table(
        title="Which modules make the difference (each alone in training mode, same input)",
        title_justify="left",
    )
    for column in ("module", "kind", "rel diff", "max abs diff"):
        table.add_column(column)
    for d in divergence[:limit]:
        rel = d.error or _fmt(d.rel)
        table.add_row(d.module, d.kind, rel, _fmt(d.max_abs))
    if len(divergence) > limit:
        table.caption = f"... and {len(divergence) - limit} more"
    return table


def batchnorm_table(health: list[BatchNormHealth], limit: int = 12) -> Table:
    table = Table(title="BatchNorm health", title_justify="left")
    for column in ("layer", "momentum", "tracked batches", "calibrated", "mean shift", "var ratio"):
        table.add_column(column)
    shown = sorted(health, key=lambda h: -(h.mean_shift or 0))[:limit]
    for h in shown:
        calibrated = "no stats" if not h.has_running_stats else (
            "NEVER" if h.never_calibrated else "yes"
        )
        table.add_row(
            h.module,
            _fmt(h.momentum) if h.momentum is not None else "cumulative",
            "-" if h.tracked_batches is None else str(h.tracked_batches),
            calibrated,
            _fmt(h.mean_shift),
            _fmt(h.var_ratio),
        )
    if len(health) > limit:
        table.caption = f"{limit} of {len(health)} layers, largest shift first"
    return table
