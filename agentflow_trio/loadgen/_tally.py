"""`LoadStats`: the generators' recorder, per stage, turned into `PerformanceMetrics`.

Latency goes into one HDR `LatencyRecorder` per stage (from each request's intended start,
see `_generators`); outcomes into a counter per stage; and, for the charts of the HTML
report and the live dashboard, into a `Timeline` (per-second throughput, percentiles,
errors by kind, load target and requests in flight). Streamed events also feed
``tokens``, a `TokenTimes` (time to first token, inter-token latency; see `_streaming`).
`measure` wraps the run in the observability `StatsCollector`, which samples what the
process spent meanwhile (CPU, RSS, GC pauses, trio tasks), and closes one timeline second
per second. Recording is O(1) per request (and per token).
"""

from __future__ import annotations

import collections
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from ._generators import RunSummary, Target
from ._streaming import TokenTimes, percentile_curve
from .console import LoadReport, StageReport
from .stages import Plan

if TYPE_CHECKING:
    from ..observability.stats import LatencyRecorder, PerformanceMetrics, StatsCollector

__all__ = ["LoadStats", "Timeline", "measure", "tick_seconds"]

_SUCCEEDED = "succeeded"


class Timeline:
    """A run second by second, for charts: what `LoadStats` feeds while the run goes on.

    Second ``k`` holds the requests that *completed* in ``[origin + k, origin + k + 1)``
    (their count is the throughput, their latencies the percentiles), those that ended in
    an outcome other than ``succeeded`` by kind, the plan's target in the second's middle
    (users, or arrivals/s for the open model), and the most requests in flight at once
    during it. With ``plan`` None (``agentcli serve``: no load shape) there is no target
    and no stage. Memory: the series' fixed histograms plus a few numbers per second.
    """

    def __init__(self, plan: Plan | None) -> None:
        from ..observability.stats import LatencyRecorder

        self.plan = plan
        self.origin: float | None = None
        self.latency = LatencyRecorder(series=False)  # replaced by `start`
        self.errors: dict[str, dict[int, int]] = {}
        self.in_flight = 0
        self._peak = 0
        self.peaks: list[int] = []  # one per closed second

    def start(self, origin: float) -> None:
        """Second 0 begins at ``origin`` (a ``trio.current_time()``)."""
        from ..observability.stats import LatencyRecorder

        self.origin = origin
        self.latency = LatencyRecorder(series=True, origin=origin)

    def record(self, intended: float, ended: float, outcome: str) -> None:
        self.latency.record_from(intended, ended)
        if outcome != _SUCCEEDED and self.origin is not None:
            by_second = self.errors.setdefault(outcome, {})
            second = max(int(ended - self.origin), 0)
            by_second[second] = by_second.get(second, 0) + 1

    def begin_request(self) -> None:
        self.in_flight += 1
        if self.in_flight > self._peak:
            self._peak = self.in_flight

    def end_request(self) -> None:
        self.in_flight -= 1

    def close_second(self) -> None:
        """End the current second: keep its peak in flight, start the next one."""
        self.peaks.append(self._peak)
        self._peak = self.in_flight

    def finish(self, now: float) -> None:
        """Close the seconds still open at trio time ``now`` (the run's end)."""
        series = self.latency.series()
        last = series[-1].second + 1 if series else 0
        needed = max(math.ceil((now - (self.origin or now)) - 1e-9), last, 1)
        while self.seconds < needed:
            self.close_second()

    @property
    def seconds(self) -> int:
        """Seconds closed so far."""
        return len(self.peaks)

    def stage_at(self, now: float) -> str:
        """The label of the stage running at trio time ``now``."""
        offset = now - self.origin if self.origin is not None else 0.0
        if self.plan is None:
            return "serving"
        if offset >= self.plan.total:
            return "finishing (grace period)"
        return self.plan.describe(self.plan.locate(offset)[0])

    def to_dict(self, first: int = 0, last: int | None = None) -> dict[str, Any]:
        """Seconds ``first`` to ``last`` (default: every closed one) as parallel lists.

        ``seconds``, ``requests``, ``p50_ms``/``p95_ms``/``p99_ms``/``max_ms`` (None for a
        second without completions), ``target``, ``in_flight``, ``errors`` (kind -> counts),
        plus ``stages`` (label, start and end second) and ``target_unit``. ``target`` is
        the plan's in the middle of the second (0 once the plan is over: grace period).
        """
        stop = self.seconds if last is None else min(last, self.seconds)
        span = range(first, max(stop, first))
        by_second = {s.second: s for s in self.latency.series()}
        points = [by_second.get(k) for k in span]
        plan = self.plan
        targets: list[float | None] = [None for _ in span]
        stages: list[dict[str, Any]] = []
        if plan is not None:
            targets = [round(plan.value_at(k + 0.5), 3) if k < plan.total else 0 for k in span]
            stages = [
                {
                    "label": plan.describe(i),
                    "start_s": plan.stage_begin(i),
                    "end_s": plan.stage_begin(i) + stage.duration,
                }
                for i, stage in enumerate(plan.stages)
            ]
        return {
            "seconds": list(span),
            "requests": [p.count if p else 0 for p in points],
            "p50_ms": [p.p50_ms if p else None for p in points],
            "p95_ms": [p.p95_ms if p else None for p in points],
            "p99_ms": [p.p99_ms if p else None for p in points],
            "max_ms": [p.max_ms if p else None for p in points],
            "target": targets,
            "in_flight": [self.peaks[k] for k in span],
            "errors": {
                kind: [counts.get(k, 0) for k in span]
                for kind, counts in sorted(self.errors.items())
            },
            "target_unit": "requests/s" if plan is not None and plan.is_rate else "users",
            "stages": stages,
        }


