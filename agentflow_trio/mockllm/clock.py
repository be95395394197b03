"""`PreciseClock`: a trio clock whose sleeps end near their deadline, not up to 1 ms late.

trio sleeps in ``epoll_wait``/``kqueue``, whose timeout Python rounds *up* to a whole
millisecond, so ``trio.sleep(0.05)`` ends 0 to 1 ms late (0.5 ms on average when nothing
else wakes the loop). For the mock LLM that error is the benchmark's: it adds to every
model latency, and the Little's-law bound is never reachable. `PreciseClock` asks the OS to
wait only whole milliseconds that certainly fit (rounded *down*) and polls the last
sub-millisecond stretch (a zero timeout: the loop keeps serving I/O), so a timer fires
close to its deadline (measured here: median 40 us late, against 710 us with trio's clock).

The price is CPU: while the next deadline is less than ``spin`` seconds away, the run loop
polls instead of sleeping. Use it in a process of its own (``agentcli mock-llm`` does);
don't in one that shares its core with what it measures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import final

import trio

__all__ = ["PreciseClock"]

_SLACK = 0.0001  # seconds: more than Linux's default 50 us timer slack
_LONG = 3600.0  # seconds: beyond this, plain rounding is fine
_HAIR = 1e-7  # seconds: below Python's ns -> ms ceiling, far below a millisecond


@final
class PreciseClock(trio.abc.Clock):
    """A `trio.abc.Clock` on ``time.perf_counter`` whose sleeps end on time (see module).

    ``spin`` (seconds, default 1 ms: the OS timeout's granularity) is how close to a
    deadline the loop stops sleeping and polls. Pass it to ``trio.run(..., clock=...)``.
    """

    __slots__ = ("_now", "_spin")

    def __init__(
        self, spin: float = 0.001, *, _now: Callable[[], float] = time.perf_counter
    ) -> None:
        if not spin >= 0:
            raise ValueError(f"spin must be >= 0 seconds, got {spin!r}")
        self._spin = spin
        self._now = _now

    def start_clock(self) -> None:
        """Nothing to start: the clock is ``time.perf_counter``."""

    def current_time(self) -> float:
        """``time.perf_counter()``."""
        return self._now()

    def deadline_to_sleep_time(self, deadline: float) -> float:
        """0 within ``spin`` of ``deadline`` (poll), else the whole milliseconds before it."""
        remaining = deadline - self._now()
        if remaining <= self._spin:
            return 0.0
        if remaining > _LONG:  # no deadline at all (inf), or one too far to matter
            return remaining
        # The OS wakes us at the whole millisecond asked plus its timer slack (~50 us).
        ms = math.floor((remaining - _SLACK) * 1000.0)
        # Python rounds a timeout up to whole ns, then ms: k / 1000 is often a hair above
        # k ms in binary (0.067 s -> 67000001 ns -> 68 ms), so ask for a hair less.
        return ms / 1000.0 - _HAIR if ms > 0 else 0.0
