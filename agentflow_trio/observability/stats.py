"""Run statistics: HDR latency percentiles, and the guide's `PerformanceMetrics`.

`LatencyRecorder` (HDR histogram, 0.1 % precision, fixed memory) measures latency, from
each request's intended start under load (no coordinated omission). `StatsCollector`
samples what the process spends during a run (CPU seconds, RSS, GC pauses, live trio
tasks) and turns a recorder plus outcome counts into a frozen `PerformanceMetrics`.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio

from ._gc import GCMonitor, GCStatistics
from ._latency import CurvePoint, LatencyRecorder, LatencySummary, SecondStats
from ._tasks import count_tasks
from .runtime import current_rss

__all__ = [
    "CurvePoint",
    "GCMonitor",
    "GCStatistics",
    "LatencyRecorder",
    "LatencySummary",
    "PerformanceMetrics",
    "SecondStats",
    "StatsCollector",
]

_SUCCEEDED: Final = "succeeded"


def _plain_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return {str(k): int(v) for k, v in counts.items()}


@attrs.frozen
class PerformanceMetrics:
    """The guide's performance snapshot of a run (or of one stage of it).

    Latencies are in milliseconds (None when nothing completed). ``outcomes`` counts
    requests by outcome; ``errors`` are all but ``succeeded``. Process figures (RSS, GC,
    tasks, CPU) are None for a slice of a run that does not own the whole process (a
    stage): ``peak_rss_bytes`` and ``peak_tasks`` are the highest sampled during the run,
    ``gc_*`` the collector's pauses during it, ``cpu_seconds`` user + system time.
    """

    requests: int
    duration_s: float
    requests_per_s: float
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    errors: int
    error_rate: float
    outcomes: Mapping[str, int] = attrs.field(converter=_plain_counts, hash=False)
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    gc_pauses: int | None = None
    gc_pause_total_ms: float | None = None
    gc_pause_max_ms: float | None = None
    active_tasks: int | None = None
    peak_tasks: int | None = None
    cpu_seconds: float | None = None
    cpu_seconds_per_request: float | None = None

    @classmethod
    def from_latency(
        cls,
        latency: LatencyRecorder | LatencySummary,
        outcomes: Mapping[str, int] | None = None,
        duration_s: float = 0.0,
        **process: Any,
    ) -> PerformanceMetrics:
        """Build from a recorder (or its summary) and outcome counts.

        ``requests`` is the sum of ``outcomes`` (the recorder's count if none are given);
        ``process`` sets the process fields (``rss_bytes=...``, ``cpu_seconds=...``).
        """
        s = latency.summary() if isinstance(latency, LatencyRecorder) else latency
        counts = {str(k): int(v) for k, v in (outcomes or {}).items() if v}
        if not counts and s.count:
            counts = {_SUCCEEDED: s.count}
        requests = sum(counts.values())
        errors = requests - counts.get(_SUCCEEDED, 0)
        cpu = process.get("cpu_seconds")
        if cpu is not None and "cpu_seconds_per_request" not in process:
            process["cpu_seconds_per_request"] = cpu / requests if requests else None
        return cls(
            requests=requests,
            duration_s=duration_s,
            requests_per_s=requests / duration_s if duration_s > 0 else 0.0,
            mean_ms=s.mean_ms,
            p50_ms=s.p50_ms,
            p90_ms=s.p90_ms,
            p95_ms=s.p95_ms,
            p99_ms=s.p99_ms,
            p999_ms=s.p999_ms,
            max_ms=s.max_ms,
            errors=errors,
            error_rate=errors / requests if requests else 0.0,
            outcomes=dict(sorted(counts.items())),
            **process,
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready), fields in declaration order."""
        data = attrs.asdict(self, recurse=False)
        data["outcomes"] = dict(self.outcomes)
        return data

    def to_json(self) -> str:
        """`to_dict` as one compact line of JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class StatsCollector:
    """Gathers a run's figures: latencies, outcomes, CPU, RSS, GC pauses, trio tasks.

    ``start()`` takes the CPU and clock baselines and installs a `GCMonitor`; ``stop()``
    removes it (always, even if ``start`` is called on an already-running collector, which
    raises). In between, `record` / `count` feed ``latency`` and the outcome counters, and
    `sample` (run every ``sample_interval`` seconds by `sampling`) tracks peak RSS and
    the number of live trio tasks. `metrics` turns all that into `PerformanceMetrics`.

    ``async with collector.sampling():`` does start, periodic sampling and stop around a
    block; its sampler task lives in the block's own nursery and is cancelled on exit.
    """

    def __init__(
        self,
        *,
        rss: Callable[[], int] = current_rss,
        sample_interval: float = 0.5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.latency = LatencyRecorder(series=False)
        self.outcomes: dict[str, int] = {}
        self.sample_interval = sample_interval
        self._rss = rss
        self._clock = clock
        self._gc = GCMonitor()
        self._started: float | None = None
        self._stopped: float | None = None
        self._cpu0 = 0.0
        self._cpu1: float | None = None
        self._last_rss: int | None = None
        self._peak_rss: int | None = None
        self._last_tasks: int | None = None
        self._peak_tasks: int | None = None

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._started is not None and self._stopped is None

    def start(self) -> None:
        """Take the baselines and install the GC monitor.

        Raises:
            RuntimeError: the collector is already running.
        """
        if self.running:
            raise RuntimeError("this StatsCollector is already running")
        self._gc.reset()
        self._gc.install()
        self._cpu0 = _cpu_seconds()
        self._cpu1 = None
        self._started = self._clock()
        self._stopped = None
        self._last_rss = self._peak_rss = self._last_tasks = self._peak_tasks = None
        self.sample()

    def stop(self) -> None:
        """Take the final sample and remove the GC monitor. Does nothing if not running."""
        if not self.running:
            return
        try:
            self.sample()
        finally:
            self._stopped = self._clock()
            self._cpu1 = _cpu_seconds()
            self._gc.remove()

    def record(self, outcome: str, seconds: float) -> None:
        """Count one request of ``outcome`` that took ``seconds``."""
        self.latency.record(seconds)
        self.count(outcome)

    def count(self, outcome: str) -> None:
        """Count one request of ``outcome`` (no latency)."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def sample(self) -> None:
        """Sample RSS and (inside trio) the number of live tasks now; keep the peaks."""
        rss = self._last_rss = self._rss()
        if self._peak_rss is None or rss > self._peak_rss:
            self._peak_rss = rss
        try:
            tasks = count_tasks()
        except RuntimeError:  # not inside trio.run
            return
        self._last_tasks = tasks
        if self._peak_tasks is None or tasks > self._peak_tasks:
            self._peak_tasks = tasks

    async def run_sampler(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Call `sample` every ``sample_interval`` seconds until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(self.sample_interval)
            self.sample()

    @asynccontextmanager
    async def sampling(self) -> AsyncIterator[StatsCollector]:
        """`start`, sample periodically while the block runs, then `stop`.

        The sampler is a task of this block's own nursery, cancelled when the block ends
        (however it ends). An error raised in the block comes out as itself, not wrapped
        in an exception group.
        """
        self.start()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.run_sampler)
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) != 1:
                raise
            raise group.exceptions[0] from None
        finally:
            self.stop()

    @property
    def duration(self) -> float:
        """Seconds from `start` to `stop` (to now while running; 0 before start)."""
        if self._started is None:
            return 0.0
        end = self._stopped if self._stopped is not None else self._clock()
        return end - self._started

    def gc_statistics(self) -> GCStatistics:
        """The GC pauses seen since `start`."""
        return self._gc.statistics()

    def process_figures(self) -> dict[str, Any]:
        """RSS, GC, task and CPU figures since `start`, as `PerformanceMetrics` fields."""
        gc_stats = self._gc.statistics()
        cpu_end = self._cpu1 if self._cpu1 is not None else _cpu_seconds()
        return {
            "rss_bytes": self._last_rss,
            "peak_rss_bytes": self._peak_rss,
            "gc_pauses": gc_stats.collections,
            "gc_pause_total_ms": gc_stats.total_pause_s * 1000.0,
            "gc_pause_max_ms": gc_stats.max_pause_s * 1000.0,
            "active_tasks": self._last_tasks,
            "peak_tasks": self._peak_tasks,
            "cpu_seconds": max(cpu_end - self._cpu0, 0.0) if self._started is not None else None,
        }

    def metrics(
        self,
        latency: LatencyRecorder | None = None,
        outcomes: Mapping[str, int] | None = None,
        duration: float | None = None,
        *,
        process: bool = True,
    ) -> PerformanceMetrics:
        """`PerformanceMetrics` for ``latency`` and ``outcomes`` over ``duration`` seconds.

        Defaults: this collector's own ``latency``, ``outcomes`` and `duration`. With
        ``process=False`` (a stage of a run) the process fields are None.
        """
        figures = self.process_figures() if process else {}
        return PerformanceMetrics.from_latency(
            latency if latency is not None else self.latency,
            outcomes if outcomes is not None else self.outcomes,
            self.duration if duration is None else duration,
            **figures,
        )
