"""The middleware stack over a FakeProvider, under the autojump MockClock (exact, instant).

The stack's order is cache -> retry -> breaker -> rate limit -> batching -> transport; the
tests check it by behaviour (what reaches which layer, and when), not only by the list.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from agentflow_trio.config import (
    CircuitBreakerConfig,
    Config,
    LLMConfig,
    PerformanceConfig,
    RateLimitConfig,
    RetryConfig,
)
from agentflow_trio.errors import BadRequestError, CircuitOpenError, RateLimitError, ServerError
from agentflow_trio.llm import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    FakeProvider,
    ProviderStack,
    collect_stream,
    deployment_gate,
    open_llm_client,
    open_provider,
    open_transport,
    user,
)
from agentflow_trio.llm.stack import BatchLayer, CacheLayer, GuardLayer, RateLimitLayer
from agentflow_trio.resilience import BreakerState, CircuitBreaker, Retry

REQUEST = ChatRequest((user("hello"),))
FAST_RETRY = RetryConfig(max_attempts=3, base_delay=0.5, max_delay=4.0)
ALL_ON = PerformanceConfig(enable_caching=True, enable_batching=True)


def _llm(**fields: Any) -> LLMConfig:
    fields.setdefault("retry", FAST_RETRY)
    return LLMConfig(provider="fake", **fields)


@asynccontextmanager
async def stack(
    fake: FakeProvider, perf: PerformanceConfig | None = None, **fields: Any
) -> AsyncIterator[ProviderStack]:
    async with open_provider(_llm(**fields), perf, transport=fake, rng=random.Random(1)) as p:
        yield p


def _timed(replies: list[Any]) -> tuple[FakeProvider, list[float]]:
    """A scripted fake that also records when each request reached it."""
    times: list[float] = []
    queue = list(replies)

    def handler(request: ChatRequest) -> Any:
        times.append(trio.current_time())
        return queue.pop(0) if queue else "ok"

    return FakeProvider(handler), times


def _kinds(provider: ProviderStack) -> list[type]:
    """Each layer's class, outermost first; a `GuardLayer` by its guard (retry or breaker)."""
    return [
        type(layer.guard) if isinstance(layer, GuardLayer) else type(layer)
        for layer in provider.layers
    ]


async def test_layer_order_with_everything_on(autojump_clock: trio.testing.MockClock) -> None:
    limits = RateLimitConfig(enabled=True, requests_per_minute=600)
    async with stack(FakeProvider(), ALL_ON, rate_limit=limits) as provider:
        assert _kinds(provider) == [
            CacheLayer,
            Retry,
            CircuitBreaker,
            RateLimitLayer,
            BatchLayer,
            FakeProvider,
        ]


@pytest.mark.parametrize(
    ("fields", "perf", "expected"),
    [
        ({}, None, [Retry, CircuitBreaker]),
        ({"retry": RetryConfig(enabled=False)}, None, [CircuitBreaker]),
        ({"circuit_breaker": CircuitBreakerConfig(enabled=False)}, None, [Retry]),
        (
            {"rate_limit": RateLimitConfig(enabled=True, tokens_per_minute=1000)},
            None,
            [Retry, CircuitBreaker, RateLimitLayer],
        ),
        ({"rate_limit": RateLimitConfig(enabled=True)}, None, [Retry, CircuitBreaker]),
        ({}, PerformanceConfig(enable_caching=True), [CacheLayer, Retry, CircuitBreaker]),
        ({}, PerformanceConfig(enable_batching=True), [Retry, CircuitBreaker, BatchLayer]),
        (
            {
                "retry": RetryConfig(enabled=False),
                "circuit_breaker": CircuitBreakerConfig(enabled=False),
            },
            None,
            [],
        ),
    ],
)
async def test_config_switches_layers(
    autojump_clock: trio.testing.MockClock,
    fields: dict[str, Any],
    perf: PerformanceConfig | None,
    expected: list[type],
) -> None:
    async with stack(FakeProvider(), perf, **fields) as provider:
        assert _kinds(provider) == [*expected, FakeProvider]
        assert (provider.cache is not None) == (CacheLayer in expected)
        assert (provider.retry is not None) == (Retry in expected)
        assert (provider.breaker is not None) == (CircuitBreaker in expected)
        assert (provider.rate_limiter is not None) == (RateLimitLayer in expected)
        assert (provider.batcher is not None) == (BatchLayer in expected)
        assert (await provider.complete(REQUEST)).text == "echo: hello"


