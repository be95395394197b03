"""The runner: a bounded queue of events, a pool of agent slots, timeouts, clean shutdown.

One object, one nursery: ``async with Runner(config, agents={...}) as runner`` owns every
task that handles an event (the nursery is kept as every owner of the package keeps it:
`NurseryOwner`). See `Runner` for the guarantees.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Final, Unpack, final

import attrs
import trio

from ._event_run import CLOSED, CLOSING, NEW, OPEN, EventRuns
from ._handle import EventHandle, ItemStream, new_handle, open_item_stream
from ._outcome import SHUTDOWN_CANCELLED
from ._owner import NurseryOwner
from .agents import AgentFunction, Hooks, _AgentLike, _current, as_agent
from .config import Config
from .errors import QueueFull, RunnerClosed
from .events import AgentResult, Event, Outcome
from .observability import tracing as _tracing
from .observability.runtime import AUTO_GC_EVENTS, MemoryGuard, apply_gc_settings, auto_gc_settings
from .progress import ProgressSink, current_sink
from .services import ServiceKeywords, Services
from .state import SessionBackend
from .usage import UsageLimits

if TYPE_CHECKING:
    from .llm import LLMClient, Provider
    from .mcp import MCPManager
    from .observability.metrics import RunnerMetrics
    from .tools import ToolRegistry

__all__ = ["EventHandle", "Runner", "RunnerStatistics"]

_log = logging.getLogger("agentflow_trio.runner")


@attrs.frozen(slots=True)
class RunnerStatistics:
    """A snapshot of a runner's counters (see `Runner.statistics`)."""

    accepted: int
    refused: int
    in_flight: int
    queued: int
    running_events: int
    running_agents: int
    peak_in_flight: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    hook_failures: int
    max_concurrent_events: int
    worker_pool_size: int
    closed: bool
    usage_limit_exceeded: int = 0

    @property
    def completed(self) -> int:
        """Events that have ended, in any outcome."""
        ended = self.succeeded + self.failed + self.timed_out + self.cancelled
        return ended + self.usage_limit_exceeded


