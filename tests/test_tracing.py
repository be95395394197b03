"""Tracing: span trees, statuses and content rules, read from the SDK's in-memory exporter.

Everything here runs in-process on `FakeProvider` and the router over fakes, under the
autojump clock where time matters; the OTLP-over-HTTP path across serve, Redis and a
worker is tests/test_tracing_e2e.py. The SDK processor is the synchronous one, so every
ended span is in the exporter when the code that ended it returns.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import agentflow_trio as af
from agentflow_trio.config import DeploymentConfig, LLMConfig, RetryConfig, RunnerConfig
from agentflow_trio.config.sections import TracingConfig
from agentflow_trio.errors import CircuitOpenError, ServerError
from agentflow_trio.llm import FakeProvider, LLMClient, open_provider
from agentflow_trio.llm.types import ChatResponse, ToolCall, Usage
from agentflow_trio.observability import tracing
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

SECRET = "sk-very-secret-key-0123456789"


@pytest.fixture
async def spans() -> AsyncIterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    async with tracing.open_tracing(TracingConfig(enabled=True), exporter=exporter, batch=False):
        yield exporter
    assert tracing.active is None


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def parent_of(span: ReadableSpan, spans: dict[str, ReadableSpan]) -> str | None:
    if span.parent is None:
        return None
    for name, other in spans.items():
        if other.context.span_id == span.parent.span_id:
            return name
    return "<elsewhere>"


def weather_tools() -> ToolRegistry:
    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": city, "temp_c": 18}

    return ToolRegistry([weather])


def asks_for_weather() -> FakeProvider:
    call = ToolCall.parse("call_1", "weather", json.dumps({"city": "Paris"}))
    first = ChatResponse("", (call,), "tool_calls", Usage(11, 3), "m-2024")
    return FakeProvider.scripted([first, ChatResponse("sunny", (), "stop", Usage(20, 2), "m-2024")])


async def run_tool_agent(llm: Any, **fields: Any) -> af.AgentResult:
    agent = tool_agent(tools=weather_tools(), request_fields={"model": "m", **fields})
    async with af.Runner(agents={"ask": agent}, llm=llm) as runner:
        return await runner.call(af.Event("ask", {"query": "weather in Paris?"}))


async def test_an_event_is_one_tree_event_agent_model_and_tool_calls(
    spans: InMemorySpanExporter,
) -> None:
    result = await run_tool_agent(asks_for_weather())
    assert result.succeeded
    finished = spans.get_finished_spans()
    names = [s.name for s in finished]
    assert sorted(names) == sorted(
        ["event ask", "invoke_agent tool_agent", "chat m", "execute_tool weather", "chat m"]
    )
    assert len({s.context.trace_id for s in finished}) == 1
    tree = by_name(spans)
    assert parent_of(tree["event ask"], tree) is None
    assert parent_of(tree["invoke_agent tool_agent"], tree) == "event ask"
    assert parent_of(tree["execute_tool weather"], tree) == "invoke_agent tool_agent"
    chats = [s for s in finished if s.name == "chat m"]
    assert all(parent_of(c, tree) == "invoke_agent tool_agent" for c in chats)

    event = tree["event ask"].attributes or {}
    assert event["agentflow.event.outcome"] == "succeeded"
    assert event["gen_ai.agent.name"] == "tool_agent"
    assert event["agentflow.queue_wait_s"] >= 0 and event["agentflow.run_time_s"] >= 0
    agent = tree["invoke_agent tool_agent"].attributes or {}
    assert agent["gen_ai.operation.name"] == "invoke_agent"
    first = chats[0].attributes or {}
    assert chats[0].kind is SpanKind.CLIENT
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.request.model"] == "m"
    assert first["gen_ai.response.model"] == "m-2024"
    assert first["gen_ai.usage.input_tokens"] == 11
    assert first["gen_ai.usage.output_tokens"] == 3
    assert tuple(first["gen_ai.response.finish_reasons"]) == ("tool_calls",)
    called = tree["execute_tool weather"].attributes or {}
    assert called["gen_ai.tool.name"] == "weather"
    assert called["gen_ai.tool.call.id"] == "call_1"
    assert all(s.status.status_code is not StatusCode.ERROR for s in finished)


async def test_content_is_left_out_unless_asked_for(spans: InMemorySpanExporter) -> None:
    await run_tool_agent(asks_for_weather())
    keys = {k for s in spans.get_finished_spans() for k in (s.attributes or {})}
    assert not {k for k in keys if "messages" in k or "arguments" in k or "result" in k}
    text = repr([dict(s.attributes or {}) for s in spans.get_finished_spans()])
    assert "Paris" not in text and "sunny" not in text


async def test_capture_content_records_prompts_completions_and_tool_io() -> None:
    exporter = InMemorySpanExporter()
    settings = TracingConfig(enabled=True, capture_content=True)
    async with tracing.open_tracing(settings, exporter=exporter, batch=False):
        await run_tool_agent(asks_for_weather())
    tree = by_name(exporter)
    called = tree["execute_tool weather"].attributes or {}
    assert json.loads(called["gen_ai.tool.call.arguments"]) == {"city": "Paris"}
    assert json.loads(called["gen_ai.tool.call.result"]) == {"city": "Paris", "temp_c": 18}
    last = [s for s in exporter.get_finished_spans() if s.name == "chat m"][-1].attributes or {}
    assert "weather in Paris?" in last["gen_ai.input.messages"]
    assert json.loads(last["gen_ai.output.messages"])[0]["content"] == "sunny"


async def test_secrets_never_reach_a_span(mock_llm: Any) -> None:
    exporter = InMemorySpanExporter()
    config = af.Config(
        llm=LLMConfig(base_url=mock_llm.url + "/v1", api_key=SECRET, headers={"x-key": SECRET}),
        tracing=TracingConfig(enabled=True, capture_content=True, headers={"auth": SECRET}),
    )
    async with tracing.open_tracing(config, exporter=exporter, batch=False):
        async with af.App(agents={"ask": _ask_once}, config=config).open(monitoring=False) as r:
            result = await r.call(af.Event("ask", {"q": "hello"}))
    assert result.succeeded
    finished = exporter.get_finished_spans()
    assert any(s.name.startswith("chat") for s in finished)
    dumped = repr([(s.name, dict(s.attributes or {}), s.events) for s in finished])
    assert SECRET not in dumped
    assert "openai" in dumped  # gen_ai.provider.name from the config


async def _ask_once(ctx: af.Context, event: af.Event) -> str:
    reply = await ctx.llm.complete([af.user(event.data["q"])])
    return str(reply.text)


def _deployment(**fields: Any) -> DeploymentConfig:
    return DeploymentConfig(provider="fake", model="m", retry=RetryConfig(max_attempts=1), **fields)


def _outer(inside: bool) -> contextlib.AbstractContextManager[Any]:
    """A current span (an agent's, say) to run a model call under, or none."""
    return tracing.span("outer") if inside else contextlib.nullcontext()


@pytest.mark.parametrize("inside", [False, True])
async def test_router_failover_attempts_are_events_of_the_model_span(
    spans: InMemorySpanExporter, autojump_clock: Any, inside: bool
) -> None:
    def busy(request: Any) -> Any:
        return ServerError("HTTP 503", status=503, excerpt="busy")

    fakes = {"primary": FakeProvider(busy), "backup": FakeProvider(lambda r: "from backup")}
    llm = LLMConfig(provider="fake", model="m", deployments={n: _deployment() for n in fakes})
    async with open_provider(llm, transports=fakes, rng=random.Random(3)) as stack:
        client = LLMClient(stack)
        for _ in range(4):  # the weighted pick may start on either; primary fails each time
            with _outer(inside):
                reply = await client.complete([af.user("hi")], model="m")
            assert reply.text == "from backup"
    chats = [s for s in spans.get_finished_spans() if s.name == "chat m"]
    assert len(chats) == 4
    tree = {s.context.span_id: s.name for s in spans.get_finished_spans()}
    parents = {tree.get(c.parent.span_id) if c.parent else None for c in chats}
    assert parents == ({"outer"} if inside else {None})
    attempts = [e for c in chats for e in c.events if e.name == "agentflow.router.attempt"]
    assert attempts, "the primary was never tried in four calls"
    for e in attempts:
        assert e.attributes is not None
        assert e.attributes["agentflow.deployment"] == "primary"
        assert e.attributes["agentflow.failover.reason"] == "server_error"
        assert e.attributes["error.type"] == "ServerError"
    assert {(c.attributes or {})["agentflow.deployment"] for c in chats} == {"backup"}
    assert all(c.status.status_code is not StatusCode.ERROR for c in chats)


async def test_a_timed_out_event_says_timed_out_not_a_generic_error(
    spans: InMemorySpanExporter, autojump_clock: Any
) -> None:
    async def slow(ctx: af.Context, event: af.Event) -> None:
        with ctx.span("waiting"):
            await trio.sleep(60)

    async with af.Runner(agents={"slow": af.agent(slow, timeout=5)}) as runner:
        result = await runner.call(af.Event("slow"))
    assert result.outcome is af.Outcome.TIMED_OUT
    tree = by_name(spans)
    for name in ("event slow", "invoke_agent slow", "waiting"):
        span = tree[name]
        assert span.status.status_code is StatusCode.ERROR, name
        assert span.status.description == "timed out", name
        assert (span.attributes or {})["agentflow.reason"] == "timed out"
    assert (tree["event slow"].attributes or {})["error.type"] == "timeout"


async def test_a_cancelled_event_says_cancelled_by_caller(
    spans: InMemorySpanExporter, autojump_clock: Any
) -> None:
    async def forever(ctx: af.Context, event: af.Event) -> None:
        await trio.sleep_forever()

    async with af.Runner(agents={"wait": forever}) as runner:
        handle = await runner.emit(af.Event("wait"))
        await trio.sleep(1)
        handle.cancel()
        result = await handle.result()
    assert result.outcome is af.Outcome.CANCELLED
    tree = by_name(spans)
    for name in ("event wait", "invoke_agent forever"):
        assert tree[name].status.description == "cancelled by caller", name
        assert (tree[name].attributes or {})["error.type"] == "cancelled"


@pytest.mark.parametrize("inside", [False, True])
async def test_an_open_breaker_says_breaker_open(spans: InMemorySpanExporter, inside: bool) -> None:
    refused = FakeProvider(lambda request: CircuitOpenError("deployment 'x'", 3.0))
    with _outer(inside), pytest.raises(CircuitOpenError):
        await LLMClient(refused).complete("hi", model="m")
    (chat,) = [s for s in spans.get_finished_spans() if s.name == "chat m"]
    assert chat.status.description == "breaker open"
    assert (chat.attributes or {})["error.type"] == "CircuitOpenError"
    assert chat.kind is SpanKind.CLIENT
    assert (chat.parent is not None) is inside
    assert tracing.current_traceparent() is None  # the call's span is no longer current


async def test_a_model_call_names_its_own_span_while_it_runs(
    spans: InMemorySpanExporter,
) -> None:
    """Inside a model call the ``traceparent`` (a request's header, the helper's value)
    names that call's ``chat`` span, a child of the span current around the call."""
    seen: list[tuple[str | None, bytes]] = []
    head = b"POST / HTTP/1.1\r\ncontent-length: "

    def answer(request: Any) -> str:
        assert tracing.active is not None
        seen.append((tracing.current_traceparent(), tracing.active.request_head(head)))
        return "ok"

    with tracing.span("outer") as outer:
        await LLMClient(FakeProvider(answer)).complete("hi", model="m")
        outside = tracing.current_traceparent()
    chat = by_name(spans)["chat m"]
    ids = chat.context
    expected = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-01"
    assert seen == [
        (expected, b"POST / HTTP/1.1\r\ntraceparent: %b\r\ncontent-length: " % expected.encode())
    ]
    assert chat.parent is not None
    assert chat.parent.span_id == outer.get_span_context().span_id
    assert outside is not None and outside != expected  # back to the outer span


async def test_an_event_under_a_foreign_current_span_is_its_child(
    spans: InMemorySpanExporter,
) -> None:
    """A current span that is not agentflow's (another library's, a remote one) parents
    the event's span, and the agent's span hangs under the event's."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    async def echo(ctx: af.Context, event: af.Event) -> str:
        return "done"

    foreign = SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED))
    token = otel_context.attach(otel_trace.set_span_in_context(NonRecordingSpan(foreign)))
    try:
        async with af.Runner(agents={"e": echo}) as runner:
            assert (await runner.call(af.Event("e"))).output == "done"
    finally:
        otel_context.detach(token)
    tree = by_name(spans)
    event, agent = tree["event e"], tree["invoke_agent echo"]
    assert event.parent is not None and event.parent.span_id == 0xDEF
    assert event.context.trace_id == agent.context.trace_id == 0xABC
    assert agent.parent is not None and agent.parent.span_id == event.context.span_id


async def test_an_event_cancelled_while_queued_has_a_span_and_no_agent_span(
    spans: InMemorySpanExporter, autojump_clock: Any
) -> None:
    async def forever(ctx: af.Context, event: af.Event) -> None:
        await trio.sleep_forever()

    config = af.Config(runner=RunnerConfig(worker_pool_size=1))
    async with af.Runner(config, agents={"wait": forever}) as runner:
        first = await runner.emit(af.Event("wait"))
        queued = await runner.emit(af.Event("wait"))
        await trio.sleep(1)
        queued.cancel()
        assert (await queued.result()).outcome is af.Outcome.CANCELLED
        first.cancel()
        await first.result()
    ended = spans.get_finished_spans()
    events = [s for s in ended if s.name == "event wait"]
    assert len(events) == 2 and len([s for s in ended if s.name == "invoke_agent forever"]) == 1
    never_ran = next(
        s for s in events if (s.attributes or {})["agentflow.event.id"] == queued.event.id
    )
    attributes = never_ran.attributes or {}
    assert attributes["agentflow.event.outcome"] == "cancelled"
    assert attributes["agentflow.run_time_s"] == 0.0
    assert never_ran.status.description == "cancelled by caller"
    assert never_ran.end_time is not None and never_ran.start_time is not None
    assert never_ran.end_time >= never_ran.start_time


async def test_a_synchronous_tool_span_hangs_under_its_agent_with_its_outcome(
    spans: InMemorySpanExporter,
) -> None:
    @tool
    def double(x: int) -> int:
        """Twice x, of an even x."""
        if x % 2:
            raise ValueError("odd")
        return 2 * x

    async def uses(ctx: af.Context, event: af.Event) -> list[str]:
        calls = [("double", {"x": 2}), ("double", {"x": 3})]
        fanned = [r.outcome for r in await ctx.tools.call_many(calls)]  # the inline path
        one = [(await ctx.tools.call("double", {"x": x})).outcome for x in (4, 5)]
        return fanned + one

    async with af.Runner(agents={"t": uses}, tools=ToolRegistry([double])) as runner:
        assert (await runner.call(af.Event("t"))).output == ["ok", "error", "ok", "error"]
    ended = spans.get_finished_spans()
    agent = next(s for s in ended if s.name == "invoke_agent uses")
    tools = sorted(
        (s for s in ended if s.name == "execute_tool double"),
        key=lambda s: s.status.status_code is StatusCode.ERROR,
    )
    assert len(tools) == 4
    for span in tools:
        assert span.parent is not None and span.parent.span_id == agent.context.span_id
        assert span.context.trace_id == agent.context.trace_id
        assert (span.attributes or {})["gen_ai.tool.name"] == "double"
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
    for good in tools[:2]:
        assert good.status.status_code is StatusCode.UNSET
    for bad in tools[2:]:
        assert bad.status.status_code is StatusCode.ERROR
        assert (bad.attributes or {})["error.type"] == "ValueError"


async def test_a_failed_tool_and_a_failed_agent_carry_their_error_type(
    spans: InMemorySpanExporter,
) -> None:
    @tool
    def explode() -> None:
        """Always fails."""
        raise ValueError("boom")

    @tool
    async def explode_later() -> None:
        """Always fails, asynchronously."""
        await trio.lowlevel.checkpoint()
        raise KeyError("later")

    registry = ToolRegistry([explode, explode_later])

    async def uses_tools(ctx: af.Context, event: af.Event) -> None:
        results = await ctx.tools.call_many([("explode", {}), ("explode_later", {})])
        assert [r.outcome for r in results] == ["error", "error"]
        raise RuntimeError("the agent gives up")

    async with af.Runner(agents={"t": uses_tools}, tools=registry) as runner:
        result = await runner.call(af.Event("t"))
    assert result.outcome is af.Outcome.FAILED
    tree = by_name(spans)
    assert tree["execute_tool explode"].status.status_code is StatusCode.ERROR
    later = tree["execute_tool explode_later"]
    assert later.status.status_code is StatusCode.ERROR
    assert (later.attributes or {})["error.type"] == "KeyError"
    agent = tree["invoke_agent uses_tools"]
    assert (agent.attributes or {})["error.type"] == "RuntimeError"
    assert (tree["event t"].attributes or {})["error.type"] == "RuntimeError"


async def test_user_spans_and_nested_events_hang_under_the_event(
    spans: InMemorySpanExporter,
) -> None:
    async def child(ctx: af.Context, event: af.Event) -> int:
        return 2

    async def parent(ctx: af.Context, event: af.Event) -> int:
        with ctx.span("rank", k=3, where={"not": "a scalar"}) as span:
            span.set_attribute("ranked", 7)
            nested = await ctx.runner.call(af.Event("child"))
        return int(nested.output) + 1

    async with af.Runner(agents={"parent": parent, "child": child}) as runner:
        assert (await runner.call(af.Event("parent"))).output == 3
    tree = by_name(spans)
    assert parent_of(tree["rank"], tree) == "invoke_agent parent"
    assert dict(tree["rank"].attributes or {}) == {
        "k": 3,
        "where": "{'not': 'a scalar'}",  # what OTLP cannot carry is kept as text
        "ranked": 7,
    }
    assert parent_of(tree["event child"], tree) == "rank"
    assert parent_of(tree["invoke_agent child"], tree) == "event child"


async def test_a_stream_notes_its_first_chunk() -> None:
    exporter = InMemorySpanExporter()
    async with tracing.open_tracing(TracingConfig(enabled=True), exporter=exporter, batch=False):
        client = LLMClient(FakeProvider(lambda r: "one two three"))
        async with client.stream("hi", model="m") as chunks:
            text = "".join([c.delta_text async for c in chunks])
    assert text == "one two three"
    (chat,) = exporter.get_finished_spans()
    assert chat.name == "chat m"
    attributes = chat.attributes or {}
    assert attributes["agentflow.stream"] is True
    assert attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert [e.name for e in chat.events] == ["gen_ai.first_chunk"]


async def test_an_event_emitted_outside_a_span_joins_its_metadata_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    async def noop(ctx: af.Context, event: af.Event) -> None:
        return None

    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    sent = f"00-{trace_id}-{span_id}-01"
    async with af.Runner(agents={"noop": noop}) as runner:
        await runner.call(af.Event("noop", metadata={"traceparent": sent}))
        await runner.call(af.Event("noop", metadata={"traceparent": "00-garbage" * 20}))
    first, second = [s for s in spans.get_finished_spans() if s.name == "event noop"]
    assert first.parent is not None and first.parent.span_id == int(span_id, 16)
    assert first.context.trace_id == int(trace_id, 16)
    assert second.parent is None  # garbage: a new trace


@pytest.mark.parametrize(
    "value",
    [
        "",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # an all-zero trace id
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # an unknown version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + "x" * 100,
        b"\xff" * 55,
        None,
        42,
    ],
)
def test_garbage_traceparents_are_ignored(value: object) -> None:
    assert tracing.parse_traceparent(value) is None


def test_a_traceparent_is_read_lower_cased() -> None:
    value = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"
    assert tracing.parse_traceparent(value.encode()) == value.lower()


async def test_tracing_off_makes_no_span() -> None:
    assert tracing.active is None
    with tracing.span("nothing") as span:
        span.set_attribute("ignored", 1)
        assert not span.is_recording()
    assert tracing.current_traceparent() is None
    async with tracing.open_tracing(TracingConfig()) as opened:  # enabled = false
        assert opened is None and tracing.active is None


def test_tracing_off_imports_neither_the_sdk_nor_the_api() -> None:
    script = """
import sys, trio, agentflow_trio as af
from agentflow_trio.llm import FakeProvider
from agentflow_trio.tools import ToolRegistry, tool

@tool
def double(x: int) -> int:
    \"\"\"Twice x.\"\"\"
    return 2 * x

async def agent(ctx, event):
    with ctx.span("mine"):
        await ctx.tools.call("double", {"x": 2})
        return (await ctx.llm.complete("hi")).text

async def main():
    tools = ToolRegistry([double])
    async with af.Runner(agents={"a": agent}, llm=FakeProvider(), tools=tools) as r:
        assert (await r.call(af.Event("a"))).succeeded

trio.run(main)
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


async def test_tracing_is_one_per_process_and_shared_while_open() -> None:
    exporter = InMemorySpanExporter()
    settings = TracingConfig(enabled=True)
    async with tracing.open_tracing(settings, exporter=exporter, batch=False) as first:
        async with tracing.open_tracing(settings) as second:
            assert second is first is tracing.active
        assert tracing.active is first
    assert tracing.active is None


async def test_an_app_opens_tracing_from_its_config(autojump_clock: Any) -> None:
    seen: list[object] = []

    async def look(ctx: af.Context, event: af.Event) -> None:
        seen.append(tracing.active)

    config = af.Config(tracing=TracingConfig(enabled=True, exporter="none"))
    async with af.App(agents={"look": look}, config=config).open(monitoring=False) as runner:
        await runner.call(af.Event("look"))
    assert seen[0] is not None and tracing.active is None


async def test_an_mcp_call_is_a_client_span_under_its_tool_call(mcp_server: Any) -> None:
    exporter = InMemorySpanExporter()
    settings = TracingConfig(enabled=True)
    with trio.fail_after(30):
        async with (
            tracing.open_tracing(settings, exporter=exporter, batch=False),
            mcp_server.manager() as mcp,
        ):
            registry = ToolRegistry()
            mcp.register_into(registry)
            added = await registry.call(None, mcp_server.tool_name("add"), {"a": 2, "b": 3})
            failed = await registry.call(None, mcp_server.tool_name("fail"), {"message": "no"})
    assert added.output == {"result": 5}
    assert failed.output["error"]["type"] == "mcp_tool_error"  # an answer the model reads
    tree = by_name(exporter)
    add = tree["tools/call add"]
    assert add.kind is SpanKind.CLIENT
    assert parent_of(add, tree) == "execute_tool test__add"
    assert (add.attributes or {})["agentflow.mcp.server"] == "test"
    assert (add.attributes or {})["mcp.method.name"] == "tools/call"
    assert add.status.status_code is not StatusCode.ERROR
    refused = tree["tools/call fail"]
    assert refused.status.status_code is StatusCode.ERROR
    assert (refused.attributes or {})["error.type"] == "tool_error"


def test_the_example_prints_one_tree() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "tracing.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = [line[len("span: ") :] for line in done.stdout.splitlines() if line.startswith("span:")]
    assert [line.split("  {")[0] for line in lines] == [
        "event ask",
        "  invoke_agent ask",
        "    plan",
        "      invoke_agent tool_agent",
        "        chat gpt-4o-mini",
        "        execute_tool weather",
        "        chat gpt-4o-mini",
    ]


async def test_a_zero_ratio_records_nothing_but_a_sampled_caller_is_followed() -> None:
    exporter = InMemorySpanExporter()
    sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def noop(ctx: af.Context, event: af.Event) -> str | None:
        return tracing.current_traceparent()

    settings = TracingConfig(enabled=True, sample_ratio=0.0)
    async with (
        tracing.open_tracing(settings, exporter=exporter, batch=False),
        af.Runner(agents={"noop": noop}) as runner,
    ):
        alone = await runner.call(af.Event("noop"))
        assert exporter.get_finished_spans() == ()
        followed = await runner.call(af.Event("noop", metadata={"traceparent": sampled}))
    assert alone.output is not None and alone.output.endswith("-00")  # ids, not sampled
    assert followed.output.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert {s.name for s in exporter.get_finished_spans()} == {"event noop", "invoke_agent noop"}


async def test_the_batch_exporter_hands_on_every_span_once_across_batches() -> None:
    exporter = InMemorySpanExporter()
    async with tracing.open_tracing(TracingConfig(enabled=True), exporter=exporter):
        for i in range(700):  # more than one batch of 512: a hand-off, then the rest at exit
            with tracing.span("outer", i=i), tracing.span("inner", tags=["a", "b"]):
                pass
        assert len(exporter.get_finished_spans()) < 1400  # the rest leaves at exit
    spans = exporter.get_finished_spans()
    assert len(spans) == 1400 and len({s.context.span_id for s in spans}) == 1400
    outer = {s.context.span_id: s for s in spans if s.name == "outer"}
    assert sorted(s.attributes["i"] for s in outer.values()) == list(range(700))
    for inner in (s for s in spans if s.name == "inner"):
        assert inner.parent is not None and inner.parent.span_id in outer
        assert inner.context.trace_id == outer[inner.parent.span_id].context.trace_id
        assert inner.attributes["tags"] == ("a", "b") and inner.kind is SpanKind.INTERNAL
    assert all(
        s.parent is None and s.status.status_code is StatusCode.UNSET for s in outer.values()
    )


def test_the_exporter_headers_are_a_masked_secret() -> None:
    settings = TracingConfig(enabled=True, headers={"authorization": f"Bearer {SECRET}"})
    assert SECRET not in repr(settings)
    config = af.Config(tracing=settings)
    assert SECRET not in repr(config) and SECRET not in config.to_toml()
    assert config.to_dict()["tracing"]["headers"] == {"authorization": "***"}
    with pytest.raises(af.ConfigError, match=r"tracing\.sample_ratio"):
        af.Config.from_mapping({"tracing": {"sample_ratio": 1.5}})
    with pytest.raises(af.ConfigError, match=r"tracing\.endpoint"):
        af.Config.from_mapping({"tracing": {"endpoint": "localhost:4318"}})
    with pytest.raises(af.ConfigError, match=r"tracing\.exporter"):
        af.Config.from_mapping({"tracing": {"exporter": "jaeger"}})


async def test_a_plain_tool_returning_an_awaitable_is_traced_and_still_answers(
    spans: InMemorySpanExporter,
) -> None:
    @tool
    def deferred(x: int) -> Any:
        """Doubles x, later."""

        async def compute() -> int:
            await trio.lowlevel.checkpoint()
            return 2 * x

        return compute()

    call = ToolCall.parse("c1", "deferred", json.dumps({"x": 21}))
    fake = FakeProvider.scripted([ChatResponse("", (call,), "tool_calls"), "done"])
    agent = tool_agent(tools=ToolRegistry([deferred]))
    async with af.Runner(agents={"ask": agent}, llm=fake) as runner:
        result = await runner.call(af.Event("ask", {"query": "double 21"}))
    assert result.succeeded
    assert result.output["tool_results"][0].output == {"result": 42}
    assert "execute_tool deferred" in by_name(spans)


async def test_the_batch_exporter_keeps_events_statuses_and_a_remote_parent() -> None:
    """Plain spans take the export thread's short path, the rest the general one."""
    exporter = InMemorySpanExporter()
    remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def work(ctx: af.Context, event: af.Event) -> None:
        with tracing.span("noted") as noted:
            noted.add_event("seen", {"n": 1})
        with pytest.raises(KeyError), tracing.span("broken"):
            raise KeyError("k")
        with tracing.span("plain", tags=("a", "b")):
            pass

    async with (
        tracing.open_tracing(TracingConfig(enabled=True), exporter=exporter),
        af.Runner(agents={"work": work}) as runner,
    ):
        assert (await runner.call(af.Event("work", metadata={"traceparent": remote}))).succeeded
    tree = by_name(exporter)
    assert len(tree) == 5 and {s.context.trace_id for s in tree.values()} == {
        0x4BF92F3577B34DA6A3CE929D0E0E4736
    }
    event = tree["event work"]
    assert event.parent is not None and event.parent.is_remote
    assert event.parent.span_id == 0x00F067AA0BA902B7
    assert [e.name for e in tree["noted"].events] == ["seen"]
    assert tree["broken"].status.status_code is StatusCode.ERROR
    assert (tree["broken"].attributes or {})["error.type"] == "KeyError"
    assert dict(tree["plain"].attributes or {}) == {"tags": ("a", "b")}
    for name in ("noted", "broken", "plain"):
        assert parent_of(tree[name], tree) == "invoke_agent work"


async def test_a_model_request_carries_the_current_span(spans: InMemorySpanExporter) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: "
    active = tracing.active
    assert active is not None
    assert active.request_head(head) == head  # no span: nothing to carry
    with tracing.span("call") as made:
        ids = made.get_span_context()
        expected = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-01"
        assert tracing.current_traceparent() == expected
        assert active.request_head(head) == (
            b"POST /v1/chat/completions HTTP/1.1\r\ntraceparent: %b\r\ncontent-length: "
            % expected.encode()
        )
        assert active.request_head(b"GET / HTTP/1.1\r\n") == b"GET / HTTP/1.1\r\n"


async def test_another_tracer_makes_the_same_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's own tracer (``exporter = "none"``): the paths the lean tracer
    shortens, taken the long way, give the same spans."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from agentflow_trio.observability._trace_spans import Instruments

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "active", Instruments(provider.get_tracer("test")))
    result = await run_tool_agent(asks_for_weather())
    assert result.succeeded
    tree = by_name(exporter)
    assert parent_of(tree["invoke_agent tool_agent"], tree) == "event ask"
    assert parent_of(tree["execute_tool weather"], tree) == "invoke_agent tool_agent"
    assert parent_of(tree["chat m"], tree) == "invoke_agent tool_agent"
    assert (tree["chat m"].attributes or {})["gen_ai.response.finish_reasons"] == ("stop",)
    assert (tree["event ask"].attributes or {})["agentflow.event.outcome"] == "succeeded"
    head = b"POST / HTTP/1.1\r\ncontent-length: "
    with tracing.span("call") as made:
        ids = made.get_span_context()
        value = tracing.current_traceparent()
        assert value is not None  # the SDK's flags: sampled, maybe a random trace id too
        assert value.startswith(f"00-{ids.trace_id:032x}-{ids.span_id:016x}-")
        assert tracing.active.request_head(head) == (
            b"POST / HTTP/1.1\r\ntraceparent: %b\r\ncontent-length: " % value.encode()
        )


