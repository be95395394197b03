"""Streaming an event's progress to its caller: ``runner.stream`` and ``handle.events()``.

Under ``MockClock(autojump_threshold=0)`` with in-process agents and `FakeProvider`
(exact, instant); states are reached with ``wait_all_tasks_blocked``, never sleeps. One
test streams over real HTTP from the built-in mock LLM (real clock, ``fail_after``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import agentflow_trio as af
from agentflow_trio.config import Config, RetryConfig
from agentflow_trio.llm import FakeProvider, LLMClient, open_provider
from agentflow_trio.mockllm import MockReply, open_mock_llm
from agentflow_trio.progress import (
    FinalResult,
    ProgressItem,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
    current_sink,
)
from agentflow_trio.testing import mock_llm_config

TIMEOUT = 10


async def _send(item: ProgressItem) -> None:
    sink = current_sink()
    assert sink is not None, "no caller streams this event"
    await sink.send(item)


@af.agent
async def counter(ctx: af.Context, event: af.Event) -> int:
    """Sends ``n`` text items, counting in ``event.data["sent"]`` those the sink took."""
    sent: list[int] = event.data["sent"]
    for i in range(event.data["n"]):
        await _send(TextDelta(str(i)))
        sent.append(i)
    return len(sent)


def _config(**runner: Any) -> Config:
    return Config.from_mapping({"runner": {"worker_pool_size": 2, **runner}})


async def test_items_come_in_order_with_the_final_result_last_and_once(
    autojump_clock: Any,
) -> None:
    async with af.Runner(_config(), agents={"count": counter}) as runner:
        async with runner.stream(af.Event("count", {"n": 200, "sent": []})) as items:
            seen = [item async for item in items]
    assert [item.text for item in seen[:-1] if isinstance(item, TextDelta)] == [
        str(i) for i in range(200)
    ]
    assert len(seen) == 201
    final = seen[-1]
    assert isinstance(final, FinalResult) and final.result.succeeded
    assert final.result.output == 200


async def test_a_slow_reader_holds_the_agent_back(autojump_clock: Any) -> None:
    """The agent runs ahead of its caller by at most ``stream_buffer`` items."""
    buffer = 4
    sent: list[int] = []
    event = af.Event("count", {"n": 100, "sent": sent})
    async with af.Runner(_config(stream_buffer=buffer), agents={"count": counter}) as runner:
        handle = await runner.emit(event, stream=True)
        items = handle.events()
        await trio.testing.wait_all_tasks_blocked()
        assert len(sent) == buffer  # the agent waits in sink.send
        for read in range(1, 31):
            item = await items.__anext__()
            assert isinstance(item, TextDelta) and item.text == str(read - 1)
            await trio.sleep(0.5)  # a slow reader
            await trio.testing.wait_all_tasks_blocked()
            assert len(sent) == read + buffer  # one more for each one read, never more
        assert not handle.done
        rest = [item async for item in items]
    assert len(sent) == 100
    assert len(rest) == 100 - 30 + 1 and isinstance(rest[-1], FinalResult)


@af.agent
async def fan_out(ctx: af.Context, event: af.Event) -> int:
    """Tasks that send at once through one small channel (tool calls running together)."""

    async def send_many(task: int) -> None:
        for i in range(50):
            await _send(ToolCallStarted(f"{task}-{i}", str(task)))

    async with trio.open_nursery() as nursery:
        for task in range(3):
            nursery.start_soon(send_many, task)
    return 150


async def test_senders_waiting_together_all_get_through(autojump_clock: Any) -> None:
    async with af.Runner(_config(stream_buffer=2), agents={"fan": fan_out}) as runner:
        async with runner.stream(af.Event("fan")) as items:
            seen = []
            async for item in items:
                seen.append(item)
                if len(seen) % 7 == 0:
                    await trio.sleep(1)  # now and then a slow reader: every sender waits
    calls = [item for item in seen if isinstance(item, ToolCallStarted)]
    assert len(calls) == 150 and isinstance(seen[-1], FinalResult)
    for task in "012":  # each sender's items in its own order
        mine = [c.call_id for c in calls if c.name == task]
        assert mine == [f"{task}-{i}" for i in range(50)]


@af.agent
async def forever(ctx: af.Context, event: af.Event) -> None:
    """Streams from a child task until cancelled; notes how its tasks ended."""
    ended: list[str] = event.data["ended"]

    async def produce() -> None:
        try:
            i = 0
            while True:
                await _send(TextDelta(str(i)))
                i += 1
        finally:
            ended.append("producer")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
    finally:
        ended.append("agent")


@pytest.mark.parametrize("how", ["break", "raise", "cancelled"])
async def test_leaving_early_cancels_the_event_and_leaves_no_task(
    autojump_clock: Any, how: str
) -> None:
    ended: list[str] = []
    async with af.Runner(_config(), agents={"forever": forever}) as runner:
        with trio.move_on_after(5) as scope:
            try:
                async with runner.stream(af.Event("forever", {"ended": ended})) as items:
                    async for item in items:
                        assert isinstance(item, TextDelta)
                        if how == "break" and item.text == "10":
                            break
                        if how == "raise" and item.text == "10":
                            raise KeyError("the consumer failed")
                        if how == "cancelled":
                            await trio.sleep(1)  # until the deadline cancels the consumer
            except KeyError:
                assert how == "raise"
        # The event has ended already: its tasks are gone, it counts as cancelled.
        assert sorted(ended) == ["agent", "producer"]
        stats = runner.statistics()
        assert stats.cancelled == 1 and stats.in_flight == 0 and stats.running_events == 0
        assert scope.cancelled_caught == (how == "cancelled")


async def test_a_handle_not_streamed_yields_only_its_final_result(autojump_clock: Any) -> None:
    async with af.Runner(_config(), agents={"noop": _noop}) as runner:
        handle = await runner.emit(af.Event("noop"))
        items = [item async for item in handle.events()]
        again = [item async for item in handle.events()]
    assert len(items) == 1 and isinstance(items[0], FinalResult)
    assert items[0].result == await handle.result() and again == items


async def _noop(ctx: af.Context, event: af.Event) -> str:
    assert current_sink() is None  # nobody streams it: no sink, no cost
    return "done"


async def test_an_event_cancelled_while_queued_ends_its_stream(autojump_clock: Any) -> None:
    gate = trio.Event()

    async def blocker(ctx: af.Context, event: af.Event) -> None:
        await gate.wait()

    config = Config.from_mapping({"runner": {"worker_pool_size": 1}})
    async with af.Runner(config, agents={"block": blocker, "count": counter}) as runner:
        await runner.emit(af.Event("block"))
        handle = runner.emit_nowait(af.Event("count", {"n": 3, "sent": []}), stream=True)
        await trio.testing.wait_all_tasks_blocked()
        handle.cancel()
        items = [item async for item in handle.events()]
        gate.set()
    assert len(items) == 1 and isinstance(items[0], FinalResult)
    assert items[0].result.outcome is af.Outcome.CANCELLED


@af.agent
async def parent(ctx: af.Context, event: af.Event) -> Any:
    await _send(ToolCallStarted("c1", "child"))
    child = await ctx.runner.call(af.Event("count", {"n": 3, "sent": []}))
    await _send(ToolCallFinished("c1", "child", "ok", child.output))
    return child.output


async def test_nested_calls_stream_to_their_parents_caller(autojump_clock: Any) -> None:
    async with af.Runner(_config(), agents={"parent": parent, "count": counter}) as runner:
        async with runner.stream(af.Event("parent")) as items:
            seen = [item async for item in items]
    kinds = [type(item).__name__ for item in seen]
    assert kinds == ["ToolCallStarted"] + ["TextDelta"] * 3 + ["ToolCallFinished", "FinalResult"]


@af.agent
async def chat(ctx: af.Context, event: af.Event) -> str:
    text = []
    fields = {"model": event.data["model"]} if "model" in event.data else {}
    async with ctx.llm.stream(event.data["prompt"], **fields) as chunks:
        async for chunk in chunks:
            text.append(chunk.delta_text)
    return "".join(text)


async def test_model_text_reaches_the_caller_as_text_deltas(autojump_clock: Any) -> None:
    provider = FakeProvider(lambda request: "structured concurrency keeps tasks owned")
    async with af.Runner(_config(), agents={"chat": chat}, llm=LLMClient(provider)) as runner:
        async with runner.stream(af.Event("chat", {"prompt": "why trio?"})) as items:
            seen = [item async for item in items]
    deltas = [item for item in seen if isinstance(item, TextDelta)]
    final = seen[-1]
    assert isinstance(final, FinalResult) and final.result.succeeded
    assert "".join(d.text for d in deltas) == final.result.output
    assert len(deltas) > 1 and all(d.model == "" for d in deltas)  # no model named


async def test_tokens_from_the_mock_llm_stream_to_the_caller_as_they_come() -> None:
    text = " ".join(f"token{i}" for i in range(40))
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(stream_chunks=20) as mock:
            config = mock_llm_config(mock, model="gpt-4o-mini", retry=RetryConfig(enabled=False))
            async with (
                open_provider(config) as provider,
                af.Runner(_config(), agents={"chat": chat}, llm=LLMClient(provider)) as runner,
            ):
                mock.script(MockReply(text=text))
                event = af.Event("chat", {"prompt": "count", "model": "gpt-4o-mini"})
                async with runner.stream(event) as items:
                    seen = [item async for item in items]
    deltas = [item for item in seen if isinstance(item, TextDelta)]
    assert len(deltas) == 20 and "".join(d.text for d in deltas) == text
    assert all(d.model == "gpt-4o-mini" for d in deltas)  # the request's model
    final = seen[-1]
    assert isinstance(final, FinalResult) and final.result.output == text
    assert final.result.usage is not None and final.result.usage.requests == 1


def test_the_streaming_caller_example_runs() -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "streaming_caller.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "result: succeeded" in done.stdout and "cancelled: 1" in done.stdout