@final
class Runner(NurseryOwner, EventRuns):
    """Runs agents on events with bounded concurrency; nothing it starts outlives it.

    ``async with Runner(config, agents={"type": agent}, services=Services(...)) as runner``
    opens the runner's nursery; every event's `Context` sees the `Services` (the keyword
    form ``Runner(config, agents, llm=..., tools=...)`` builds one).
    ``await runner.emit(event)`` waits for room and returns an `EventHandle`;
    ``runner.emit_nowait(event)`` raises `QueueFull` instead of waiting;
    ``await runner.call(event)`` emits and waits for the result, and cancels the event if
    the caller is cancelled; ``async with runner.stream(event) as items`` gives the
    event's progress items as they happen, its result last. An event's ``type`` picks
    its agent; an unknown type ends ``failed`` naming the known ones.

    Guarantees (each is a hypothesis property in tests/test_runner_properties.py):

    1. Conservation: every accepted event ends exactly once, in exactly one outcome
       (``succeeded | failed | timed_out | cancelled | usage_limit_exceeded``); a refused
       event is refused to its caller at once (`QueueFull`, `RunnerClosed`). An agent's
       exception never escapes: it becomes a ``failed`` result with the traceback kept
       (``usage_limit_exceeded`` for a `UsageLimitExceeded`), whatever its class
       (BaseException subclasses, ``GeneratorExit`` and a ``trio.Cancelled`` that none of
       the event's own scopes caused included). Only ``KeyboardInterrupt`` and
       ``SystemExit`` go on to stop the runner, as they would stop the process without
       it: their event still ends ``failed`` and every other event ``cancelled``.
    2. Bounds: at most ``worker_pool_size`` agents run at once; at most
       ``max_concurrent_events`` events are in flight (queued + running).
    3. Timeouts: an event ends no later than its timeout (``event_timeout``, an agent's
       own ``timeout``, or ``emit(..., timeout=)``) after it started running.
    4. Order: with one worker, events start in emit order.
    5. Shutdown: leaving the ``async with`` stops accepting (`RunnerClosed`), lets queued
       and running events finish for up to ``drain_timeout``, then cancels the rest; when
       it returns no task of the runner is alive and every handle is done. If the body
       raised, nothing is drained: the rest is cancelled and the error propagates as is.
       A runner is entered once.

    Nested calls: ``await ctx.runner.call(event)`` from inside an agent (or from a task
    the agent started) does not queue and does not wait for a worker: the nested event
    runs at once, in the calling task, under the worker slot its parent holds, with its
    own timeout inside whatever is left of the parent's. It takes no admission slot
    (``in_flight`` counts the parent only), is counted in ``accepted`` and in its
    outcome, runs the event hooks like any event, and is cancelled with its parent. As
    part of an accepted event's work it is not refused while the runner drains. Past
    ``runner.max_nesting_depth`` levels (default ``MAX_NESTING_DEPTH``; an agent calling
    itself) the call raises `NestingTooDeep` at once. ``emit`` from inside an agent
    queues the event for a free worker like any other (fire and forget): an agent that
    waits for that handle waits for a worker, so use ``call`` for work it waits on.
    Order (4) is about queued events; nested calls run when they are made.

    Usage: each event gets a usage meter; every model call its code makes through
    ``ctx.llm`` is checked against the event's limits (the tightest of ``[limits]``,
    the agent's ``limits`` and ``emit(..., limits=)``) and charged to it, and a nested
    call's to its parent's as well. An event that made a model call ends with
    ``result.usage`` (a `RunUsage`); past a limit it ends ``usage_limit_exceeded``
    with what it spent.

    Bad input is refused where it enters, to the caller, never inside the runner's
    tasks: a timeout that is NaN, zero, negative or not a number raises `ConfigError`
    (``math.inf`` means no timeout); something that is not an `Event` (or whose
    ``type`` is not a string) raises ``TypeError``; a config built in code with its
    validators switched off is checked again here.
    """

    MAX_NESTING_DEPTH: Final = 8
    """The default of ``runner.max_nesting_depth``: how many levels of nested
    ``ctx.runner.call`` one event may make."""

    def __init__(
        self,
        config: Config | None = None,
        agents: Mapping[str, _AgentLike | AgentFunction] | None = None,
        *,
        services: Services | None = None,
        memory_guard: MemoryGuard | None = None,
        **keywords: Unpack[ServiceKeywords],
    ) -> None:
        """``keywords`` (``hooks``, ``llm``, ``tools``, ``mcp``, ``metrics``, ``sessions``)
        replace the fields of ``services``: see `Services.build`."""
        self.config = config if config is not None else Config()
        for section in (self.config.runner, self.config.runtime, self.config.monitoring):
            attrs.validate(section)  # a config built in code with validators switched off
        rc = self.config.runner
        self._agents: dict[str, _AgentLike] = {k: as_agent(v) for k, v in (agents or {}).items()}
        self.services = Services.build(services, **keywords)
        self._hooks = self.services.hooks  # read per event: one attribute, not a property
        self._event_timeout = rc.event_timeout
        self._drain_timeout = rc.drain_timeout
        self._max_in_flight = rc.max_concurrent_events
        self._max_depth = rc.max_nesting_depth
        self._stream_buffer = rc.stream_buffer
        self._outer_sink: ProgressSink | None = None
        self._limits = UsageLimits.from_config(self.config.limits)
        self._prices = self.config.llm.prices
        self._workers = trio.CapacityLimiter(rc.worker_pool_size)
        self._send, self._receive = trio.open_memory_channel[EventHandle](rc.event_buffer_size)
        self._buffered = rc.event_buffer_size > 0  # else every worker is started at once
        self._started = 0  # worker tasks started (at most worker_pool_size; see _worker)
        self._free = 0  # started workers holding no event (starting, or waiting in receive)
        self._unclaimed = 0  # queued handles no worker has received yet
        self._here: set[EventHandle] = set()  # events run in their caller's task (call)
        self._here_left: trio.Event | None = None  # set when the last of them ends, closing
        self._state = NEW
        self._room = trio.lowlevel.ParkingLot()  # emitters waiting for admission/queue room
        self._drained = trio.Event()
        self._in_flight = 0
        self._running = 0
        self._accepted = 0
        self._refused = 0
        self._peak_in_flight = 0
        self._outcomes = dict.fromkeys(Outcome, 0)
        runtime = self.config.runtime
        if memory_guard is None and runtime.memory_limit > 0:
            memory_guard = MemoryGuard.from_config(runtime)
        self._guard = memory_guard
        self._gc_undo: Callable[[], None] | None = None  # gives [runtime]'s GC tuning back
        self.debug_port: int | None = None  # bound port of the debug server, if enabled

    # ----------------------------------------------------------------- services
    @property
    def hooks(self) -> Hooks:
        """The hooks run around every event (``services.hooks``; append to its lists)."""
        return self._hooks

    @property
    def llm(self) -> LLMClient | Provider | None:
        """``services.llm``: what agents get as ``ctx.llm``."""
        return self.services.llm

    @property
    def tools(self) -> ToolRegistry | None:
        """``services.tools``: what agents get (bound) as ``ctx.tools``."""
        return self.services.tools

    @property
    def mcp(self) -> MCPManager | None:
        """``services.mcp``: what agents get as ``ctx.mcp``."""
        return self.services.mcp

    @property
    def metrics(self) -> RunnerMetrics | None:
        """``services.metrics``: what agents get as ``ctx.metrics``."""
        return self.services.metrics

    @property
    def sessions(self) -> SessionBackend | None:
        """``services.sessions``: where session state is kept between events."""
        return self.services.sessions

    # ----------------------------------------------------------------- lifecycle
    async def _open(self) -> None:
        """Enter: the nursery and what the config asks for in it. Worker tasks start as
        queued events need them (`_try_accept`), all at once for an unbuffered queue (a
        rendezvous needs a worker waiting in ``receive``)."""
        nursery = await self._open_nursery()
        self._outer_sink = current_sink()  # what the workers inherit (None, unless streamed)
        await self._start_runtime(nursery)
        self._state = OPEN
        if not self._buffered:
            while self._started < self._workers.total_tokens:
                self._start_worker()

    def _start_worker(self) -> None:
        """Start one more worker task in the runner's nursery (counted free until it
        receives an event)."""
        nursery = self._owner_nursery
        assert nursery is not None
        self._started += 1
        self._free += 1
        nursery.start_soon(self._worker)

    async def _start_runtime(self, nursery: trio.Nursery) -> None:
        """What ``[runtime]`` and ``[monitoring]`` ask for, owned by this runner."""
        if self._guard is not None:
            await nursery.start(self._guard.run)
        if self.config.monitoring.enable_profiling:
            from .observability.debug_server import serve_debug

            metrics = self.metrics if hasattr(self.metrics, "render") else None
            port = self.config.monitoring.profile_port
            self.debug_port = await nursery.start(
                functools.partial(serve_debug, port=port, metrics=metrics)
            )
        runtime = self.config.runtime
        if runtime.gc_thresholds or runtime.gc_freeze:
            self._gc_undo = apply_gc_settings(runtime).undo  # undone when the runner closes
        elif runtime.gc_auto and self._max_in_flight >= AUTO_GC_EVENTS:
            self._gc_undo = auto_gc_settings(self._max_in_flight)

    async def _closing(self, error: BaseException | None) -> None:
        """Leave, first step: refuse new events; drain for ``drain_timeout`` unless the
        body raised. The nursery is cancelled next (`NurseryOwner`)."""
        self._state = CLOSING
        self._send.close()
        self._room.unpark_all()  # waiting emitters see the state and raise RunnerClosed
        if self._in_flight == 0:
            self._drained.set()
        try:
            if error is None:
                with trio.move_on_after(self._drain_timeout):
                    await self._drained.wait()
        finally:
            await self._stop_here()

    async def _stop_here(self) -> None:
        """Cancel the events still running in their callers' tasks (`call`) and wait for
        them to end, as the nursery's cancellation ends those the workers run."""
        if not self._here:
            return
        self._here_left = trio.Event()
        for handle in self._here:
            handle._stop(SHUTDOWN_CANCELLED)
        with trio.CancelScope(shield=True):
            await self._here_left.wait()

    def _closed(self) -> None:
        """Leave, last step (every task has ended): settle leftovers, undo GC settings."""
        self._cancel_leftovers()
        self._state = CLOSED
        if self._gc_undo is not None:
            self._gc_undo()

    # ----------------------------------------------------------------- emitting
    def emit_nowait(
        self,
        event: Event,
        *,
        timeout: float | None = None,
        limits: UsageLimits | None = None,
        stream: bool = False,
    ) -> EventHandle:
        """Accept ``event`` if there is room now, else raise `QueueFull`; as `emit`.

        Raises:
            QueueFull: ``max_concurrent_events`` are in flight or the queue is full.
            Overloaded: the process is over its soft memory limit (``[runtime]``).
            RunnerClosed: the runner is not open.
            ConfigError: ``timeout`` is NaN, not positive or not a number.
            TypeError: ``event`` is not an `Event` with a string ``type``, or ``limits``
                is not a `UsageLimits`.
        """
        handle = self._new_handle(event, timeout, limits, stream)
        if not self._try_accept(handle):
            self._refused += 1
            if self._state != OPEN:
                raise RunnerClosed("the runner is not accepting events")
            if self._in_flight >= self._max_in_flight:
                raise QueueFull(f"{self._in_flight} events in flight (max_concurrent_events)")
            raise QueueFull("the event queue is full (event_buffer_size)")
        return handle

    async def emit(
        self,
        event: Event,
        *,
        timeout: float | None = None,
        limits: UsageLimits | None = None,
        stream: bool = False,
    ) -> EventHandle:
        """Accept ``event``, waiting for room (backpressure); return its handle.

        ``timeout`` (seconds, > 0; ``math.inf`` for none) overrides the event's run
        timeout; ``limits`` (`UsageLimits`) tighten its usage limits. With ``stream``
        the event's progress items (model text, tool calls, partial output) go to
        ``handle.events()`` through a bounded channel of ``runner.stream_buffer`` items:
        read them, or the event waits for room. Cancellation while waiting leaves the
        event not accepted. Always a checkpoint. From inside an agent the event is
        queued like any other (see "Nested calls" in the class docstring).

        Raises:
            Overloaded: the process is over its soft memory limit (``[runtime]``); load is
                shed at once rather than queued.
            RunnerClosed: the runner is not open, or closes while this waits.
            ConfigError: ``timeout`` is NaN, not positive or not a number.
            TypeError: ``event`` is not an `Event` with a string ``type``, or ``limits``
                is not a `UsageLimits`.
        """
        handle = self._new_handle(event, timeout, limits, stream)
        await self._accept(handle)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return handle

    async def _accept(self, handle: EventHandle) -> None:
        """Queue ``handle``, waiting for room; cancellable only until it is queued."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._try_accept(handle):
            if self._state != OPEN:
                self._refused += 1
                raise RunnerClosed("the runner is not accepting events")
            await self._room.park()

    async def call(
        self, event: Event, *, timeout: float | None = None, limits: UsageLimits | None = None
    ) -> AgentResult:
        """Emit ``event`` and wait for its result; cancelling the caller cancels the event.

        When a worker slot is free and no accepted event waits to start, the event runs
        in the calling task (as a worker would run it: same slot, bounds, timeout, hooks
        and outcomes; the runner's shutdown still cancels it and waits for it), which
        saves a task and a wait per event; otherwise it queues for a worker as `emit`.
        Run in the calling task, the agent shares its context variables, as any awaited
        function does (the runner's own, such as the current `Context`, are reset).
        From inside an agent of this runner the event runs at once under the agent's
        worker slot instead of queueing (see "Nested calls" in the class docstring), and
        its progress items go to its parent's caller, if one streams.

        Raises:
            The errors of `emit`; from inside an agent, `NestingTooDeep` past
            ``runner.max_nesting_depth`` levels.
        """
        parent = _current.get()
        if parent is not None and self is parent.runner:  # a nested call
            nested: AgentResult = await self._call_nested(parent, event, timeout, limits)
            return nested
        handle = self._new_handle(event, timeout, limits, False)
        if self._runs_here():  # in this task (`_enter_here`), awaited here: one frame less
            # As `_accept`: a cancelled caller's event is not accepted. This yields only to
            # raise, so the room `_runs_here` saw is still there.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._enter_here(handle)
            try:
                await self._run_event(handle, None, True)
            finally:
                self._left_here(handle)
            result = handle._result
            assert result is not None
            return result
        await self._accept(handle)  # as `emit`, less its schedule point: result() is one
        try:
            return await handle.result()
        finally:
            if handle._result is None:
                handle.cancel()

    def stream(
        self, event: Event, *, timeout: float | None = None, limits: UsageLimits | None = None
    ) -> AbstractAsyncContextManager[ItemStream]:
        """``async with runner.stream(event) as items: async for item in items: ...``:
        the event's progress items (`TextDelta`, `ToolCallStarted`, `ToolCallFinished`,
        `PartialOutput`) in order, then its `FinalResult`, last.

        Entering emits the event (``emit(..., stream=True)``: it waits for room).
        Items pass through a bounded channel (``runner.stream_buffer``): a consumer
        that reads slowly makes the event's code wait. Leaving the block before the
        `FinalResult` (``break``, an exception, the consumer cancelled) cancels the
        event (outcome ``cancelled``) and waits for it to end, so no task of it is left.

        Raises:
            The errors of `emit`, when entering.
        """
        emit = functools.partial(self.emit, event, timeout=timeout, limits=limits, stream=True)
        return open_item_stream(emit)

    def statistics(self) -> RunnerStatistics:
        """Counters for dashboards and tests; cheap, no checkpoint."""
        o = self._outcomes
        return RunnerStatistics(
            accepted=self._accepted,
            refused=self._refused,
            in_flight=self._in_flight,
            queued=self._send.statistics().current_buffer_used,
            running_events=self._running,
            running_agents=self._workers.borrowed_tokens,
            peak_in_flight=self._peak_in_flight,
            succeeded=o[Outcome.SUCCEEDED],
            failed=o[Outcome.FAILED],
            timed_out=o[Outcome.TIMED_OUT],
            cancelled=o[Outcome.CANCELLED],
            hook_failures=self._hooks.failures,
            max_concurrent_events=self._max_in_flight,
            worker_pool_size=int(self._workers.total_tokens),
            closed=self._state >= CLOSING,
            usage_limit_exceeded=o[Outcome.USAGE_LIMIT_EXCEEDED],
        )

    @property
    def agents(self) -> Mapping[str, _AgentLike]:
        """The agents by event type (read-only view)."""
        return self._agents

    # ----------------------------------------------------------------- internals
    def _new_handle(
        self, event: Event, timeout: float | None, limits: UsageLimits | None, stream: bool
    ) -> EventHandle:
        """A handle for ``event`` (streamed, with ``stream``), unless load is shed."""
        handle = new_handle(event, timeout, limits)
        guard = self._guard
        if guard is not None and guard.shedding:
            self._refused += 1
            raise guard.overloaded()
        if stream:
            handle._open_stream(self._stream_buffer)
        return handle

    def _try_accept(self, handle: EventHandle) -> bool:
        """Queue ``handle`` if the runner is open and has room; no checkpoint.

        Queueing happens only here, synchronously, so acceptance order is queue order.
        """
        if self._state != OPEN or self._in_flight >= self._max_in_flight:
            return False
        try:
            self._send.send_nowait(handle)
        except trio.WouldBlock:
            return False
        self._unclaimed += 1
        if self._unclaimed > self._free and self._started < self._workers.total_tokens:
            self._start_worker()  # every queued event has a worker coming for it
        self._admitted(handle)
        return True

    def _admitted(self, handle: EventHandle) -> None:
        """Count an accepted event in flight; tracing and the ``on_accept`` hooks."""
        self._in_flight += 1
        self._accepted += 1
        if _tracing.active is not None:
            _tracing.active.accepted(handle)
        if self._in_flight > self._peak_in_flight:
            self._peak_in_flight = self._in_flight
        hooks = self._hooks
        if hooks.on_accept:
            hooks.run_after(hooks.on_accept, "on_accept", handle.event)

    def _release_slot(self) -> None:
        self._in_flight -= 1
        if self._room:
            self._room.unpark()
        if self._in_flight == 0 and self._state >= CLOSING:
            self._drained.set()

    def _finish(self, handle: EventHandle, result: AgentResult, admitted: bool = True) -> None:
        """Resolve a handle (if a cancel did not already) and free its admission slot
        (a nested call, not ``admitted``, has none).

        Called exactly once per accepted event, whichever path ends it.
        """
        handle._resolve(result)
        final = handle._result
        assert final is not None
        if _tracing.active is not None:
            _tracing.active.finished(handle, final)
        self._outcomes[final.outcome] += 1
        hooks = self._hooks
        if hooks.after_event:
            hooks.run_after(hooks.after_event, "after_event", handle.event, final)
        if admitted:
            self._release_slot()

    async def _worker(self) -> None:
        """One of at most ``worker_pool_size`` long-lived tasks: take events in queue order,
        run each.

        Reusing tasks instead of spawning one per event halves the scheduler work per event;
        the CapacityLimiter still bounds running agents (workflow children take slots too).
        Started as queued events need them (`_try_accept`), not all when the runner opens:
        an idle worker is memory, and a `call` runs its event in its own task.
        """
        workers = self._workers
        receive = self._receive
        room = self._room
        handle: EventHandle | None = None
        try:
            while True:
                if room:  # this worker is about to receive: an unbuffered queue has room
                    room.unpark()
                try:
                    handle = await receive.receive()
                except trio.EndOfChannel:
                    return
                self._free -= 1
                self._unclaimed -= 1
                if room:  # a buffered queue has room again
                    room.unpark()
                if handle._result is not None:  # cancelled while queued
                    self._finish(handle, handle._result)
                else:
                    try:
                        workers.acquire_on_behalf_of_nowait(handle)
                    except trio.WouldBlock:
                        await workers.acquire_on_behalf_of(handle)
                    handle._slot_held = True
                    await self._run_event(handle)  # always resolves it
                handle = None  # not kept while waiting for the next one
                self._free += 1
        finally:
            if handle is not None and handle._result is None:  # shut down while waiting
                res = AgentResult(Outcome.CANCELLED, None, SHUTDOWN_CANCELLED, handle.event.id)
                self._finish(handle, res)

    def _runs_here(self) -> bool:
        """Whether a `call` may run its event in the caller's task: open, with room, a
        worker slot free and no accepted event still waiting to start (so queue order
        holds)."""
        return (
            self._state == OPEN
            and self._in_flight < self._max_in_flight
            and self._in_flight == self._running
            and self._workers.available_tokens >= 1
        )

    def _enter_here(self, handle: EventHandle) -> None:
        """Accept a `call`'s event to run in the caller's task, under a worker slot, as a
        worker would: no task, no queue and no wait for a result per event, which is most
        of the memory an event waiting on its model holds.

        Everything else is as if queued: it counts in flight and running, runs the hooks,
        ends exactly once; cancelling the caller cancels it (``cancelled``, then the
        ``Cancelled`` goes on); the runner's shutdown cancels it and waits for it to end
        (`_stop_here`). `_left_here` when its run has ended.
        """
        self._admitted(handle)
        self._workers.acquire_on_behalf_of_nowait(handle)
        handle._slot_held = True
        self._here.add(handle)

    def _left_here(self, handle: EventHandle) -> None:
        here = self._here
        here.discard(handle)
        if not here and self._here_left is not None:
            self._here_left.set()

    def _cancel_leftovers(self) -> None:
        """After the nursery is gone: end whatever is still queued as ``cancelled``."""
        while True:
            try:
                handle = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            result = handle._result or AgentResult(
                Outcome.CANCELLED, None, SHUTDOWN_CANCELLED, handle.event.id
            )
            self._finish(handle, result)
        self._receive.close()
