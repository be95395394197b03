"""`PreciseClock`: the sleep-time arithmetic on a fake time source, then real trio runs."""

from __future__ import annotations

import math

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from agentflow_trio.mockllm import PreciseClock


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
        return
    assert sleep >= 0.0
    waited_ms = _os_wait_ms(sleep)
    if waited_ms:
        assert waited_ms / 1000 <= left - 0.0001 + 1e-9  # the OS wakes before the deadline
    assert left - waited_ms / 1000 < max(spin, 0.001) + 0.0002  # and not long before it


def _os_wait_ms(timeout: float) -> int:
    """What ``epoll.poll(timeout)`` waits: CPython rounds seconds up to whole ns, then up
    to whole ms (``_PyTime_ROUND_TIMEOUT``, then ``_PyTime_ROUND_CEILING``)."""
    ns = math.ceil(timeout * 1e9)
    return -(-ns // 1_000_000)


@pytest.mark.parametrize("ms", [66, 67, 134, 267, 268, 534, 535, 536, 999, 1_000, 12_345])
def test_whole_milliseconds_survive_pythons_rounding(ms: int) -> None:
    """k / 1000 is often a hair above k ms in binary; the OS must still wait k ms."""
    clock = PreciseClock(_now=_Time(0.0))
    sleep = clock.deadline_to_sleep_time((ms + 0.5) / 1000)
    assert _os_wait_ms(sleep) == ms


def test_no_deadline_and_far_deadlines_pass_through() -> None:
    clock = PreciseClock(_now=_Time(5.0))
    assert clock.deadline_to_sleep_time(math.inf) == math.inf
    assert clock.deadline_to_sleep_time(5.0 + 86_400) == 86_400
    assert clock.current_time() == 5.0


def test_a_negative_spin_is_refused() -> None:
    with pytest.raises(ValueError, match="spin"):
        PreciseClock(-0.001)


def test_trio_runs_on_it_with_and_without_timers() -> None:
    """A smoke test: trio accepts the clock, idles with no deadline (inf passes through),
    and every sleep ends (never before its deadline, which trio itself guarantees)."""
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
