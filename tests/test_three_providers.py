"""The same scenarios on ``openai``, ``anthropic`` and ``openai_responses``, against the mock.

Issue #21's "done means": `tool_agent` and ``complete(..., output_type=T)`` pass the same
tests on the three providers. Each test below is parametrized over them and asserts the
same outcome; only where a wire differs on purpose (Anthropic has no JSON-schema reply
format, so its structured output is the tool mode) does a test say so. Also here: usage
and `UsageLimits` (and the price of prompt-cache writes), and the Redis cache keeping a
vendor's items across workers.

Rules: loopback only, port 0, the real clock (real sockets), an absolute
``trio.fail_after`` around each test; no retries, so every scripted reply is used once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from _redis import redis_server

import agentflow_trio as af
from agentflow_trio.config import Config, LLMConfig, PriceConfig, RetryConfig
from agentflow_trio.llm import ChatRequest, LLMClient, collect_stream, open_provider, user
from agentflow_trio.llm.types import ChatResponse
from agentflow_trio.mockllm import MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.testing import mock_llm_config
from agentflow_trio.tools import ToolRegistry, tool, tool_agent
from agentflow_trio.usage import CACHE_WRITE_FACTOR, UsageLimits, UsageMeter

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

TIMEOUT = 15
MODELS = {"openai": "gpt-mock", "anthropic": "claude-mock", "openai_responses": "gpt-r-mock"}
PROVIDERS = pytest.mark.parametrize("provider", list(MODELS))
STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
CALLS = (
    MockToolCall("search", {"q": "trio"}, id="call_s"),
    MockToolCall("weather", {"city": "Paris"}, id="call_w"),
)
ANSWER = "Trio is nice and Paris is 18C."


def config(mock: MockLLM, provider: str, **fields: Any) -> LLMConfig:
    fields.setdefault("retry", RetryConfig(enabled=False))
    return mock_llm_config(mock, provider, model=MODELS[provider], **fields)  # type: ignore[arg-type]


@asynccontextmanager
async def serving(provider: str, **mock_config: Any) -> AsyncIterator[tuple[MockLLM, LLMClient]]:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(**mock_config) as mock:
            async with open_provider(config(mock, provider)) as stack:
                yield mock, LLMClient(stack)


def registry() -> tuple[ToolRegistry, list[str]]:
    log: list[str] = []

    @tool
    async def search(q: str) -> dict[str, Any]:
        """Search the web."""
        log.append(f"search:{q}")
        await trio.lowlevel.checkpoint()
        return {"hits": [q]}

    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        log.append(f"weather:{city}")
        await trio.lowlevel.checkpoint()
        return {"city": city, "temp_c": 18}

    return ToolRegistry([search, weather]), log


async def run(runner: af.Runner, event: af.Event, stream: bool, **emit: Any) -> af.AgentResult:
    if not stream:
        return await runner.call(event, **emit)
    async with runner.stream(event, **emit) as items:
        seen = [item async for item in items]
    final = seen[-1]
    assert isinstance(final, af.FinalResult)
    return final.result


# --------------------------------------------------------------------------- tool_agent


@PROVIDERS
@STREAMED
async def test_tool_agent_with_parallel_tools(provider: str, stream: bool) -> None:
    tools, log = registry()
    agent = tool_agent(tools=tools, system="You are helpful.", max_parallel_tools=2)
    async with serving(provider) as (mock, llm), af.Runner(agents={"a": agent}, llm=llm) as r:
        mock.script(MockReply(tool_calls=CALLS), MockReply(text=ANSWER))
        result = await run(r, af.Event("a", {"query": "trio? weather?"}), stream)
    assert result.succeeded, result.error
    assert result.output["text"] == ANSWER and result.output["steps"] == 2
    assert sorted(log) == ["search:trio", "weather:Paris"]
    outcomes = [(t.call_id, t.outcome) for t in result.output["tool_results"]]
    assert outcomes == [("call_s", "ok"), ("call_w", "ok")]
    roles = [m.role for m in result.output["transcript"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant"]
    usage = result.usage
    assert usage is not None and usage.requests == 2 and set(usage.by_model) == {MODELS[provider]}
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert mock.stats().chat == 2 and mock.stats().streams == (2 if stream else 0)


@PROVIDERS
async def test_a_failing_tool_is_reported_back_and_the_agent_answers(provider: str) -> None:
    @tool
    async def boom(x: int) -> dict[str, Any]:
        """Always fails."""
        raise RuntimeError("kaboom")

    agent = tool_agent(tools=ToolRegistry([boom]))
    async with serving(provider) as (mock, llm), af.Runner(agents={"a": agent}, llm=llm) as r:
        mock.script(
            MockReply(tool_calls=(MockToolCall("boom", {"x": 1}, id="call_b"),)),
            MockReply(text="It failed."),
        )
        result = await r.call(af.Event("a", {"query": "go"}))
        second = json.dumps(mock.received[1])
    assert result.succeeded and result.output["text"] == "It failed."
    assert [t.outcome for t in result.output["tool_results"]] == ["error"]
    assert "kaboom" in second  # the error went back to the model in the wire's shape


# --------------------------------------------------------------------------- structured


@attrs.frozen
class City:
    name: str
    population: int


GOOD = {"name": "Paris", "population": 2_100_000}


@PROVIDERS
@pytest.mark.parametrize("mode", ["auto", "tool", "prompted"])
async def test_complete_output_type_after_one_re_ask(provider: str, mode: str) -> None:
    bad = {"name": "Paris", "population": "lots"}

    def reply(value: Any) -> MockReply:
        if mode == "tool" or (mode == "auto" and provider == "anthropic"):
            return MockReply(tool_calls=(MockToolCall("final_result", value, id="call_o"),))
        return MockReply(text=json.dumps(value))

    async with serving(provider) as (mock, llm):
        mock.script(reply(bad), reply(GOOD))
        city = await llm.complete("The capital of France?", output_type=City, output_mode=mode)
        if mode != "prompted":  # the mock fits an unscripted reply to the schema it was sent
            unscripted = await llm.complete("a city?", output_type=City, output_mode=mode)
            assert isinstance(unscripted, City) and isinstance(unscripted.population, int)
    assert city == City("Paris", 2_100_000)
    assert mock.stats().chat == (2 if mode == "prompted" else 3)  # one re-ask


@PROVIDERS
async def test_stream_output_ends_with_the_value(provider: str) -> None:
    async with serving(provider, stream_chunks=5) as (_, llm):
        async with llm.stream_output("a city?", output_type=City) as stream:
            partials = [p async for p in stream]
            value = await stream.result()
    assert isinstance(value, City) and partials


# --------------------------------------------------------------------------- streaming


@PROVIDERS
async def test_a_stream_says_what_the_plain_answer_says(provider: str) -> None:
    text = "one two three four five six"
    request = ChatRequest((user("count"),))
    async with serving(provider, stream_chunks=4) as (mock, llm):
        mock.script(MockReply(text=text, cached_tokens=2))
        plain = await llm.provider.complete(request)
        mock.script(MockReply(text=text, cached_tokens=2))
        async with llm.provider.stream(request) as chunks:
            got = [chunk async for chunk in chunks]
    streamed = await collect_chunks(got)
    assert streamed.text == plain.text == text
    assert len([c for c in got if c.delta_text]) == 4
    assert streamed.finish_reason == plain.finish_reason == "stop"
    assert streamed.usage == plain.usage and plain.usage is not None
    assert plain.usage.cached_tokens == 2
    assert streamed.model == plain.model == MODELS[provider]


async def collect_chunks(chunks: list[Any]) -> ChatResponse:
    async def replay() -> AsyncIterator[Any]:
        for chunk in chunks:
            yield chunk

    return await collect_stream(replay())


# --------------------------------------------------------------------------- usage


@PROVIDERS
async def test_usage_is_what_the_mock_reported_and_limits_stop_a_loop(provider: str) -> None:
    tools, _ = registry()
    agent = tool_agent(tools=tools, max_steps=8)
    call = (MockToolCall("search", {"q": "again"}),)
    async with serving(provider) as (mock, llm), af.Runner(agents={"a": agent}, llm=llm) as r:
        mock.script(*[MockReply(tool_calls=call)] * 5)
        limited = await r.call(af.Event("a", {"query": "go"}), limits=UsageLimits(max_requests=2))
        served = mock.stats()
    assert limited.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED
    usage = limited.usage
    assert usage is not None and usage.requests == 2 and served.chat == 2
    assert (usage.input_tokens, usage.output_tokens) == (
        served.prompt_tokens,
        served.completion_tokens,
    )
    assert len(limited.output["tool_results"]) == 2  # type: ignore[index]


PRICE = PriceConfig(input=3.0, output=15.0, cached_input=0.3)
PROMPT = " ".join(["hello"] * 30)  # more tokens than the cache reads and writes scripted


def expected_cost(usage: Any, cached: int, created: int) -> float:
    """USD of a call: fresh input at the input price, cache reads at ``cached_input``,
    cache writes at `CACHE_WRITE_FACTOR` times the input price, output at its price."""
    fresh = usage.input_tokens - cached - created
    written = created * PRICE.input * CACHE_WRITE_FACTOR
    cost = fresh * PRICE.input + cached * 0.3 + written + usage.output_tokens * PRICE.output
    return cost / 1e6


@PROVIDERS
async def test_a_meter_prices_cache_reads_and_writes(provider: str) -> None:
    async with serving(provider) as (mock, llm):
        mock.script(MockReply(text="hi", cached_tokens=4, cache_creation_tokens=6))
        response = await llm.provider.complete(ChatRequest((user(PROMPT),)))
    used = response.usage
    assert used is not None
    created = 6 if provider == "anthropic" else 0  # only Anthropic reports cache writes
    assert (used.cached_tokens, used.cache_creation_tokens) == (4, created)
    meter = UsageMeter(prices={MODELS[provider]: PRICE})
    meter.start_call(1)
    figures = (used.prompt_tokens, used.completion_tokens, used.cached_tokens)
    meter.charge(MODELS[provider], "", *figures, created=used.cache_creation_tokens)
    usage = meter.snapshot()
    assert usage.cost == pytest.approx(expected_cost(usage, 4, created))
    assert CACHE_WRITE_FACTOR == 1.25


@pytest.mark.parametrize(
    "provider",
    ["openai", "anthropic", "openai_responses"],
)
async def test_a_runs_cost_prices_cache_reads_and_writes(provider: str) -> None:
    @af.agent
    async def ask(ctx: af.Context, event: af.Event) -> str:
        return (await ctx.llm.complete(PROMPT)).text  # type: ignore[union-attr]

    prices = {MODELS[provider]: PRICE}
    priced = attrs.evolve(Config(), llm=attrs.evolve(LLMConfig(), prices=prices))
    async with (
        serving(provider) as (mock, llm),
        af.Runner(priced, agents={"ask": ask}, llm=llm) as runner,
    ):
        mock.script(MockReply(text="hi", cached_tokens=4, cache_creation_tokens=6))
        result = await runner.call(af.Event("ask"))
    usage = result.usage
    assert result.succeeded and usage is not None and usage.cost is not None
    assert usage.input_tokens > 10
    created = 6 if provider == "anthropic" else 0
    assert usage.cached_tokens == 4
    assert usage.cost == pytest.approx(expected_cost(usage, 4, created))


# --------------------------------------------------------------------------- redis cache


@pytest.mark.parametrize(
    ("provider", "extra"),
    [
        ("anthropic", {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ("openai_responses", {"reasoning": {"effort": "low"}}),
    ],
)
async def test_the_redis_cache_keeps_a_vendors_items_and_response_id(
    provider: str, extra: dict[str, Any], redis_server: Any
) -> None:
    """A cached tool turn still carries its thinking / reasoning (and the Responses id)
    for the next turn; every field but ``raw`` comes back as the provider gave it."""
    from agentflow_trio.distributed import RedisCacheLayer, open_redis_client

    request = ChatRequest((user("weather?"),), max_tokens=2048, extra=extra)
    async with serving(provider) as (mock, llm), open_redis_client(redis_server.url) as redis:
        layer = RedisCacheLayer(llm.provider, redis, ttl=60)
        mock.script(MockReply(tool_calls=CALLS[1:], thinking="Look it up."))
        first = await layer.complete(request)
        again = await RedisCacheLayer(llm.provider, redis, ttl=60).complete(request)  # a worker
    assert mock.stats().chat == 1
    assert first.items and "Look it up." in json.dumps([dict(i.data) for i in first.items])
    assert (provider == "openai_responses") == first.response_id.startswith("resp_")
    assert again == first  # raw is not compared (eq=False), every other field is
    for field in attrs.fields(ChatResponse):
        if field.name != "raw":
            assert getattr(again, field.name) == getattr(first, field.name), field.name
