"""The HTML report of a load run: one self-contained file, charts by plotly, works offline.

``agentcli benchmark|loadtest --report out.html`` writes it. The file holds the run's
configuration, a summary table (per stage and total), five plotly charts (throughput,
p50/p95/p99 latency, load target and requests in flight with the stages marked, the HDR
latency distribution on a log scale, errors by kind) and, with ``--compare previous.json``,
a table of deltas against that earlier run coloured better/worse; when the LLM client was a
model router, a table of each deployment's traffic and fail-overs; when events were
streamed, a table and a chart (HDR percentile curves) of their time to first token and
inter-token latency (`streaming_figures`). plotly.js (from the
``plotly`` wheel) and the run's JSON (``LoadReport.to_dict``, ``<script id="run-data">``)
are inlined: the page makes no network request.

Every trace carries ``meta = {"x": path, "y": path}``: where its points come from in the
run's JSON (``"timeline.p99_ms"``), so a browser test can check each chart against it and
the live dashboard can extend the same figures second by second.
"""

from __future__ import annotations

import functools
import html
import importlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ._compare import comparison
from ._deployments import traffic_html

__all__ = [
    "PLOTLY_CONFIG",
    "ReportError",
    "check_report_path",
    "figures",
    "load_baseline",
    "plotly_js",
    "render_html",
    "streaming_figures",
    "write_report",
]


class ReportError(ValueError):
    """``--report`` cannot be written or ``--compare`` is not a run's JSON; says which."""


PLOTLY_CONFIG: Final[Mapping[str, Any]] = {"displaylogo": False, "responsive": True}

_COLOURS: Final = {
    "requests": "#1f77b4",
    "p50_ms": "#2ca02c",
    "p95_ms": "#ff7f0e",
    "p99_ms": "#d62728",
    "max_ms": "#9467bd",
    "target": "#7f7f7f",
    "in_flight": "#17becf",
    "ttft": "#1f77b4",
    "itl": "#ff7f0e",
}
_ERROR_COLOURS: Final = ("#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#bcbd22", "#9467bd")


@functools.cache
def plotly_js() -> str:
    """plotly.js, minified, from the installed ``plotly`` package (no CDN)."""
    offline: Any = importlib.import_module("plotly.offline")
    return str(offline.get_plotlyjs())


# -- input checks, before the run starts -----------------------------------------------


def check_report_path(path: str | os.PathLike[str]) -> Path:
    """Make sure ``path`` can be written now (so a long run does not end in an error).

    Opens it for appending (creating it, then removing it again, if it did not exist).

    Raises:
        ReportError: the directory is missing, the path is a directory, or no permission.
    """
    target = Path(path)
    if target.is_dir():
        raise ReportError(f"--report {path}: is a directory, not a file")
    existed = target.exists()
    try:
        with target.open("ab"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ReportError(f"--report {path}: cannot write there ({reason})") from None
    if not existed:
        target.unlink(missing_ok=True)
    return target


_REQUIRED: Final = ("command", "requests", "requests_per_s", "p50_ms", "p99_ms", "error_rate")


def load_baseline(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``--json`` line of an earlier run, to compare against.

    Raises:
        ReportError: the file is missing or unreadable, is not one JSON object, or lacks
            the figures of a run (``requests``, ``p50_ms``, ...). The message says which.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"--compare {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ReportError(f"--compare {path}: not a text file") from None
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1] if len(lines) > 1 else text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"--compare {path}: not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "expected the line printed by `agentcli benchmark --json` (or loadtest --json)"
        ) from None
    if not isinstance(data, dict):
        raise ReportError(f"--compare {path}: expected a JSON object, got {type(data).__name__}")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise ReportError(
            f"--compare {path}: not the JSON of an agentcli run (missing {', '.join(missing)})"
        )
    return data


# -- figures ---------------------------------------------------------------------------


