"""The router's rules over in-process fakes, under the autojump MockClock (exact, instant).

Every rule runs with two deployments in a group (``a`` and ``b``) whose providers are
`FakeProvider` handlers raising the typed errors a transport raises, so the times asserted
are the router's own waits, to the virtual microsecond.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from trio.testing import MockClock

from agentflow_trio.config import (
    CircuitBreakerConfig,
    DeploymentConfig,
    LLMConfig,
    PerformanceConfig,
    RetryConfig,
    RouterConfig,
    RouterGroupConfig,
)
from agentflow_trio.errors import (
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigError,
    LLMConnectError,
    LLMReadError,
    LLMTimeoutError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from agentflow_trio.llm import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    FakeProvider,
    ProviderStack,
    Router,
    Usage,
    collect_stream,
    open_provider,
    user,
)

REQUEST = ChatRequest((user("hello"),))
Handler = Callable[[ChatRequest], Any]


def server_error(retry_after: float | None = None) -> ServerError:
    return ServerError("HTTP 503", status=503, excerpt="busy", retry_after=retry_after)


def rate_limited(retry_after: float | None = None) -> RateLimitError:
    return RateLimitError("HTTP 429", status=429, excerpt="slow down", retry_after=retry_after)


CONTEXT = BadRequestError(
    "HTTP 400: This model's maximum context length is 8192 tokens",
    status=400,
    excerpt='{"error": {"code": "context_length_exceeded"}}',
)
FILTERED = BadRequestError(
    "HTTP 400: filtered",
    status=400,
    excerpt='{"error": {"code": "content_filter", "message": "content management policy"}}',
)


def deployment(**fields: Any) -> DeploymentConfig:
    fields.setdefault("provider", "fake")
    fields.setdefault("model", "m")
    fields.setdefault("retry", RetryConfig(max_attempts=3, base_delay=0.1, max_delay=1.0))
    return DeploymentConfig(**fields)


@asynccontextmanager
async def routed(
    handlers: dict[str, Handler | FakeProvider],
    *,
    configs: dict[str, DeploymentConfig] | None = None,
    performance: PerformanceConfig | None = None,
    **router: Any,
) -> AsyncIterator[tuple[ProviderStack, dict[str, FakeProvider]]]:
    """A router over one fake per handler (all in group ``m`` unless ``configs`` says)."""
    settings = {name: (configs or {}).get(name) or deployment() for name in handlers}
    fakes = {
        name: h if isinstance(h, FakeProvider) else FakeProvider(h, model=settings[name].model)
        for name, h in handlers.items()
    }
    llm = LLMConfig(provider="fake", model="m", deployments=settings, router=RouterConfig(**router))
    async with open_provider(llm, performance, transports=fakes, rng=random.Random(7)) as stack:
        yield stack, fakes


def router_of(stack: ProviderStack) -> Router:
    assert stack.router is not None
    return stack.router


def ok(text: str = "ok") -> Handler:
    return lambda request: text


def failing(error: Callable[[], BaseException]) -> Handler:
    return lambda request: error()


def scripted(*replies: Any) -> Handler:
    queue = list(replies)

    def handler(request: ChatRequest) -> Any:
        return queue.pop(0) if queue else "ok"

    return handler


def silent() -> Handler:
    async def handler(request: ChatRequest) -> Any:
        await trio.sleep_forever()

    return handler


def slow(seconds: float, text: str = "ok") -> Handler:
    async def handler(request: ChatRequest) -> Any:
        await trio.sleep(seconds)
        return text

    return handler


def stats(stack: ProviderStack, name: str) -> Any:
    return next(d for d in router_of(stack).statistics().deployments if d.name == name)


# --------------------------------------------------------------------------- strategies


async def test_weighted_random_splits_by_weight(autojump_clock: MockClock) -> None:
    configs = {"a": deployment(weight=3), "b": deployment(weight=1)}
    async with routed({"a": ok(), "b": ok()}, configs=configs) as (stack, _fakes):
        served = [(await stack.complete(REQUEST)).deployment for _ in range(4000)]
    assert 2850 < served.count("a") < 3150
    assert served.count("a") + served.count("b") == 4000


async def test_weight_zero_is_a_last_resort(autojump_clock: MockClock) -> None:
    configs = {"a": deployment(), "b": deployment(weight=0)}
    handlers = {"a": scripted("ok", "ok", server_error(), "ok"), "b": ok("spare")}
    async with routed(handlers, configs=configs) as (stack, _):
        texts = [(await stack.complete(REQUEST)).text for _ in range(4)]
    assert texts == ["ok", "ok", "spare", "ok"]


async def test_least_in_flight_fills_the_idle_deployment(autojump_clock: MockClock) -> None:
    async with routed({"a": slow(1.0), "b": slow(1.0)}, strategy="least_in_flight") as (
        stack,
        fakes,
    ):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(stack.complete, REQUEST)
            await trio.testing.wait_all_tasks_blocked()
            assert [d.in_flight for d in router_of(stack).statistics().deployments] == [5, 5]
    assert len(fakes["a"].requests) == len(fakes["b"].requests) == 5


async def test_lowest_latency_prefers_the_faster_and_still_explores(
    autojump_clock: MockClock,
) -> None:
    handlers = {"a": slow(0.5, "slow"), "b": slow(0.1, "fast")}
    async with routed(handlers, strategy="lowest_latency", explore=0.1) as (stack, _):
        texts = [(await stack.complete(REQUEST)).text for _ in range(200)]
        assert stats(stack, "b").ttft == pytest.approx(0.1)
        assert stats(stack, "a").ttft == pytest.approx(0.5)
    assert texts.count("fast") > 170
    assert 2 < texts.count("slow") < 30  # ~5%: explore picks either at random


# --------------------------------------------------------------------------- retryable classes


@pytest.mark.parametrize(
    "error",
    [
        lambda: rate_limited(2.0),
        lambda: rate_limited(),
        lambda: server_error(),
        lambda: LLMReadError("connection reset"),
        lambda: LLMConnectError("connection refused"),
    ],
    ids=["429-retry-after", "429", "5xx", "reset", "connect"],
)
async def test_a_retryable_failure_moves_on_at_once(
    autojump_clock: MockClock, error: Callable[[], BaseException]
) -> None:
    async with routed({"a": failing(error), "b": ok("from b")}) as (stack, fakes):
        for _ in range(20):
            start = trio.current_time()
            response = await stack.complete(REQUEST)
            assert trio.current_time() == start  # no backoff sleep: b was untried
            assert (response.text, response.deployment) == ("from b", "b")
    # Each failure cost its request one attempt; then the deployment was cooled down.
    assert 1 <= len(fakes["a"].requests) <= 3


async def test_429_cools_for_its_retry_after_then_one_probe_brings_it_back(
    autojump_clock: MockClock,
) -> None:
    handlers = {"a": scripted(rate_limited(2.0)), "b": ok("b")}
    async with routed(handlers, strategy="least_in_flight") as (stack, fakes):
        while not fakes["a"].requests:
            await stack.complete(REQUEST)
        a = stats(stack, "a")
        assert (a.cooling, a.cooldown_remaining, a.failures) == (True, 2.0, {"rate_limit": 1})
        for _ in range(10):
            assert (await stack.complete(REQUEST)).deployment == "b"
        await trio.sleep(2.0)
        served = {(await stack.complete(REQUEST)).deployment for _ in range(10)}
    assert served == {"a", "b"}
    assert stats(stack, "a").probes == 1


async def test_429_without_retry_after_cools_for_the_cooldown(autojump_clock: MockClock) -> None:
    async with routed({"a": failing(rate_limited), "b": ok()}, cooldown=7.0) as (stack, fakes):
        while not fakes["a"].requests:
            await stack.complete(REQUEST)
        assert stats(stack, "a").cooldown_remaining == 7.0


async def test_500_once_does_not_cool_a_deployment(autojump_clock: MockClock) -> None:
    async with routed({"a": scripted(server_error()), "b": ok()}) as (stack, fakes):
        for _ in range(40):
            await stack.complete(REQUEST)
    a = stats(stack, "a")
    assert (a.cooldowns, a.failures, a.failovers) == (0, {"server_error": 1}, 1)
    assert len(fakes["a"].requests) > 10


async def test_a_persistent_503_costs_allowed_fails_attempts_per_cooldown(
    autojump_clock: MockClock,
) -> None:
    handlers = {"a": failing(server_error), "b": ok()}
    no_breaker = CircuitBreakerConfig(enabled=False)
    configs = {"a": deployment(circuit_breaker=no_breaker), "b": deployment()}
    async with routed(handlers, configs=configs, cooldown=10.0, allowed_fails=3) as (
        stack,
        fakes,
    ):
        for _ in range(1000):  # 100 virtual seconds, one request every 0.1 s
            assert (await stack.complete(REQUEST)).deployment == "b"
            await trio.sleep(0.1)
    # 3 failures to cool it, then one failed probe per 10 s cooldown.
    assert 3 + 8 <= len(fakes["a"].requests) <= 3 + 10
    assert stats(stack, "a").probes == len(fakes["a"].requests) - 3


async def test_with_its_breaker_a_dead_deployment_is_probed_less(
    autojump_clock: MockClock,
) -> None:
    handlers = {"a": failing(server_error), "b": ok()}
    breaker = CircuitBreakerConfig(failure_threshold=5, open_timeout=30.0)
    configs = {"a": deployment(circuit_breaker=breaker), "b": deployment()}
    async with routed(handlers, configs=configs, cooldown=10.0, allowed_fails=3) as (
        stack,
        fakes,
    ):
        for _ in range(1000):
            assert (await stack.complete(REQUEST)).deployment == "b"
            await trio.sleep(0.1)
    # The breaker opens after 5 failures in a row: then one probe per 30 s open time.
    assert 5 + 2 <= len(fakes["a"].requests) <= 5 + 4


async def test_a_silent_deployment_fails_over_after_its_timeout_and_is_never_retried(
    autojump_clock: MockClock,
) -> None:
    configs = {
        "a": deployment(circuit_breaker=CircuitBreakerConfig(call_timeout=2.0)),
        "b": deployment(),
    }
    async with routed({"a": silent(), "b": ok("b")}, configs=configs) as (stack, fakes):
        while not fakes["a"].requests:
            start = trio.current_time()
            response = await stack.complete(REQUEST)
        assert response.deployment == "b"
        assert trio.current_time() - start == 2.0  # the first timeout, then b at once
        a = stats(stack, "a")
        assert (a.failures, a.cooling) == ({"timeout": 1}, True)
        start = trio.current_time()
        for _ in range(20):
            await stack.complete(REQUEST)
        assert trio.current_time() == start  # the silent one is skipped: no more waits
    assert len(fakes["a"].requests) == 1


async def test_a_connect_timeout_is_a_connection_failure(autojump_clock: MockClock) -> None:
    def connect_timeout(request: ChatRequest) -> BaseException:
        class ConnectTimeout(Exception):
            pass

        error = LLMTimeoutError("connect timed out")
        error.__cause__ = ConnectTimeout()
        return error

    async with routed({"a": connect_timeout, "b": ok()}) as (stack, fakes):
        while not fakes["a"].requests:
            await stack.complete(REQUEST)
    a = stats(stack, "a")
    assert (a.failures, a.cooling) == ({"connection": 1}, False)


# --------------------------------------------------------------------------- same-deployment retry


async def test_a_lone_deployment_is_retried_after_a_short_wait(autojump_clock: MockClock) -> None:
    async with routed({"a": scripted(server_error(), "second")}, max_retry_wait=1.0) as (
        stack,
        _fakes,
    ):
        start = trio.current_time()
        response = await stack.complete(REQUEST)
        waited = trio.current_time() - start
    assert response.text == "second"
    assert 0 <= waited <= 0.1  # jittered backoff from base_delay 0.1
    assert router_of(stack).statistics().retries == 1


async def test_a_long_retry_after_is_not_waited_for(autojump_clock: MockClock) -> None:
    async with routed({"a": scripted(rate_limited(5.0), "late")}, max_retry_wait=1.0) as (
        stack,
        _,
    ):
        start = trio.current_time()
        with pytest.raises(RateLimitError):
            await stack.complete(REQUEST)
        assert trio.current_time() == start


async def test_a_short_retry_after_is_waited_for_on_the_same_deployment(
    autojump_clock: MockClock,
) -> None:
    async with routed({"a": scripted(rate_limited(0.5), "after")}) as (stack, _fakes):
        start = trio.current_time()
        assert (await stack.complete(REQUEST)).text == "after"
        assert trio.current_time() - start == pytest.approx(0.5)
        assert stats(stack, "a").probes == 1  # the retry was the probe after its cooldown


async def test_same_deployment_retries_stop_at_its_budget(autojump_clock: MockClock) -> None:
    configs = {"a": deployment(retry=RetryConfig(max_attempts=2, base_delay=0.01))}
    async with routed({"a": failing(server_error)}, configs=configs) as (stack, fakes):
        with pytest.raises(ServerError):
            await stack.complete(REQUEST)
    assert len(fakes["a"].requests) == 2


async def test_the_caller_deadline_bounds_the_retry_wait(autojump_clock: MockClock) -> None:
    async with routed({"a": scripted(rate_limited(0.5), "after")}) as (stack, fakes):
        with trio.move_on_after(0.2):
            with pytest.raises(RateLimitError):
                await stack.complete(REQUEST)
    assert len(fakes["a"].requests) == 1


async def test_a_cooling_deployment_takes_one_probe_at_a_time(autojump_clock: MockClock) -> None:
    replies = [rate_limited(0.5)]
    active = peak = 0

    async def handler(request: ChatRequest) -> Any:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await trio.sleep(0.1)
            return replies.pop(0) if replies else "ok"
        finally:
            active -= 1

    results: list[str] = []

    async def call() -> None:
        try:
            results.append((await stack.complete(REQUEST)).text)
        except CircuitOpenError:
            results.append("refused")

    async with routed({"a": handler}) as (stack, fakes):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(0.2)  # a answered 429 and is cooling until 0.6
            nursery.start_soon(call)
    assert peak == 1  # the cooldown holds for the retry and for the other request
    assert results.count("ok") >= 1
    assert len(fakes["a"].requests) <= 3


# --------------------------------------------------------------------------- non-retryable classes


async def test_context_length_goes_to_the_context_fallback_group(autojump_clock: MockClock) -> None:
    configs = {"a": deployment(), "b": deployment(), "big": deployment(model="big")}
    handlers = {"a": failing(lambda: CONTEXT), "b": failing(lambda: CONTEXT), "big": ok("big")}
    groups = {"m": RouterGroupConfig(context_fallbacks=["big"])}
    async with routed(handlers, configs=configs, groups=groups) as (stack, fakes):
        response = await stack.complete(REQUEST)
    assert (response.text, response.deployment, response.model) == ("big", "big", "big")
    assert len(fakes["a"].requests) + len(fakes["b"].requests) == 1  # no retry elsewhere
    assert fakes["big"].requests[0].model is None  # the request named no group
    assert router_of(stack).statistics().context_fallbacks == 1


async def test_context_length_without_a_context_fallback_is_raised(
    autojump_clock: MockClock,
) -> None:
    async with routed({"a": failing(lambda: CONTEXT), "b": failing(lambda: CONTEXT)}) as (
        stack,
        fakes,
    ):
        with pytest.raises(BadRequestError) as info:
            await stack.complete(REQUEST)
    assert "context_length_exceeded" in info.value.excerpt
    assert len(fakes["a"].requests) + len(fakes["b"].requests) == 1


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (lambda: FILTERED, "content_filter"),
        (lambda: AuthenticationError("HTTP 401: bad key", status=401), "auth"),
        (lambda: NotFoundError("HTTP 404: no model", status=404), "not_found"),
        (lambda: BadRequestError("HTTP 400: bad", status=400), "bad_request"),
    ],
)
async def test_a_4xx_is_raised_without_retry_or_fallback(
    autojump_clock: MockClock, error: Callable[[], BaseException], kind: str
) -> None:
    async with routed({"a": failing(error), "b": failing(error)}) as (stack, fakes):
        with pytest.raises(type(error())) as info:
            await stack.complete(REQUEST)
        assert str(info.value) == str(error())
        assert len(fakes["a"].requests) + len(fakes["b"].requests) == 1
        failed = [d for d in router_of(stack).statistics().deployments if d.failures]
        assert [(d.failures, d.cooling) for d in failed] == [({kind: 1}, False)]


async def test_fallback_on_can_add_a_class(autojump_clock: MockClock) -> None:
    auth = AuthenticationError("HTTP 401: bad key", status=401)
    configs = {"a": deployment(weight=1000), "b": deployment(weight=1)}
    handlers = {"a": failing(lambda: auth), "b": ok("b")}
    async with routed(handlers, configs=configs, fallback_on=["auth"]) as (stack, _):
        assert (await stack.complete(REQUEST)).deployment == "b"


# --------------------------------------------------------------------------- breakers, cooldowns


async def test_an_open_breaker_is_skipped_until_its_probe(autojump_clock: MockClock) -> None:
    breaker = CircuitBreakerConfig(failure_threshold=2, open_timeout=10.0)
    configs = {"a": deployment(circuit_breaker=breaker), "b": deployment()}
    handlers = {"a": failing(server_error), "b": ok()}
    async with routed(handlers, configs=configs, allowed_fails=100) as (stack, fakes):
        while stats(stack, "a").stack.breaker.state.value != "open":
            await stack.complete(REQUEST)
        calls = len(fakes["a"].requests)
        for _ in range(50):
            await stack.complete(REQUEST)
        assert len(fakes["a"].requests) == calls  # skipped, not even refused each time
        assert stats(stack, "a").failures.get("breaker_open", 0) <= 1
        await trio.sleep(10.0)
        for _ in range(50):
            await stack.complete(REQUEST)
    assert len(fakes["a"].requests) == calls + 1  # one probe, which failed again


async def test_a_single_deployment_group_with_a_fallback_is_cooled_too(
    autojump_clock: MockClock,
) -> None:
    configs = {"a": deployment(model="small"), "b": deployment(model="big")}
    groups = {"small": RouterGroupConfig(fallbacks=["big"], allowed_fails=1)}
    handlers = {"a": failing(server_error), "b": ok("big")}
    async with routed(handlers, configs=configs, groups=groups, default_group="small") as (
        stack,
        fakes,
    ):
        for _ in range(100):
            response = await stack.complete(REQUEST)
            assert (response.text, response.deployment) == ("big", "b")
    assert len(fakes["a"].requests) == 1  # one failure cools it: never 3 per request
    assert router_of(stack).statistics().fallbacks == 100


async def test_the_primary_is_used_again_once_its_probe_succeeds(autojump_clock: MockClock) -> None:
    down = True

    def primary(request: ChatRequest) -> Any:
        return server_error() if down else "primary"

    configs = {"a": deployment(model="small"), "b": deployment(model="big")}
    groups = {"small": RouterGroupConfig(fallbacks=["big"], allowed_fails=1, cooldown=5.0)}
    async with routed({"a": primary, "b": ok("big")}, configs=configs, groups=groups) as (
        stack,
        _,
    ):
        assert (await stack.complete(REQUEST)).text == "big"
        down = False
        recovered = trio.current_time()
        for _ in range(100):
            if (await stack.complete(REQUEST)).text == "primary":
                break
            await trio.sleep(0.1)
        assert trio.current_time() - recovered <= 5.0 + 0.1  # one cooldown (+ one request gap)
        assert all([(await stack.complete(REQUEST)).text == "primary" for _ in range(10)])


async def test_every_deployment_cooling_refuses_at_once(autojump_clock: MockClock) -> None:
    async with routed({"a": failing(rate_limited), "b": failing(rate_limited)}, cooldown=30.0) as (
        stack,
        _,
    ):
        with pytest.raises(RateLimitError):
            await stack.complete(REQUEST)
        await trio.sleep(1.0)
        start = trio.current_time()
        with pytest.raises(CircuitOpenError) as info:
            await stack.complete(REQUEST)
        assert trio.current_time() == start
        assert info.value.retry_after == pytest.approx(29.0)
        assert router_of(stack).statistics().refused == 1


async def test_a_cooling_deployment_is_waited_for_when_the_wait_is_short(
    autojump_clock: MockClock,
) -> None:
    async with routed({"a": scripted(rate_limited(0.3), "a again")}) as (stack, _):
        with trio.fail_after(1):
            assert (await stack.complete(REQUEST)).text == "a again"


# --------------------------------------------------------------------------- the stack


async def test_each_deployment_has_its_own_stack_without_retry(autojump_clock: MockClock) -> None:
    async with routed({"a": ok(), "b": ok()}) as (stack, _):
        for name, provider in router_of(stack).providers.items():
            assert isinstance(provider, ProviderStack)
            assert provider.retry is None
            assert provider.breaker is not None
            assert provider.breaker.name == f"llm:{name}"


async def test_the_cache_sits_above_the_router(autojump_clock: MockClock) -> None:
    perf = PerformanceConfig(enable_caching=True)
    async with routed({"a": ok(), "b": ok()}, performance=perf) as (stack, _fakes):
        assert stack.cache is not None
        first = await stack.complete(ChatRequest((user("what is 2+2?"),), temperature=0))
        again = await stack.complete(ChatRequest((user("what is 2+2?"),), temperature=0))
    assert first == again
    assert router_of(stack).statistics().requests == 1
    assert stack.statistics().router is not None


async def test_answers_say_which_deployment_and_model_answered(autojump_clock: MockClock) -> None:
    def answer(request: ChatRequest) -> ChatResponse:
        return ChatResponse("hi", (), "stop", Usage(3, 1, 4), "m-2024")

    async with routed({"a": failing(server_error), "b": answer}, strategy="least_in_flight") as (
        stack,
        _,
    ):
        responses = [await stack.complete(REQUEST) for _ in range(2)]
    assert {(r.deployment, r.model, r.usage) for r in responses} == {
        ("b", "m-2024", Usage(3, 1, 4))
    }


async def test_a_group_name_is_not_sent_as_a_model(autojump_clock: MockClock) -> None:
    configs = {"a": deployment(model="x", group="smart"), "b": deployment(model="y", group="smart")}
    async with routed({"a": ok(), "b": ok()}, configs=configs) as (stack, fakes):
        for _ in range(20):
            await stack.complete(attrs.evolve(REQUEST, model="smart"))
    assert {r.model for r in fakes["a"].requests} == {"x"}
    assert {r.model for r in fakes["b"].requests} == {"y"}


async def test_an_unknown_group_is_not_found(autojump_clock: MockClock) -> None:
    async with routed({"a": ok()}) as (stack, _):
        with pytest.raises(NotFoundError, match="no model group 'nope'"):
            await stack.complete(attrs.evolve(REQUEST, model="nope"))


async def test_a_request_too_long_for_a_deployment_goes_to_one_that_fits(
    autojump_clock: MockClock,
) -> None:
    configs = {"a": deployment(max_context=100, weight=100), "b": deployment(max_context=10_000)}
    async with routed({"a": ok("a"), "b": ok("b")}, configs=configs) as (stack, _):
        big = ChatRequest((user("x" * 2000),))
        assert {(await stack.complete(big)).text for _ in range(20)} == {"b"}


async def test_embeddings_fail_over_too(autojump_clock: MockClock) -> None:
    broken = FakeProvider(embed_handler=lambda request: server_error())
    async with routed({"a": broken, "b": ok()}) as (stack, fakes):
        response = await stack.embed(EmbeddingRequest(("one", "two")))
        while not fakes["a"].embed_requests:
            response = await stack.embed(EmbeddingRequest(("one", "two")))
    assert (len(response.vectors), response.deployment) == (2, "b")


async def test_cancellation_is_not_a_failure_and_releases_the_probe(
    autojump_clock: MockClock,
) -> None:
    async with routed({"a": slow(5.0)}) as (stack, _):
        with trio.move_on_after(1.0):
            await stack.complete(REQUEST)
        a = stats(stack, "a")
        assert (a.in_flight, a.failures, a.cooling) == (0, {}, False)


async def test_a_single_llm_table_with_group_policies_is_a_group_of_one(
    autojump_clock: MockClock,
) -> None:
    llm = LLMConfig(
        provider="fake", model="m", router=RouterConfig(groups={"m": RouterGroupConfig()})
    )
    async with open_provider(llm) as stack:
        router = router_of(stack)
        assert router.groups == {"m": ("fake",)}
        assert (await stack.complete(REQUEST)).deployment == "fake"


async def test_router_settings_naming_unknown_groups_are_refused(autojump_clock: MockClock) -> None:
    with pytest.raises(ConfigError, match="no deployment serves model group 'zz'"):
        async with routed({"a": ok()}, groups={"m": RouterGroupConfig(fallbacks=["zz"])}):
            pass


async def test_a_stream_is_a_stream_of_the_answer(autojump_clock: MockClock) -> None:
    async with routed({"a": ok("one two three"), "b": ok("one two three")}) as (stack, _):
        async with stack.stream(REQUEST) as chunks:
            response = await collect_stream(chunks)
    assert response.text == "one two three"


async def test_router_figures_reach_prometheus(autojump_clock: MockClock) -> None:
    from agentflow_trio.observability.metrics import RunnerMetrics

    metrics = RunnerMetrics(process=False)
    async with routed({"a": failing(rate_limited), "b": ok()}) as (stack, fakes):
        metrics.watch_llm("llm", stack.statistics)
        while not fakes["a"].requests:
            await stack.complete(REQUEST)
        text = metrics.render().decode()
    assert 'llm_router_requests_total{llm="llm"}' in text
    assert 'llm_deployment_failures_total{class="rate_limit",deployment="a",llm="llm"} 1.0' in text
    assert 'llm_deployment_cooling{deployment="a",llm="llm"} 1.0' in text
    assert 'llm_deployment_attempts_total{deployment="b",llm="llm"}' in text
    assert 'circuit_breaker_state{breaker="llm:b"} 0.0' in text
    assert 'llm_deployment_ttft_seconds{deployment="b",llm="llm"}' in text
