"""Tool progress: each call of a fan-out sends `ToolCallStarted` before it runs and
`ToolCallFinished` as it ends, to the event's progress sink, only when one is current.

The fan-out tests use a sink from `progress.open_progress_channel` made current with
`progress.using_sink` (no runner) under the autojump clock; the tool agent's tests run
against the mock LLM over loopback HTTP (real clock, absolute ``fail_after``).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import agentflow_trio as af
from agentflow_trio import progress
from agentflow_trio.config import RetryConfig
from agentflow_trio.errors import UsageLimitExceeded
from agentflow_trio.llm import FakeProvider, LLMClient, open_provider
from agentflow_trio.llm.types import ChatResponse, ToolCall
from agentflow_trio.mockllm import MockReply, MockToolCall, open_mock_llm
from agentflow_trio.progress import ToolCallFinished, ToolCallStarted
from agentflow_trio.testing import mock_llm_config
from agentflow_trio.tools import ToolRegistry, ToolResult, call_many, tool, tool_agent

TIMEOUT = 10


def drain(receive: Any) -> list[Any]:
    items = []
    while True:
        try:
            items.append(receive.receive_nowait())
        except trio.WouldBlock:
            return items


def pairs(items: list[Any]) -> list[tuple[str, str]]:
    return [("started" if isinstance(i, ToolCallStarted) else "finished", i.call_id) for i in items]


def finished_like(result: ToolResult) -> ToolCallFinished:
    return ToolCallFinished(
        result.call_id, result.name, result.outcome, result.output, result.error, result.duration
    )


async def test_each_call_is_announced_before_it_runs(autojump_clock: Any) -> None:
    sink, receive = progress.open_progress_channel(16)
    sent: list[Any] = []
    own_start_sent: list[bool] = []

    @tool
    async def look(key: str) -> dict[str, Any]:
        """Checks what the caller has been sent so far: its own start must be there."""
        sent.extend(drain(receive))
        own_start_sent.append(ToolCallStarted(f"l{key}", "look", {"key": key}) in sent)
        return {"key": key}

    calls = [ToolCall(f"l{k}", "look", {"key": k}) for k in "12"]
    with progress.using_sink(sink):
        results = await call_many(ToolRegistry([look]), None, calls)
    assert own_start_sent == [True, True]
    sent.extend(drain(receive))
    assert sorted(pairs(sent)) == sorted(
        (kind, f"l{k}") for k in "12" for kind in ("started", "finished")
    )
    assert [i for i in sent if isinstance(i, ToolCallFinished)] in (
        [finished_like(r) for r in results],
        [finished_like(r) for r in reversed(results)],
    )


async def test_each_call_is_reported_as_it_ends_not_at_the_end() -> None:
    sink, receive = progress.open_progress_channel(16)
    gate = trio.Event()

    @tool
    async def fast() -> dict[str, Any]:
        """Answers at once."""
        return {"fast": True}

    @tool
    async def slow() -> dict[str, Any]:
        """Answers once the caller has seen the fast call finish."""
        await gate.wait()
        return {"slow": True}

    delivered: list[Any] = []

    async def caller() -> None:  # reads as a streaming caller does; opens the gate
        while True:
            try:
                item = await receive.receive()
            except trio.EndOfChannel:
                return
            delivered.append(item)
            if isinstance(item, ToolCallFinished) and item.name == "fast":
                gate.set()

    calls = [ToolCall("s1", "slow"), ToolCall("f1", "fast")]
    with trio.fail_after(TIMEOUT):  # reporting only at the end would never open the gate
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            with progress.using_sink(sink):
                results = await call_many(ToolRegistry([fast, slow]), None, calls)
            sink.close()
    order = pairs(delivered)
    assert sorted(order) == [
        ("finished", "f1"),
        ("finished", "s1"),
        ("started", "f1"),
        ("started", "s1"),
    ]
    assert order.index(("started", "f1")) < order.index(("finished", "f1"))
    assert order[-1] == ("finished", "s1")  # the gate opened only once fast's end was seen
    ends = [i for i in delivered if isinstance(i, ToolCallFinished)]
    assert ends == [finished_like(results[1]), finished_like(results[0])]


async def test_every_kind_of_call_is_reported_once_started_first(autojump_clock: Any) -> None:
    @tool
    def add(a: int, b: int) -> int:
        """A synchronous tool (answered inline)."""
        return a + b

    @tool
    async def later(seconds: float) -> dict[str, Any]:
        """An asynchronous one."""
        await trio.sleep(seconds)
        return {"slept": seconds}

    registry = ToolRegistry([add, later])
    calls = [
        ToolCall("c1", "add", {"a": 1, "b": 2}),
        ToolCall("c2", "later", {"seconds": 1}),
        ToolCall("c3", "nope", {}),
        ToolCall("c4", "add", {"a": "x", "b": 2}),
        ToolCall.parse("c5", "later", "{bad"),
    ]
    sink, receive = progress.open_progress_channel(32)
    with progress.using_sink(sink):
        results = await call_many(registry, None, calls)
    items = drain(receive)
    ids = [c.id for c in calls]
    for call_id in ids:  # one start then one end per call
        assert [kind for kind, i in pairs(items) if i == call_id] == ["started", "finished"]
    ended = {i.call_id: i for i in items if isinstance(i, ToolCallFinished)}
    assert [ended[r.call_id] for r in results] == [finished_like(r) for r in results]
    assert [ended[i].status for i in ids] == ["ok", "ok", "error", "error", "error"]
    assert ended["c1"].output == {"result": 3} and ended["c3"].error["type"] == "unknown_tool"
    started = {i.call_id: i for i in items if isinstance(i, ToolCallStarted)}
    assert started["c2"] == ToolCallStarted("c2", "later", {"seconds": 1})
    assert pairs(items)[-2:] == [("started", "c2"), ("finished", "c2")]  # the one that waited


async def test_a_capped_fan_out_announces_a_call_when_it_gets_its_slot(
    autojump_clock: Any,
) -> None:
    @tool
    async def nap(seconds: float) -> dict[str, Any]:
        """Sleeps."""
        await trio.sleep(seconds)
        return {}

    calls = [ToolCall(f"n{i}", "nap", {"seconds": 1}) for i in range(3)]
    sink, receive = progress.open_progress_channel(32)
    with progress.using_sink(sink):
        await call_many(ToolRegistry([nap]), None, calls, max_parallel=1)
    assert pairs(drain(receive)) == [
        (kind, f"n{i}") for i in range(3) for kind in ("started", "finished")
    ]


async def test_cancelled_siblings_are_reported_after_the_fan_out(autojump_clock: Any) -> None:
    @tool
    async def work(seconds: float, fail: bool = False) -> dict[str, Any]:
        """Sleeps, then answers or fails."""
        await trio.sleep(seconds)
        if fail:
            raise ValueError("broke")
        return {}

    calls = [
        ToolCall("a", "work", {"seconds": 5}),
        ToolCall("b", "work", {"seconds": 1, "fail": True}),
        ToolCall("c", "work", {"seconds": 0}),
    ]
    sink, receive = progress.open_progress_channel(32)
    with progress.using_sink(sink):
        results = await call_many(
            ToolRegistry([work]), None, calls, max_parallel=2, on_error="cancel_siblings"
        )
    assert [r.outcome for r in results] == ["cancelled", "error", "cancelled"]
    items = drain(receive)
    assert pairs(items) == [
        ("started", "a"),
        ("started", "b"),
        ("finished", "a"),  # after the fan-out, in input order; c never got a slot
        ("finished", "b"),
        ("started", "c"),
        ("finished", "c"),
    ]
    assert [i for i in items if isinstance(i, ToolCallFinished)] == [
        finished_like(r) for r in results
    ]


async def test_without_a_sink_nothing_is_sent(autojump_clock: Any) -> None:
    @tool
    async def noop() -> dict[str, Any]:
        """Nothing."""
        return {}

    sink, receive = progress.open_progress_channel(8)
    with progress.using_sink(sink), progress.using_sink(None):
        results = await call_many(ToolRegistry([noop]), None, [("noop", {})])
    assert results[0].ok and drain(receive) == []


async def test_a_slow_caller_holds_the_tools_back(autojump_clock: Any) -> None:
    ran: list[str] = []

    @tool
    async def mark(key: str) -> dict[str, Any]:
        """Records that it ran."""
        ran.append(key)
        return {}

    sink, receive = progress.open_progress_channel(1)  # room for one item
    calls = [("mark", {"key": k}, k) for k in "abc"]
    received: list[Any] = []
    async with trio.open_nursery() as nursery:
        with progress.using_sink(sink):
            nursery.start_soon(call_many, ToolRegistry([mark]), None, calls)
        await trio.testing.wait_all_tasks_blocked()
        # One start fits: that call ran; its end and the two other starts wait for room.
        assert len(ran) == 1
        while len(received) < 6:
            received.append(await receive.receive())
            await trio.testing.wait_all_tasks_blocked()
            assert len(ran) <= (len(received) + 1) // 2 + 1  # a start per item taken, at most
    assert sorted(ran) == ["a", "b", "c"]
    for k in "abc":
        assert [kind for kind, i in pairs(received) if i == k] == ["started", "finished"]


# ----------------------------------------------------------------- through the tool agent


def weather_tools() -> ToolRegistry:
    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": city, "temp_c": 18}

    return ToolRegistry([weather])


async def test_a_streamed_tool_agent_streams_its_model_steps_and_reports_its_tools() -> None:
    outputs = []
    streams = []
    items: list[Any] = []
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            config = mock_llm_config(mock, retry=RetryConfig(enabled=False))
            async with open_provider(config) as provider:
                llm = LLMClient(provider)
                for streamed in (False, True):
                    mock.reset()
                    mock.script(
                        MockReply(tool_calls=(MockToolCall("weather", {"city": "Oslo"}, id="w"),)),
                        MockReply(text="It is 18C in Oslo."),
                    )
                    sink, receive = progress.open_progress_channel(256)
                    event = af.Event("ask", {"query": "Oslo?"})
                    ctx = af.Context(event, llm=llm)
                    with progress.using_sink(sink if streamed else None):
                        result = await tool_agent(tools=weather_tools())(ctx, event)
                    outputs.append((result.outcome, result.output["text"]))
                    streams.append(mock.stats().streams)
                    items = drain(receive)
    assert outputs == [(af.Outcome.SUCCEEDED, "It is 18C in Oslo.")] * 2
    assert streams == [0, 2]  # each model step streamed only when someone listens
    tool_items = [i for i in items if isinstance(i, ToolCallStarted | ToolCallFinished)]
    assert pairs(tool_items) == [("started", "w"), ("finished", "w")]
    assert tool_items[1].output == {"city": "Oslo", "temp_c": 18}
    text = "".join(i.text for i in items if isinstance(i, progress.TextDelta))
    assert text == "It is 18C in Oslo."


async def test_runner_stream_of_a_tool_agent_gives_text_tools_and_the_result_last() -> None:
    reply = "Oslo is at 18C today, clear skies."
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(stream_chunks=4) as mock:
            config = mock_llm_config(mock, retry=RetryConfig(enabled=False))
            async with (
                open_provider(config) as provider,
                af.Runner(
                    agents={"ask": tool_agent(tools=weather_tools())}, llm=LLMClient(provider)
                ) as runner,
            ):
                mock.script(
                    MockReply(
                        text="Checking.",
                        tool_calls=(MockToolCall("weather", {"city": "Oslo"}, id="w"),),
                    ),
                    MockReply(text=reply),
                )
                async with runner.stream(af.Event("ask", {"query": "Oslo?"})) as stream:
                    items = [item async for item in stream]
    kinds = [type(i).__name__ for i in items]
    assert kinds[-1] == "FinalResult" and kinds.count("FinalResult") == 1
    started, finished = kinds.index("ToolCallStarted"), kinds.index("ToolCallFinished")
    assert set(kinds[:started]) == {"TextDelta"} and started + 1 == finished
    assert set(kinds[finished + 1 : -1]) == {"TextDelta"}
    before = "".join(i.text for i in items[:started] if isinstance(i, progress.TextDelta))
    after = "".join(i.text for i in items[finished + 1 : -1] if isinstance(i, progress.TextDelta))
    assert (before, after) == ("Checking.", reply)
    result = items[-1].result
    assert result.succeeded and result.output["text"] == reply
    assert items[finished] == finished_like(result.output["tool_results"][0])


async def test_a_usage_limit_propagates_with_the_transcript(autojump_clock: Any) -> None:
    first = ChatResponse("", (ToolCall.parse("c1", "weather", '{"city": "Rome"}'),))
    fake = FakeProvider.scripted([first, UsageLimitExceeded("max_requests", 1, 2)])
    agent = tool_agent(tools=weather_tools())
    event = af.Event("ask", {"query": "Rome?"})
    ctx = af.Context(event, llm=LLMClient(fake), tools=weather_tools())
    with pytest.raises(UsageLimitExceeded) as caught:
        await agent(ctx, event)
    output = caught.value.partial_output  # type: ignore[attr-defined]
    assert [m.role for m in output["transcript"]] == ["user", "assistant", "tool"]
    assert [r.outcome for r in output["tool_results"]] == ["ok"]
    assert output["steps"] == 2 and len(fake.requests) == 2
