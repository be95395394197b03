"""The runner's five invariants (ARCHITECTURE.md), as hypothesis properties.

Each example is a generated workload replayed inside one trio run under
``MockClock(autojump_threshold=0)``: virtual time, so timeouts and drains are exact and the
whole file runs in seconds. Events arrive at generated times from their own producer tasks
(emit, emit_nowait or call, some callers cancelled), agents sleep, raise or overrun, and the
runner is shut down at a generated moment that races with the producers.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentflow_trio as af


@attrs.frozen
class Spec:
    arrival: int  # virtual seconds after start
    duration: int  # seconds the agent sleeps
    raises: bool
    mode: str  # "emit" | "nowait" | "call"
    cancel_after: int | None  # only for "call": the caller gives up after this long


@attrs.frozen
class Workload:
    workers: int
    max_in_flight: int
    buffer: int
    timeout: float
    drain: int
    shutdown_at: int
    specs: tuple[Spec, ...]


specs = st.builds(
    Spec,
    arrival=st.integers(0, 20),
    duration=st.integers(0, 8),
    raises=st.booleans(),
    mode=st.sampled_from(["emit", "nowait", "call"]),
    cancel_after=st.none() | st.integers(0, 6),
)
workloads = st.builds(
    Workload,
    workers=st.integers(1, 4),
    max_in_flight=st.integers(1, 10),
    buffer=st.integers(0, 5),
    # Half-second offsets keep timeouts from tying with whole-second agent sleeps.
    timeout=st.integers(1, 6).map(lambda t: t + 0.5),
    drain=st.integers(0, 12),
    shutdown_at=st.integers(0, 30),
    specs=st.lists(specs, min_size=1, max_size=25).map(tuple),
)


@attrs.define
class Trace:
    """What the test observed; the assertions are all about this."""

    accepted: list[str] = attrs.Factory(list)
    refused: list[int] = attrs.Factory(list)
    started: dict[str, float] = attrs.Factory(dict)
    start_order: list[str] = attrs.Factory(list)
    ended: Counter[str] = attrs.Factory(Counter)
    end_time: dict[str, float] = attrs.Factory(dict)
    results: dict[str, af.AgentResult] = attrs.Factory(dict)
    handles: list[af.EventHandle] = attrs.Factory(list)
    caller_cancelled: set[str] = attrs.Factory(set)
    running_agents: int = 0
    peak_agents: int = 0
    peak_in_flight: int = 0
    closed_at: float | None = None
    exited_at: float | None = None
    tasks_after_exit: int = -1


def _live_runner_tasks(runner: af.Runner) -> int:
    nursery = runner._nursery
    assert nursery is not None
    return len(nursery.child_tasks)


async def _replay(w: Workload) -> tuple[Trace, af.Runner]:
    trace = Trace()
    index = {}

    @af.agent
    async def work(ctx: af.Context, event: af.Event) -> Any:
        spec: Spec = event.data["spec"]
        trace.running_agents += 1
        trace.peak_agents = max(trace.peak_agents, trace.running_agents)
        try:
            await trio.sleep(spec.duration)
            if spec.raises:
                raise RuntimeError(f"agent failed on {event.id}")
            return spec.duration
        finally:
            trace.running_agents -= 1

    def on_accept(event: af.Event) -> None:
        trace.accepted.append(event.id)
        stats = runner.statistics()
        trace.peak_in_flight = max(trace.peak_in_flight, stats.in_flight)

    def before(event: af.Event) -> None:
        trace.started[event.id] = trio.current_time()
        trace.start_order.append(event.id)

    def after(event: af.Event, result: af.AgentResult) -> None:
        trace.ended[event.id] += 1
        trace.end_time[event.id] = trio.current_time()
        trace.results[event.id] = result

    config = af.Config.from_mapping(
        {
            "runner": {
                "worker_pool_size": w.workers,
                "max_concurrent_events": w.max_in_flight,
                "event_buffer_size": w.buffer,
                "event_timeout": w.timeout,
                "drain_timeout": w.drain,
            }
        }
    )
    hooks = af.Hooks(on_accept=[on_accept], before_event=[before], after_event=[after])
    runner = af.Runner(config, agents={"work": work}, hooks=hooks)

    async def produce(i: int, spec: Spec) -> None:
        await trio.sleep(spec.arrival)
        event = af.Event("work", {"spec": spec})
        index[event.id] = i
        try:
            if spec.mode == "nowait":
                trace.handles.append(runner.emit_nowait(event))
            elif spec.mode == "emit":
                trace.handles.append(await runner.emit(event))
            else:
                patience = spec.cancel_after if spec.cancel_after is not None else math.inf
                with trio.move_on_after(patience) as cs:
                    result = await runner.call(event)
                    assert result.event_id == event.id
                if cs.cancelled_caught:
                    trace.caller_cancelled.add(event.id)
        except (af.QueueFull, af.RunnerClosed):
            trace.refused.append(i)

    start = trio.current_time()
    async with trio.open_nursery() as producers:
        async with runner:
            for i, spec in enumerate(w.specs):
                producers.start_soon(produce, i, spec)
            await trio.sleep(w.shutdown_at)
            trace.closed_at = trio.current_time() - start
        trace.exited_at = trio.current_time() - start
        trace.tasks_after_exit = _live_runner_tasks(runner)
        handles_done_at_exit = all(h.done for h in trace.handles)
        assert handles_done_at_exit, "a handle was still pending after the runner exited"
    return trace, runner


def _run(w: Workload) -> tuple[Trace, af.Runner]:
    return trio.run(_replay, w, clock=trio.testing.MockClock(autojump_threshold=0))


_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(workloads)
def test_conservation(w: Workload) -> None:
    """Every accepted event ends exactly once; every attempt is accepted or refused."""
    trace, runner = _run(w)
    accepted = set(trace.accepted)
    assert len(accepted) == len(trace.accepted), "an event was accepted twice"
    assert set(trace.ended) == accepted, "accepted events and ended events differ"
    assert all(n == 1 for n in trace.ended.values()), "an event ended more than once"
    # Nothing vanishes: each attempt was accepted, or refused to its caller, or its caller
    # was cancelled while still waiting for room.
    stats = runner.statistics()
    assert stats.accepted == len(accepted)
    assert stats.completed == len(accepted)
    assert stats.in_flight == 0
    by_outcome = Counter(r.outcome for r in trace.results.values())
    assert by_outcome[af.Outcome.SUCCEEDED] == stats.succeeded
    assert by_outcome[af.Outcome.FAILED] == stats.failed
    assert by_outcome[af.Outcome.TIMED_OUT] == stats.timed_out
    assert by_outcome[af.Outcome.CANCELLED] == stats.cancelled
    assert len(trace.refused) == stats.refused
    assert len(accepted) + len(trace.refused) <= len(w.specs)
    # And each outcome is the one the workload calls for.
    drained_out = (
        trace.exited_at is not None
        and trace.closed_at is not None
        and trace.exited_at - trace.closed_at >= w.drain
    )
    by_id = {h.event.id: h.event.data["spec"] for h in trace.handles}
    for event_id, result in trace.results.items():
        assert result.event_id == event_id
        spec = by_id.get(event_id)
        if result.outcome is af.Outcome.CANCELLED:
            assert drained_out or event_id in trace.caller_cancelled, result
            continue
        if spec is None:  # a call() event: its spec is not in handles
            continue
        if spec.duration >= w.timeout:
            assert result.outcome is af.Outcome.TIMED_OUT, result
        elif spec.raises:
            assert result.outcome is af.Outcome.FAILED, result
            assert result.error is not None and "RuntimeError" in result.error.traceback
        else:
            assert result.outcome is af.Outcome.SUCCEEDED, result
            assert result.output == spec.duration


@_settings
@given(workloads)
def test_bounds(w: Workload) -> None:
    """Running agents never exceed worker_pool_size; in flight never max_concurrent_events."""
    trace, runner = _run(w)
    assert trace.peak_agents <= w.workers
    assert trace.peak_in_flight <= w.max_in_flight
    assert runner.statistics().peak_in_flight <= w.max_in_flight


@_settings
@given(workloads)
def test_timeouts(w: Workload) -> None:
    """An event ends no later than its timeout after it started running."""
    trace, _ = _run(w)
    for event_id, started in trace.started.items():
        assert trace.end_time[event_id] - started <= w.timeout


@_settings
@given(workloads.map(lambda w: attrs.evolve(w, workers=1)))
def test_order_with_one_worker(w: Workload) -> None:
    """With one worker, events start in the order they were accepted."""
    trace, _ = _run(w)
    started = set(trace.start_order)
    assert trace.start_order == [e for e in trace.accepted if e in started]


@_settings
@given(workloads)
def test_shutdown(w: Workload) -> None:
    """After the async with: no runner task alive, every handle done, emit refused."""
    trace, runner = _run(w)
    assert trace.tasks_after_exit == 0
    assert all(h.done for h in trace.handles)
    assert runner.statistics().closed
    # The drain is bounded: leaving the block takes at most drain_timeout.
    assert trace.closed_at is not None and trace.exited_at is not None
    assert trace.exited_at - trace.closed_at <= w.drain
    # And after it, emit is refused at once.

    async def late_emit() -> None:
        try:
            await runner.emit(af.Event("work"))
        except af.RunnerClosed:
            return
        raise AssertionError("emit after close was accepted")

    trio.run(late_emit)
