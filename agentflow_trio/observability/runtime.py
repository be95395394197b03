"""Runtime tuning from ``[runtime]``: GC thresholds, ``gc.freeze()`` (set, or automatic for
a runner admitting thousands of events), a soft memory limit.

The guide tunes Go with ``GOMAXPROCS`` and ``SetGCPercent``; the Python equivalents are the
collector's thresholds (how often generation 0/1/2 collections run), ``gc.freeze()`` after
start-up (everything allocated so far leaves the collector's reach, so full collections
get cheaper), and a soft memory limit: above it the runner refuses new events with
`~agentflow_trio.errors.Overloaded` instead of growing until the kernel kills it.

`apply_gc_settings` and `MemoryGuard` read the config duck-typed (``gc_thresholds``,
``gc_freeze``, ``memory_limit``, ``memory_check_interval``), so any object with those
attributes works, not only `agentflow_trio.config.RuntimeConfig`.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
import trio

from ..errors import Overloaded

__all__ = [
    "AUTO_GC_EVENTS",
    "AppliedGCSettings",
    "MemoryGuard",
    "MemoryGuardStatistics",
    "apply_gc_settings",
    "auto_gc_settings",
    "current_rss",
    "peak_rss",
]

_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# ru_maxrss is in KiB on Linux and in bytes on macOS.
_MAXRSS_UNIT: Final = 1 if sys.platform == "darwin" else 1024


def current_rss() -> int:
    """The resident set size of this process now, in bytes.

    Read from ``/proc/self/statm`` (one small read, no allocation worth noting); where
    that does not exist, falls back to `peak_rss` (an upper bound).
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return peak_rss()