def test_an_exported_span_reads_as_the_sdks_own_to_its_encoders() -> None:
    """The slotted spans the export thread hands on encode (OTLP protobuf, the console
    exporter's JSON) exactly as the SDK's ``ReadableSpan`` of the same fields."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event as SdkEvent
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, Status, TraceFlags

    from agentflow_trio.observability._trace_export import Exported, _Readable

    resource = Resource.create({"service.name": "t"})
    plain = ("plain", 7, 8, 6, SpanKind.INTERNAL, None, 10, 20, {"a": "b", "n": 1})
    status = Status(StatusCode.ERROR, "boom")
    full = (
        "full",
        7,
        9,
        0,
        SpanKind.CLIENT,
        ([("seen", {"k": 1}, 15)], status, None, None),
        11,
        19,
        {},
    )
    made = list(_Readable([*plain, *full], resource))
    assert len(made) == 2 and all(type(s) is Exported for s in made)

    def context(span_id: int) -> SpanContext:
        return SpanContext(7, span_id, False, TraceFlags(TraceFlags.SAMPLED))

    scope = InstrumentationScope("agentflow_trio")
    sdk = [
        ReadableSpan(
            "plain", context(8), context(6), resource, {"a": "b", "n": 1},
            kind=SpanKind.INTERNAL, start_time=10, end_time=20, instrumentation_scope=scope,
        ),
        ReadableSpan(
            "full", context(9), None, resource, {}, (SdkEvent("seen", {"k": 1}, 15),),
            kind=SpanKind.CLIENT, status=status, start_time=11, end_time=19,
            instrumentation_scope=scope,
        ),
    ]  # fmt: skip
    assert encode_spans(made) == encode_spans(sdk)
    assert [s.to_json() for s in made] == [s.to_json() for s in sdk]
    assert [s.dropped_attributes + s.dropped_events + s.dropped_links for s in made] == [0, 0]
    assert made[1].get_span_context() == sdk[1].get_span_context()


@pytest.mark.parametrize("traced", [False, True])
async def test_an_agent_subclass_wrapping_call_is_still_called(traced: bool) -> None:
    """The runner awaits a plain `Agent`'s function itself (its span opened with the
    event's); a subclass's own ``__call__`` is still what runs, and traced all the same."""
    calls: list[str] = []

    class Counted(af.Agent):
        def __call__(self, ctx: af.Context, event: af.Event, /) -> Any:
            calls.append(event.id)
            return super().__call__(ctx, event)

    async def echo(ctx: af.Context, event: af.Event) -> str:
        return str(event.data["x"])

    exporter = InMemorySpanExporter()
    async with contextlib.AsyncExitStack() as stack:
        if traced:
            config = TracingConfig(enabled=True)
            await stack.enter_async_context(
                tracing.open_tracing(config, exporter=exporter, batch=False)
            )
        runner = await stack.enter_async_context(af.Runner(agents={"e": Counted(echo)}))
        event = af.Event("e", {"x": 7})
        assert (await runner.call(event)).output == "7"
    assert calls == [event.id]
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == (["invoke_agent echo", "event e"] if traced else [])


async def test_a_model_call_made_inside_another_hangs_under_its_span(
    spans: InMemorySpanExporter,
) -> None:
    """A provider that calls a model itself (a judge, a fallback): that call's ``chat``
    span is a child of the outer call's, and its request names its own span."""
    heads: list[str | None] = []

    def inner_answer(request: Any) -> str:
        heads.append(tracing.current_traceparent())
        return "inner"

    inner = LLMClient(FakeProvider(inner_answer))

    class Nesting:
        async def complete(self, request: Any) -> ChatResponse:
            await inner.complete("again", model="inner")
            return ChatResponse("outer", (), "stop", Usage(1, 1), "outer")

        async def aclose(self) -> None:
            return None

    with tracing.span("agent"):
        await LLMClient(Nesting()).complete("hi", model="outer")  # type: ignore[arg-type]
    tree = by_name(spans)
    assert parent_of(tree["chat inner"], tree) == "chat outer"
    assert parent_of(tree["chat outer"], tree) == "agent"
    ids = tree["chat inner"].context
    assert heads == [f"00-{ids.trace_id:032x}-{ids.span_id:016x}-01"]


