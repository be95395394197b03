"""The testing kit itself: strategies, recorder, invariant checker, fixtures, plugin loading.

The checker is proven against runners broken on purpose (an event dropped, the worker
limit exceeded, a timeout applied late, events started out of order), against doctored
traces, and against a deliberately broken scheduler that hypothesis must find. The plugin
is run in inner pytest sessions (pytester): loaded by entry point, by ``-p``, by
``pytest_plugins``, and any mix of these, and the example in
``examples/test_my_scheduler.py`` must pass as written and fail, naming the invariant, once
a bug is seeded into its scheduler.

Virtual time (``MockClock(autojump_threshold=0)``) everywhere except the tests of
``mock_llm`` and ``mcp_server``, which do real I/O under the real clock and a
``fail_after``.
"""

from __future__ import annotations

import configparser
import heapq
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, find, given, settings
from hypothesis import Phase as Phase_
from hypothesis import strategies as st

import agentflow_trio as af
from agentflow_trio.config import RetryConfig
from agentflow_trio.errors import LLMError, RateLimitError
from agentflow_trio.llm import ChatResponse, open_transport
from agentflow_trio.mockllm import MockLLM, open_mock_llm
from agentflow_trio.testing import (
    MCP_TEST_TOOLS,
    Bounds,
    EventSpec,
    FakeLLM,
    Invariant,
    InvariantViolation,
    MCPTestServer,
    Phase,
    PriorityOrder,
    RunnerFactory,
    Step,
    ToolBehaviour,
    Trace,
    TraceRecorder,
    Workload,
    check_trace,
    delayed,
    find_violations,
    mock_llm_config,
    replay,
    scripted_tool,
    workload_agent,
)
from agentflow_trio.testing.strategies import (
    event_specs,
    events,
    fake_replies,
    llm_behaviours,
    tool_behaviours,
    workloads,
)
from agentflow_trio.tools import ToolResult

