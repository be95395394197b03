"""`Runner.call` running its event in the caller's task, and workers started on demand.

A call with a free worker slot and nothing queued runs its event in the calling task
(no worker task, no queue, no result wait: the memory of an event waiting on its model);
otherwise it queues as an emitted event does. Worker tasks start as queued events need
them, never more than ``worker_pool_size``. Virtual time (autojump clock) throughout.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import agentflow_trio as af
from agentflow_trio.progress import TextDelta, current_sink


@af.agent
async def where(ctx: af.Context, event: af.Event) -> Any:
    """Sleeps ``sleep`` seconds; returns the task it ran in and when it started."""
    task, started = trio.lowlevel.current_task(), trio.current_time()
    await trio.sleep(event.data.get("sleep", 0))
    return task, started


def _config(**runner: Any) -> af.Config:
    return af.Config.from_mapping({"runner": runner})


def _workers(runner: af.Runner) -> int:
    nursery = runner._owner_nursery
    assert nursery is not None
    return sum(1 for t in nursery.child_tasks if t.name.endswith("Runner._worker"))


async def test_a_call_runs_in_the_callers_task_and_starts_no_worker(autojump_clock: Any) -> None:
    seen: list[af.RunnerStatistics] = []

    @af.agent
    async def look(ctx: af.Context, event: af.Event) -> Any:
        seen.append(ctx.runner.statistics())
        return trio.lowlevel.current_task()

    async with af.Runner(_config(worker_pool_size=4), agents={"look": look}) as runner:
        result = await runner.call(af.Event("look"))
        assert result.output is trio.lowlevel.current_task()
        assert _workers(runner) == 0
    (inside,) = seen
    assert (inside.in_flight, inside.running_events, inside.running_agents) == (1, 1, 1)
    assert inside.queued == 0
    stats = runner.statistics()
    assert (stats.accepted, stats.succeeded, stats.in_flight, stats.running_agents) == (1, 1, 0, 0)


async def test_workers_start_as_queued_events_need_them_never_more_than_the_pool(
    autojump_clock: Any,
) -> None:
    async with af.Runner(_config(worker_pool_size=3), agents={"where": where}) as runner:
        assert _workers(runner) == 0
        first = [await runner.emit(af.Event("where", {"sleep": 5})) for _ in range(2)]
        assert _workers(runner) == 2
        rest = [await runner.emit(af.Event("where", {"sleep": 5})) for _ in range(4)]
        assert _workers(runner) == 3
        assert runner.statistics().running_agents == 3
        results = [await h.result() for h in first + rest]
        assert _workers(runner) == 3  # they stay, for the next queued events
    starts = sorted(r.unwrap()[1] for r in results)
    assert starts == [0, 0, 0, 5, 5, 5]


async def test_a_call_waits_its_turn_behind_queued_events(autojump_clock: Any) -> None:
    """With one worker, a call made while an emitted event is queued starts after it."""
    async with af.Runner(_config(worker_pool_size=1), agents={"where": where}) as runner:
        running = await runner.emit(af.Event("where", {"sleep": 2}))
        queued = await runner.emit(af.Event("where", {"sleep": 2}))
        called = await runner.call(af.Event("where", {"sleep": 2}))
        assert called.unwrap()[0] is not trio.lowlevel.current_task()  # it queued
        assert [(await h.result()).unwrap()[1] for h in (running, queued)] == [0, 2]
    assert called.unwrap()[1] == 4


async def test_a_call_queues_while_its_slot_is_taken_by_another_call(autojump_clock: Any) -> None:
    async with af.Runner(_config(worker_pool_size=1), agents={"where": where}) as runner:
        results: list[af.AgentResult] = []

        async def caller() -> None:
            results.append(await runner.call(af.Event("where", {"sleep": 3})))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            nursery.start_soon(caller)
    assert sorted(r.unwrap()[1] for r in results) == [0, 3]


async def test_cancelling_the_caller_cancels_the_event_run_in_its_task(autojump_clock: Any) -> None:
    ended: list[af.AgentResult] = []
    async with af.Runner(_config(), agents={"where": where}) as runner:
        runner.hooks.after_event.append(lambda event, result: ended.append(result))
        with trio.move_on_after(1) as scope:
            await runner.call(af.Event("where", {"sleep": 10}))
        assert scope.cancelled_caught
        (result,) = ended
        assert result.outcome is af.Outcome.CANCELLED
        assert result.error is not None and result.error.message == "cancelled by its caller"
        stats = runner.statistics()
        assert (stats.cancelled, stats.in_flight, stats.running_agents) == (1, 0, 0)
        assert (await runner.call(af.Event("where"))).succeeded  # the slot came back


@pytest.mark.parametrize("body_raises", [False, True])
async def test_shutdown_cancels_an_event_run_in_its_callers_task_and_waits_for_it(
    autojump_clock: Any, body_raises: bool
) -> None:
    results: list[af.AgentResult] = []
    cleaned: list[float] = []

    @af.agent
    async def stubborn(ctx: af.Context, event: af.Event) -> None:
        try:
            await trio.sleep(100)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1)  # the runner's exit waits for this
            cleaned.append(trio.current_time())

    config = _config(drain_timeout="2s")
    async with trio.open_nursery() as outside:
        with pytest.raises(RuntimeError) if body_raises else _nothing():
            async with af.Runner(config, agents={"stubborn": stubborn}) as runner:

                async def caller() -> None:
                    results.append(await runner.call(af.Event("stubborn")))

                outside.start_soon(caller)
                await trio.sleep(1)
                assert runner.statistics().running_events == 1
                if body_raises:
                    raise RuntimeError("the body failed")
        assert cleaned == [2.0 if body_raises else 4.0]  # ended before the exit returned
        assert runner.statistics().in_flight == 0
    (result,) = results
    assert result.outcome is af.Outcome.CANCELLED
    assert result.error is not None and result.error.message == "cancelled by runner shutdown"


async def test_an_event_run_in_a_streamed_agents_task_does_not_stream_into_it(
    autojump_clock: Any,
) -> None:
    """Runner B's call from inside runner A's streamed event: B's event has no sink of
    its own (as in a worker), so its progress does not reach A's stream."""
    sinks: list[object] = []

    @af.agent
    async def inner(ctx: af.Context, event: af.Event) -> None:
        sinks.append(current_sink())

    async with af.Runner(agents={"inner": inner}) as b:

        @af.agent
        async def outer(ctx: af.Context, event: af.Event) -> str:
            sink = current_sink()
            assert sink is not None
            await sink.send(TextDelta("from a"))
            return (await b.call(af.Event("inner"))).outcome.value

        async with af.Runner(agents={"outer": outer}) as a:
            async with a.stream(af.Event("outer")) as items:
                got = [item async for item in items]
    assert sinks == [None]
    assert [type(i).__name__ for i in got] == ["TextDelta", "FinalResult"]
    assert got[-1].result.output == "succeeded"  # type: ignore[union-attr]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
