"""A self-contained HTML audit report: no network, no scripts; the chart is inline SVG."""

from __future__ import annotations

import math
from html import escape

from modeguard.runtime.rendering import group_findings
from modeguard.runtime.report import AuditReport

SEVERITY_COLOR = {"error": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
BAR_COLOR = "#d81b60"
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px}
.meta{color:#555}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}.sev{font-weight:600}.fix{color:#555;font-size:12px}
.ok{color:#2e7d32}.bad{color:#c62828;font-weight:600}svg text{font-size:12px;font-family:monospace}
"""


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _divergence_chart(report: AuditReport, limit: int = 25) -> str:
    rows = [d for d in report.divergence if d.error is None][:limit]
    if not rows:
        return "<p>No mode-sensitive module was called on this input.</p>"
    label_width, bar_width, row_height = 330, 520, 22
    top = max(d.rel for d in rows) or 1.0
    parts = [
        f'<svg id="divergence-chart" width="{label_width + bar_width + 90}" '
        f'height="{row_height * len(rows) + 10}" role="img" aria-label="per-module divergence">'
    ]
    for i, d in enumerate(rows):
        y = 5 + i * row_height
        width = max(1.0, bar_width * d.rel / top) if d.rel > 0 else 0.0
        parts.append(f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{escape(d.module[-40:])} ({d.kind})</text>')
        parts.append(f'<rect x="{label_width}" y="{y + 3}" width="{width:.1f}" height="{row_height - 6}" fill="{BAR_COLOR}"/>')
        parts.append(f'<text x="{label_width + width + 6:.1f}" y="{y + 15}">{_fmt(d.rel)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_fragment(report: AuditReport) -> str:
    mode = "training" if report.training else "eval"

    def yes_no(value):
        if value is None:
            return "not tested"
        return '<span class="ok">yes</span>' if value else '<span class="bad">NO</span>'

    findings = group_findings(report.findings)
    finding_rows = [
        [
            escape(group.first.code),
            f'<span class="sev" style="color:{SEVERITY_COLOR[group.first.severity.value]}">{group.first.severity.value}</span>',
            escape(group.where()),
            escape(group.message()) + (f'<div class="fix">fix: {escape(group.first.fix)}</div>' if group.first.fix else ""),
        ]
        for group in findings
    ]
    health_rows = [
        [
            escape(h.module), _fmt(h.momentum) if h.momentum is not None else "cumulative",
            _fmt(h.tracked_batches),
            "no stats" if not h.has_running_stats else ('<span class="bad">NEVER</span>' if h.never_calibrated else "yes"),
            _fmt(h.mean_shift), _fmt(h.var_ratio),
        ]
        for h in report.batchnorm
    ]
    output_rows = [
        [escape(d.path), _fmt(d.max_abs), _fmt(d.rel), "-" if d.top1_agreement is None else f"{d.top1_agreement:.0%}"]
        for d in report.train_vs_eval
    ]
    sections = [
        f"<h1>modeguard audit: {escape(report.model)}</h1>",
        f'<p class="meta">{escape(report.device)}, {escape(report.dtype)}, handed over in {mode} mode; '
        f"{len(report.mode_sensitive)} mode-sensitive module(s); deterministic in eval: "
        f"{yes_no(report.deterministic)}; batch-independent in eval: {yes_no(report.batch_independent)}</p>",
        f"<h2>Findings ({len(report.findings)})</h2>",
        _table(["code", "severity", "module", "message"], finding_rows) if findings else '<p class="ok">No findings.</p>',
        "<h2>Which modules make the difference</h2>",
        "<p class=\"meta\">Relative change of each module's own output when only it switches to training mode, same input.</p>",
        _divergence_chart(report),
    ]
    if output_rows:
        sections += ["<h2>Output: training vs eval mode</h2>", _table(["output", "max abs diff", "rel diff", "top-1 agreement"], output_rows)]
    if health_rows:
        sections += ["<h2>BatchNorm health</h2>", _table(["layer", "momentum", "tracked batches", "calibrated", "mean shift", "var ratio"], health_rows)]
    return f'<div class="modeguard-report"><style>{CSS}</style>{"".join(sections)}</div>'


def render_html(report: AuditReport) -> str:
    """A whole HTML document, self-contained."""
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<title>modeguard audit: {escape(report.model)}</title></head>"
        f"<body>{render_fragment(report)}</body></html>"
    )