def _trace(
    name: str, x: str, y: str, data: Mapping[str, Any], *, kind: str = "scatter", **extra: Any
) -> dict[str, Any]:
    trace: dict[str, Any] = {
        "type": kind,
        "name": name,
        "x": _lookup(data, x),
        "y": _lookup(data, y),
        "meta": {"x": x, "y": y},
    }
    if kind == "scatter":
        trace["mode"] = "lines+markers"
        trace["marker"] = {"size": 4}
    trace.update(extra)
    return trace


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        value = value.get(part, []) if isinstance(value, Mapping) else []
    return list(value) if isinstance(value, list | tuple) else value


def _layout(title: str, xtitle: str, ytitle: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        "xaxis": {"title": {"text": xtitle}},
        "yaxis": {"title": {"text": ytitle}, "rangemode": "tozero"},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "height": 330,
        "legend": {"orientation": "h", "y": -0.25},
        "uirevision": "keep",
    }
    layout.update(extra)
    return layout


def _stage_shapes(timeline: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    shapes: list[Any] = []
    notes: list[Any] = []
    for i, stage in enumerate(timeline.get("stages", [])):
        start, end = float(stage["start_s"]), float(stage["end_s"])
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": start,
                "x1": end,
                "y0": 0,
                "y1": 1,
                "fillcolor": "#1f77b4" if i % 2 == 0 else "#ff7f0e",
                "opacity": 0.07,
                "line": {"width": 0},
            }
        )
        notes.append(
            {
                "x": (start + end) / 2,
                "y": 1.0,
                "xref": "x",
                "yref": "paper",
                "yanchor": "bottom",
                "text": html.escape(str(stage["label"])),
                "showarrow": False,
                "font": {"size": 11},
            }
        )
    return shapes, notes


_NO_ERRORS: Final = {
    "text": "no errors: every request succeeded",
    "xref": "paper",
    "yref": "paper",
    "x": 0.5,
    "y": 0.5,
    "showarrow": False,
    "font": {"size": 14, "color": "#2ca02c"},
}


