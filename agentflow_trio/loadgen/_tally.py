"""`LoadStats`: the generators' recorder, per stage, turned into `PerformanceMetrics`.

Latency goes into one HDR `LatencyRecorder` per stage (from each request's intended start,
see `_generators`); outcomes into a counter per stage. `measure` wraps the run in the
observability `StatsCollector`, which samples what the process spent meanwhile (CPU, RSS,
GC pauses, trio tasks). Recording is O(1) and allocation-free per request.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._generators import RunSummary
from ._report import LoadReport, StageReport
from .stages import Plan

if TYPE_CHECKING:
    from ..observability.stats import LatencyRecorder, PerformanceMetrics, StatsCollector

__all__ = ["LoadStats", "measure"]


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

    def record(
        self, stage: int, intended: float, started: float, ended: float, outcome: str
    ) -> None:
        """One finished request (the `Recorder` protocol of the generators)."""
        self._latency[stage].record_from(intended, ended)
        self._outcomes[stage][outcome] += 1
        self.completed += 1

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


@asynccontextmanager
async def measure(stats: LoadStats) -> AsyncIterator[None]:
    """Sample the process (CPU, RSS, GC pauses, tasks) for the duration of the block."""
    from ..observability.stats import StatsCollector

    collector = StatsCollector()
    stats.collector = collector
    async with collector.sampling():
        yield
