"""The load run's console face: `LoadReport` (one JSON line, or a rich table) and live
progress while the run goes on. (The HTML report is `loadgen.report`'s job.)

The table goes to stdout, the progress bar to stderr (and only when stderr is a terminal),
so ``agentcli benchmark --json > out.jsonl`` captures exactly one line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs

from ._deployments import COLUMNS, summary_line, traffic_rows
from ._generators import RunSummary
from ._streaming import StreamingFigures
from .thresholds import ThresholdResult, all_passed

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from ..observability.stats import PerformanceMetrics

__all__ = [
    "Counting",
    "LoadReport",
    "ProgressSink",
    "RichProgress",
    "StageReport",
    "print_report",
    "render_report",
]


class Counting(Protocol):
    """What the progress display reads while the run goes on."""

    @property
    def completed(self) -> int: ...


class ProgressSink(Protocol):
    """Told when a run starts (what to watch, how long it lasts) and when it stops."""

    def start(self, stats: Counting, seconds: float, requests: int | None) -> None: ...

    def stop(self) -> None: ...


@attrs.frozen(slots=True)
class StageReport:
    """The figures of one stage; ``label`` like ``"10s 0->100"``."""

    label: str
    metrics: PerformanceMetrics


@attrs.frozen(slots=True)
class LoadReport:
    """The result of a benchmark or load test.

    ``total`` covers the whole run and ``stages`` each stage of the plan. ``summary`` says
    what the generator did (issued, unfinished, dropped); ``mock_requests`` is the built-in
    mock LLM's own request count (None when no mock ran); ``target`` says where model
    calls (or HTTP requests) went. ``timeline`` (per-second series, see
    `_tally.Timeline.to_dict`) and ``latency_curve`` (the HDR percentile curve) feed the
    charts of the HTML report. ``thresholds`` are the run's pass/fail checks (see
    `loadgen.thresholds`), ``interrupted`` says the run was stopped early (Ctrl-C): its
    figures cover what finished until then. ``router`` (None unless the LLM client is a
    model router) is each deployment's traffic and fail-overs, read at the end of the run
    (see `_deployments.traffic`). ``streaming`` (None unless events were streamed) holds
    their time to first token and inter-token latency (see `_streaming`).
    """

    command: str
    model: str
    target: str
    parameters: Mapping[str, Any]
    total: PerformanceMetrics
    stages: tuple[StageReport, ...]
    summary: RunSummary
    mock_requests: int | None = None
    first_error: str | None = None
    timeline: Mapping[str, Any] | None = None
    latency_curve: Mapping[str, Any] | None = None
    thresholds: tuple[ThresholdResult, ...] = ()
    interrupted: bool = False
    router: Mapping[str, Any] | None = None
    streaming: StreamingFigures | None = None

    @property
    def thresholds_passed(self) -> bool:
        """True when every threshold passed (and when there are none)."""
        return all_passed(self.thresholds)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the total's figures, the run parameters, then per-stage entries."""
        data: dict[str, Any] = {"command": self.command, "model": self.model}
        data.update(self.total.to_dict())
        data.update(self.parameters)
        data["issued"] = self.summary.issued
        data["unfinished"] = self.summary.unfinished
        data["dropped"] = self.summary.dropped
        data["mock_requests"] = self.mock_requests
        data["target"] = self.target
        data["first_error"] = self.first_error
        data["interrupted"] = self.interrupted
        data["thresholds"] = [result.to_dict() for result in self.thresholds]
        data["stages"] = [{"stage": s.label, **s.metrics.to_dict()} for s in self.stages]
        if self.router is not None:
            data["router"] = dict(self.router)
        if self.streaming is not None:
            data["streaming"] = self.streaming.to_dict()
        if self.timeline is not None:
            data["timeline"] = dict(self.timeline)
        if self.latency_curve is not None:
            data["latency_curve"] = dict(self.latency_curve)
        return data

    def to_json(self) -> str:
        """`to_dict` as one line of JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**20:.1f} MiB"


def _outcomes(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "-"


def _process_line(m: PerformanceMetrics) -> str:
    parts = [f"process: peak RSS {_mib(m.peak_rss_bytes)}"]
    if m.cpu_seconds is not None:
        parts.append(f"CPU {m.cpu_seconds:.2f} s")
    if m.gc_pauses is not None:
        parts.append(
            f"GC {m.gc_pauses} pauses (total {_ms(m.gc_pause_total_ms)} ms, "
            f"max {_ms(m.gc_pause_max_ms)} ms)"
        )
    if m.peak_tasks is not None:
        parts.append(f"peak trio tasks {m.peak_tasks}")
    return ", ".join(parts)


def _row(label: str, m: PerformanceMetrics) -> list[str]:
    cpu = m.cpu_seconds_per_request
    return [
        label,
        str(m.requests),
        f"{m.requests_per_s:.1f}",
        _ms(m.p50_ms),
        _ms(m.p95_ms),
        _ms(m.p99_ms),
        _ms(m.max_ms),
        f"{m.error_rate * 100:.2f}%",
        _outcomes(m.outcomes),
        _mib(m.peak_rss_bytes),
        "-" if cpu is None else f"{cpu * 1e3:.3f} ms",
    ]


_COLUMNS = (
    "stage",
    "requests",
    "RPS",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "errors",
    "outcomes",
    "peak RSS",
    "CPU/request",
)


def render_report(report: LoadReport) -> RenderableType:
    """A rich table: one row per stage (when there are several) and a total row."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = f"agentcli {report.command} ({report.model} model)"
    table = Table(title=title, title_justify="left")
    for name in _COLUMNS:
        table.add_column(name, justify="left" if name in ("stage", "outcomes") else "right")
    rows: Iterable[StageReport] = report.stages if len(report.stages) > 1 else ()
    for stage in rows:
        table.add_row(*_row(stage.label, stage.metrics))
    table.add_row(*_row("total", report.total), style="bold")
    lines = [f"target: {report.target}"]
    params = ", ".join(f"{k}={v}" for k, v in report.parameters.items() if v is not None)
    lines.append(f"parameters: {params}")
    s = report.summary
    lines.append(f"issued {s.issued}, unfinished {s.unfinished}, dropped {s.dropped}")
    lines.append(_process_line(report.total))
    if report.mock_requests is not None:
        lines.append(f"mock LLM requests (its own /stats count): {report.mock_requests}")
    if report.first_error:
        lines.append(f"first error: {report.first_error}")
    if report.interrupted:
        elapsed = report.summary.elapsed
        lines.append(f"interrupted (Ctrl-C) after {elapsed:.1f} s: partial results")
    lines.extend(f"threshold {result.describe()}" for result in report.thresholds)
    parts: list[RenderableType] = [table]
    if report.streaming is not None:
        parts.append(_streaming_table(report.streaming))
    parts.append(Text("\n".join(lines)))
    if report.router is not None:
        parts.append(_router_table(report.router))
    return Group(*parts)


