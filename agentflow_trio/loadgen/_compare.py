"""The HTML report's comparison with a baseline run (``--compare previous.json``).

`comparison` renders one table row per figure: the baseline's value, this run's, the
delta and its percentage, coloured better/worse by the figure's direction (changes under
1 % are not coloured). Streaming figures (time to first token, inter-token latency) are
compared when either run streamed events; a figure one run lacks shows as ``-``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = ["comparison"]

# (label, key, format, higher is better; None: not a quality, never coloured)
_COMPARED: Final[Sequence[tuple[str, str, str, bool | None]]] = (
    ("requests", "requests", "int", None),
    ("throughput (req/s)", "requests_per_s", "f1", True),
    ("mean ms", "mean_ms", "f2", False),
    ("p50 ms", "p50_ms", "f2", False),
    ("p95 ms", "p95_ms", "f2", False),
    ("p99 ms", "p99_ms", "f2", False),
    ("max ms", "max_ms", "f2", False),
    ("error rate %", "error_rate", "pct", False),
    ("CPU / request ms", "cpu_seconds_per_request", "ms", False),
    ("peak RSS MiB", "peak_rss_bytes", "mib", False),
)
_COMPARED_STREAMING: Final[Sequence[tuple[str, str, str, bool | None]]] = tuple(
    (f"{label} {p} ms", f"streaming.{kind}.{p}_ms", "f2", False)
    for label, kind in (("TTFT", "ttft"), ("ITL", "itl"))
    for p in ("p50", "p95", "p99")
)
"""Compared too when either run streamed events (a dotted key: a path in the JSON): time
to first token and inter-token latency, each at p50, p95 and p99 (lower is better)."""


def _figure(run: Mapping[str, Any], key: str) -> Any:
    value: Any = run
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _scaled(value: Any, fmt: str) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return {"pct": 100.0, "ms": 1e3, "mib": 1 / 2**20}.get(fmt, 1.0) * float(value)


def comparison(run: Mapping[str, Any], baseline: Mapping[str, Any]) -> str:
    """The ``<section id="comparison">`` of ``run`` against ``baseline`` (both a
    ``LoadReport.to_dict``)."""
    rows = []
    compared = _COMPARED
    if isinstance(run.get("streaming"), Mapping) or isinstance(baseline.get("streaming"), Mapping):
        compared = (*_COMPARED, *_COMPARED_STREAMING)
    for label, key, fmt, higher_better in compared:
        old, new = _scaled(_figure(baseline, key), fmt), _scaled(_figure(run, key), fmt)
        digits = 0 if fmt == "int" else 1 if fmt in ("f1", "mib") else 2 if fmt != "ms" else 3
        css, delta, ratio = "same", "-", "-"
        if old is not None and new is not None:
            change = new - old
            delta = f"{change:+,.{digits}f}"
            ratio = f"{change / old * 100:+.1f}%" if old else "-"
            significant = abs(change) > 1e-12 and (not old or abs(change / old) >= 0.01)
            if significant and higher_better is not None:
                css = "better" if (change > 0) == higher_better else "worse"
        rows.append(
            f'<tr class="{css}" data-metric="{key}"><th>{label}</th>'
            f"<td>{'-' if old is None else f'{old:,.{digits}f}'}</td>"
            f"<td>{'-' if new is None else f'{new:,.{digits}f}'}</td>"
            f'<td class="delta">{delta}</td><td class="delta">{ratio}</td></tr>'
        )
    head = "<tr><th>metric</th><th>baseline</th><th>this run</th><th>delta</th><th>%</th></tr>"
    note = html.escape(
        f"baseline: {baseline.get('command', '?')} run, {baseline.get('requests', '?')} requests"
        f", target {baseline.get('target', '?')}"
    )
    return (
        f'<section id="comparison"><h2>Comparison with the baseline run</h2><p>{note}. '
        '<span class="better">green: better</span>, <span class="worse">red: worse</span> '
        "(changes under 1% are not coloured).</p>"
        f'<table id="comparison-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
        "</table></section>"
    )
