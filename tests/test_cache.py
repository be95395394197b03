"""TTLCache: TTL, LRU bounds, single-flight with hand-off, make_key, TTL policy (MockClock)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.resilience import (
    CREATIVE_TTL,
    DEFAULT_TTL,
    FACTUAL_TTL,
    TTLCache,
    default_ttl_policy,
    make_key,
)


class Upstream:
    """Counts calls; each returns (key, call number) after `delay`, or raises `error`."""

    def __init__(self, delay: float = 1.0, error: Exception | None = None):
        self.delay = delay
        self.error = error
        self.calls = 0

    async def __call__(self, key: str) -> tuple[str, int]:
        self.calls += 1
        number = self.calls
        await trio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return key, number


async def test_hit_returns_the_cached_value(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, tuple[str, int]] = TTLCache()
    upstream = Upstream()
    assert await cache.get_or_call("k", upstream, "k", ttl=60) == ("k", 1)
    assert await cache.get_or_call("k", upstream, "k", ttl=60) == ("k", 1)
    assert upstream.calls == 1
    stats = cache.statistics()
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)


async def test_hit_is_a_checkpoint(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, int] = TTLCache()
    cache.put("k", 1, ttl=60)
    with trio.testing.assert_checkpoints():
        assert await cache.get_or_call("k", Upstream(), "k", ttl=60) == 1  # type: ignore[arg-type]


async def test_ttl_expiry_is_exact(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, tuple[str, int]] = TTLCache()
    upstream = Upstream(delay=0.0)
    await cache.get_or_call("k", upstream, "k", ttl=10)
    await trio.sleep(9.5)
    assert await cache.get_or_call("k", upstream, "k", ttl=10) == ("k", 1)
    await trio.sleep(0.5)  # exactly ttl after the put
    assert await cache.get_or_call("k", upstream, "k", ttl=10) == ("k", 2)
    await trio.sleep(10)
    assert cache.get_nowait("k") is None
    assert cache.statistics().expirations == 2


async def test_errors_are_not_cached(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, tuple[str, int]] = TTLCache()
    upstream = Upstream(error=RuntimeError("down"))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await cache.get_or_call("k", upstream, "k", ttl=60)
    assert upstream.calls == 2
    assert cache.statistics().entries == 0
    upstream.error = None
    assert await cache.get_or_call("k", upstream, "k", ttl=60) == ("k", 3)


async def test_concurrent_misses_make_one_call(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, tuple[str, int]] = TTLCache()
    upstream = Upstream()
    results: list[tuple[str, int]] = []

    async def get() -> None:
        results.append(await cache.get_or_call("k", upstream, "k", ttl=60))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
    assert upstream.calls == 1
    assert results == [("k", 1)] * 5
    stats = cache.statistics()
    assert (stats.misses, stats.coalesced) == (5, 4)


async def test_waiters_get_the_leaders_exception(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, tuple[str, int]] = TTLCache()
    error = RuntimeError("down")
    upstream = Upstream(error=error)
    caught: list[BaseException] = []

    async def get() -> None:
        try:
            await cache.get_or_call("k", upstream, "k", ttl=60)
        except RuntimeError as exc:
            caught.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(get)
    assert upstream.calls == 1
    assert len(caught) == 3
    assert all(exc is error for exc in caught)
    assert cache.statistics().entries == 0


async def test_cancelled_leader_hands_over_to_one_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TTLCache[str, tuple[str, int]] = TTLCache()
    upstream = Upstream(delay=10.0)
    results: list[tuple[str, int]] = []

    async def get() -> None:
        results.append(await cache.get_or_call("k", upstream, "k", ttl=60))

    start = trio.current_time()
    with trio.fail_after(100):  # a lost hand-off would leave the waiters hanging
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(3.0) as leader:
                # The waiters run once the leader's call is in flight.
                for _ in range(3):
                    nursery.start_soon(get)
                await cache.get_or_call("k", upstream, "k", ttl=60)
    assert leader.cancelled_caught
    assert upstream.calls == 2  # the leader's, then one waiter's
    assert results == [("k", 2)] * 3
    assert trio.current_time() == start + 3.0 + 10.0


async def test_cancelled_waiter_just_leaves(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, tuple[str, int]] = TTLCache()
    upstream = Upstream(delay=5.0)
    results: list[tuple[str, int]] = []

    async def get(timeout: float) -> None:
        with trio.move_on_after(timeout):
            results.append(await cache.get_or_call("k", upstream, "k", ttl=60))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(get, math.inf)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(get, 1.0)
        nursery.start_soon(get, math.inf)
    assert upstream.calls == 1
    assert results == [("k", 1)] * 2


async def test_lru_eviction_by_entries(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, int] = TTLCache(max_entries=2)
    cache.put("a", 1, ttl=60)
    cache.put("b", 2, ttl=60)
    assert cache.get_nowait("a") == 1  # a is now the most recent
    cache.put("c", 3, ttl=60)
    assert cache.get_nowait("b") is None
    assert (cache.get_nowait("a"), cache.get_nowait("c")) == (1, 3)
    assert cache.statistics().evictions == 1


async def test_lru_eviction_by_bytes(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, str] = TTLCache(max_bytes=10, sizeof=len)
    cache.put("a", "aaaa", ttl=60)
    cache.put("b", "bbbb", ttl=60)
    await cache.get_or_call("a", Upstream(), "a", ttl=60)  # type: ignore[arg-type]
    cache.put("c", "cccc", ttl=60)
    assert cache.get_nowait("b") is None
    assert cache.statistics().bytes == 8
    cache.put("huge", "x" * 11, ttl=60)  # larger than the bound: returned, never stored
    assert cache.get_nowait("huge") is None
    assert cache.statistics().bytes == 8
    cache.put("a", "aaaaaa", ttl=60)  # replacing re-measures
    assert cache.statistics().bytes == 10


async def test_invalidate_during_a_call_wins(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, tuple[str, int]] = TTLCache()
    upstream = Upstream(delay=5.0)
    results: list[tuple[str, int]] = []

    async def get() -> None:
        results.append(await cache.get_or_call("k", upstream, "k", ttl=60))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(get)
        await trio.testing.wait_all_tasks_blocked()
        cache.invalidate("k")
        nursery.start_soon(get)  # starts afresh instead of joining the stale call
    assert sorted(results) == [("k", 1), ("k", 2)]
    assert upstream.calls == 2
    assert cache.get_nowait("k") == ("k", 2)


async def test_clear(autojump_clock: trio.testing.MockClock) -> None:
    cache: TTLCache[str, int] = TTLCache()
    cache.put("a", 1, ttl=60)
    cache.clear()
    stats = cache.statistics()
    assert (stats.entries, stats.bytes) == (0, 0)
    cache.put("b", 2, ttl=0)
    assert cache.get_nowait("b") is None


def test_make_key_is_canonical() -> None:
    a = make_key({"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "t": 0})
    b = make_key({"t": 0, "messages": [{"content": "hi", "role": "user"}], "model": "gpt"})
    c = make_key({"t": 0, "messages": [{"content": "hi!", "role": "user"}], "model": "gpt"})
    assert a == b != c
    assert len(a) == 32 and int(a, 16) >= 0
    with pytest.raises(TypeError):
        make_key({"x": object()})


class Request:
    def __init__(self, content: Any, temperature: float | None = None):
        self.temperature = temperature
        self.messages = [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": content},
        ]


@pytest.mark.parametrize(
    ("request_", "ttl"),
    [
        (Request("What is the capital of France?"), FACTUAL_TTL),
        (Request("define entropy"), FACTUAL_TTL),
        (Request("summarise this", temperature=0), FACTUAL_TTL),
        (Request("Write a story about a cat"), CREATIVE_TTL),
        (Request([{"type": "text", "text": "a poem please"}]), CREATIVE_TTL),
        (Request("summarise this", temperature=0.9), CREATIVE_TTL),
        (Request("What is love? imagine", temperature=0), CREATIVE_TTL),  # shorter wins
        (Request("summarise this", temperature=0.3), DEFAULT_TTL),
        ({"temperature": 0.0, "messages": []}, FACTUAL_TTL),
        ({"messages": [{"role": "user", "content": "when did Rome fall"}]}, FACTUAL_TTL),
        (object(), DEFAULT_TTL),
    ],
)
def test_default_ttl_policy(request_: Any, ttl: float) -> None:
    assert default_ttl_policy(request_) == ttl


# --- property: single flight ------------------------------------------------------------

TTL, DELAY = 6.0, 2.0
callers_strategy = st.lists(
    st.tuples(
        st.sampled_from("ab"),
        st.integers(0, 20),  # start
        st.one_of(st.none(), st.integers(0, 4)),  # cancelled after
    ),
    min_size=1,
    max_size=15,
)


@settings(deadline=None, max_examples=200)
@given(callers_strategy)
def test_property_single_flight(callers: list[tuple[str, int, int | None]]) -> None:
    async def main() -> None:
        cache: TTLCache[str, tuple[str, int]] = TTLCache()
        in_flight = {"a": 0, "b": 0}
        # per key: (completed at, call number) of each completed call, and whether the
        # latest started call ended cancelled
        completed: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
        last_cancelled = {"a": False, "b": False}
        numbers = iter(range(1, 10_000))

        async def upstream(key: str) -> tuple[str, int]:
            number = next(numbers)
            assert in_flight[key] == 0, "two upstream calls for one key at once"
            if completed[key] and not last_cancelled[key]:
                done_at = completed[key][-1][0]
                assert trio.current_time() >= done_at + TTL, "called while a value was fresh"
            in_flight[key] += 1
            last_cancelled[key] = True
            try:
                await trio.sleep(DELAY)
            finally:
                in_flight[key] -= 1
            last_cancelled[key] = False
            completed[key].append((trio.current_time(), number))
            return key, number

        async def caller(key: str, start: int, cancel_after: int | None) -> None:
            await trio.sleep(start)
            with trio.move_on_after(math.inf if cancel_after is None else cancel_after):
                got_key, number = await cache.get_or_call(key, upstream, key, ttl=TTL)
                assert got_key == key
                done_at = dict((n, t) for t, n in completed[key])[number]
                assert done_at <= trio.current_time() < done_at + TTL, "stale or future value"
                return
            assert cancel_after is not None  # only cancelled callers get here

        with trio.fail_after(1000):  # a hang would show as TooSlowError, not as a stuck test
            async with trio.open_nursery() as nursery:
                for spec in callers:
                    nursery.start_soon(caller, *spec)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_callable_ttl_is_evaluated_only_after_a_miss(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: TTLCache[str, str] = TTLCache()
    policy_calls: list[str] = []

    def policy() -> float:
        policy_calls.append("x")
        return 10.0

    async def fetch() -> str:
        return "value"

    for _ in range(5):
        assert await cache.get_or_call("k", fetch, ttl=policy) == "value"
    assert policy_calls == ["x"]
    assert cache.statistics().hits == 4

    # A policy that says "do not cache" still answers, but stores nothing.
    for _ in range(3):
        assert await cache.get_or_call("no", fetch, ttl=lambda: 0.0) == "value"
    assert cache.get_nowait("no") is None
    await trio.sleep(10.0)
    assert cache.get_nowait("k") is None
