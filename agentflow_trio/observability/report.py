"""The guide's `PerformanceMetrics`, every ``[monitoring] metrics_interval``, of a live
process: logged and published.

`PerformanceReporter` collects what a runner's events did (its ``before_event`` /
``after_event`` hooks: latency from start to end, the outcome) in the current interval,
with the process figures of a `StatsCollector` (CPU, RSS, GC pauses, live trio tasks).
`report_performance` is the task the hosting process starts beside its runner:
``await nursery.start(report_performance, config.monitoring, reporter)``; every
``metrics_interval`` it closes the interval (`PerformanceReporter.snapshot`), logs the
`PerformanceMetrics` at INFO on ``agentflow_trio.performance`` (the figures as the
record's ``performance`` extra, so JSON log lines carry them as an object), keeps it as
``reporter.latest``, calls ``reporter.listeners`` and, once `PerformanceReporter.publish_to`
was given a `RunnerMetrics` (or a registry), serves it as ``agentflow_performance_*``
gauges at the next scrape. ``metrics_interval = 0`` reports nothing (the task returns
at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import trio

from .stats import PerformanceMetrics, StatsCollector

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from ..config import MonitoringConfig
    from ..events import AgentResult, Event

__all__ = ["PERFORMANCE_LOGGER", "PerformanceReporter", "report_performance"]

PERFORMANCE_LOGGER: Final = "agentflow_trio.performance"

_log = logging.getLogger(PERFORMANCE_LOGGER)

_GAUGES: Final = (
    ("requests", "requests", "Events ended in the last report interval."),
    ("requests_per_second", "requests_per_s", "Events ended per second, last interval."),
    ("error_rate", "error_rate", "Share of the last interval's events not succeeded."),
    ("interval_seconds", "duration_s", "Length of the last report interval."),
    ("rss_bytes", "rss_bytes", "Resident memory at the last report."),
    ("cpu_seconds", "cpu_seconds", "CPU seconds spent in the last interval."),
    ("active_tasks", "active_tasks", "Live trio tasks at the last report."),
)
_QUANTILES: Final = (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms"))


class PerformanceReporter:
    """`PerformanceMetrics` of a runner's events, one interval at a time.

    Wire it with ``reporter.attach(runner)`` (or ``install(hooks)``); `snapshot` closes
    the interval and starts the next. Events cancelled before they started count with no
    latency. ``clock`` (default ``trio.current_time``: exact under ``MockClock``) times
    events and intervals. Memory is fixed: an HDR histogram per interval, and one start
    time per event running.
    """

    def __init__(self, *, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._collector = StatsCollector(clock=clock)
        self._starts: dict[str, float] = {}
        self.latest: PerformanceMetrics | None = None
        self.listeners: list[Callable[[PerformanceMetrics], object]] = []

    def attach(self, runner: Any) -> None:
        """Add this reporter's hooks to ``runner.hooks``."""
        self.install(runner.hooks)

    def install(self, hooks: Any) -> None:
        """Append `before_event` / `after_event` to a `Hooks`' lists (once)."""
        if self.before_event not in hooks.before_event:
            hooks.before_event.append(self.before_event)
        if self.after_event not in hooks.after_event:
            hooks.after_event.append(self.after_event)

    def before_event(self, event: Event) -> None:
        """Hook: ``event`` starts running."""
        self._starts[event.id] = self._clock()

    def after_event(self, event: Event, result: AgentResult) -> None:
        """Hook: ``event`` ended with ``result``; count it in the current interval."""
        started = self._starts.pop(event.id, None)
        outcome = result.outcome.value
        if started is None:
            self._collector.count(outcome)
        else:
            self._collector.record(outcome, max(self._clock() - started, 0.0))

    def begin(self) -> None:
        """Start the first interval now (its CPU, GC and clock baselines); events seen
        before are counted in it. Does nothing if an interval is running."""
        if not self._collector.running:
            self._collector.start()

    def snapshot(self) -> PerformanceMetrics:
        """Close the current interval and start the next; its figures, kept as `latest`."""
        collector = self._collector
        collector.stop()
        metrics = collector.metrics()
        self._collector = StatsCollector(clock=self._clock)
        self._collector.start()
        self.latest = metrics
        return metrics

    def stop(self) -> None:
        """End the current interval without a report (removes its GC monitor)."""
        self._collector.stop()

    def publish_to(self, metrics: Any) -> None:
        """Serve `latest` as ``agentflow_performance_*`` gauges in ``metrics`` (a
        `RunnerMetrics`, or a prometheus_client registry), read at each scrape."""
        registry = getattr(metrics, "registry", metrics)
        registry.register(_Collector(self))

    def collect(self) -> Iterator[Metric]:
        """The gauges of `latest` (none before the first report)."""
        from prometheus_client.core import GaugeMetricFamily

        latest = self.latest
        if latest is None:
            return
        for name, field, doc in _GAUGES:
            value = getattr(latest, field)
            if value is not None:
                yield GaugeMetricFamily(f"agentflow_performance_{name}", doc, value=value)
        latency = GaugeMetricFamily(
            "agentflow_performance_latency_seconds",
            "Event latency percentiles of the last report interval.",
            labels=["quantile"],
        )
        for quantile, field in _QUANTILES:
            value = getattr(latest, field)
            if value is not None:
                latency.add_metric([quantile], value / 1000.0)
        yield latency


class _Collector:
    """The registry's view of a reporter (computed at each scrape)."""

    def __init__(self, reporter: PerformanceReporter) -> None:
        self._reporter = reporter

    def collect(self) -> Iterator[Metric]:
        return self._reporter.collect()

    def describe(self) -> Iterator[Metric]:
        return iter(())


def _line(m: PerformanceMetrics) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}ms"

    text = (
        f"performance over {m.duration_s:.1f}s: {m.requests} events, "
        f"{m.requests_per_s:.1f}/s, p50 {ms(m.p50_ms)}, p95 {ms(m.p95_ms)}, "
        f"p99 {ms(m.p99_ms)}, errors {m.error_rate:.1%}"
    )
    if m.rss_bytes is not None:
        text += f", rss {m.rss_bytes / 2**20:.0f}MiB"
    if m.cpu_seconds is not None:
        text += f", cpu {m.cpu_seconds:.2f}s"
    return text


async def report_performance(
    monitoring: MonitoringConfig,
    reporter: PerformanceReporter,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``monitoring.metrics_interval``, report ``reporter``'s interval until cancelled.

    Each report: `PerformanceReporter.snapshot`, one INFO record on
    ``agentflow_trio.performance``, then each of ``reporter.listeners`` (one that raises
    is logged and the reporting goes on). With ``metrics_interval = 0`` it reports
    nothing and returns after ``task_status.started()``. On cancellation the interval in
    progress is dropped (its GC monitor removed).
    """
    interval = monitoring.metrics_interval
    task_status.started()
    if interval <= 0:
        return
    reporter.begin()
    try:
        while True:
            await trio.sleep(interval)
            metrics = reporter.snapshot()
            _log.info(_line(metrics), extra={"performance": metrics.to_dict()})
            for listener in list(reporter.listeners):
                try:
                    listener(metrics)
                except Exception:
                    _log.exception("a performance report listener failed: %r", listener)
    finally:
        reporter.stop()