pytest_plugins = ["pytester", "agentflow_trio.testing.plugin"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "test_my_scheduler.py"
PLUGIN = "agentflow_trio.testing.plugin"
REAL_IO_TIMEOUT = 20
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Builder = Callable[..., af.Runner]


def ids_by_index(trace: Trace) -> dict[int, str]:
    """Event id of each workload event, by its index in the workload."""
    return {e.data["index"]: eid for eid, e in trace.events.items() if "index" in e.data}


def violation(trace: Trace, bounds: Bounds | None = None) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as info:
        check_trace(trace, bounds)
    return info.value


# ------------------------------------------------------------------- strategies


@FAST
@given(workloads())
def test_every_generated_workload_is_valid_and_replays_cleanly(w: Workload) -> None:
    config = w.config()  # validated like agentflow.toml
    assert config.runner.worker_pool_size == w.workers and 1 <= w.workers <= 4
    assert 1 <= len(w.events) <= 25
    assert w.event_timeout % 1 == 0.5  # never ties with whole-second work
    for spec in w.events:
        assert spec.mode in ("emit", "emit_nowait", "call")
        assert 0 <= spec.arrival <= 20 and 0 <= spec.duration <= 8
        assert spec.timeout is None or spec.timeout % 1 == 0.5
    trace = replay(w)
    check_trace(trace)  # the stock runner keeps every promise
    attempts = trace.ids(Phase.ATTEMPTED)
    assert len(attempts) == len(w.events) + 2  # and two emits after the exit
    assert trace.complete and trace.exited_at is not None


@FAST
@given(workloads(specs=event_specs(priorities=5, types=("a", "b"), modes=("call",))))
def test_workload_options_are_honoured(w: Workload) -> None:
    assert all(s.mode == "call" and s.type in ("a", "b") for s in w.events)
    assert all(0 <= s.priority <= 5 for s in w.events)
    trace = replay(w, agents={"a": workload_agent, "b": workload_agent})
    check_trace(trace)
    for record in trace.records().values():
        if record.event is not None and record.event.type in ("a", "b"):
            assert record.event.data["priority"] == w.events[record.event.data["index"]].priority


@FAST
@given(events(types=("x", "y")))
def test_generated_events_are_json_ready(event: af.Event) -> None:
    assert event.type in ("x", "y")
    json.dumps(dict(event.data))
    json.dumps(dict(event.metadata))
    assert event.id


@settings(max_examples=40, deadline=None)
@given(fake_replies())
def test_generated_fake_replies_answer_or_raise_llm_errors(reply: Any) -> None:
    async def main() -> tuple[Any, float]:
        fake = FakeLLM(reply)
        start = trio.current_time()
        try:
            outcome: Any = await fake.client.complete("hello")
        except LLMError as exc:
            outcome = exc
        assert len(fake.requests) == 1 and fake.pending == 0
        return outcome, trio.current_time() - start

    outcome, took = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert isinstance(outcome, ChatResponse | LLMError)
    if isinstance(outcome, RateLimitError):
        assert outcome.status == 429 and outcome.retry_after is not None
    if callable(reply):  # a delayed reply takes whole virtual seconds
        assert took >= 1 and took == int(took)
    else:
        assert took == 0


@settings(max_examples=40, deadline=None)
@given(tool_behaviours())
def test_generated_tool_behaviours_happen_as_described(behaviour: ToolBehaviour) -> None:
    async def main() -> tuple[ToolResult, float]:
        registry = af.ToolRegistry([behaviour.as_tool("probe")])
        start = trio.current_time()
        result = await registry.call(None, "probe", {"text": "hi"})
        return result, trio.current_time() - start

    result, took = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert took == behaviour.latency
    if behaviour.raises:
        assert result.outcome == "error" and "ToolBehaviourError" in (result.traceback or "")
    elif behaviour.correct:
        assert result.output == {"echo": "hi"}
    else:
        assert result.ok and result.output == dict(behaviour.output or {})
        assert "echo" not in result.output


def test_scripted_tool_follows_its_script_then_repeats_the_last(autojump_clock: Any) -> None:
    async def main() -> list[str]:
        probe = scripted_tool(
            [ToolBehaviour(latency=1), ToolBehaviour(raises=True), ToolBehaviour(output={"x": 1})]
        )
        registry = af.ToolRegistry([probe])
        results = [await registry.call(None, "probe", {"text": "t"}) for _ in range(4)]
        return [r.outcome + str(r.output) for r in results]

    assert trio.run(main, clock=autojump_clock) == [
        "ok{'echo': 't'}",
        "errorNone",
        "ok{'x': 1}",
        "ok{'x': 1}",
    ]
    with pytest.raises(ValueError):
        scripted_tool([])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(llm_behaviours(max_latency=0.005, max_replies=4))
def test_generated_llm_behaviours_drive_the_real_mock(behaviour: Any) -> None:
    """Every request gets a response or an `LLMError`; the scripted replies are consumed."""

    async def main() -> None:
        with trio.fail_after(REAL_IO_TIMEOUT):
            async with open_mock_llm() as mock:
                behaviour.apply(mock)
                config = mock_llm_config(mock, retry=RetryConfig(enabled=False))
                async with open_transport(config) as provider:
                    for _ in range(len(behaviour.replies) + 1):
                        try:
                            await provider.complete(_request())
                        except LLMError:
                            assert behaviour.may_fail
                stats = mock.stats()
                assert stats.requests == len(behaviour.replies) + 1
                assert stats.scripted <= len(behaviour.replies)

    trio.run(main)


def _request() -> Any:
    from agentflow_trio.llm import ChatRequest, user

    return ChatRequest((user("hello"),))


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(w=workloads(max_events=6))
def test_replay_builds_runners_with_the_runner_factory(
    runner_factory: RunnerFactory, w: Workload
) -> None:
    before = len(runner_factory.runners)
    trace = replay(w, runner_factory)
    check_trace(trace)
    (runner,) = runner_factory.runners[before:]
    assert runner.config == w.config()  # and the factory checks it again at teardown
    assert runner_factory.trace(runner).ids(Phase.ENDED) == trace.ids(Phase.ENDED)


# ------------------------------------------------------------------- recorder


async def test_recorder_is_hooks_and_keeps_user_hooks(autojump_clock: Any) -> None:
    seen: list[str] = []
    recorder = TraceRecorder()
    hooks = recorder.hooks()
    hooks.after_event.append(lambda event, result: seen.append(event.id))
    async with af.Runner(agents={"work": workload_agent}, hooks=hooks) as runner:
        result = await runner.call(af.Event("work", {"duration": 2}))
    trace = recorder.trace()
    (eid,) = trace.ids(Phase.ENDED)
    assert seen == [eid] == [result.event_id]
    assert [s.phase for s in trace.steps] == [Phase.ACCEPTED, Phase.STARTED, Phase.ENDED]
    assert [s.at for s in trace.steps] == [0, 0, 2]
    with pytest.raises(RuntimeError, match="already installed"):
        recorder.install(hooks)


async def test_attach_reads_bounds_timeouts_and_runner_gauges(autojump_clock: Any) -> None:
    slow = af.agent(name="slow", timeout=1.5)(workload_agent.fn)
    config = af.Config.from_mapping({"runner": {"worker_pool_size": 1, "event_timeout": "9s"}})
    runner = af.Runner(config, agents={"work": workload_agent, "slow": slow})
    recorder = TraceRecorder().attach(runner)
    async with runner:
        fast = await runner.emit(af.Event("work", {"duration": 1}))
        late = await runner.emit(af.Event("slow", {"duration": 5}))
        await late.result()
    trace = recorder.trace()
    assert trace.bounds == Bounds.from_config(config)
    assert trace.bounds.fifo and trace.bounds.max_running == 1
    assert trace.timeouts == {late.event.id: 1.5}
    records = trace.records()
    assert records[late.event.id].timeout == 1.5 and records[fast.event.id].timeout == 9
    assert trace.peak_gauge("running_agents") == 1 and trace.peak("in_flight") == 2
    assert trace.statistics is not None and trace.statistics.completed == 2
    check_trace(trace)


async def test_track_agents_counts_workflow_children(autojump_clock: Any) -> None:
    child = af.agent(name="child")(workload_agent.fn)
    both = af.parallel(child, child, name="both")
    runner = af.Runner(agents={"work": both})
    recorder = TraceRecorder(track_agents=True).attach(runner)
    async with runner:
        await runner.call(af.Event("work", {"duration": 1}))
    trace = recorder.trace()
    children = [s for s in trace.samples if s.agent == "child"]
    assert [s.agent_running for s in children] == [1, 2]
    assert trace.peak("running_agents") == 3  # the parent counts too
    check_trace(trace, attrs.evolve(trace.bounds, agent_limits={"child": 2}))
    bad = violation(trace, attrs.evolve(trace.bounds, agent_limits={"child": 1}))
    assert bad.invariant is Invariant.BOUNDS
    assert bad.event_id == trace.ids(Phase.STARTED)[0]
    assert "2 'child' agents running" in str(bad)


async def test_cancelled_agents_stay_counted_until_their_event_ends(autojump_clock: Any) -> None:
    config = af.Config.from_mapping({"runner": {"event_timeout": "1.5s"}})
    runner = af.Runner(config, agents={"work": workload_agent})
    recorder = TraceRecorder(track_agents=True).attach(runner)
    async with runner:
        timed_out = await runner.call(af.Event("work", {"duration": 5}))
        after = await runner.call(af.Event("work", {"duration": 0}))
    assert timed_out.outcome is af.Outcome.TIMED_OUT and after.succeeded
    samples = [s for s in recorder.trace().samples if s.agent == "work"]
    assert [s.agent_running for s in samples] == [1, 1]


# ------------------------------------------------------------------- broken runners


def dropping_first(*, config: af.Config, agents: Any) -> af.Runner:
    """A runner whose worker forgets the first event it takes."""
    runner = af.Runner(config, agents=agents)
    real = runner._run_event
    taken: list[af.EventHandle] = []

    async def run_event(handle: af.EventHandle) -> None:
        taken.append(handle)
        if len(taken) == 1:
            runner._workers.release_on_behalf_of(handle)  # free the slot, drop the event
            return
        await real(handle)

    runner._run_event = run_event  # type: ignore[method-assign]
    return runner


def over_limit(*, config: af.Config, agents: Any) -> af.Runner:
    """A runner that starts one worker more than its config allows."""
    runner = af.Runner(config, agents=agents)
    runner._workers = trio.CapacityLimiter(config.runner.worker_pool_size + 1)
    return runner


def late_timeouts(*, config: af.Config, agents: Any) -> af.Runner:
    """A runner that applies its event timeout two seconds late."""
    runner = af.Runner(config, agents=agents)
    runner._event_timeout = config.runner.event_timeout + 2
    return runner


class _NewestFirst:
    """The runner's queue, read newest first (the bug: a stack, not a queue)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.stack: list[Any] = []

    def _fill(self) -> None:
        while True:
            try:
                self.stack.append(self.inner.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def receive(self) -> Any:
        self._fill()
        if self.stack:
            await trio.lowlevel.checkpoint()
            return self.stack.pop()
        return await self.inner.receive()

    def receive_nowait(self) -> Any:
        self._fill()
        if self.stack:
            return self.stack.pop()
        return self.inner.receive_nowait()

    def close(self) -> None:
        self.inner.close()


def newest_first(*, config: af.Config, agents: Any) -> af.Runner:
    runner = af.Runner(config, agents=agents)
    runner._receive = _NewestFirst(runner._receive)  # type: ignore[assignment]
    return runner


def burst(n: int, duration: float = 2.0, **settings: Any) -> Workload:
    """``n`` events emitted at t=0, each working ``duration`` seconds."""
    return Workload([EventSpec(0, duration) for _ in range(n)], **settings)


def test_a_dropped_event_is_reported_with_its_id() -> None:
    trace = replay(burst(3, workers=1, drain_timeout=5, shutdown_at=1), dropping_first)
    dropped = trace.ids(Phase.ACCEPTED)[0]
    error = violation(trace)
    assert error.invariant is Invariant.CONSERVATION
    assert (error.violation.rule, error.event_id) == ("dropped", dropped)
    assert f"event {dropped}" in str(error) and "never ended" in str(error)
    rules = {(v.invariant, v.rule, v.event_id) for v in error.violations}
    assert (Invariant.SHUTDOWN, "pending handle", dropped) in rules
    assert len(trace.ids(Phase.ENDED)) == 2  # the other two did end
    assert trace.exited_at == 6  # the drain waited in vain for the dropped one


def test_an_exceeded_worker_limit_is_reported_with_the_event_that_exceeded_it() -> None:
    trace = replay(burst(4, workers=2, shutdown_at=10), over_limit)
    error = violation(trace)
    third = trace.ids(Phase.STARTED)[2]
    assert error.invariant is Invariant.BOUNDS
    assert (error.violation.rule, error.event_id) == ("started", third)
    assert "3 events running" in str(error) and "limit is 2" in str(error)
    gauges = [v for v in error.violations if "runner gauge" in v.message]
    assert gauges and gauges[0].event_id == third


def test_a_late_timeout_is_reported_with_the_event_that_overran() -> None:
    w = Workload([EventSpec(0, 1), EventSpec(0, 10)], workers=2, event_timeout=2.5, shutdown_at=20)
    trace = replay(w, late_timeouts)
    error = violation(trace)
    assert error.invariant is Invariant.TIMEOUTS
    assert error.event_id == ids_by_index(trace)[1]
    assert "ran 4.5s after it started, past its timeout of 2.5s" in str(error)
    assert len(error.violations) == 1  # the quick one is fine
    check_trace(replay(w))  # and the real runner times out on time


def test_out_of_order_starts_are_reported_with_the_event_that_jumped_the_queue() -> None:
    w = Workload([EventSpec(0, 2), EventSpec(1, 1), EventSpec(1, 1), EventSpec(1, 1)], workers=1)
    trace = replay(w, newest_first)
    accepted = trace.ids(Phase.ACCEPTED)
    error = violation(trace)
    assert error.invariant is Invariant.ORDER
    assert error.event_id == accepted[3]  # the newest of the three waiting
    assert f"started before {accepted[1]}, which was accepted earlier" in str(error)
    check_trace(replay(w))


def test_emit_after_close_being_accepted_is_a_shutdown_violation() -> None:
    def accepts_when_closed(*, config: af.Config, agents: Any) -> af.Runner:
        runner = af.Runner(config, agents=agents)
        real = runner.emit_nowait

        def emit_nowait(event: af.Event, *, timeout: float | None = None) -> af.EventHandle:
            if runner.statistics().closed:  # the bug: a closed runner still takes events
                runner.hooks.run_after(runner.hooks.on_accept, "on_accept", event)
                return af.EventHandle(event, timeout)
            return real(event, timeout=timeout)

        runner.emit_nowait = emit_nowait  # type: ignore[method-assign]
        return runner

    trace = replay(burst(1, shutdown_at=5), accepts_when_closed)
    (late,) = [e.id for e in trace.events.values() if e.data.get("mode") == "emit_nowait"]
    found = {(v.invariant, v.rule, v.event_id) for v in find_violations(trace)}
    assert (Invariant.SHUTDOWN, "accepted after close", late) in found
    assert (Invariant.CONSERVATION, "dropped", late) in found


# ------------------------------------------------------------------- doctored traces


@pytest.fixture
def good() -> Trace:
    """A clean trace: one worker, three events, every kind of step."""
    w = Workload(
        [EventSpec(0, 1), EventSpec(0, 1, fails=True), EventSpec(0, 3)],
        workers=1,
        event_timeout=2.5,
        drain_timeout=4,
        shutdown_at=1,
    )
    trace = replay(w)
    check_trace(trace)
    return trace


def steps(trace: Trace, keep: Callable[[Step], bool]) -> Trace:
    return attrs.evolve(trace, steps=tuple(s for s in trace.steps if keep(s)))


def test_doctored_conservation(good: Trace) -> None:
    first, second, third = (ids_by_index(good)[i] for i in range(3))
    no_end = steps(good, lambda s: not (s.phase is Phase.ENDED and s.event_id == second))
    assert (violation(no_end).violation.rule, violation(no_end).event_id) == ("dropped", second)
    ended = next(s for s in good.steps if s.phase is Phase.ENDED and s.event_id == first)
    twice = attrs.evolve(good, steps=(*good.steps, ended))
    assert (violation(twice).violation.rule, violation(twice).event_id) == ("ended twice", first)
    wrong = attrs.evolve(ended, result=attrs.evolve(ended.result, event_id=third))
    swapped = attrs.evolve(good, steps=tuple(wrong if s is ended else s for s in good.steps))
    error = violation(swapped)
    assert (error.violation.rule, error.event_id) == ("result id", first)
    unanswered = steps(good, lambda s: not (s.phase is Phase.ACCEPTED and s.event_id == third))
    rules = {(v.rule, v.event_id) for v in find_violations(unanswered)}
    assert {("unanswered", third), ("ended unaccepted", third)} <= rules
    assert ("started unaccepted", third) in rules


def test_doctored_bounds_name_the_sample_event(good: Trace) -> None:
    sample = good.samples[1]
    crowded = attrs.evolve(
        good,
        samples=tuple(attrs.evolve(s, in_flight=99) if s is sample else s for s in good.samples),
    )
    error = violation(crowded)
    assert error.invariant is Invariant.BOUNDS and error.event_id == sample.event_id
    assert "99 events in flight" in str(error)


def test_doctored_timeout_and_order(good: Trace) -> None:
    third = ids_by_index(good)[2]
    late = attrs.evolve(good, timeouts={third: 0.5})
    error = violation(late)
    assert (error.invariant, error.event_id) == (Invariant.TIMEOUTS, third)
    starts = [s for s in good.steps if s.phase is Phase.STARTED]
    order = {starts[0]: starts[1], starts[1]: starts[0]}
    swapped = attrs.evolve(good, steps=tuple(order.get(s, s) for s in good.steps))
    errors = find_violations(swapped, invariants=[Invariant.ORDER])
    assert (errors[0].rule, errors[0].event_id) == ("fifo", starts[1].event_id)


def test_doctored_shutdown(good: Trace) -> None:
    assert good.closed_at == 1 and good.exited_at == 4.5  # drained until the 3rd timed out
    slow = attrs.evolve(good, exited_at=good.closed_at + 4.5)
    assert violation(slow).violation.rule == "slow exit"
    pending = attrs.evolve(good, pending_at_exit=("e-1",))
    assert (violation(pending).violation.rule, violation(pending).event_id) == (
        "pending handle",
        "e-1",
    )
    leaked = attrs.evolve(good, leaked_tasks=("forgotten",))
    assert "forgotten" in str(violation(leaked))
    never = attrs.evolve(good, exited_at=None, complete=False)
    assert violation(never).violation.rule == "no exit"


def test_bounds_given_to_the_checker_replace_the_trace_s(good: Trace) -> None:
    third = ids_by_index(good)[2]  # ran 2.5 s: its timeout
    error = violation(good, attrs.evolve(good.bounds, event_timeout=2))
    assert (error.invariant, error.event_id) == (Invariant.TIMEOUTS, third)
    check_trace(good, attrs.evolve(good.bounds, max_running=None, fifo=False, drain_timeout=9))


def test_only_the_chosen_invariants_are_checked(good: Trace) -> None:
    broken = attrs.evolve(good, leaked_tasks=("x",), timeouts={ids_by_index(good)[2]: 0.1})
    check_trace(broken, invariants=[Invariant.CONSERVATION, Invariant.BOUNDS, "order"])
    error = violation(broken)
    assert [v.invariant for v in error.violations] == [Invariant.TIMEOUTS, Invariant.SHUTDOWN]
    assert "and 1 more" in str(error)


# ------------------------------------------------------------------- a broken scheduler


class SkipTheQueueRouter:
    """A routing agent with a limit, and a bug: urgent events (priority 3) skip the limit."""

    name = "router"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.waiting: list[tuple[int, int, trio.Event]] = []
        self.arrivals = 0

    async def __call__(self, ctx: af.Context, event: af.Event) -> af.AgentResult:
        priority = int(event.data["priority"])
        if self.running >= self.limit and priority < 3:
            wakeup = trio.Event()
            self.arrivals += 1
            heapq.heappush(self.waiting, (-priority, self.arrivals, wakeup))
            try:
                await wakeup.wait()
            finally:
                self.waiting = [w for w in self.waiting if w[2] is not wakeup]
                heapq.heapify(self.waiting)
        self.running += 1
        try:
            return await ctx.run(workload_agent, event)
        finally:
            self.running -= 1
            if self.waiting and self.running < self.limit:
                self.waiting[0][2].set()


def test_hypothesis_finds_the_broken_scheduler_and_the_checker_names_the_event() -> None:
    limit = 2
    traffic = workloads(
        specs=event_specs(priorities=3, max_arrival=4, failures=False, cancellations=False),
        workers=st.integers(3, 8),
        max_in_flight=st.integers(3, 16),
    )

    def promises(trace: Trace) -> Bounds:
        return attrs.evolve(trace.bounds, agent_limits={"work": limit})

    traces: dict[Workload, Trace] = {}

    def broken(w: Workload) -> bool:
        trace = traces[w] = replay(w, agents={"work": SkipTheQueueRouter(limit)}, track_agents=True)
        return bool(find_violations(trace, promises(trace)))

    budget = settings(max_examples=100, deadline=None, database=None, phases=[Phase_.generate])
    trace = traces[find(traffic, broken, settings=budget)]
    error = violation(trace, promises(trace))
    assert error.invariant is Invariant.BOUNDS and error.violation.rule == "agent started"
    assert "3 'work' agents running" in str(error)
    (sample,) = [s for s in trace.samples if s.event_id == error.event_id and s.agent == "work"]
    assert sample.agent_running == 3 and sample.at == error.violation.at


def test_priority_order_rule_on_a_correct_and_an_inverted_router() -> None:
    class Router(SkipTheQueueRouter):
        def __init__(self, limit: int, sign: int) -> None:
            super().__init__(limit)
            self.sign = sign

        async def __call__(self, ctx: af.Context, event: af.Event) -> af.AgentResult:
            priority = int(event.data["priority"])
            if self.running >= self.limit or self.waiting:
                wakeup = trio.Event()
                self.arrivals += 1
                heapq.heappush(self.waiting, (-priority * self.sign, self.arrivals, wakeup))
                await wakeup.wait()
            else:
                self.running += 1
            try:
                return await ctx.run(workload_agent, event)
            finally:
                if self.waiting:
                    heapq.heappop(self.waiting)[2].set()  # hand the slot on
                else:
                    self.running -= 1

    # One slot; a long event holds it while a low then a high priority event wait.
    w = Workload(
        [EventSpec(0, 3), EventSpec(1, 1, priority=0), EventSpec(2, 1, priority=5)],
        workers=4,
        shutdown_at=10,
    )
    order = PriorityOrder(lambda e: -e.data["priority"], agent="work")
    good = replay(w, agents={"work": Router(1, 1)}, track_agents=True)
    check_trace(good, attrs.evolve(good.bounds, priority=order, agent_limits={"work": 1}))
    bad = replay(w, agents={"work": Router(1, -1)}, track_agents=True)
    error = violation(bad, attrs.evolve(bad.bounds, priority=order))
    low, high = ids_by_index(bad)[1], ids_by_index(bad)[2]
    assert (error.invariant, error.violation.rule, error.event_id) == (
        Invariant.ORDER,
        "priority",
        low,
    )
    assert f"while {high} (key -5) had waited since t=2" in str(error)


# ------------------------------------------------------------------- fixtures, directly


async def test_runner_factory_gives_virtual_time_and_records(runner_factory: RunnerFactory) -> None:
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    runner = runner_factory({"work": workload_agent}, worker_pool_size=1, event_timeout="3.5s")
    assert runner.config.runner.worker_pool_size == 1
    async with runner:
        await runner.call(af.Event("work", {"duration": 100}))
    assert trio.current_time() == 3.5
    trace = runner_factory.check(runner)
    assert trace.complete and trace.bounds.fifo
    assert runner_factory.runners == [runner]
    with pytest.raises(LookupError):
        runner_factory.recorder(af.Runner())


async def test_fake_llm_scripts_replies_and_records_requests(
    runner_factory: RunnerFactory, fake_llm: FakeLLM
) -> None:
    fake_llm.script("first", delayed(2, "second"), RateLimitError("slow down", status=429))

    @af.agent
    async def ask(ctx: af.Context, event: af.Event) -> str:
        return str((await ctx.llm.complete(event.data["q"])).text)

    async with runner_factory({"ask": ask}, llm=fake_llm.client, worker_pool_size=1) as runner:
        results = [await runner.call(af.Event("ask", {"q": q})) for q in ("a", "b", "c", "d")]
    assert [r.output for r in results[:2]] == ["first", "second"]
    assert results[2].error is not None and results[2].error.type == "RateLimitError"
    assert results[3].error is not None and "no scripted reply left" in results[3].error.message
    assert [r.messages[-1].content for r in fake_llm.requests] == ["a", "b", "c", "d"]
    assert trio.current_time() == 2 and fake_llm.pending == 0
    fallback = FakeLLM(default="always")
    assert (await fallback.client.complete("x")).text == "always"


async def test_mock_llm_fixture_is_a_real_server(mock_llm: MockLLM) -> None:
    with trio.fail_after(REAL_IO_TIMEOUT):
        assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
        mock_llm.config = attrs.evolve(mock_llm.config, reply_text="configured")
        config = mock_llm_config(mock_llm, "ollama", retry=RetryConfig(enabled=False))
        async with open_transport(config) as provider:
            assert (await provider.complete(_request())).text == "configured"
        assert mock_llm.stats().requests == 1


async def test_mcp_server_fixture_serves_real_tools(mcp_server: MCPTestServer) -> None:
    with trio.fail_after(REAL_IO_TIMEOUT):
        async with mcp_server.manager() as mcp:
            assert await mcp.call_tool(mcp_server.tool_name("add"), {"a": 2, "b": 3}) == {
                "result": 5
            }
            names = {tool.name for tool in mcp.tools()}
    assert names == {mcp_server.tool_name(t) for t in MCP_TEST_TOOLS}
    assert mcp_server.config().command == sys.executable


# ------------------------------------------------------------------- the plugin, in pytester

INNER = """
import pytest, trio, trio.testing
import agentflow_trio as af
from agentflow_trio.testing import workload_agent

async def test_virtual_time_without_a_trio_marker(runner_factory):
    assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    async with runner_factory({"work": workload_agent}) as runner:
        await runner.call(af.Event("work", {"duration": 1000}))
    assert trio.current_time() == 30  # the default event_timeout

@pytest.mark.trio
async def test_fake_llm(fake_llm):
    fake_llm.script("hi")
    assert (await fake_llm.client.complete("x")).text == "hi"
"""


def _entry_point(pytester: pytest.Pytester, name: str) -> None:
    """Install a distribution whose ``pytest11`` entry point is ``name`` (as pip would)."""
    site = pytester.mkdir("site")
    dist = site / "agentflow_trio_kit-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: agentflow-trio-kit\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[pytest11]\n{name} = {PLUGIN}\n")
    pytester.syspathinsert(site)


@pytest.mark.parametrize(
    ("entry_point", "dash_p", "conftest"),
    [
        (False, True, False),
        (False, True, True),
        (True, False, False),
        (True, True, False),
        (True, False, True),
        (True, True, True),
    ],
)
def test_the_plugin_registers_once_however_it_is_loaded(
    pytester: pytest.Pytester, entry_point: bool, dash_p: bool, conftest: bool
) -> None:
    if entry_point:
        _entry_point(pytester, PLUGIN)
    if conftest:
        pytester.makeconftest(f"pytest_plugins = [{PLUGIN!r}]")
    pytester.makepyfile(INNER)
    args = ["-p", PLUGIN] if dash_p else []
    result = pytester.runpytest_inprocess(*args, "--strict-markers")
    result.assert_outcomes(passed=2)


def test_an_entry_point_named_otherwise_would_clash_with_dash_p(pytester: pytest.Pytester) -> None:
    """Why the entry point must be named after the module (see the plugin's docstring)."""
    _entry_point(pytester, "agentflow_trio")
    pytester.makepyfile(INNER)
    result = pytester.runpytest_inprocess("-p", PLUGIN)
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*Plugin already registered under a different name*"])


def test_setup_cfg_entry_point_if_present_is_named_after_the_module() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg")
    entries = parser.get("options.entry_points", "pytest11", fallback="")
    for line in filter(None, (line.strip() for line in entries.splitlines())):
        name, _, target = (part.strip() for part in line.partition("="))
        if target == PLUGIN:
            assert name == PLUGIN, "name the pytest11 entry point after its module"


def test_teardown_check_and_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, trio
        import agentflow_trio as af
        from agentflow_trio.mockllm import MockReply
        from agentflow_trio.testing import workload_agent

        def _widen(runner):
            runner._workers = trio.CapacityLimiter(3)  # the config says 1

        async def burst(runner):
            async with runner:
                for _ in range(3):
                    await runner.emit(af.Event("work", {"duration": 1}))

        async def test_broken_runner_is_caught_at_teardown(runner_factory):
            runner = runner_factory({"work": workload_agent}, worker_pool_size=1)
            _widen(runner)
            await burst(runner)

        async def test_opted_out(runner_factory):
            runner = runner_factory({"work": workload_agent}, worker_pool_size=1, check=False)
            _widen(runner)
            await burst(runner)

        async def test_failing_body_is_not_doubled(runner_factory):
            runner = runner_factory({"work": workload_agent}, worker_pool_size=1)
            _widen(runner)
            await burst(runner)
            assert False, "the body failed"

        @pytest.mark.trio
        @pytest.mark.mock_llm(reply_text="marked", replies=[MockReply(text="scripted")])
        async def test_mock_llm_marker(mock_llm):
            assert mock_llm.config.reply_text == "marked"
            assert len(mock_llm._app.script) == 1

        @pytest.mark.trio
        async def test_mock_llm_refuses_autojump(mock_llm, autojump_clock):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", PLUGIN, "--strict-markers")
    result.assert_outcomes(passed=3, failed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_broken_runner_is_caught_at_teardown*",
            "*InvariantViolation: bounds (started) violated for event *"
            "2 events running when it was started, the limit is 1",
        ]
    )
    result.stdout.fnmatch_lines(["*mock_llm serves real HTTP*"])
    assert "teardown of test_failing_body_is_not_doubled" not in result.stdout.str()


def test_app_runner_hosts_the_apps_every_service_for_a_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os
        from contextlib import asynccontextmanager

        import pytest, trio, trio.testing
        import agentflow_trio as af
        from agentflow_trio.app import App
        from agentflow_trio.mockllm import MockReply
        from agentflow_trio.testing import MCPTestServer
        from agentflow_trio.testing.hosting import pointed_at

        MCP_PIDS = []

        @asynccontextmanager
        async def lifespan(app):
            yield {"pool": "opened"}

        @af.agent
        async def answer(ctx, event):
            added, who = await ctx.tools.call_many(
                [("demo__add", {"a": 1, "b": 2}), ("demo__whoami", {})]
            )
            MCP_PIDS.append(who.output["pid"])
            reply = await ctx.llm.complete([af.user(event.data["query"])])
            return {"text": reply.text, "sum": added.output["result"],
                    "pool": App.state_of(ctx)["pool"]}

        APP = App({"answer": answer}, mcp={"demo": MCPTestServer().config()},
                  lifespan=lifespan)

        @pytest.fixture
        def agentflow_app():
            return APP

        @pytest.fixture
        def agentflow_config(mock_llm):
            return pointed_at(af.Config(), mock_llm)

        @pytest.mark.trio
        async def test_answer(app_runner, hosted_app, mock_llm):
            assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
            mock_llm.script(MockReply(text="Paris"))
            with trio.fail_after(30):
                result = await app_runner.call(af.Event("answer", {"query": "capital?"}))
            assert result.unwrap() == {"text": "Paris", "sum": 3, "pool": "opened"}
            assert hosted_app.running.state == {"pool": "opened"}
            assert mock_llm.stats().requests == 1 and hosted_app.mock is None
            os.kill(MCP_PIDS[0], 0)  # alive while the test runs

        def test_closed_after_the_test():
            with pytest.raises(ProcessLookupError):
                os.kill(MCP_PIDS[0], 0)
        """
    )
    pytester.makepyfile(
        test_no_app="""
        import pytest

        @pytest.mark.trio
        async def test_no_app_named(app_runner):
            pass
        """,
        test_autojump="""
        import pytest

        @pytest.fixture
        def agentflow_app():
            async def echo(ctx, event):
                return event.data
            return {"echo": echo}

        @pytest.mark.trio
        async def test_refuses_autojump(app_runner, autojump_clock):
            pass
        """,
    )
    result = pytester.runpytest_inprocess("-p", PLUGIN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1, failed=1)
    result.stdout.fnmatch_lines(["*define one*agentflow_app*"])
    result.stdout.fnmatch_lines(["*hosted_app does real I/O*drop autojump_clock*"])


def test_mcp_server_skips_without_the_extra(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{PLUGIN}._has_mcp", lambda: False)
    pytester.makepyfile("def test_needs_mcp(mcp_server):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", PLUGIN, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*mcp_server needs the mcp extra*pip install*"])


def test_importing_the_kit_needs_neither_pytest_nor_hypothesis() -> None:
    code = (
        "import sys, agentflow_trio.testing as t;"
        "print(sorted({'pytest', 'hypothesis'} & set(sys.modules)));"
        "t.workloads; print('hypothesis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "True"]


# ------------------------------------------------------------------- done means


MUTATIONS = {
    "limit off by one": (
        "self._running < self.limit",
        "self._running <= self.limit",
        "*InvariantViolation: bounds (agent started) violated for event *"
        "3 'work' agents running*the limit is 2*",
    ),
    "priority inverted": (
        "(-priority, next(self._arrivals)",
        "(priority, next(self._arrivals)",
        "*InvariantViolation: order (priority) violated for event *",
    ),
}


def _run_example(pytester: pytest.Pytester, source: str) -> pytest.RunResult:
    pytester.makepyfile(test_my_scheduler=source)
    # Default budget (100 examples); the pinned seed keeps this test deterministic (the
    # example's traffic finds both bugs with nearly every seed), and skipping the shrink
    # and explain phases keeps it fast: finding the bug is what is being shown.
    pytester.makeconftest(
        """
        from hypothesis import Phase, settings
        settings.register_profile("find", phases=[Phase.explicit, Phase.reuse, Phase.generate])
        """
    )
    return pytester.runpytest_inprocess(
        "-p", PLUGIN, "--hypothesis-seed=1", "--hypothesis-profile=find", "-p", "no:cacheprovider"
    )


def test_the_example_passes_as_written(pytester: pytest.Pytester) -> None:
    result = _run_example(pytester, EXAMPLE.read_text())
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("bug", sorted(MUTATIONS))
def test_the_example_finds_a_seeded_bug_and_names_the_invariant(
    pytester: pytest.Pytester, bug: str
) -> None:
    original, broken, expected = MUTATIONS[bug]
    source = EXAMPLE.read_text()
    assert source.count(original) == 1, "the example changed: update the mutation"
    result = _run_example(pytester, source.replace(original, broken))
    result.stdout.fnmatch_lines([expected, "*FAILED*test_router_keeps_its_promises*"])
    result.stdout.fnmatch_lines(["*test_router_keeps_its_promises(", "*workload=Workload(*"])
