"""Usage and budgets per event: `RunUsage` on results, `UsageLimits`, prices, metrics.

Against the built-in mock LLM over real HTTP (real clock, loopback, port 0, an absolute
``fail_after`` each), the figures are read back from the mock (its counters and the
replies it was scripted with), never written down here. With `FakeProvider` (in
process) under the autojump clock for the exact cases: nesting, workflows, groups.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
from prometheus_client.parser import text_string_to_metric_families

import agentflow_trio as af
from agentflow_trio.config import Config, LLMConfig, PriceConfig, RetryConfig
from agentflow_trio.distributed._codec import decode_result, encode_result
from agentflow_trio.errors import ConfigError, UsageLimitExceeded
from agentflow_trio.llm import FakeProvider, LLMClient, open_provider
from agentflow_trio.llm.types import (
    ChatRequest,
    ChatResponse,
    Message,
    ToolSpec,
    Usage,
    estimate_tokens,
)
from agentflow_trio.mockllm import MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.observability.metrics import RunnerMetrics
from agentflow_trio.testing import mock_llm_config
from agentflow_trio.tools import ToolRegistry, tool, tool_agent
from agentflow_trio.usage import RunUsage, UsageLimits, UsageMeter, tightest

TIMEOUT = 10
MODEL = "gpt-4o-mini"
PRICE = PriceConfig(input=0.15, output=0.6, cached_input=0.075)  # USD per 1M tokens


@tool
async def search(q: str) -> dict[str, Any]:
    """Search the web."""
    return {"hits": [f"{q} {i}" for i in range(3)]}


def _loop_replies(cached: int = 0) -> tuple[MockReply, ...]:
    return (
        MockReply(tool_calls=(MockToolCall("search", {"q": "trio"}, id="c1"),)),
        MockReply(tool_calls=(MockToolCall("search", {"q": "anyio"}, id="c2"),)),
        MockReply(text="Trio and anyio both structure concurrency.", cached_tokens=cached),
    )


async def _run(
    mock: MockLLM, event: af.Event, *, config: Config | None = None, **emit: Any
) -> af.AgentResult:
    agent = tool_agent(tools=ToolRegistry([search]))
    llm_config = mock_llm_config(mock, model=MODEL, retry=RetryConfig(enabled=False))
    async with (
        open_provider(llm_config) as provider,
        af.Runner(config, agents={"ask": agent}, llm=LLMClient(provider)) as runner,
    ):
        return await runner.call(event, **emit)


def _priced() -> Config:
    return attrs.evolve(Config(), llm=attrs.evolve(LLMConfig(), prices={MODEL: PRICE}))


# ------------------------------------------------------------------ the mock's figures


async def test_a_tool_loops_usage_is_the_sum_of_what_the_mock_reported() -> None:
    replies = _loop_replies(cached=2)
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            mock.script(*replies)
            result = await _run(
                mock, af.Event("ask", {"query": "trio or anyio?"}), config=_priced()
            )
    assert result.succeeded, result.error
    stats = mock.stats()
    usage = result.usage
    assert usage is not None
    assert usage.requests == stats.chat == len(replies) == result.output["steps"]
    assert usage.input_tokens == stats.prompt_tokens > 0
    assert usage.output_tokens == stats.completion_tokens > 0
    assert usage.cached_tokens == sum(r.cached_tokens for r in replies)
    assert usage.total_tokens == stats.prompt_tokens + stats.completion_tokens
    # One model, the one every request named; the figures under it are the same.
    assert {body["model"] for body in mock.received} == {MODEL}
    assert set(usage.by_model) == {MODEL}
    assert attrs.evolve(usage.by_model[MODEL], cost=usage.cost) == attrs.evolve(
        usage, by_model={}, by_deployment={}
    )
    # The price table gives the cost: cached input at its own price.
    uncached = stats.prompt_tokens - usage.cached_tokens
    expected = (
        uncached * PRICE.input
        + usage.cached_tokens * (PRICE.cached_input or 0)
        + stats.completion_tokens * PRICE.output
    ) / 1e6
    assert usage.cost == pytest.approx(expected)


async def test_no_price_for_a_model_used_means_no_cost() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            mock.script(*_loop_replies())
            result = await _run(mock, af.Event("ask", {"query": "q"}))
    assert result.usage is not None and result.usage.requests == 3
    assert result.usage.cost is None


async def test_a_token_limit_below_what_the_loop_needs_stops_it_before_the_next_call() -> None:
    event = af.Event("ask", {"query": "trio or anyio?"})
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            # What the first call costs, as the mock reports it: allow one call only.
            mock.script(*_loop_replies())
            first = await _run(mock, event, limits=UsageLimits(max_requests=1))
            assert first.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED
            assert mock.stats().chat == 1
            # The loop's transcript so far is kept: the question, the model's tool call
            # and the tool's answer.
            assert first.output is not None
            roles = [m.role for m in first.output["transcript"]]
            assert roles[:3] == ["user", "assistant", "tool"]
            assert first.usage is not None
            one_call = first.usage.total_tokens
            assert one_call == mock.stats().prompt_tokens + mock.stats().completion_tokens
            # The first request as the mock received it, estimated as before sending.
            body = mock.received[0]
            tools = tuple(
                ToolSpec(f["name"], f.get("description", ""), f["parameters"])
                for f in (t["function"] for t in body.get("tools", ()))
            )
            messages = tuple(Message(m["role"], m.get("content")) for m in body["messages"])
            first_estimate = estimate_tokens(ChatRequest(messages, tools=tools))
            assert tools  # the estimate counts the tools' schemas the request carries

            # A budget the first call fits in and the first call's usage fills: the
            # second call (its estimate on top of what was spent) would pass it.
            mock.reset()
            mock.script(*_loop_replies())
            budget = max(one_call, first_estimate)
            stopped = await _run(mock, event, limits=UsageLimits(max_total_tokens=budget))
            assert mock.stats().chat == 1  # the second request was never sent
            sent_before_the_limit = mock.stats()

            # Without a limit the loop needs more than that.
            mock.reset()
            mock.script(*_loop_replies())
            unlimited = await _run(mock, event)
    assert stopped.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED
    assert stopped.error is not None and stopped.error.type == "UsageLimitExceeded"
    assert "max_total_tokens" in stopped.error.message
    assert "UsageLimitExceeded" in stopped.error.traceback
    assert stopped.usage is not None and stopped.usage.requests == 1
    assert stopped.usage.total_tokens == one_call
    assert stopped.usage.input_tokens == sent_before_the_limit.prompt_tokens
    assert unlimited.succeeded and unlimited.usage is not None
    # The loop needs a second call, which the budget refused before it was sent: that
    # call alone (its estimate, schemas included) would not fit in what was left.
    assert unlimited.usage.requests > 1
    assert one_call + first_estimate > budget


@af.agent
async def _narrator(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    seen = 0
    async with ctx.llm.stream("tell me a long story") as chunks:
        async for chunk in chunks:
            seen += 1 if chunk.delta_text else 0
    return {"chunks": seen}


async def test_a_streaming_limit_stops_a_long_stream() -> None:
    story = " ".join(f"word{i}" for i in range(400))
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(stream_chunks=100) as mock:
            llm_config = mock_llm_config(mock, model=MODEL, retry=RetryConfig(enabled=False))
            async with (
                open_provider(llm_config) as provider,
                af.Runner(agents={"story": _narrator}, llm=LLMClient(provider)) as runner,
            ):
                mock.script(MockReply(text=story))
                whole = await runner.call(af.Event("story"))
                mock.script(MockReply(text=story))
                limits = UsageLimits(max_output_tokens=20)
                cut = await runner.call(af.Event("story"), limits=limits)
    assert whole.succeeded and whole.output["chunks"] == 100
    assert whole.usage is not None and whole.usage.output_tokens > 20  # the mock's figure
    assert cut.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED, cut.error
    assert cut.error is not None and "max_output_tokens" in cut.error.message
    # Stopped once the estimate (4 characters a token) passed 20: long before the end.
    assert cut.usage is not None and cut.usage.requests == 1
    assert 20 < cut.usage.output_tokens < whole.usage.output_tokens


# ------------------------------------------------------------------ nesting and workflows


def _client() -> tuple[LLMClient, FakeProvider]:
    provider = FakeProvider()
    return LLMClient(provider), provider


def _reported(provider: FakeProvider) -> tuple[int, int]:
    """What the fake reported over its calls: (prompt, completion) tokens."""
    inputs = sum(sum(len((m.content or "").split()) for m in r.messages) for r in provider.requests)
    outputs = sum(len(f"echo: {r.messages[-1].content}".split()) for r in provider.requests)
    return inputs, outputs


@af.agent
async def _asks_once(ctx: af.Context, event: af.Event) -> int:
    await ctx.llm.complete(f"question from {event.type}")
    return ctx.usage.requests


@af.agent
async def _parent(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    await ctx.llm.complete("the parent asks")
    child = await ctx.runner.call(af.Event("child"))
    return {"child": child, "seen": ctx.usage}


async def test_nested_calls_count_for_themselves_and_their_parent(autojump_clock: Any) -> None:
    llm, provider = _client()
    agents = {"parent": _parent, "child": _asks_once}
    async with af.Runner(agents=agents, llm=llm) as runner:
        result = await runner.call(af.Event("parent"))
    assert result.succeeded
    child: af.AgentResult = result.output["child"]
    assert child.succeeded and child.output == 1  # ctx.usage, read while it ran
    assert child.usage is not None and child.usage.requests == 1
    assert result.usage is not None and result.usage.requests == 2
    inputs, outputs = _reported(provider)
    assert result.usage.input_tokens == inputs and result.usage.output_tokens == outputs
    assert result.output["seen"] == result.usage  # ctx.usage after the child: both calls
    assert result.usage.by_model["fake-model"].requests == 2


async def test_a_parents_budget_binds_its_nested_calls(autojump_clock: Any) -> None:
    llm, provider = _client()
    agents = {
        "parent": af.Agent(_parent.fn, limits=UsageLimits(max_requests=1)),
        "child": _asks_once,
    }
    async with af.Runner(agents=agents, llm=llm) as runner:
        result = await runner.call(af.Event("parent"))
    child: af.AgentResult = result.output["child"]
    assert child.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED  # the parent's one call is spent
    assert child.error is not None and "max_requests" in child.error.message
    assert len(provider.requests) == 1
    assert result.succeeded and result.usage is not None and result.usage.requests == 1


async def test_workflow_children_share_the_events_budget(autojump_clock: Any) -> None:
    llm, provider = _client()
    both = af.parallel(_asks_once, af.Agent(_asks_once.fn, name="again"), name="both")
    steps = af.sequential(_asks_once, af.Agent(_asks_once.fn, name="then"), name="steps")
    async with af.Runner(agents={"both": both, "steps": steps}, llm=llm) as runner:
        parallel_result = await runner.call(af.Event("both"))
        sequential_result = await runner.call(af.Event("steps"))
        limited = await runner.call(af.Event("both"), limits=UsageLimits(max_requests=1))
    assert parallel_result.usage is not None and parallel_result.usage.requests == 2
    assert sequential_result.succeeded and sequential_result.output == 2  # the meter is shared
    assert sequential_result.usage is not None and sequential_result.usage.requests == 2
    assert limited.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED
    assert limited.usage is not None and limited.usage.requests == 1
    assert len(provider.requests) == 5


@af.agent
async def _fans_out(ctx: af.Context, event: af.Event) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(ctx.llm.complete, f"call {i}")


async def test_a_limit_raised_inside_a_nursery_is_still_the_outcome(autojump_clock: Any) -> None:
    llm, provider = _client()
    async with af.Runner(agents={"fan": _fans_out}, llm=llm) as runner:
        result = await runner.call(af.Event("fan"), limits=UsageLimits(max_requests=2))
    assert result.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED  # out of an ExceptionGroup
    assert result.error is not None and result.error.type == "UsageLimitExceeded"
    assert "ExceptionGroup" in result.error.traceback
    # Requests count when sent: the two allowed, though the third's refusal cancelled them.
    assert result.usage is not None and result.usage.requests == 2
    assert len(provider.requests) <= 2


async def test_limits_are_the_tightest_of_config_agent_and_event(autojump_clock: Any) -> None:
    llm, provider = _client()

    @af.agent(limits=UsageLimits(max_requests=3, max_input_tokens=10_000))
    async def chatty(ctx: af.Context, event: af.Event) -> int:
        for _ in range(10):
            await ctx.llm.complete("again")
        return 0

    config = Config.from_mapping({"limits": {"max_requests": 5}})
    async with af.Runner(config, agents={"chatty": chatty}, llm=llm) as runner:
        by_agent = await runner.call(af.Event("chatty"))
        by_event = await runner.call(af.Event("chatty"), limits=UsageLimits(max_requests=2))
        chatty.limits = None
        by_config = await runner.call(af.Event("chatty"))
    assert [r.usage.requests for r in (by_agent, by_event, by_config) if r.usage] == [3, 2, 5]
    assert all(r.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED for r in (by_agent, by_event))
    assert len(provider.requests) == 10


async def _noop(ctx: af.Context, event: af.Event) -> None:
    await trio.lowlevel.checkpoint()


async def test_no_model_call_no_usage(autojump_clock: Any) -> None:
    async with af.Runner(agents={"noop": _noop}) as runner:
        result = await runner.call(af.Event("noop"))
    assert result.succeeded and result.usage is None


async def test_a_returned_limit_error_is_the_outcome_too(autojump_clock: Any) -> None:
    """An agent that returns the error as a failed result (as a tool loop catching every
    exception does) ends ``usage_limit_exceeded`` all the same."""
    llm, _ = _client()

    @af.agent
    async def catches(ctx: af.Context, event: af.Event) -> af.AgentResult:
        try:
            await ctx.llm.complete("hi")
        except Exception as exc:
            return af.AgentResult.failed(exc)
        return af.AgentResult.ok()

    async with af.Runner(agents={"c": catches}, llm=llm) as runner:
        result = await runner.call(af.Event("c"), limits=UsageLimits(max_requests=0))
    assert result.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED
    assert runner.statistics().usage_limit_exceeded == 1


async def test_max_cost_refuses_once_spent(autojump_clock: Any) -> None:
    llm, provider = _client()
    config = attrs.evolve(
        Config(), llm=attrs.evolve(LLMConfig(), prices={"fake": PriceConfig(1e6, 1e6)})
    )

    @af.agent
    async def spender(ctx: af.Context, event: af.Event) -> None:
        for _ in range(1000):  # bounded: a broken budget check fails, never hangs
            await ctx.llm.complete("spend")
        raise AssertionError("max_cost never stopped the calls")

    async with af.Runner(config, agents={"s": spender}, llm=llm) as runner:
        result = await runner.call(af.Event("s"), limits=UsageLimits(max_cost=5.0))
    assert result.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED
    usage = result.usage
    assert usage is not None and usage.cost is not None  # the prefix "fake" prices "fake-model"
    assert usage.cost == usage.input_tokens + usage.output_tokens  # 1 USD a token
    per_call = usage.cost / usage.requests
    assert usage.cost - per_call < 5.0 <= usage.cost  # refused once spent, not before
    assert len(provider.requests) == usage.requests


# ------------------------------------------------------------------ values


def test_usage_limits_tighter_and_from_mapping() -> None:
    a = UsageLimits(max_requests=3, max_cost=2.0)
    b = UsageLimits(max_requests=5, max_total_tokens=100)
    assert a.tighter(b) == UsageLimits(max_requests=3, max_total_tokens=100, max_cost=2.0)
    assert tightest(None, a, None) is a
    assert tightest(None, None) is None
    assert UsageLimits.from_mapping({"max_requests": 2, "max_cost": None}) == UsageLimits(
        max_requests=2
    )
    with pytest.raises(ConfigError, match="unknown limit") as unknown:
        UsageLimits.from_mapping({"max_request": 2})
    assert unknown.value.key == "limits.max_request"
    for bad in (-1, 10**16, True, "3", math.nan):
        with pytest.raises(ConfigError) as caught:
            UsageLimits.from_mapping({"max_requests": bad})
        assert caught.value.key == "limits.max_requests"
    with pytest.raises(ConfigError):
        UsageLimits(max_cost=math.inf)
    with pytest.raises(TypeError):
        af.Agent(_asks_once.fn, limits={"max_requests": 1})  # type: ignore[arg-type]


def test_run_usage_round_trips_through_its_dict_and_the_redis_codec() -> None:
    meter = UsageMeter(prices={MODEL: PRICE})
    for model, dep in ((MODEL, "east"), (MODEL, "west"), ("other", "")):
        meter.start_call(10)
        meter.charge(model, dep, 10, 5, 2)
    usage = meter.snapshot()
    assert usage.requests == 3 and usage.cost is None  # "other" has no price
    assert usage.by_model[MODEL].cost is not None and usage.by_deployment["east"].requests == 1
    assert RunUsage.from_dict(usage.to_dict()) == usage
    result = af.AgentResult.usage_limit_exceeded(UsageLimitExceeded("max_requests", 3, 4), usage)
    back = decode_result(encode_result(attrs.evolve(result, event_id="e1")))
    assert back.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED and back.usage == usage
    for bad in ({"requests": -1}, {"cost": "free"}, {"by_model": {str(i): {} for i in range(300)}}):
        with pytest.raises(ValueError):
            RunUsage.from_dict(bad, max_keys=256)


def test_the_limits_and_prices_config_tables() -> None:
    config = Config.from_mapping(
        {
            "limits": {"max_requests": 10, "max_cost": 0.5},
            "llm": {"prices": {"gpt-4o": {"input": 2.5, "output": 10}}, "output_retries": 2},
        }
    )
    assert UsageLimits.from_config(config.limits) == UsageLimits(max_requests=10, max_cost=0.5)
    assert config.llm.prices["gpt-4o"] == PriceConfig(2.5, 10.0, None)
    assert config.llm.output_mode == "auto" and config.llm.output_retries == 2
    assert Config.from_mapping(config.to_dict(mask_secrets=False)) == config
    text = config.to_toml()
    assert "[llm.prices.gpt-4o]\ninput = 2.5\noutput = 10.0\n# cached_input = (not set)" in text
    assert "[limits]\nmax_requests = 10\n# max_input_tokens = (not set)\n" in text
    for data, key in (
        ({"limits": {"max_requests": -1}}, "limits.max_requests"),
        ({"limits": {"max_cost": "lots"}}, "limits.max_cost"),
        ({"llm": {"prices": {"m": {"input": -1}}}}, "llm.prices.m.input"),
        ({"llm": {"prices": {"m": {"inptu": 1}}}}, "llm.prices.m.inptu"),
        ({"llm": {"output_mode": "json"}}, "llm.output_mode"),
        ({"llm": {"output_retries": 101}}, "llm.output_retries"),
        ({"runner": {"stream_buffer": 0}}, "runner.stream_buffer"),
    ):
        with pytest.raises(ConfigError) as caught:
            Config.from_mapping(data)
        assert caught.value.key == key, caught.value


async def test_metrics_count_tokens_and_cost_by_agent_and_model(autojump_clock: Any) -> None:
    provider = FakeProvider(
        lambda request: ChatResponse("ok", usage=Usage(7, 3, 10, 2), model=MODEL)
    )
    metrics = RunnerMetrics(process=False)
    config = _priced()
    agents = {"parent": _parent, "child": _asks_once}
    async with af.Runner(config, agents=agents, llm=LLMClient(provider), metrics=metrics) as runner:
        metrics.attach(runner)
        await runner.call(af.Event("parent"))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    # Each agent's own call, once (the parent's usage includes the child's: not counted twice).
    cost = (5 * PRICE.input + 2 * (PRICE.cached_input or 0) + 3 * PRICE.output) / 1e6
    for agent in ("_parent", "_asks_once"):
        for kind, n in (("input", 7), ("output", 3), ("cached", 2)):
            labels = (("agent_name", agent), ("kind", kind), ("model", MODEL))
            assert samples[("llm_tokens_total", labels)] == n
        labels = (("agent_name", agent), ("model", MODEL))
        assert samples[("llm_cost_usd_total", labels)] == pytest.approx(cost)
    status = (("runner", "runner"), ("status", "usage_limit_exceeded"))
    assert samples[("runner_events_completed_total", status)] == 0


def test_a_request_estimate_leaves_out_the_answers_room() -> None:
    from agentflow_trio.llm.types import estimate_input_tokens, estimate_tokens

    request = ChatRequest((af.user("x" * 40),), max_tokens=1000)
    assert estimate_input_tokens(request) == 11
    assert estimate_tokens(request) == 1011


def test_the_usage_limits_example_runs() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "usage_limits.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "no budget: succeeded" in done.stdout
    assert "usage_limit_exceeded" in done.stdout and "saw 1 request(s)" in done.stdout


def test_the_model_label_is_bounded() -> None:
    metrics = RunnerMetrics(process=False, max_label_values=2)
    one = RunUsage(1, 1, 1, 0, 2, None)
    metrics.observe_usage("agent", RunUsage(5, by_model={f"m{i}": one for i in range(5)}))
    models = {
        s.labels["model"]
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name == "llm_tokens_total"
    }
    assert models == {"m0", "m1", "_other"}


# ------------------------------------------------------------------ every kind of call


async def test_embeddings_are_metered_and_limited(autojump_clock: Any) -> None:
    llm, provider = _client()

    @af.agent
    async def embedder(ctx: af.Context, event: af.Event) -> int:
        for _ in range(5):
            await ctx.llm.embed(["a few words to embed"])
        return ctx.usage.requests

    async with af.Runner(agents={"e": embedder}, llm=llm) as runner:
        free = await runner.call(af.Event("e"))
        capped = await runner.call(af.Event("e"), limits=UsageLimits(max_requests=2))
    assert free.succeeded and free.output == 5
    assert free.usage is not None and free.usage.requests == 5
    assert free.usage.input_tokens > 0 and free.usage.output_tokens == 0
    assert capped.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED
    assert capped.usage is not None and capped.usage.requests == 2
    assert len(provider.embed_requests) == 5 + 2  # the refused third was never sent


async def test_a_bare_provider_is_metered_too(autojump_clock: Any) -> None:
    provider = FakeProvider()
    async with af.Runner(agents={"a": _asks_once}, llm=provider) as runner:
        done = await runner.call(af.Event("a"))
        refused = await runner.call(af.Event("a"), limits=UsageLimits(max_requests=0))
    assert done.succeeded and done.usage is not None and done.usage.requests == 1
    assert refused.outcome is af.Outcome.USAGE_LIMIT_EXCEEDED
    assert len(provider.requests) == 1  # the refused call was never sent


async def test_a_stream_is_charged_to_the_model_that_answered() -> None:
    seen_models: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(stream_chunks=8) as mock:
            llm_config = mock_llm_config(mock, model=MODEL, retry=RetryConfig(enabled=False))
            async with (
                open_provider(llm_config) as provider,
                af.Runner(agents={"story": _narrator}, llm=LLMClient(provider)) as runner,
            ):
                mock.script(MockReply(text="one two three four five six seven eight"))
                async with runner.stream(af.Event("story")) as items:
                    async for item in items:
                        if isinstance(item, af.TextDelta):
                            seen_models.append(item.model)
                        elif isinstance(item, af.FinalResult):
                            result = item.result
    # The request names no model (the provider's config does): the chunks do.
    assert seen_models and set(seen_models) == {MODEL}
    assert result.usage is not None and set(result.usage.by_model) == {MODEL}
