"""`GCMonitor`: the garbage collector's pauses, timed with ``gc.callbacks``."""

from __future__ import annotations

import gc
import time
from typing import Any

import attrs

__all__ = ["GCMonitor", "GCStatistics"]


@attrs.frozen
class GCStatistics:
    """Collections seen by a `GCMonitor` since it was installed (or reset).

    ``collections`` counts pauses (all generations), ``by_generation`` splits them
    (index 0, 1, 2); ``total_pause_s`` and ``max_pause_s`` are wall-clock seconds spent
    inside the collector; ``collected`` is the objects it freed.
    """

    collections: int
    by_generation: tuple[int, int, int]
    total_pause_s: float
    max_pause_s: float
    collected: int


class GCMonitor:
    """Times every collection between `install` and `remove` (also a context manager).

    The callback does two clock reads and a few additions per collection, nothing per
    allocation. `remove` always takes the callback out again, so several monitors (and
    several runs) can come and go in one process.
    """

    __slots__ = ("_by_generation", "_collected", "_count", "_max", "_started", "_total")

    def __init__(self) -> None:
        self._started = 0.0
        self.reset()

    def reset(self) -> None:
        """Zero the counters (the callback stays installed if it was)."""
        self._count = 0
        self._by_generation = [0, 0, 0]
        self._total = 0.0
        self._max = 0.0
        self._collected = 0

    @property
    def installed(self) -> bool:
        """True while the callback is in ``gc.callbacks``."""
        return any(cb == self._callback for cb in gc.callbacks)

    def install(self) -> None:
        """Add the callback to ``gc.callbacks`` (once, however often this is called)."""
        if not self.installed:
            gc.callbacks.append(self._callback)

    def remove(self) -> None:
        """Take the callback out of ``gc.callbacks``; does nothing if it is not there."""
        gc.callbacks[:] = [cb for cb in gc.callbacks if cb != self._callback]

    def __enter__(self) -> GCMonitor:
        self.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def statistics(self) -> GCStatistics:
        """A `GCStatistics` snapshot."""
        g = self._by_generation
        return GCStatistics(
            collections=self._count,
            by_generation=(g[0], g[1], g[2]),
            total_pause_s=self._total,
            max_pause_s=self._max,
            collected=self._collected,
        )

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self._count += 1
        generation = info.get("generation", 2)
        if 0 <= generation <= 2:
            self._by_generation[generation] += 1
        self._total += pause
        if pause > self._max:
            self._max = pause
        self._collected += int(info.get("collected", 0))
