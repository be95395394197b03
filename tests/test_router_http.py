"""Every fault class through real HTTP: the router over two deployments of one model group,
served by the mock LLM, which injects the fault into one deployment's model only.

Rules of this module: loopback only, port 0, the real clock, an absolute ``trio.fail_after``
around every test; deployment ``a`` (model ``ma``, weight 1,000,000) is always tried
first, ``b`` (model ``mb``, weight 1) is the one that takes over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from agentflow_trio.config import (
    DeploymentConfig,
    LLMConfig,
    RetryConfig,
    RouterConfig,
    RouterGroupConfig,
    load_config,
)
from agentflow_trio.errors import (
    BadRequestError,
    IncompleteStreamError,
    LLMError,
    StreamCutError,
    StreamStalledError,
)
from agentflow_trio.llm import (
    ChatRequest,
    ProviderStack,
    Router,
    StreamChunk,
    open_provider,
    user,
)
from agentflow_trio.mockllm import Fault, MockLLM, open_mock_llm

TIMEOUT = 20
REQUEST = ChatRequest((user("hello"),))
REPLY = "Hello from the mock LLM."
FAST_RETRY = RetryConfig(max_attempts=2, base_delay=0.05, max_delay=0.2)


def deployment(mock: MockLLM, model: str, weight: int, **fields: Any) -> DeploymentConfig:
    fields.setdefault("request_timeout", 5.0)
    fields.setdefault("base_url", mock.url + "/v1")
    fields.setdefault("group", "g")
    return DeploymentConfig(
        provider="openai", api_key="sk-test", model=model, weight=weight, retry=FAST_RETRY, **fields
    )


@asynccontextmanager
async def routed(
    faults: Any = (),
    *,
    a: dict[str, Any] | None = None,
    big: bool = False,
    **router: Any,
) -> AsyncIterator[tuple[ProviderStack, MockLLM]]:
    """A mock injecting ``faults`` into model ``ma``, and a router over ``a`` and ``b``
    (and ``c``, model ``mc`` in group ``big``, when asked)."""
    async with open_mock_llm(faults={"ma": faults} if faults else {}) as mock:
        deployments = {
            "a": deployment(mock, "ma", 1_000_000, **(a or {})),
            "b": deployment(mock, "mb", 1),
        }
        if big:
            deployments["c"] = deployment(mock, "mc", 1, group="big")
        router.setdefault("first_token_timeout", 1.0)
        router.setdefault("stream_idle_timeout", 1.0)
        llm = LLMConfig(deployments=deployments, router=RouterConfig(**router))
        async with open_provider(llm) as stack:
            yield stack, mock


def router_of(stack: ProviderStack) -> Router:
    assert stack.router is not None
    return stack.router


def stats(stack: ProviderStack, name: str) -> Any:
    return next(d for d in router_of(stack).statistics().deployments if d.name == name)


async def read(stack: ProviderStack) -> list[StreamChunk]:
    got: list[StreamChunk] = []
    async with stack.stream(REQUEST) as chunks:
        async for chunk in chunks:
            got.append(chunk)
    return got


# --------------------------------------------------------------------------- calls

TAKEN_OVER = [
    ("rate_limit_retry_after", Fault("rate_limit", retry_after=1.0), "rate_limit", True),
    ("rate_limit", Fault("rate_limit", retry_after=None), "rate_limit", True),
    ("server_error_once", Fault("server_error", times=1), "server_error", False),
    ("server_error_503", Fault("server_error", status=503), "server_error", False),
    ("reset", Fault("reset"), "connection", False),
    ("no_response", Fault("no_response"), "timeout", True),
    ("slow_first_token", Fault("slow_first_token", seconds=5.0), "timeout", True),
    ("cut", Fault("cut"), None, None),
    ("stall", Fault("stall"), "timeout", True),
    ("malformed", Fault("malformed"), "bad_response", False),
]


@pytest.mark.parametrize(
    ("fault", "kind", "cooled"), [case[1:] for case in TAKEN_OVER], ids=[c[0] for c in TAKEN_OVER]
)
async def test_a_failed_call_is_answered_by_the_other_deployment(
    fault: Fault, kind: str | None, cooled: bool | None
) -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(fault, a={"request_timeout": 0.5}) as (stack, mock):
            start = trio.current_time()
            response = await stack.complete(REQUEST)
            elapsed = trio.current_time() - start
            a = stats(stack, "a")
    assert (response.text, response.deployment, response.model) == (REPLY, "b", "mb")
    assert response.usage is not None and response.usage.total_tokens > 0
    assert mock.stats().by_model == {"ma": 1, "mb": 1}  # one attempt each, no retry of a
    # The first timeout (0.5 s), then b at once: never a's Retry-After (1 s) or a retry of
    # a (one attempt each, above); the margins are for a slow, shared machine.
    assert elapsed < (1.4 if kind == "timeout" else 0.9)
    if kind is not None:  # a cut plain body is a read error or a short body: either class
        assert a.failures == {kind: 1}
        assert a.cooling is cooled
    assert a.failovers == 1


async def test_no_done_is_no_fault_for_a_call() -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(Fault("no_done")) as (stack, _):
            assert (await stack.complete(REQUEST)).deployment == "a"


async def test_a_persistent_503_is_skipped_after_allowed_fails() -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(Fault("server_error", status=503), allowed_fails=2, cooldown=60) as (
            stack,
            mock,
        ):
            for _ in range(20):
                assert (await stack.complete(REQUEST)).deployment == "b"
            a = stats(stack, "a")
    assert mock.stats().by_model == {"ma": 2, "mb": 20}
    assert (a.failures, a.cooling, a.cooldowns) == ({"server_error": 2}, True, 1)


async def test_a_deployment_down_for_a_window_comes_back() -> None:
    fault = Fault("server_error", status=503, window=0.5)
    with trio.fail_after(TIMEOUT):
        async with routed(fault, allowed_fails=1, cooldown=0.3) as (stack, mock):
            served = []
            for _ in range(30):
                served.append((await stack.complete(REQUEST)).deployment)
                await trio.sleep(0.05)
    assert served[0] == "b"
    assert served[-5:] == ["a"] * 5  # back to the primary after the window
    assert mock.stats().faults_by_model["ma"]["server_error"] <= 3


async def test_context_length_goes_to_the_larger_group() -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(
            Fault("context_length"),
            big=True,
            groups={"g": RouterGroupConfig(context_fallbacks=["big"])},
        ) as (stack, mock):
            response = await stack.complete(REQUEST)
    assert (response.deployment, response.model) == ("c", "mc")
    assert mock.stats().by_model == {"ma": 1, "mc": 1}


async def test_context_length_without_a_larger_group_is_the_providers_error() -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(Fault("context_length")) as (stack, mock):
            with pytest.raises(BadRequestError, match="maximum context length"):
                await stack.complete(REQUEST)
    assert mock.stats().by_model == {"ma": 1}


async def test_a_content_filter_is_returned_with_its_reason_and_not_retried() -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(Fault("content_filter")) as (stack, mock):
            with pytest.raises(BadRequestError) as info:
                await stack.complete(REQUEST)
            a = stats(stack, "a")
    assert "content management policy" in str(info.value)
    assert mock.stats().by_model == {"ma": 1}
    assert (a.failures, a.cooling) == ({"content_filter": 1}, False)


async def test_a_refused_connection_moves_on() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with trio.fail_after(TIMEOUT):
        async with routed(a={"base_url": f"http://127.0.0.1:{port}/v1"}) as (stack, _):
            response = await stack.complete(REQUEST)
            a = stats(stack, "a")
    assert response.deployment == "b"
    assert a.failures == {"connection": 1}


async def test_both_down_is_a_typed_error_without_a_hang() -> None:
    async with open_mock_llm(faults={"*": Fault("server_error", status=503)}) as mock:
        deployments = {"a": deployment(mock, "ma", 1), "b": deployment(mock, "mb", 1)}
        llm = LLMConfig(deployments=deployments)
        with trio.fail_after(TIMEOUT):
            async with open_provider(llm) as stack:
                start = trio.current_time()
                with pytest.raises(LLMError) as info:
                    await stack.complete(REQUEST)
                assert trio.current_time() - start < 1.0  # short retries only
    assert getattr(info.value, "status", None) == 503


# --------------------------------------------------------------------------- streams

STREAM_TAKEN_OVER = [
    ("rate_limit", Fault("rate_limit", retry_after=1.0)),
    ("server_error", Fault("server_error")),
    ("reset", Fault("reset")),
    ("no_response", Fault("no_response")),
    ("slow_first_token", Fault("slow_first_token", seconds=5.0)),
    ("cut_before_first_chunk", Fault("cut", after_chunks=0)),
    ("stall_before_first_chunk", Fault("stall", after_chunks=0)),
    ("garbage", Fault("malformed", after_chunks=0, count=40)),
]


@pytest.mark.parametrize(
    "fault", [c[1] for c in STREAM_TAKEN_OVER], ids=[c[0] for c in STREAM_TAKEN_OVER]
)
async def test_a_stream_failing_before_its_first_chunk_is_restarted_on_the_other(
    fault: Fault,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(fault, first_token_timeout=0.5) as (stack, mock):
            start = trio.current_time()
            chunks = await read(stack)
            elapsed = trio.current_time() - start
            a, b = stats(stack, "a"), stats(stack, "b")
    assert "".join(c.delta_text for c in chunks) == REPLY
    (final,) = [c for c in chunks if c.finish_reason is not None]
    assert (final.deployment, final.model, final.finish_reason) == ("b", "mb", "stop")
    assert {c.deployment for c in chunks if c.usage is not None} == {"b"}
    assert mock.stats().by_model == {"ma": 1, "mb": 1}
    assert elapsed < 1.5
    assert (a.successes, a.failovers, b.successes) == (0, 1, 1)
    assert a.in_flight == b.in_flight == 0


async def test_a_slow_first_token_within_the_limit_is_waited_for() -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(Fault("slow_first_token", seconds=0.2), first_token_timeout=2.0) as (
            stack,
            _,
        ):
            chunks = await read(stack)
    assert chunks[-1].deployment == "a"


@pytest.mark.parametrize(
    ("fault", "error", "seconds"),
    [
        (Fault("cut", after_chunks=2), StreamCutError, 0.0),
        (Fault("stall", after_chunks=2), StreamStalledError, 0.5),
    ],
    ids=["cut", "stall"],
)
async def test_a_stream_broken_after_delivery_says_how_much_was_delivered(
    fault: Fault, error: type[IncompleteStreamError], seconds: float
) -> None:
    got: list[StreamChunk] = []
    with trio.fail_after(TIMEOUT):
        async with routed(fault, stream_idle_timeout=0.5) as (stack, mock):
            start = trio.current_time()
            with pytest.raises(error) as info:
                async with stack.stream(REQUEST) as chunks:
                    async for chunk in chunks:
                        got.append(chunk)
            elapsed = trio.current_time() - start
    assert info.value.delivered_chunks == len(got) == 2
    assert info.value.delivered_chars == len("".join(c.delta_text for c in got)) > 0
    assert info.value.deployment == "a"
    assert all(c.finish_reason is None for c in got)
    assert mock.stats().by_model == {"ma": 1}  # nothing resent, no prefill
    assert seconds <= elapsed < seconds + 0.5


@pytest.mark.parametrize(
    "fault",
    [Fault("malformed", after_chunks=2, count=1), Fault("no_done")],
    ids=["one-malformed-event", "no-done"],
)
async def test_a_stream_with_a_harmless_fault_is_whole(fault: Fault) -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(fault) as (stack, mock):
            chunks = await read(stack)
    assert "".join(c.delta_text for c in chunks) == REPLY
    assert chunks[-1].deployment == "a"
    assert any(c.usage is not None for c in chunks)
    assert mock.stats().by_model == {"ma": 1}


@pytest.mark.parametrize(
    "fault", [Fault("context_length"), Fault("content_filter")], ids=["context", "filter"]
)
async def test_a_stream_refused_for_its_content_is_the_providers_error(fault: Fault) -> None:
    with trio.fail_after(TIMEOUT):
        async with routed(fault) as (stack, mock):
            with pytest.raises(BadRequestError):
                await read(stack)
    assert mock.stats().by_model == {"ma": 1}


# --------------------------------------------------------------------------- load


async def test_under_concurrency_a_dead_deployment_costs_nothing() -> None:
    errors: list[BaseException] = []

    async def user_loop(stack: ProviderStack, stop: float) -> None:
        while trio.current_time() < stop:
            try:
                await stack.complete(REQUEST)
            except LLMError as exc:
                errors.append(exc)

    with trio.fail_after(TIMEOUT):
        async with routed(Fault("server_error", status=503), cooldown=0.5) as (stack, _mock):
            stop = trio.current_time() + 1.5
            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(user_loop, stack, stop)
            a, b = stats(stack, "a"), stats(stack, "b")
    assert errors == []
    assert b.successes > 200
    # the requests in flight when it failed, then about one probe per cooldown
    assert a.attempts <= 50 + 2 * 4
    assert a.probes <= 4


# --------------------------------------------------------------------------- the guide's file


async def test_the_guides_azure_and_openai_tables_split_the_traffic(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as azure_mock, open_mock_llm() as openai_mock:
            path = tmp_path / "agentflow.toml"
            path.write_text(
                f"""
[llm]
model = "gpt-4o"
api_key = "sk-test"

[llm.azure]
base_url = "{azure_mock.url}"
deployment = "gpt-4o"
max_connections = 50

[llm.openai]
base_url = "{openai_mock.url}/v1"
max_connections = 30
""",
                encoding="utf-8",
            )
            config = load_config(path, env={})
            async with open_provider(config) as stack:
                router = router_of(stack)
                assert router.groups == {"gpt-4o": ("azure", "openai")}
                served = [(await stack.complete(REQUEST)).deployment for _ in range(200)]
                pools = {d.name: d.stack.pool.connections for d in router.statistics().deployments}
    counts = {"azure": azure_mock.stats().chat, "openai": openai_mock.stats().chat}
    assert counts == {"azure": served.count("azure"), "openai": served.count("openai")}
    assert 60 < counts["azure"] < 140 and 60 < counts["openai"] < 140
    assert all(n >= 1 for n in pools.values())  # each deployment has its own pool