class LoadStats:
    """Records finished requests by stage; ``completed`` is readable while the run goes on."""

    def __init__(self, plan: Plan) -> None:
        from ..observability.stats import LatencyRecorder

        self.plan = plan
        self._latency = [LatencyRecorder(series=False) for _ in plan.stages]
        self._outcomes: list[collections.Counter[str]] = [
            collections.Counter() for _ in plan.stages
        ]
        self.completed = 0
        self.first_error: str | None = None
        self.collector: StatsCollector | None = None
        self.timeline = Timeline(plan)
        self.gauges: Callable[[], Mapping[str, Any]] | None = None
        """What the live dashboard shows besides the timeline (set by the command)."""
        self.tokens = TokenTimes()
        """The streamed events' token timings (TTFT, ITL), recorded as tokens arrive."""

    def record(
        self, stage: int, intended: float, started: float, ended: float, outcome: str
    ) -> None:
        """One finished request (the `Recorder` protocol of the generators)."""
        self._latency[stage].record_from(intended, ended)
        self._outcomes[stage][outcome] += 1
        self.timeline.record(intended, ended, outcome)
        self.completed += 1

    def track(self, target: Target) -> Target:
        """``target`` counted in flight (for the timeline) while each call runs."""
        timeline = self.timeline

        async def tracked(index: int) -> str:
            timeline.begin_request()
            try:
                return await target(index)
            finally:
                timeline.end_request()

        return tracked

    def note_error(self, text: str) -> None:
        """Keep the first error message seen, for the report."""
        if self.first_error is None:
            self.first_error = text

    def report(
        self,
        command: str,
        summary: RunSummary,
        *,
        target: str,
        mock_requests: int | None,
        parameters: Mapping[str, Any],
    ) -> LoadReport:
        """The `LoadReport` of the run: the total over ``summary.elapsed`` and each stage
        over its planned duration."""
        from ..observability.stats import LatencyRecorder

        total = LatencyRecorder(series=False)
        outcomes: collections.Counter[str] = collections.Counter()
        for recorder, counts in zip(self._latency, self._outcomes, strict=True):
            total.merge(recorder)
            outcomes.update(counts)
        stages = tuple(
            StageReport(
                self.plan.describe(i),
                self._metrics(self._latency[i], self._outcomes[i], stage.duration, whole=False),
            )
            for i, stage in enumerate(self.plan.stages)
        )
        return LoadReport(
            command=command,
            model="open" if self.plan.is_rate else "closed",
            target=target,
            parameters=dict(parameters),
            total=self._metrics(total, outcomes, summary.elapsed, whole=True),
            stages=stages,
            summary=summary,
            mock_requests=mock_requests,
            first_error=self.first_error,
            timeline=self.timeline.to_dict(),
            latency_curve=percentile_curve(total),
            streaming=self.tokens.figures(),
        )

    def _metrics(
        self,
        latency: LatencyRecorder,
        outcomes: Mapping[str, int],
        duration: float,
        *,
        whole: bool,
    ) -> PerformanceMetrics:
        collector = self.collector
        assert collector is not None, "report() before measure()"
        return collector.metrics(latency, outcomes, duration, process=whole)


async def tick_seconds(timeline: Timeline, origin: float) -> None:
    """Close one timeline second at each whole second after ``origin``, until cancelled."""
    second = 1
    while True:
        await trio.sleep_until(origin + second)
        timeline.close_second()
        second += 1


@asynccontextmanager
async def measure(stats: LoadStats) -> AsyncIterator[None]:
    """Sample the process (CPU, RSS, GC pauses, tasks) for the duration of the block, and
    close a timeline second every second (the last, partial one when the block ends).

    The ticking task lives in this block's own nursery and is cancelled when it ends.
    """
    from ..observability.stats import StatsCollector

    collector = StatsCollector()
    stats.collector = collector
    timeline = stats.timeline
    origin = trio.current_time()
    timeline.start(origin)
    async with collector.sampling():
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tick_seconds, timeline, origin)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) != 1:
                raise
            raise group.exceptions[0] from None
        finally:
            timeline.finish(trio.current_time())