async def test_cache_hit_never_reaches_retry_or_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeProvider()
    async with stack(fake, PerformanceConfig(enable_caching=True)) as provider:
        first = await provider.complete(REQUEST)
        second = await provider.complete(ChatRequest((user("hello"),)))
        assert first == second and len(fake.requests) == 1
        stats = provider.statistics()
        assert stats.cache is not None and (stats.cache.hits, stats.cache.misses) == (1, 1)
        assert stats.retry is not None and stats.retry.attempts == 1
        assert stats.breaker is not None and stats.breaker.successes == 1
        await provider.complete(ChatRequest((user("hello"),), temperature=0.1))
        assert len(fake.requests) == 2  # a different request is a different key


async def test_embeddings_are_cached_too(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeProvider()
    perf = PerformanceConfig(enable_caching=True, cache_ttl=60.0)
    async with stack(fake, perf) as provider:
        first = await provider.embed(EmbeddingRequest(("a", "b")))
        assert await provider.embed(EmbeddingRequest(("a", "b"))) == first
        await provider.embed(EmbeddingRequest(("a", "b"), model="other"))
        assert len(fake.embed_requests) == 2
        await trio.sleep(61)
        await provider.embed(EmbeddingRequest(("a", "b")))
        assert len(fake.embed_requests) == 3


async def test_concurrent_misses_make_one_call(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(request: ChatRequest) -> str:
        await trio.sleep(1)
        return "slow answer"

    fake = FakeProvider(slow)
    results: list[str] = []

    async def ask(provider: ProviderStack) -> None:
        results.append((await provider.complete(REQUEST)).text)

    async with (
        stack(fake, PerformanceConfig(enable_caching=True)) as provider,
        trio.open_nursery() as nursery,
    ):
        for _ in range(5):
            nursery.start_soon(ask, provider)
    assert results == ["slow answer"] * 5 and len(fake.requests) == 1


async def test_cache_ttl_follows_the_policy(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeProvider()
    perf = PerformanceConfig(enable_caching=True, cache_ttl=100.0)
    async with stack(fake, perf) as provider:
        plain = ChatRequest((user("hello"),))  # default class: cache_ttl
        creative = ChatRequest((user("write a poem"),))  # creative: 5 minutes
        factual = ChatRequest((user("what is the capital of France"),))  # factual: 24 h
        for request in (plain, creative, factual):
            await provider.complete(request)
        await trio.sleep(101)
        for request in (plain, creative, factual):
            await provider.complete(request)
        assert [r.messages[0].content for r in fake.requests[3:]] == ["hello"]
        await trio.sleep(200)
        for request in (creative, factual):
            await provider.complete(request)
        assert [r.messages[0].content for r in fake.requests[4:]] == ["write a poem"]


async def test_failures_and_streams_are_not_cached(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeProvider.scripted([BadRequestError("no", status=400), "fine", "one", "two"])
    async with stack(fake, PerformanceConfig(enable_caching=True)) as provider:
        with pytest.raises(BadRequestError):
            await provider.complete(REQUEST)
        assert (await provider.complete(REQUEST)).text == "fine"
        for expected in ("one", "two"):
            async with provider.stream(REQUEST) as chunks:
                assert (await collect_stream(chunks)).text == expected
        assert len(fake.requests) == 4


async def test_every_retry_attempt_is_seen_by_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeProvider.scripted(
        [ServerError("a", status=500), ServerError("b", status=502), "third time"]
    )
    async with stack(fake) as provider:
        assert (await provider.complete(REQUEST)).text == "third time"
        stats = provider.statistics()
        assert stats.retry is not None and (stats.retry.attempts, stats.retry.retries) == (3, 2)
        assert stats.breaker is not None
        assert (stats.breaker.failures, stats.breaker.successes) == (2, 1)


async def test_not_retryable_errors_end_at_once(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeProvider.scripted([BadRequestError("bad", status=400)])
    async with stack(fake) as provider:
        with pytest.raises(BadRequestError):
            await provider.complete(REQUEST)
        assert len(fake.requests) == 1
        assert provider.breaker is not None and provider.breaker.statistics().failures == 0


async def test_open_breaker_ends_the_retries(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeProvider(lambda request: ServerError("down", status=503))
    breaker = CircuitBreakerConfig(failure_threshold=2, open_timeout=30.0)
    retry = RetryConfig(max_attempts=6, base_delay=0.1, max_delay=1.0)
    async with stack(fake, circuit_breaker=breaker, retry=retry) as provider:
        with trio.fail_after(10), pytest.raises(CircuitOpenError) as info:
            await provider.complete(REQUEST)
        assert len(fake.requests) == 2  # the third attempt met the open breaker
        assert 29 < info.value.retry_after <= 30
        assert provider.breaker is not None
        assert provider.breaker.state is BreakerState.OPEN


async def test_open_breaker_waits_when_the_deadline_allows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake, times = _timed([ServerError("a", status=503), ServerError("b", status=503)])
    breaker = CircuitBreakerConfig(failure_threshold=2, open_timeout=30.0)
    retry = RetryConfig(max_attempts=6, base_delay=0.1, max_delay=1.0)
    async with stack(fake, circuit_breaker=breaker, retry=retry) as provider:
        start = trio.current_time()
        with trio.fail_after(60):
            assert (await provider.complete(REQUEST)).text == "ok"
        assert len(times) == 3 and times[2] - start >= 30  # the probe, after open_timeout
        assert provider.breaker is not None
        assert provider.breaker.state is BreakerState.CLOSED


async def test_a_429_pauses_every_caller_of_the_deployment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limited = RateLimitError("slow down", status=429, retry_after=3.0)  # < max_delay 4
    first, first_times = _timed([limited])
    second, second_times = _timed([])
    async with stack(first) as one, stack(second) as two:
        assert deployment_gate("fake||gpt-4o-mini") is one.retry.gate is two.retry.gate  # type: ignore[union-attr]
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one.complete, REQUEST)
            await trio.sleep(1)  # after the 429
            nursery.start_soon(two.complete, REQUEST)
        assert first_times[1] - start >= 3
        assert second_times[0] - start >= 3  # never asked; it waited for the pause


async def test_a_429_pause_is_capped_by_max_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limited = RateLimitError("slow down", status=429, retry_after=1e9)  # ~31 years
    first, first_times = _timed([limited])
    second, second_times = _timed([])
    async with stack(first) as one, stack(second) as two:
        start = trio.current_time()
        assert (await one.complete(REQUEST)).text == "ok"  # no deadline: max_delay, not 1e9
        assert first_times == [start, start + 4.0]
        assert one.retry is not None and one.retry.gate is not None
        assert one.retry.gate.paused_until == start + 4.0
        with trio.fail_after(1.0):  # the deployment is not parked: later calls just work
            assert (await two.complete(REQUEST)).text == "ok"
        assert second_times == [start + 4.0]


async def test_rate_limit_spaces_calls(autojump_clock: trio.testing.MockClock) -> None:
    fake, times = _timed([])
    limits = RateLimitConfig(enabled=True, requests_per_minute=60)
    async with stack(fake, rate_limit=limits) as provider:
        for _ in range(3):
            await provider.complete(REQUEST)
        async with provider.stream(REQUEST) as chunks:
            await collect_stream(chunks)
    assert [round(t - times[0], 6) for t in times] == [0, 1, 2, 3]


async def test_stream_opening_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeProvider.scripted([ServerError("x", status=500), "streamed answer"])
    async with stack(fake) as provider:
        async with provider.stream(REQUEST) as chunks:
            assert (await collect_stream(chunks)).text == "streamed answer"
        stats = provider.statistics()
        assert stats.retry is not None and stats.retry.attempts == 2
        assert stats.breaker is not None and stats.breaker.failures == 1


class _Recording:
    """A provider over ``fake`` that records each stream opening and closing."""

    def __init__(self, fake: FakeProvider) -> None:
        self.fake = fake
        self.events: list[str] = []

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.fake.complete(request)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[Any]]:
        self.events.append("open")
        try:
            async with self.fake.stream(request) as chunks:
                yield chunks
        finally:
            self.events.append("close")

    async def embed(self, request: EmbeddingRequest) -> Any:
        return await self.fake.embed(request)

    async def aclose(self) -> None:
        await self.fake.aclose()


async def test_retry_and_breaker_open_a_stream_once_and_close_it_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Retry and breaker open a stream as one opening: the failed attempt is closed at once,
    # the one that opened is closed when the block exits, an error in the block included.
    recording = _Recording(FakeProvider.scripted([ServerError("x", status=500), "answer"]))
    async with stack(recording) as provider:  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="in the block"):
            async with provider.stream(REQUEST) as chunks:
                assert (await chunks.__anext__()).delta_text
                assert recording.events == ["open", "close", "open"]
                raise ValueError("in the block")
        assert recording.events == ["open", "close", "open", "close"]
        stats = provider.statistics()
        assert stats.retry is not None and stats.retry.attempts == 2
        assert stats.breaker is not None
        assert (stats.breaker.failures, stats.breaker.successes) == (1, 1)


async def test_batching_splits_results_back(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeProvider(dim=4)
    reference = FakeProvider(dim=4)
    requests = [
        EmbeddingRequest(("a", "b")),
        EmbeddingRequest(("c",)),
        EmbeddingRequest(("d", "e", "f")),
        EmbeddingRequest(("g",), model="other"),
    ]
    results: dict[int, Any] = {}

    async def embed(provider: ProviderStack, i: int) -> None:
        results[i] = await provider.embed(requests[i])

    perf = PerformanceConfig(enable_batching=True, batch_size=16, batch_timeout=0.05)
    async with stack(fake, perf) as provider:
        async with trio.open_nursery() as nursery:
            for i in range(len(requests)):
                nursery.start_soon(embed, provider, i)
        assert provider.batcher is not None
        assert provider.batcher.statistics().batches == 1
    upstream = sorted(fake.embed_requests, key=lambda r: len(r.inputs))
    # One upstream call per model; arrival order within a batch is the scheduler's.
    assert [sorted(r.inputs) for r in upstream] == [["g"], ["a", "b", "c", "d", "e", "f"]]
    assert [r.model for r in upstream] == ["other", None]
    for i, request in enumerate(requests):
        expected = await reference.embed(request)
        assert results[i].vectors == expected.vectors
    assert sum(r.usage.prompt_tokens for r in results.values()) == 7


async def test_whole_config_and_client(autojump_clock: trio.testing.MockClock) -> None:
    config = Config(llm=_llm(), performance=PerformanceConfig(enable_caching=True))
    async with open_llm_client(config) as client:
        assert (await client.complete("hi")).text == "echo: hi"
        assert (await client.complete("hi")).text == "echo: hi"
        assert client.provider.cache is not None  # type: ignore[attr-defined]
        assert client.provider.cache.statistics().hits == 1  # type: ignore[attr-defined]
        vectors = await client.embed(["x", "y"])
        assert len(vectors.vectors) == 2


async def test_unknown_provider(autojump_clock: trio.testing.MockClock) -> None:
    from agentflow_trio.errors import ConfigError

    bogus = attrs.evolve(_llm(), provider="bogus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bogus"):
        async with open_transport(bogus):
            pass  # pragma: no cover


async def test_stack_leaves_the_callers_transport_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeProvider()
    async with stack(fake, ALL_ON) as provider:
        await provider.embed(EmbeddingRequest(("x",)))
    assert not fake.closed
    response = await fake.complete(REQUEST)
    assert isinstance(response, ChatResponse)
