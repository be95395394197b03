"""RateLimiter: bucket refill, FIFO, deadlines, oversize requests, bounded rate (MockClock)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.errors import RateLimitError
from agentflow_trio.resilience import LocalRateLimitError, RateLimiter


async def test_unlimited_never_waits(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter()
    start = trio.current_time()
    for _ in range(1000):
        await limiter.acquire(10_000)
    assert trio.current_time() == start
    stats = limiter.statistics()
    assert (stats.requests_available, stats.tokens_available, stats.acquired) == (None, None, 1000)


async def test_requests_refill_at_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(requests_per_minute=120, burst_seconds=1.0)  # 2/s, holds 2
    start = trio.current_time()
    times = []
    for _ in range(6):
        await limiter.acquire()
        times.append(trio.current_time() - start)
    assert times == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.5, 2.0])


async def test_tokens_refill_at_the_rate(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(tokens_per_minute=600)  # 10 tokens/s, holds 10
    start = trio.current_time()
    await limiter.acquire(10)
    await limiter.acquire(5)
    assert trio.current_time() - start == pytest.approx(0.5)
    assert limiter.statistics().tokens_available == pytest.approx(0.0)


async def test_oversize_request_is_admitted_when_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(tokens_per_minute=60)  # 1 token/s, holds 1
    start = trio.current_time()
    await limiter.acquire(5)  # larger than the bucket: the full bucket admits it
    assert trio.current_time() == start
    assert limiter.statistics().tokens_available == pytest.approx(-4.0)
    await limiter.acquire(1)  # the debt is paid back first
    assert trio.current_time() - start == pytest.approx(5.0)
    await limiter.acquire(3)  # oversize again: waits for a full bucket, not for 3 tokens
    assert trio.current_time() - start == pytest.approx(6.0)


async def test_waiters_are_served_first_come_first_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(tokens_per_minute=60)
    await limiter.acquire(1)
    order: list[str] = []

    async def take(name: str, tokens: int) -> None:
        await limiter.acquire(tokens)
        order.append(name)

    async with trio.open_nursery() as nursery:
        for name, tokens in [("a", 1), ("big", 3), ("c", 1)]:
            nursery.start_soon(take, name, tokens)
            await trio.testing.wait_all_tasks_blocked()
        assert limiter.statistics().waiting == 3
        with pytest.raises(trio.WouldBlock):
            limiter.acquire_nowait(0)  # no overtaking, even for a free request
    assert order == ["a", "big", "c"]


async def test_even_a_free_request_queues_behind_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(tokens_per_minute=60)  # requests unlimited
    await limiter.acquire(1)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire, 1)
        await trio.testing.wait_all_tasks_blocked()
        await limiter.acquire(0)
        assert trio.current_time() - start == pytest.approx(1.0)


async def test_wait_past_the_deadline_raises_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter(tokens_per_minute=60)
    await limiter.acquire(1)
    start = trio.current_time()
    with trio.move_on_after(0.5), pytest.raises(RateLimitError) as info:
        await limiter.acquire(3)
    assert isinstance(info.value, LocalRateLimitError)
    assert info.value.retry_after == pytest.approx(1.0)  # oversize: waits for a full bucket
    assert trio.current_time() == start
    stats = limiter.statistics()
    assert (stats.rejected, stats.waiting) == (1, 0)
    assert stats.tokens_available == pytest.approx(0.0)  # nothing taken


async def test_deadline_estimate_counts_the_queue(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(requests_per_minute=60)  # 1/s, holds 1
    await limiter.acquire()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.acquire)  # served at 1s
        nursery.start_soon(limiter.acquire)  # served at 2s
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(2.5), pytest.raises(LocalRateLimitError) as info:
            await limiter.acquire()  # would be served at 3s
        assert info.value.retry_after == pytest.approx(3.0)
        with trio.move_on_after(3.0):
            await limiter.acquire()
        assert trio.current_time() == pytest.approx(3.0)


async def test_cancelled_waiter_takes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(tokens_per_minute=60)
    await limiter.acquire(1)
    start = trio.current_time()

    async def cancel_later(scope: trio.CancelScope) -> None:
        await trio.sleep(0.5)
        scope.cancel()

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(cancel_later, scope)
            nursery.start_soon(limiter.acquire, 1)  # queued behind us
            await limiter.acquire(1)
    assert trio.current_time() - start == pytest.approx(1.0)  # the next waiter got our place
    stats = limiter.statistics()
    assert (stats.acquired, stats.waiting) == (2, 0)


async def test_acquire_nowait(autojump_clock: trio.testing.MockClock) -> None:
    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=600)
    limiter.acquire_nowait(10)
    with pytest.raises(trio.WouldBlock):
        limiter.acquire_nowait(1)
    await trio.sleep(1)
    limiter.acquire_nowait(10)
    with pytest.raises(ValueError):
        limiter.acquire_nowait(-1)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        RateLimiter(requests_per_minute=-1)
    with pytest.raises(ValueError):
        RateLimiter(burst_seconds=0)


# --- property -----------------------------------------------------------------------------

requests_strategy = st.lists(
    st.tuples(
        st.integers(0, 30),  # start, in tenths
        st.integers(0, 25),  # tokens (the bucket holds 10)
        st.one_of(st.none(), st.integers(0, 30)),  # cancelled after, in tenths
    ),
    min_size=1,
    max_size=25,
)


def assert_bounded(grants: list[tuple[float, float]], rate: float, capacity: float) -> None:
    """Over every window [t_i, t_j], at most max(capacity, largest) + rate * (t_j - t_i)."""
    largest = max((amount for _, amount in grants), default=0.0)
    grants = sorted(grants)
    for i, (start, _) in enumerate(grants):
        total = 0.0
        for end, amount in grants[i:]:
            total += amount
            assert total <= max(capacity, largest) + rate * (end - start) + 1e-6


@settings(deadline=None, max_examples=150)
@given(requests_strategy, st.booleans())
def test_property_rate_is_never_exceeded_and_order_is_fifo(
    requests: list[tuple[int, int, int | None]], with_deadlines: bool
) -> None:
    async def main() -> None:
        limiter = RateLimiter(requests_per_minute=300, tokens_per_minute=600)  # 5/s, 10/s
        grants: list[tuple[float, int]] = []
        called: list[int] = []
        served: dict[int, float] = {}

        async def client(index: int, start: int, tokens: int, cancel: int | None) -> None:
            await trio.sleep(start / 10)
            with trio.move_on_after(math.inf if cancel is None else cancel / 10):
                called.append(index)
                try:
                    await limiter.acquire(tokens)
                except LocalRateLimitError:
                    assert with_deadlines
                    return
                grants.append((trio.current_time(), tokens))
                served[index] = trio.current_time()

        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                for index, (start, tokens, cancel) in enumerate(requests):
                    if not with_deadlines:
                        cancel = None
                    nursery.start_soon(client, index, start, tokens, cancel)
        assert_bounded([(t, 1.0) for t, _ in grants], rate=5.0, capacity=5.0)
        assert_bounded([(t, float(n)) for t, n in grants], rate=10.0, capacity=10.0)
        times = [served[i] for i in called if i in served]
        assert times == sorted(times)  # first come, first served
        if not with_deadlines:
            assert len(served) == len(requests)
        assert limiter.statistics().waiting == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