_STREAMING_COLUMNS: Final = ("", "samples", "mean ms", "p50 ms", "p95 ms", "p99 ms", "max ms")


def _streaming_table(figures: StreamingFigures) -> RenderableType:
    """Time to first token and inter-token latency of the streamed events, one row each."""
    from rich.table import Table

    title = f"streamed events: {figures.events} ({figures.without_tokens} without tokens)"
    table = Table(title=title, title_justify="left")
    for name in _STREAMING_COLUMNS:
        table.add_column(name, justify="left" if not name else "right")
    for label, s in (("time to first token", figures.ttft), ("inter-token", figures.itl)):
        cells = (s.mean_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms)
        table.add_row(label, str(s.count), *(_ms(value) for value in cells))
    return table


def _router_table(router: Mapping[str, Any]) -> RenderableType:
    """Per-deployment traffic and fail-overs under the main table."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="deployments (model router)", title_justify="left")
    for name in COLUMNS:
        left = name in ("deployment", "group", "model", "failures")
        table.add_column(name, justify="left" if left else "right")
    for cells in traffic_rows(router):
        table.add_row(*cells)
    return Group(table, Text(summary_line(router)))


def print_report(report: LoadReport, console: Console | None = None) -> None:
    """Print `render_report` to ``console`` (default: stdout, as wide as needed)."""
    from rich.console import Console

    out = console or Console(width=max(Console().width, 140))
    out.print(render_report(report))


class RichProgress:
    """A rich progress bar on stderr that reads the run's counters on every refresh.

    Rendering happens on rich's refresh thread; it only reads ``stats.completed`` (an int)
    and the wall clock, so it never touches trio state.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._console = console
        self._progress: Any = None

    def start(self, stats: Counting, seconds: float, requests: int | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

        began = time.monotonic()
        task: TaskID | None = None

        class _Live(Progress):
            def get_renderables(self) -> Iterable[RenderableType]:
                if task is not None:
                    done = stats.completed
                    fraction = (time.monotonic() - began) / seconds
                    if requests is not None:
                        fraction = max(fraction, done / requests)
                    self.update(task, completed=min(fraction, 1.0) * 100, requests=done)
                yield from super().get_renderables()

        progress = _Live(
            TextColumn("[bold]running"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[requests]} requests"),
            TimeRemainingColumn(),
            console=self._console or Console(stderr=True),
            transient=True,
            refresh_per_second=5,
        )
        task = progress.add_task("run", total=100, requests=0)
        progress.start()
        self._progress = progress

    def stop(self) -> None:
        """Remove the bar (it is transient); idempotent."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