def figures(run: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's charts for ``run`` (a ``LoadReport.to_dict``): chart id -> plotly
    figure ``{"data": [...], "layout": {...}}``, in page order. Without a timeline, the
    traces are empty (the live dashboard fills them in)."""
    shapes, notes = _stage_shapes(run.get("timeline") or {})
    return {
        "chart-throughput": _throughput_chart(run, shapes),
        "chart-latency": _latency_chart(run, shapes),
        "chart-users": _load_chart(run, shapes, notes),
        "chart-distribution": _distribution_chart(run),
        "chart-errors": _errors_chart(run, shapes),
    }


_SECONDS: Final = "timeline.seconds"


def _throughput_chart(run: Mapping[str, Any], shapes: list[Any]) -> dict[str, Any]:
    """Requests completed per second, stages shaded."""
    line = {"color": _COLOURS["requests"]}
    trace = _trace("requests/s", _SECONDS, "timeline.requests", run, line=line, fill="tozeroy")
    layout = _layout(
        "Throughput (requests completed per second)",
        "seconds since start",
        "requests/s",
        shapes=shapes,
    )
    return {"data": [trace], "layout": layout}


def _latency_chart(run: Mapping[str, Any], shapes: list[Any]) -> dict[str, Any]:
    """p50, p95 and p99 of each second, stages shaded."""
    traces = [
        _trace(label, _SECONDS, f"timeline.{key}", run, line={"color": _COLOURS[key]})
        for label, key in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"))
    ]
    layout = _layout(
        "Latency per second (from each request's intended start)",
        "seconds since start",
        "milliseconds",
        shapes=shapes,
    )
    return {"data": traces, "layout": layout}


def _load_chart(run: Mapping[str, Any], shapes: list[Any], notes: list[Any]) -> dict[str, Any]:
    """The load target (users or arrival rate) and the peak requests in flight, per second,
    with each stage shaded and labelled."""
    unit = str((run.get("timeline") or {}).get("target_unit", "users"))
    target_line = {"color": _COLOURS["target"], "dash": "dash", "shape": "hv"}
    in_flight_line = {"color": _COLOURS["in_flight"], "shape": "hv"}
    traces = [
        _trace(f"target ({unit})", _SECONDS, "timeline.target", run, line=target_line),
        _trace(
            "requests in flight (peak per second)",
            _SECONDS,
            "timeline.in_flight",
            run,
            line=in_flight_line,
        ),
    ]
    layout = _layout(
        "Load: virtual users / arrival rate, and requests in flight, by stage",
        "seconds since start",
        unit,
        shapes=shapes,
        annotations=notes,
    )
    return {"data": traces, "layout": layout}


_PERCENTILE_TICKS: Final = (2, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
_PERCENTILE_LABELS: Final = ("50%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%")


def _distribution_chart(run: Mapping[str, Any]) -> dict[str, Any]:
    """The whole run's HDR percentile curve, on a log scale of 1 / (1 - percentile)."""
    curve = run.get("latency_curve") or {}
    trace = _curve_trace("latency", "latency_curve", curve, run, _COLOURS["p99_ms"], "")
    layout = _percentile_layout("Latency distribution (HDR percentile curve)")
    return {"data": [trace], "layout": layout}


def streaming_figures(run: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The streamed events' chart, when ``run`` has ``streaming`` figures (else none):
    the HDR percentile curves of time to first token and inter-token latency."""
    streaming = run.get("streaming")
    if not isinstance(streaming, Mapping):
        return {}
    traces = []
    for label, kind in (("time to first token", "ttft"), ("inter-token latency", "itl")):
        curve = streaming.get(f"{kind}_curve") or {}
        if not curve.get("latency_ms"):
            continue
        path = f"streaming.{kind}_curve"
        traces.append(_curve_trace(label, path, curve, run, _COLOURS[kind], f"{label} "))
    layout = _percentile_layout(
        "Streaming: time to first token and inter-token latency (HDR percentile curves)"
    )
    return {"chart-streaming": {"data": traces, "layout": layout}}


def _curve_trace(
    label: str, path: str, curve: Mapping[str, Any], run: Mapping[str, Any], colour: str, hover: str
) -> dict[str, Any]:
    """The HDR percentile curve at ``path`` in ``run`` (``curve``: its value) as a trace,
    the hover text led by ``hover``."""
    return {
        **_trace(label, f"{path}.one_in", f"{path}.latency_ms", run, line={"color": colour}),
        "customdata": list(curve.get("percentile", [])),
        "hovertemplate": f"{hover}p%{{customdata:.4f}}: %{{y:.3f}} ms<extra></extra>",
    }


def _percentile_layout(title: str) -> dict[str, Any]:
    """A layout whose x axis is the percentile, on a log scale of 1 / (1 - percentile)."""
    xaxis = {
        "type": "log",
        "tickvals": list(_PERCENTILE_TICKS),
        "ticktext": list(_PERCENTILE_LABELS),
        "title": {"text": "percentile (log scale)"},
    }
    return _layout(
        title, "percentile (log scale of 1 / (1 - percentile))", "milliseconds", xaxis=xaxis
    )


def _errors_chart(run: Mapping[str, Any], shapes: list[Any]) -> dict[str, Any]:
    """Failed requests per second, one stacked bar per error kind; a green "no errors"
    note (and a zero bar of ``timeline.error_total``) when every request succeeded."""
    kinds = sorted(((run.get("timeline") or {}).get("errors") or {}).keys())
    traces = [
        _trace(
            kind,
            _SECONDS,
            f"timeline.errors.{kind}",
            run,
            kind="bar",
            marker={"color": _ERROR_COLOURS[i % len(_ERROR_COLOURS)]},
        )
        for i, kind in enumerate(kinds)
    ]
    if not traces:
        green = {"color": "#2ca02c"}
        traces = [
            _trace("errors (none)", _SECONDS, "timeline.error_total", run, kind="bar", marker=green)
        ]
    layout = _layout(
        "Errors per second, by kind",
        "seconds since start",
        "requests",
        barmode="stack",
        shapes=shapes,
        annotations=[] if kinds else [_NO_ERRORS],
    )
    return {"data": traces, "layout": layout}


# -- page ------------------------------------------------------------------------------


def _num(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value:,}{suffix}" if isinstance(value, int) else html.escape(str(value))


def _mib(value: Any) -> str:
    return "-" if not value else f"{value / 2**20:,.1f} MiB"


def _cpu(value: Any) -> str:
    return "-" if value is None else f"{value * 1e3:.3f} ms"


def _outcomes(counts: Any) -> str:
    if not isinstance(counts, Mapping) or not counts:
        return "-"
    return ", ".join(f"{html.escape(str(k))} {v:,}" for k, v in sorted(counts.items()))


_SUMMARY_COLUMNS: Final = (
    "stage",
    "requests",
    "throughput (req/s)",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "error rate",
    "outcomes",
    "CPU / request",
    "peak RSS",
)


def _summary_row(label: str, m: Mapping[str, Any], css: str = "") -> str:
    cells = [
        html.escape(label),
        _num(m.get("requests")),
        _num(m.get("requests_per_s"), 1),
        _num(m.get("p50_ms")),
        _num(m.get("p95_ms")),
        _num(m.get("p99_ms")),
        _num(m.get("max_ms")),
        _num((m.get("error_rate") or 0.0) * 100, 2, "%"),
        _outcomes(m.get("outcomes")),
        _cpu(m.get("cpu_seconds_per_request")),
        _mib(m.get("peak_rss_bytes")),
    ]
    body = "".join(f"<td>{c}</td>" for c in cells)
    return f'<tr class="{css}">{body}</tr>'


def _summary(run: Mapping[str, Any]) -> str:
    head = "".join(f"<th>{c}</th>" for c in _SUMMARY_COLUMNS)
    stages = run.get("stages") or []
    rows = [_summary_row(str(s.get("stage")), s) for s in stages] if len(stages) > 1 else []
    rows.append(_summary_row("total", run, "total"))
    return (
        f'<table id="summary"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _streaming_table(run: Mapping[str, Any]) -> str:
    """TTFT and ITL of the streamed events, one row each ("" when nothing streamed)."""
    streaming = run.get("streaming")
    if not isinstance(streaming, Mapping):
        return ""
    head = "".join(f"<th>{c}</th>" for c in _STREAMING_COLUMNS)
    rows = []
    for label, kind in (("time to first token", "ttft"), ("inter-token latency", "itl")):
        s = streaming.get(kind) or {}
        cells = [html.escape(label), _num(s.get("count"))]
        cells += [_num(s.get(key)) for key in ("mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")]
        body = "".join(f"<td>{c}</td>" for c in cells)
        rows.append(f'<tr data-kind="{kind}">{body}</tr>')
    note = (
        f"{_num(streaming.get('events'))} streamed events, "
        f"{_num(streaming.get('without_tokens'))} without tokens"
    )
    return (
        f'<h2>Streaming</h2><p class="sub">{note}</p>'
        f'<table id="streaming"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


_STREAMING_COLUMNS: Final = ("", "samples", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms")

_CONFIG_SKIP: Final = frozenset(
    {"stages", "timeline", "latency_curve", "outcomes", "router", "streaming"}
    | {"requests", "duration_s", "requests_per_s", "mean_ms", "p50_ms", "p90_ms", "p95_ms"}
    | {"p99_ms", "p999_ms", "max_ms", "errors", "error_rate", "rss_bytes", "peak_rss_bytes"}
    | {"gc_pauses", "gc_pause_total_ms", "gc_pause_max_ms", "active_tasks", "peak_tasks"}
    | {"cpu_seconds", "cpu_seconds_per_request"}
)


def _configuration(run: Mapping[str, Any]) -> str:
    rows = [
        f"<tr><th>{html.escape(str(k))}</th><td>{_num(v, 3)}</td></tr>"
        for k, v in run.items()
        if k not in _CONFIG_SKIP and v is not None
    ]
    process = [
        ("run time", _num(run.get("duration_s"), 2, " s")),
        ("CPU", _num(run.get("cpu_seconds"), 2, " s")),
        ("peak RSS", _mib(run.get("peak_rss_bytes"))),
        ("GC pauses", f"{_num(run.get('gc_pauses'))} (max {_num(run.get('gc_pause_max_ms'))} ms)"),
        ("peak trio tasks", _num(run.get("peak_tasks"))),
    ]
    rows.extend(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in process)
    return f'<table id="configuration">{"".join(rows)}</table>'


def _json_script(ident: str, data: Any) -> str:
    text = json.dumps(data, separators=(",", ":"), default=str, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{ident}">{text}</script>'


STYLE: Final = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{margin-bottom:4px} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0 20px;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f5f5f5} #configuration th{text-align:left}
#configuration td,#summary td:first-child,#summary td:nth-child(9){text-align:left}
tr.total{font-weight:bold}
#deployments td:nth-child(-n+3),#deployments td:nth-child(7){text-align:left}
.better{color:#1a7f37;background:#e6f4ea} .worse{color:#b42318;background:#fdecea}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px}
.chart{border:1px solid #eee;border-radius:6px;min-height:330px}
.gauges{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.gauge{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.gauge .v{font-size:22px;font-weight:bold} .gauge .k{color:#666;font-size:12px}
"""

PLOT_SCRIPT: Final = """
const figs = JSON.parse(document.getElementById('figures').textContent);
for (const [id, fig] of Object.entries(figs)) {
  Plotly.newPlot(id, fig.data, fig.layout, PLOTLY_CONFIG);
}
"""


def chart_divs(ids: Sequence[str]) -> str:
    """One ``<div class="chart plotly-graph-div">`` per chart id (the class plotly's own
    Python export gives its charts)."""
    return "".join(f'<div class="chart plotly-graph-div" id="{i}"></div>' for i in ids)


def render_html(run: Mapping[str, Any], baseline: Mapping[str, Any] | None = None) -> str:
    """The whole report page for ``run`` (a ``LoadReport.to_dict``), self-contained."""
    timeline = run.get("timeline") or {}
    shown = dict(run)
    if timeline:
        total = [sum(v) for v in zip(*(timeline.get("errors") or {}).values(), strict=True)]
        timeline = dict(timeline, error_total=total or [0] * len(timeline.get("seconds", [])))
        shown["timeline"] = timeline
    figs = {**figures(shown), **streaming_figures(shown)}
    title = f"agentcli {run.get('command', '?')} report"
    params = run.get("target", "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{STYLE}</style>",
        f"<script>{plotly_js()}</script>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">{html.escape(str(run.get("model", "")))} model; '
        f"{html.escape(str(params))}</p>",
        "<h2>Summary</h2>",
        _summary(run),
        _streaming_table(run),
        traffic_html(router) if isinstance(router := run.get("router"), Mapping) else "",
        "<h2>Charts</h2>",
        f'<div class="charts">{chart_divs(list(figs))}</div>',
    ]
    if baseline is not None:
        parts.append(comparison(run, baseline))
    parts.extend(
        [
            "<h2>Configuration</h2>",
            _configuration(run),
            _json_script("run-data", shown),
            _json_script("baseline-data", baseline) if baseline is not None else "",
            _json_script("figures", figs),
            f"<script>const PLOTLY_CONFIG = {json.dumps(PLOTLY_CONFIG)};{PLOT_SCRIPT}</script>",
            "</body></html>",
        ]
    )
    return "\n".join(parts)


def write_report(
    path: str | os.PathLike[str],
    run: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
) -> Path:
    """Write `render_html` to ``path`` (atomically: a temporary file, then a rename).

    Raises:
        ReportError: the file cannot be written.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        temporary.write_text(render_html(run, baseline), encoding="utf-8")
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ReportError(f"--report {path}: cannot write ({exc.strerror or exc})") from None
    return target