def peak_rss() -> int:
    """The highest resident set size this process has had since it started, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


@attrs.frozen
class AppliedGCSettings:
    """What `apply_gc_settings` changed; `undo` puts the collector back as it was.

    Attributes:
      previous_thresholds: ``gc.get_threshold()`` before the call.
      thresholds: the thresholds set, or None if they were left alone.
      froze: whether ``gc.freeze()`` was called.
      frozen_objects: ``gc.get_freeze_count()`` right after freezing (0 if not frozen).
    """

    previous_thresholds: tuple[int, int, int]
    thresholds: tuple[int, ...] | None
    froze: bool
    frozen_objects: int

    @property
    def changed(self) -> bool:
        """True if anything was changed."""
        return self.thresholds is not None or self.froze

    def undo(self) -> None:
        """Restore the previous thresholds and unfreeze what was frozen. Call it once: a
        second call would also unfreeze what others froze since."""
        if self.thresholds is not None:
            gc.set_threshold(*self.previous_thresholds)
        if self.froze:
            gc.unfreeze()


def apply_gc_settings(runtime_cfg: Any) -> AppliedGCSettings:
    """Apply ``gc_thresholds`` and ``gc_freeze`` from a ``[runtime]`` section.

    Empty ``gc_thresholds`` leaves Python's defaults; one to three ints are passed to
    ``gc.set_threshold`` (the generations not given keep their current value). With
    ``gc_freeze`` a full ``gc.collect()`` runs first (so garbage is not frozen for
    good), then ``gc.freeze()``; call this once start-up is done. Returns what changed;
    its ``undo()`` restores the collector.

    Raises:
        ValueError: more than three thresholds, or a negative one.
    """
    previous = gc.get_threshold()
    wanted: Sequence[int] = tuple(getattr(runtime_cfg, "gc_thresholds", ()) or ())
    if len(wanted) > 3 or any(int(v) < 0 for v in wanted):
        raise ValueError(f"gc_thresholds: expected at most 3 integers >= 0, got {wanted!r}")
    thresholds: tuple[int, ...] | None = None
    if wanted:
        thresholds = tuple(int(v) for v in wanted) + previous[len(wanted) :]
        gc.set_threshold(*thresholds)
    froze = bool(getattr(runtime_cfg, "gc_freeze", False))
    if froze:
        gc.collect()
        gc.freeze()
    return AppliedGCSettings(
        previous_thresholds=previous,
        thresholds=thresholds,
        froze=froze,
        frozen_objects=gc.get_freeze_count() if froze else 0,
    )


AUTO_GC_EVENTS: Final = 2000
"""``[runtime] gc_auto``: a runner admitting at least this many events at once
(``max_concurrent_events``) tunes the collector while it is open (`auto_gc_settings`)."""
_AUTO_GC_PER_EVENT: Final = 10
_AUTO_GC_MAX: Final = 100_000
_AUTO_GC_OLDER: Final = 20


@attrs.define
class _AutoGC:
    """The process-wide state of `auto_gc_settings`: one tuning, however many runners."""

    users: int = 0
    thresholds: tuple[int, int, int] | None = None  # what was set, if anything
    previous: tuple[int, int, int] = (700, 10, 10)
    froze: bool = False


_auto = _AutoGC()


def auto_gc_settings(events: int) -> Callable[[], None]:
    """Tune the collector for ``events`` admitted at once; return the function that
    gives this tuning back (call it once). ``[runtime] gc_auto``, for many waiting events.

    Why: thousands of events waiting on a model keep hundreds of thousands of objects
    alive, each surviving young collections into the old generation, whose full scans
    (start-up objects included) then cost about a third of the CPU per event at 2,000 in
    flight (measured with ``python -m bench.anchors --only in_flight_2000``). So the
    first user raises the generation-0 threshold to 10 per event (at most 100,000; older
    generations to 20 collections), never lowering one set by someone else, and, if
    nothing is frozen yet, freezes what start-up allocated (``gc.collect()``, then
    ``gc.freeze()``). The last user to give it back restores both (thresholds only if
    still as set). Runners may nest and overlap: the counting makes that safe.
    """
    state = _auto
    if state.users == 0:
        current = gc.get_threshold()
        wanted = min(max(events, 1) * _AUTO_GC_PER_EVENT, _AUTO_GC_MAX)
        state.previous, state.thresholds = current, None
        if current[0] < wanted:
            older = (max(current[1], _AUTO_GC_OLDER), max(current[2], _AUTO_GC_OLDER))
            state.thresholds = (wanted, *older)
            gc.set_threshold(*state.thresholds)
        state.froze = gc.get_freeze_count() == 0
        if state.froze:
            gc.collect()
            gc.freeze()
    state.users += 1
    return _give_back_once()


def _give_back_once() -> Callable[[], None]:
    given = False

    def give_back() -> None:
        nonlocal given
        if given:
            return
        given = True
        state = _auto
        state.users -= 1
        if state.users:
            return
        if state.thresholds is not None and gc.get_threshold() == state.thresholds:
            gc.set_threshold(*state.previous)
        if state.froze:
            gc.unfreeze()
        state.thresholds, state.froze = None, False

    return give_back


@attrs.frozen
class MemoryGuardStatistics:
    """A snapshot of a `MemoryGuard`.

    Attributes:
      limit_bytes: the soft limit (0: the guard is off).
      resume_below_bytes: shedding stops once RSS falls below this.
      rss_bytes: RSS at the last check (0 before the first).
      peak_rss_bytes: the highest RSS the guard has seen.
      shedding: whether new events are refused now.
      checks: how many times RSS was sampled.
      episodes: how many times shedding switched on.
    """

    limit_bytes: int
    resume_below_bytes: int
    rss_bytes: int
    peak_rss_bytes: int
    shedding: bool
    checks: int
    episodes: int


class MemoryGuard:
    """Watches RSS and sets ``shedding`` while the process is over its soft limit.

    ``shedding`` is a plain attribute, so the hot path pays one attribute read:
    ``if guard.shedding: raise guard.overloaded()``. It turns on when RSS exceeds
    ``limit_bytes`` and off once RSS is below ``resume_ratio * limit_bytes``
    (hysteresis: a process hovering at the limit does not flap). A limit of 0 turns the
    guard off: it never sheds and `run` returns at once.

    `run` samples ``rss()`` every ``interval`` seconds (on ``trio.current_time``, so it is
    exact under ``MockClock``) until cancelled; use ``await nursery.start(guard.run)``:
    the first sample is taken before ``started()``. `check` samples once, synchronously.
    """

    __slots__ = (
        "_checks",
        "_episodes",
        "_peak",
        "_rss",
        "_rss_fn",
        "interval",
        "limit_bytes",
        "resume_below_bytes",
        "shedding",
    )

    def __init__(
        self,
        limit_bytes: int,
        interval: float = 1.0,
        *,
        rss: Callable[[], int] = current_rss,
        resume_ratio: float = 0.95,
    ) -> None:
        if limit_bytes < 0:
            raise ValueError(f"limit_bytes must be >= 0, got {limit_bytes}")
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        if not 0 < resume_ratio <= 1:
            raise ValueError(f"resume_ratio must be in (0, 1], got {resume_ratio}")
        self.limit_bytes = int(limit_bytes)
        self.resume_below_bytes = int(limit_bytes * resume_ratio)
        self.interval = float(interval)
        self.shedding = False
        self._rss_fn = rss
        self._rss = 0
        self._peak = 0
        self._checks = 0
        self._episodes = 0

    @classmethod
    def from_config(cls, runtime_cfg: Any, *, rss: Callable[[], int] = current_rss) -> MemoryGuard:
        """A guard from a ``[runtime]`` section (``memory_limit``, ``memory_check_interval``)."""
        return cls(
            int(getattr(runtime_cfg, "memory_limit", 0)),
            float(getattr(runtime_cfg, "memory_check_interval", 1.0)),
            rss=rss,
        )

    def check(self) -> bool:
        """Sample RSS once, update ``shedding``, and return it. No checkpoint."""
        if not self.limit_bytes:
            return False
        rss = self._rss = self._rss_fn()
        self._checks += 1
        if rss > self._peak:
            self._peak = rss
        if self.shedding:
            if rss < self.resume_below_bytes:
                self.shedding = False
        elif rss > self.limit_bytes:
            self.shedding = True
            self._episodes += 1
        return self.shedding

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check every ``interval`` seconds until cancelled (returns at once if the limit is 0).

        Cancellation leaves ``shedding`` as last computed.
        """
        if not self.limit_bytes:
            task_status.started()
            return
        self.check()
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            self.check()

    def overloaded(self) -> Overloaded:
        """The error to refuse an event with while shedding (says why and until when)."""
        return Overloaded(
            f"memory limit: RSS {_mib(self._rss)} is over the soft limit of "
            f"{_mib(self.limit_bytes)}; new events are refused until it falls below "
            f"{_mib(self.resume_below_bytes)}"
        )

    def statistics(self) -> MemoryGuardStatistics:
        """A `MemoryGuardStatistics` snapshot; cheap, no checkpoint."""
        return MemoryGuardStatistics(
            limit_bytes=self.limit_bytes,
            resume_below_bytes=self.resume_below_bytes,
            rss_bytes=self._rss,
            peak_rss_bytes=self._peak,
            shedding=self.shedding,
            checks=self._checks,
            episodes=self._episodes,
        )

    def __repr__(self) -> str:
        state = "shedding" if self.shedding else "ok"
        return f"<MemoryGuard {state} rss={_mib(self._rss)} limit={_mib(self.limit_bytes)}>"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
