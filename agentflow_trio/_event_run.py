"""Running one event, for `Runner` (its base class `EventRuns`): the event's context,
usage meter and timeout scope, its hooks, session and agent, and its one result, whichever
task runs it (a worker, the caller of ``runner.call``, a nested call's parent).

Apart from runner.py, which admits, queues and dispatches events, so that each module
stays one job long. Shared by ``runner.py`` only.
"""

from __future__ import annotations

from typing import Any

import trio

from ._handle import EventHandle, new_handle
from ._outcome import escaped, failure, passes_through, reraise, settle, stamp
from .agents import Agent, Context, Hooks, _AgentLike, _current, invoke
from .errors import NestingTooDeep, RunnerClosed, UnknownAgent
from .events import AgentResult, ErrorInfo, Event, Outcome
from .observability import tracing as _tracing
from .progress import ProgressSink, current_sink, enter_sink, exit_sink
from .services import Services, run_in_session
from .usage import UsageLimits, UsageMeter, tightest

__all__ = ["CLOSED", "CLOSING", "NEW", "OPEN", "EventRuns"]

NEW, OPEN, CLOSING, CLOSED = range(4)
"""A runner's states, in order."""


class EventRuns:
    """How `Runner` runs one event (see the module docstring). `Runner` sets every
    attribute below and defines `_finish`."""

    _agents: dict[str, _AgentLike]
    _event_timeout: float
    _limits: UsageLimits | None
    _prices: Any
    _max_depth: int
    _hooks: Hooks
    _workers: trio.CapacityLimiter
    _outer_sink: ProgressSink | None
    _state: int
    _running: int
    _accepted: int
    _refused: int
    services: Services

    def _finish(self, handle: EventHandle, result: AgentResult, admitted: bool = True) -> None:
        raise NotImplementedError

    async def _call_nested(
        self, parent: Context, event: Event, timeout: float | None, limits: UsageLimits | None
    ) -> AgentResult:
        """Run ``event`` now, in this task, under ``parent``'s worker slot; see `Runner`'s
        docstring ("Nested calls")."""
        handle = new_handle(event, timeout, limits)
        if parent.depth >= self._max_depth:
            raise NestingTooDeep(self._max_depth)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._state > CLOSING:  # a parent still running after the exit (it never is)
            self._refused += 1
            raise RunnerClosed("the runner is closed")
        self._accepted += 1
        hooks = self._hooks
        if hooks.on_accept:
            hooks.run_after(hooks.on_accept, "on_accept", event)
        await self._run_event(handle, parent)
        result = handle._result
        assert result is not None
        return result

    async def _run_event(
        self, handle: EventHandle, parent: Context | None = None, here: bool = False
    ) -> None:
        """Run one event under its timeout scope; always resolve it and free its slots.

        ``parent``: the context of the agent making this nested call (None for an event
        a worker took from the queue); its worker slot is shared, not taken or freed,
        its usage meter is this event's meter's parent, and its progress sink (the
        current one) is this event's too. ``here``: a `call` run in its caller's task
        (`Runner._enter_here`): the caller's cancellation is the event's, and the caller's
        progress sink is not the event's.
        """
        event = handle.event
        result: AgentResult | None = None
        timeout = handle.timeout
        agent = self._agents.get(event.type)
        own = agent if isinstance(agent, Agent) else None
        if timeout is None:
            timeout = self._event_timeout if own is None or own.timeout is None else own.timeout
        limits = self._limits
        if handle.limits is not None or (own is not None and own.limits is not None):
            limits = tightest(limits, None if own is None else own.limits, handle.limits)
        meter = UsageMeter(limits, self._prices, None if parent is None else parent._meter)
        services = self.services
        ctx = Context(
            event,
            llm=services.llm,
            tools=services.tools,
            mcp=services.mcp,
            metrics=services.metrics,
            runner=self,
            hooks=services.hooks,
            limiter=self._workers,
            slot=handle if parent is None else parent._slot,
            depth=0 if parent is None else parent.depth + 1,
            meter=meter,
        )
        token = _current.set(ctx)  # also where model calls find the meter
        sink_token = None
        if parent is None:
            self._running += 1
            outer = current_sink() if here else self._outer_sink
            if handle._sink is not outer:  # a queued event streams to its own
                sink_token = enter_sink(handle._sink)
        hooks = self._hooks
        plain = (  # no hook, session or unknown type: the agent is awaited right here
            agent is not None
            and not (hooks.before_event or hooks.before_agent or hooks.after_agent)
            and not hooks.on_error
            and (services.sessions is None or event.metadata.get("session_id") is None)
        )
        direct = own if type(own) is Agent else None  # (a subclass may wrap `__call__`)
        named = direct.name if plain and direct is not None else None  # its span starts here
        traced = None if _tracing.active is None else _tracing.active.running(handle, parent, named)
        try:
            with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                handle._scope = scope
                if handle._cancelled_by is not None:
                    scope.cancel()
                if plain:  # `_handle`'s common case, inlined: one frame less while waiting
                    assert agent is not None
                    name = ctx.agent = agent.name
                    try:  # an `Agent`'s function itself: its span, if any, is open
                        value = await (
                            agent(ctx, event) if direct is None else direct.fn(ctx, event)
                        )
                    except BaseException as exc:
                        if passes_through(exc):
                            raise
                        result = failure(exc, name, event.id)
                    else:
                        if type(value) is AgentResult:
                            result = value
                        else:
                            result = AgentResult(Outcome.SUCCEEDED, value, None, event.id, name)
                else:
                    result = await self._handle(ctx, agent, event)
            if result is None:
                if handle._cancelled_by is not None:
                    result = AgentResult(Outcome.CANCELLED, None, handle._cancelled_by)
                else:
                    msg = f"event {event.id} ran past its timeout of {timeout:g}s"
                    result = AgentResult(Outcome.TIMED_OUT, None, ErrorInfo("Timeout", msg))
        except BaseException as exc:
            result = escaped(exc, parent is not None or here)
            if reraise(exc):
                raise
        finally:
            _current.reset(token)
            if traced is not None:
                _tracing.detach(traced)
            if sink_token is not None:
                exit_sink(sink_token)
            if parent is None:
                self._running -= 1
                if handle._slot_held:
                    handle._slot_held = False
                    self._workers.release_on_behalf_of(handle)
            assert result is not None
            if meter.requests or meter.exceeded is not None:
                result = settle(result, event.id, ctx.agent, meter)
                observe = getattr(services.metrics, "observe_usage", None)
                if observe is not None:  # the metrics count each event's own calls
                    spent = meter.own_usage()
                    if spent is not None:
                        observe(ctx.agent or event.type, spent)
            elif result.event_id != event.id:
                result = stamp(result, event.id, ctx.agent)
            self._finish(handle, result, parent is None)

    async def _handle(self, ctx: Context, agent: _AgentLike | None, event: Event) -> AgentResult:
        hooks = self._hooks
        if hooks.before_event:
            failure_ = hooks.run_before(hooks.before_event, "before_event", event)
            if failure_ is not None:
                return AgentResult(Outcome.FAILED, None, ErrorInfo.from_exception(failure_))
        if agent is None:
            error = UnknownAgent(event.type, list(self._agents))
            return AgentResult(Outcome.FAILED, None, ErrorInfo.from_exception(error))
        sessions = self.services.sessions
        if sessions is not None:
            session_id = event.metadata.get("session_id")
            if session_id is not None:
                return await run_in_session(sessions, session_id, ctx, agent, event)
        if hooks.before_agent or hooks.after_agent or hooks.on_error:
            return await invoke(ctx, agent, event)
        # No agent hooks: one result object per event (`_run_event` inlines this case).
        name = ctx.agent = agent.name
        try:
            value = await agent(ctx, event)
        except BaseException as exc:
            if passes_through(exc):
                raise
            return failure(exc, name, event.id)
        if type(value) is AgentResult:
            return value
        return AgentResult(Outcome.SUCCEEDED, value, None, event.id, name)
