"""Batcher: batch windows and sizes, per-caller results, errors, cancellation, closing."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.resilience import Batcher, open_batcher


class Flusher:
    """Records each batch and when it was flushed; answers x -> 10 * x after `delay`."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.batches: list[tuple[float, list[int]]] = []
        self.error: Exception | None = None
        self.short = False

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append((trio.current_time(), list(items)))
        await trio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        results = [10 * x for x in items]
        return results[:-1] if self.short else results


async def submit_all(batcher: Batcher[int, int], items: list[int]) -> dict[int, object]:
    results: dict[int, object] = {}

    async def one(item: int) -> None:
        try:
            results[item] = await batcher.submit(item)
        except Exception as exc:
            results[item] = exc

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(one, item)
    return results


async def test_items_within_the_window_share_one_flush(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flush = Flusher()
    start = trio.current_time()
    async with open_batcher(flush, batch_size=10, batch_timeout=0.5) as batcher:
        results = await submit_all(batcher, [1, 2, 3])
    assert results == {1: 10, 2: 20, 3: 30}
    assert len(flush.batches) == 1
    at, items = flush.batches[0]
    assert sorted(items) == [1, 2, 3]
    assert at == start + 0.5  # waited the whole window for more
    assert batcher.statistics().batches == 1


async def test_full_batch_is_sent_at_once(autojump_clock: trio.testing.MockClock) -> None:
    flush = Flusher()
    start = trio.current_time()
    async with open_batcher(flush, batch_size=2, batch_timeout=100.0) as batcher:
        results = await submit_all(batcher, [1, 2, 3, 4])
        assert trio.current_time() == start
    assert results == {1: 10, 2: 20, 3: 30, 4: 40}
    assert [len(items) for _, items in flush.batches] == [2, 2]


async def test_late_item_starts_the_next_batch(autojump_clock: trio.testing.MockClock) -> None:
    flush = Flusher()
    start = trio.current_time()
    async with open_batcher(flush, batch_size=10, batch_timeout=1.0) as batcher:

        async def late() -> None:
            await trio.sleep(1.5)
            assert await batcher.submit(7) == 70

        async with trio.open_nursery() as nursery:
            nursery.start_soon(late)
            assert await batcher.submit(1) == 10
    assert flush.batches == [(start + 1.0, [1]), (start + 2.5, [7])]


async def test_flush_error_goes_to_every_caller(autojump_clock: trio.testing.MockClock) -> None:
    flush = Flusher()
    flush.error = RuntimeError("provider down")
    async with open_batcher(flush, batch_size=3) as batcher:
        results = await submit_all(batcher, [1, 2, 3])
    assert all(results[i] is flush.error for i in (1, 2, 3))
    assert batcher.statistics().failed_batches == 1


async def test_wrong_number_of_results_fails_the_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flush = Flusher()
    flush.short = True
    async with open_batcher(flush, batch_size=3) as batcher:
        results = await submit_all(batcher, [1, 2, 3])
    assert all(isinstance(results[i], ValueError) for i in (1, 2, 3))


async def test_cancelled_caller_cancels_neither_flush_nor_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flush = Flusher(delay=5.0)
    async with open_batcher(flush, batch_size=3) as batcher:
        results: dict[int, int] = {}

        async def one(item: int, timeout: float) -> None:
            with trio.move_on_after(timeout):
                results[item] = await batcher.submit(item)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 1, math.inf)
            nursery.start_soon(one, 2, 1.0)  # gives up while the flush runs
            nursery.start_soon(one, 3, math.inf)
    assert results == {1: 10, 3: 30}
    assert sorted(flush.batches[0][1]) == [1, 2, 3]


async def test_leaving_flushes_pending_then_refuses(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flush = Flusher(delay=1.0)
    results: dict[int, object] = {}
    async with trio.open_nursery() as outside:
        async with open_batcher(flush, batch_size=10, batch_timeout=60.0) as batcher:

            async def one(item: int) -> None:
                results[item] = await batcher.submit(item)

            outside.start_soon(one, 1)
            outside.start_soon(one, 2)
            await trio.testing.wait_all_tasks_blocked()
        assert flush.batches[0][0] < 60.0  # closing did not wait for the window
    assert results == {1: 10, 2: 20}
    with pytest.raises(trio.ClosedResourceError):
        await batcher.submit(3)


async def test_error_in_block_comes_out_unwrapped_and_fails_pending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flush = Flusher(delay=10.0)
    results: dict[int, object] = {}

    async def one(batcher: Batcher[int, int], item: int) -> None:
        try:
            results[item] = await batcher.submit(item)
        except trio.ClosedResourceError as exc:
            results[item] = exc

    async with trio.open_nursery() as outside:
        with pytest.raises(KeyError):
            async with open_batcher(flush, batch_size=1) as batcher:
                outside.start_soon(one, batcher, 1)
                await trio.sleep(1.0)  # item 1's flush is in progress
                raise KeyError("boom")
    assert isinstance(results[1], trio.ClosedResourceError)


async def test_batcher_must_be_opened(autojump_clock: trio.testing.MockClock) -> None:
    batcher: Batcher[int, int] = Batcher(Flusher())
    with pytest.raises(RuntimeError):
        await batcher.submit(1)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        Batcher(Flusher(), batch_size=0)


# --- property -----------------------------------------------------------------------------

arrivals_strategy = st.lists(
    st.tuples(
        st.integers(0, 40),  # arrival, in tenths
        st.one_of(st.none(), st.integers(0, 30)),  # caller gives up after, in tenths
    ),
    min_size=1,
    max_size=20,
)


@settings(deadline=None, max_examples=200)
@given(
    arrivals_strategy,
    st.integers(1, 5),  # batch size
    st.integers(0, 10),  # batch timeout, in tenths
    st.integers(0, 20),  # flush latency, in tenths
)
def test_property_each_caller_gets_its_own_result(
    arrivals: list[tuple[int, int | None]], batch_size: int, timeout: int, latency: int
) -> None:
    async def main() -> None:
        flush = Flusher(delay=latency / 10)
        arrived: dict[int, float] = {}
        results: dict[int, int] = {}

        async def caller(
            batcher: Batcher[int, int], item: int, at: int, give_up: int | None
        ) -> None:
            await trio.sleep(at / 10)
            with trio.move_on_after(math.inf if give_up is None else give_up / 10):
                arrived[item] = trio.current_time()
                results[item] = await batcher.submit(item)
                return
            assert give_up is not None

        with trio.fail_after(1000):
            async with open_batcher(flush, batch_size=batch_size, batch_timeout=timeout / 10) as b:
                async with trio.open_nursery() as nursery:
                    for item, (at, give_up) in enumerate(arrivals):
                        nursery.start_soon(caller, b, item, at, give_up)
                await trio.sleep(timeout / 10 + 1)  # let windows of given-up items close
        # Each caller that waited got f(its own item); nobody else's, nothing twice.
        assert results == {item: 10 * item for item in results}
        waited = [item for item, (_, give_up) in enumerate(arrivals) if give_up is None]
        assert set(waited) <= set(results)
        flushed = [item for _, items in flush.batches for item in items]
        assert len(flushed) == len(set(flushed))
        assert set(results) <= set(flushed)
        for flushed_at, items in flush.batches:
            assert 1 <= len(items) <= batch_size
            first = min(arrived[i] for i in items)
            if len(items) < batch_size:
                assert flushed_at == pytest.approx(first + timeout / 10)  # window closed
            else:
                assert flushed_at == max(arrived[i] for i in items)  # full: sent at once

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
