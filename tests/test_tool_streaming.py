"""Streaming tool results: order, batching, backpressure, early exit, errors, cancellation.

Blocked states are reached with ``wait_all_tasks_blocked`` and read through the channel's
``statistics()``; no sleeps stand in for synchronisation.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from agentflow_trio.tools import StreamError, StreamSink, open_tool_stream


async def count_to(sink: StreamSink[int], n: int) -> None:
    for i in range(n):
        await sink.send(i)


async def test_batches_arrive_in_order_with_the_batch_size() -> None:
    async with open_tool_stream(count_to, 250, batch_size=100) as batches:
        received = [batch async for batch in batches]
    assert [len(b) for b in received] == [100, 100, 50]
    assert [x for b in received if isinstance(b, list) for x in b] == list(range(250))


async def test_default_batch_size_is_100() -> None:
    async with open_tool_stream(count_to, 100) as batches:
        assert [len(b) async for b in batches if isinstance(b, list)] == [100]


async def test_send_batch_keeps_order_with_pending_items_and_splits_big_lists() -> None:
    async def produce(sink: StreamSink[int]) -> None:
        await sink.send(-1)
        await sink.send_batch([0, 1, 2])
        await sink.send_batch(range(3, 10))
        await sink.send(10)
        await sink.send_batch(list(range(11, 17)))
        await sink.send_batch(iter(()))

    async with open_tool_stream(produce, batch_size=4) as batches:
        received = [b async for b in batches]
    assert received == [[-1], [0, 1, 2], [3, 4, 5, 6], [7, 8, 9], [10], [11, 12, 13, 14], [15, 16]]


async def test_backpressure_blocks_the_producer_when_the_buffer_is_full() -> None:
    sinks: list[StreamSink[int]] = []

    async def endless(sink: StreamSink[int]) -> None:
        sinks.append(sink)
        i = 0
        while True:
            await sink.send(i)
            i += 1

    async with open_tool_stream(endless, batch_size=10, buffer=2) as batches:
        await trio.testing.wait_all_tasks_blocked()
        stats = batches.statistics()
        assert stats.current_buffer_used == 2 and stats.max_buffer_size == 2
        assert stats.tasks_waiting_send == 1  # the producer, parked on the third batch
        assert sinks[0].items_sent == 20  # two batches delivered, the third one waits
        assert await batches.receive() == list(range(10))
        await trio.testing.wait_all_tasks_blocked()
        stats = batches.statistics()
        assert stats.current_buffer_used == 2 and stats.tasks_waiting_send == 1
        assert sinks[0].items_sent == 30


async def test_leaving_early_cancels_the_producer_and_closes_both_ends() -> None:
    ended: list[str] = []

    async def endless(sink: StreamSink[int]) -> None:
        try:
            while True:
                await sink.send(1)
        except trio.Cancelled:
            ended.append("cancelled")
            raise
        except trio.BrokenResourceError:
            ended.append("broken")
            raise

    async with open_tool_stream(endless, batch_size=5, buffer=1) as batches:
        async for batch in batches:
            assert batch == [1] * 5
            break
    assert len(ended) == 1  # the producer ended (cancelled, or told the consumer left)
    stats = batches.statistics()
    assert (stats.open_send_channels, stats.open_receive_channels) == (0, 0)


async def test_producer_error_arrives_last_after_the_batches_already_sent() -> None:
    async def failing(sink: StreamSink[int]) -> None:
        for i in range(150):
            await sink.send(i)
        raise ValueError("disk on fire")

    async with open_tool_stream(failing, batch_size=100) as batches:
        received = [b async for b in batches]  # no exception escapes the loop
    assert len(received) == 3
    assert received[0] == list(range(100))
    assert received[1] == list(range(100, 150))  # the partial batch, flushed before the error
    error = received[2]
    assert isinstance(error, StreamError)
    assert (error.type, error.message) == ("ValueError", "disk on fire")
    assert "disk on fire" in error.traceback


async def test_producer_own_broken_resource_is_an_error_item() -> None:
    async def broken(sink: StreamSink[int]) -> None:
        await sink.send(1)
        raise trio.BrokenResourceError("upstream socket broke")

    async with open_tool_stream(broken, batch_size=10) as batches:
        received = [b async for b in batches]
    assert received[0] == [1]
    assert isinstance(received[1], StreamError)
    assert received[1].type == "BrokenResourceError"


async def test_cancellation_of_the_consumer_closes_both_ends(autojump_clock: Any) -> None:
    ended: list[str] = []

    async def slow(sink: StreamSink[int]) -> None:
        try:
            await sink.send_batch([1])
            await trio.sleep_forever()
        finally:
            ended.append("producer done")

    got: list[Any] = []
    with trio.move_on_after(5) as scope:
        async with open_tool_stream(slow) as batches:
            async for batch in batches:
                got.append(batch)
    assert scope.cancelled_caught
    assert got == [[1]] and ended == ["producer done"]
    stats = batches.statistics()
    assert (stats.open_send_channels, stats.open_receive_channels) == (0, 0)
    with pytest.raises(trio.ClosedResourceError):
        batches.receive_nowait()


async def test_an_error_in_the_consumer_comes_out_bare_and_stops_the_producer() -> None:
    ended: list[str] = []

    async def endless(sink: StreamSink[int]) -> None:
        try:
            while True:
                await sink.send(1)
        finally:
            ended.append("done")

    with pytest.raises(KeyError):
        async with open_tool_stream(endless, batch_size=2) as batches:
            async for _ in batches:
                raise KeyError("consumer bug")
    assert ended == ["done"]


async def test_unbuffered_stream_and_argument_checks() -> None:
    async with open_tool_stream(count_to, 5, batch_size=2, buffer=0) as batches:
        assert [b async for b in batches] == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match="batch_size"):
        async with open_tool_stream(count_to, 1, batch_size=0):
            pass
    with pytest.raises(ValueError, match="buffer"):
        async with open_tool_stream(count_to, 1, buffer=-1):
            pass


async def test_an_empty_stream_just_ends() -> None:
    async with open_tool_stream(count_to, 0) as batches:
        assert [b async for b in batches] == []
