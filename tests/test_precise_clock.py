"""`PreciseClock`: the sleep-time arithmetic on a fake time source, then real trio runs."""

from __future__ import annotations

import math

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from agentflow_trio.server.clock import PreciseClock


class _Time:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@given(
    now=st.floats(0, 1e6, allow_nan=False),
    remaining=st.floats(-10, 3000, allow_nan=False),
    spin=st.sampled_from([0.0, 0.0005, 0.001, 0.002]),
)
def test_the_os_wait_never_overshoots_and_the_last_stretch_is_polled(
    now: float, remaining: float, spin: float
) -> None:
    clock = PreciseClock(spin, _now=_Time(now))
    sleep = clock.deadline_to_sleep_time(now + remaining)
    left = (now + remaining) - now  # what the clock itself sees, float rounding included
    if left <= spin:
        assert sleep == 0.0  # poll: the loop keeps serving I/O without sleeping
    else:
        assert sleep == 0.0 or 0.0 < sleep <= left - 0.0001 + 1e-9  # the OS wakes before it
        assert abs(sleep * 1000 - round(sleep * 1000)) < 1e-6  # whole ms: no rounding up
        assert left - sleep < spin + 0.0011  # and not much before it


def test_no_deadline_and_far_deadlines_pass_through() -> None:
    clock = PreciseClock(_now=_Time(5.0))
    assert clock.deadline_to_sleep_time(math.inf) == math.inf
    assert clock.deadline_to_sleep_time(5.0 + 86_400) == 86_400
    assert clock.current_time() == 5.0


def test_a_negative_spin_is_refused() -> None:
    with pytest.raises(ValueError, match="spin"):
        PreciseClock(-0.001)


def test_trio_runs_on_it_and_sleeps_never_end_early() -> None:
    clock = PreciseClock()
    ended: list[tuple[float, float]] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for delay in (0.0003, 0.002, 0.0105, 0.0):
                nursery.start_soon(sleeper, delay)

    async def sleeper(delay: float) -> None:
        deadline = trio.current_time() + delay
        await trio.sleep_until(deadline)
        ended.append((deadline, trio.current_time()))

    trio.run(main, clock=clock)
    assert len(ended) == 4
    assert all(now >= deadline for deadline, now in ended)