@pytest.mark.parametrize("batch", [True, False])
async def test_an_agent_that_ends_its_own_span_still_ends_once_under_its_event(
    batch: bool,
) -> None:
    """The plain path records the event's and the agent's spans together when the event
    ends; an agent's own ``end()`` of its span comes first and wins, once."""
    exporter = InMemorySpanExporter()
    ends: list[int] = []

    async def early(ctx: af.Context, event: af.Event) -> str:
        from opentelemetry import trace

        span = trace.get_current_span()
        span.end()
        span.end()  # (a second end is ignored, as the SDK's is)
        ends.append(1)
        return "ok"

    async def plain(ctx: af.Context, event: af.Event) -> str:
        return "fine"

    config = TracingConfig(enabled=True)
    async with tracing.open_tracing(config, exporter=exporter, batch=batch):
        async with af.Runner(agents={"early": early, "plain": plain}) as runner:
            assert (await runner.call(af.Event("early"))).succeeded
            assert (await runner.call(af.Event("plain"))).succeeded
    ended = exporter.get_finished_spans()
    names = sorted(s.name for s in ended)
    assert names == ["event early", "event plain", "invoke_agent early", "invoke_agent plain"]
    tree = {s.name: s for s in ended}
    for kind in ("early", "plain"):
        agent, event = tree[f"invoke_agent {kind}"], tree[f"event {kind}"]
        assert agent.parent is not None and agent.parent.span_id == event.context.span_id
        assert agent.context.trace_id == event.context.trace_id
        assert (event.attributes or {})["agentflow.event.outcome"] == "succeeded"
        assert agent.end_time is not None and event.end_time is not None
        assert agent.end_time <= event.end_time
    assert ends == [1]


async def test_spans_of_the_same_name_share_one_name_object(spans: InMemorySpanExporter) -> None:
    # an ended span waits for its batch with its name: one object per distinct name, not
    # one per span, so a queued span holds less memory
    for _ in range(2):
        assert (await run_tool_agent(asks_for_weather())).succeeded
    finished = spans.get_finished_spans()
    for name in ("event ask", "invoke_agent tool_agent", "chat m", "execute_tool weather"):
        same = [s.name for s in finished if s.name == name]
        assert len(same) >= 2, name
        assert all(n is same[0] for n in same), name


def test_a_span_name_table_is_bounded() -> None:
    from agentflow_trio.observability._trace_names import SpanNames

    names = SpanNames("event ", limit=3)
    made = [names[f"type-{i}"] for i in range(5)]
    assert made == [f"event type-{i}" for i in range(5)]
    assert names["type-1"] is made[1]  # kept: the same object again
    assert len(names) == 3 and "type-4" not in names  # past the bound: named, not kept
    assert names["type-4"] == "event type-4"
