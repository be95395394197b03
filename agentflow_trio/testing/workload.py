"""Workloads: generated traffic for a runner, replayed under virtual time into a `Trace`.

A `Workload` is a list of `EventSpec` (when each event arrives, how long its agent works,
whether it fails or runs out of its usage budget, how it is emitted, when its caller
gives up) plus the runner settings.
`replay` runs one inside ``trio.run(..., clock=MockClock(autojump_threshold=0))``: exact,
instant, deterministic. `drive` does the same inside a trio run you already have.

    trace = replay(workload)                          # the stock Runner and `workload_agent`
    trace = replay(workload, agents={"work": my_router(workload_agent)})
    check_trace(trace)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import attrs
import trio

from ..agents import AgentFunction, Context, _AgentLike, agent
from ..config import Config, RunnerConfig, parse_section
from ..errors import RunnerError
from ..events import Event
from ..runner import EventHandle, Runner
from ..usage import UsageLimits
from .recorder import TraceRecorder
from .trace import Bounds, Trace

__all__ = [
    "EmitMode",
    "EventSpec",
    "RunnerBuilder",
    "Workload",
    "WorkloadFailure",
    "drive",
    "replay",
    "workload_agent",
]

EmitMode = Literal["emit", "emit_nowait", "call"]
_AgentMap = Mapping[str, _AgentLike | AgentFunction]
_NO_MODEL_CALLS = UsageLimits(max_requests=0)


class RunnerBuilder(Protocol):
    """Builds the runner a workload is replayed against (the ``runner_factory`` fixture is
    one); it must use ``config`` (the workload's settings) and ``agents``."""

    def __call__(self, *, config: Config, agents: _AgentMap) -> Runner: ...


class WorkloadFailure(RuntimeError):
    """What `workload_agent` raises for an `EventSpec` with ``fails`` set."""


@attrs.frozen
class EventSpec:
    """One event of a workload.

    ``arrival``: seconds after the start when it is emitted; ``duration``: seconds its agent
    works; ``over_budget``: the event is emitted with ``limits=UsageLimits(max_requests=0)``
    and its agent then makes a model call, so it ends ``usage_limit_exceeded``;
    ``fails``: the agent then raises `WorkloadFailure`; ``mode``: how it is emitted
    (``emit`` waits for room, ``emit_nowait`` may be refused, ``call`` waits for the
    result); ``cancel_after``: the caller gives up this many seconds after emitting
    (cancels the call or the handle); ``timeout``: passed as ``emit(..., timeout=)``;
    ``priority`` and ``type`` go into the event (``data["priority"]``, ``event.type``).
    """

    arrival: float = 0.0
    duration: float = 0.0
    fails: bool = False
    mode: EmitMode = "emit"
    cancel_after: float | None = None
    timeout: float | None = None
    priority: int = 0
    type: str = "work"
    over_budget: bool = False

    def event(self, index: int) -> Event:
        """The `Event` for this spec; ``data`` holds ``index``, ``duration``, ``fails``,
        ``over_budget`` and ``priority`` (all a routing agent or `workload_agent` needs)."""
        data = {
            "index": index,
            "duration": self.duration,
            "fails": self.fails,
            "over_budget": self.over_budget,
            "priority": self.priority,
        }
        return Event(self.type, data)

    @property
    def limits(self) -> UsageLimits | None:
        """The usage limits it is emitted with: none, or no model call at all."""
        return _NO_MODEL_CALLS if self.over_budget else None


@attrs.frozen
class Workload:
    """Events plus the runner settings to replay them against.

    ``workers``, ``max_in_flight``, ``buffer``, ``event_timeout`` and ``drain_timeout`` are
    the ``[runner]`` settings; ``shutdown_at`` is when the ``async with`` body ends (so
    shutdown races with arrivals).
    """

    events: tuple[EventSpec, ...] = attrs.field(converter=tuple)
    workers: int = 2
    max_in_flight: int = 10
    buffer: int = 5
    event_timeout: float = 5.5
    drain_timeout: float = 5.0
    shutdown_at: float = 30.0

    def config(self, base: Config | None = None) -> Config:
        """``base`` (default `Config()`) with this workload's ``[runner]`` section."""
        runner = parse_section(
            RunnerConfig,
            {
                "worker_pool_size": self.workers,
                "max_concurrent_events": self.max_in_flight,
                "event_buffer_size": self.buffer,
                "event_timeout": self.event_timeout,
                "drain_timeout": self.drain_timeout,
            },
        )
        return attrs.evolve(base if base is not None else Config(), runner=runner)

    @property
    def horizon(self) -> float:
        """A virtual time by which any correct runner is done with this workload; `drive`
        stops a hung run there (and the trace says what never finished)."""
        last = max((e.arrival for e in self.events), default=0.0)
        longest = max((e.duration for e in self.events), default=0.0)
        timeouts = [e.timeout for e in self.events if e.timeout is not None]
        span = last + longest + self.event_timeout + max(timeouts, default=0.0)
        return 10 * (span + self.shutdown_at + self.drain_timeout) + 60


@agent(name="work")
async def workload_agent(ctx: Context, event: Event) -> dict[str, Any]:
    """The agent a workload's events call for: works ``data["duration"]`` seconds (a
    ``trio.sleep``), then makes a model call (an in-process `FakeProvider`) if
    ``data["over_budget"]``, raises `WorkloadFailure` if ``data["fails"]``, else returns
    ``{"index": ..., "duration": ...}``."""
    duration = float(event.data.get("duration", 0.0))
    await trio.sleep(duration)
    if event.data.get("over_budget"):
        from ..llm.client import LLMClient
        from ..llm.fake import FakeProvider

        await LLMClient(FakeProvider()).complete("over budget")  # refused: no call allowed
    if event.data.get("fails"):
        raise WorkloadFailure(f"event {event.id} failed as scripted")
    return {"index": event.data.get("index"), "duration": duration}


def replay(
    workload: Workload,
    runner: RunnerBuilder | Config | None = None,
    *,
    agents: _AgentMap | None = None,
    bounds: Bounds | None = None,
    track_agents: bool = False,
) -> Trace:
    """Run ``workload`` in a fresh ``trio.run`` under ``MockClock(autojump_threshold=0)``
    and return its `Trace` (see `drive`). For sync tests, such as hypothesis ``@given``."""
    from trio.testing import MockClock  # trio.testing imports pytest when it is installed

    clock = MockClock(autojump_threshold=0)
    return trio.run(_drive_kw, workload, runner, agents, bounds, track_agents, clock=clock)


async def _drive_kw(
    workload: Workload,
    runner: RunnerBuilder | Config | None,
    agents: _AgentMap | None,
    bounds: Bounds | None,
    track_agents: bool,
) -> Trace:
    return await drive(workload, runner, agents=agents, bounds=bounds, track_agents=track_agents)


async def drive(
    workload: Workload,
    runner: RunnerBuilder | Config | None = None,
    *,
    agents: _AgentMap | None = None,
    bounds: Bounds | None = None,
    track_agents: bool = False,
) -> Trace:
    """Replay ``workload`` against a new runner inside the current trio run; return the trace.

    ``runner`` is a base `Config` (the workload's ``[runner]`` replaces its own) or a
    `RunnerBuilder`; ``agents`` default to ``{"work": workload_agent}``. Each event is
    emitted by its own producer task at its arrival time; the ``async with`` body ends at
    ``shutdown_at``; after the exit an ``emit_nowait`` and an ``emit`` check that it refuses.
    The trace notes attempts, refusals, callers giving up, emit timeouts, closing and exit,
    handles still pending and tasks of the run left alive at the exit, and the runner's
    statistics once every producer is done (before the two emits after the exit). A run
    still going at ``workload.horizon`` is cancelled: the trace shows what never finished.
    """
    table: _AgentMap = agents if agents is not None else {"work": workload_agent}
    if runner is None or isinstance(runner, Config):
        target = Runner(workload.config(runner), agents=table)
    else:
        target = runner(config=workload.config(), agents=table)
    recorder = TraceRecorder(bounds, track_agents=track_agents).attach(target)
    handles: list[EventHandle] = []
    before = _all_tasks()
    with trio.move_on_after(workload.horizon):
        async with trio.open_nursery() as producers:
            async with target:
                for i, spec in enumerate(workload.events):
                    producers.start_soon(_produce, target, recorder, handles, i, spec)
                await trio.sleep(workload.shutdown_at)
                recorder.note_closing()
            leaked = _all_tasks() - before - _subtree(producers)
            leaked.discard(trio.lowlevel.current_task())
            recorder.note_exited(
                pending=[h.event.id for h in handles if not h.done],
                leaked=sorted(t.name for t in leaked),
            )
        recorder.note_statistics(target.statistics())  # every producer is done
        await _emit_after_exit(target, recorder)
    return recorder.trace()


async def _produce(
    runner: Runner,
    recorder: TraceRecorder,
    handles: list[EventHandle],
    index: int,
    spec: EventSpec,
) -> None:
    await trio.sleep(spec.arrival)
    event = spec.event(index)
    patience = spec.cancel_after if spec.cancel_after is not None else math.inf
    deadline = trio.current_time() + patience
    recorder.note_attempt(event)
    if spec.timeout is not None:
        recorder.note_timeout(event.id, spec.timeout)
    if spec.mode == "call":
        await _call(runner, recorder, event, spec, deadline)
        return
    handle = await _emit(runner, recorder, event, spec, deadline)
    if handle is None:
        return
    handles.append(handle)
    if spec.cancel_after is not None:
        await trio.sleep_until(deadline)
        if not handle.done:
            recorder.note_cancel(event)
            handle.cancel()


async def _emit(
    runner: Runner, recorder: TraceRecorder, event: Event, spec: EventSpec, deadline: float
) -> EventHandle | None:
    try:
        if spec.mode == "emit_nowait":
            return runner.emit_nowait(event, timeout=spec.timeout, limits=spec.limits)
        with trio.move_on_at(deadline):
            return await runner.emit(event, timeout=spec.timeout, limits=spec.limits)
    except RunnerError as exc:  # QueueFull, RunnerClosed, Overloaded
        recorder.note_refused(event, exc)
        return None
    recorder.note_abandoned(event)  # gave up while waiting for room
    return None


async def _call(
    runner: Runner, recorder: TraceRecorder, event: Event, spec: EventSpec, deadline: float
) -> None:
    with trio.move_on_at(deadline) as scope:
        try:
            await runner.call(event, timeout=spec.timeout, limits=spec.limits)
        except RunnerError as exc:  # QueueFull, RunnerClosed, Overloaded
            recorder.note_refused(event, exc)
            return
    if scope.cancelled_caught:
        if recorder.accepted(event.id):
            recorder.note_cancel(event)
        else:
            recorder.note_abandoned(event)


async def _emit_after_exit(runner: Runner, recorder: TraceRecorder) -> None:
    """Both ways of emitting must now be refused (`RunnerClosed`), at once."""
    for mode in ("emit_nowait", "emit"):
        event = Event("__after_exit__", {"mode": mode})
        recorder.note_attempt(event)
        try:
            if mode == "emit":
                await runner.emit(event)  # a hang here is bounded by drive's horizon
            else:
                runner.emit_nowait(event)
        except RunnerError as exc:  # QueueFull, RunnerClosed, Overloaded
            recorder.note_refused(event, exc)


def _all_tasks() -> set[trio.lowlevel.Task]:
    root = trio.lowlevel.current_root_task()
    return _subtree_of(root) if root is not None else set()


def _subtree(nursery: trio.Nursery) -> set[trio.lowlevel.Task]:
    found: set[trio.lowlevel.Task] = set()
    for task in nursery.child_tasks:
        found |= _subtree_of(task)
    return found


def _subtree_of(task: trio.lowlevel.Task) -> set[trio.lowlevel.Task]:
    found = {task}
    for nursery in task.child_nurseries:
        found |= _subtree(nursery)
    return found
