"""The spans of events and their agents' runs: `EventSpans`, a part of `Instruments`.

An event's span starts when the runner accepts it and ends with its outcome; its agent's
``invoke_agent`` span runs inside it. With the lean tracer an event's span is usually never
made: `accepted` takes its ids, the agent's span is made under them, and `finished`
records its fields straight to the batch (a span object and its end are a fifth of what
tracing costs an invocation). Split from ``_trace_spans`` to keep each room small.
"""

from __future__ import annotations

import time
from typing import Any, Final, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from ..events import AgentResult, Outcome
from ._trace_context import attach, current_span
from ._trace_names import EVENT_NAMES, INVOKE_NAMES
from ._traceparent import TRACEPARENT, parse_traceparent

__all__ = ["EventSpans", "Tracer"]

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_INTERNAL: Final = SpanKind.INTERNAL
_TIMED_OUT: Final = Outcome.TIMED_OUT  # an enum member read off its class costs a call
_CANCELLED: Final = Outcome.CANCELLED
_SUCCEEDED: Final = Outcome.SUCCEEDED
_time_ns: Final = time.time_ns


def _remote(traceparent: str | None) -> otel_context.Context | None:
    """The context of a remote parent named by a checked ``traceparent``."""
    if traceparent is None:
        return None
    return _PROPAGATOR.extract({TRACEPARENT: traceparent})


class Tracer(Protocol):
    """What makes the spans: an OpenTelemetry ``Tracer``, or the lean one
    (``_trace_lean``) when agentflow builds the pipeline itself. A tracer with an
    ``open_span(name, kind, attributes)`` method (the lean one) starts a span under the
    current one and makes it current in one call, returning it and the token
    ``_trace_context.restore`` takes; `Instruments` uses it where it can."""

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        *,
        start_time: int | None = None,
    ) -> Span: ...


class EventSpans:
    """`Instruments`' event and agent-run spans (its state: ``tracer``, ``_events``,
    ``_lean``)."""

    __slots__ = ()

    tracer: Tracer
    _events: dict[object, tuple[Any, ...]]
    _lean: type[Any] | None

    def accepted(self, handle: Any) -> None:
        """An event was queued: its span starts now, under the emitter's span or, when
        none is current, under the ``traceparent`` of its metadata (a Redis entry's)."""
        event = handle.event
        parent = None
        metadata = event.metadata
        if metadata:  # usually empty: no lookup, no current span read
            sent = metadata.get(TRACEPARENT)
            if sent is not None and current_span() is None:
                parent = _remote(parse_traceparent(sent))
        now = _time_ns()
        if parent is None and self._lean is not None:
            # the lean tracer's common case: ids now, the span itself only if something
            # must hold it (`_event_span`), or never: `finished` records its fields
            found = self.tracer.ids()  # type: ignore[attr-defined]
            if found is not None:
                self._events[handle] = (found, now)
                return
        self._events[handle] = (self._event_span(event, parent, now), now)

    def _event_span(self, event: Any, parent: Any, now: int) -> Span:
        """An event's span, started at ``now``: under ``parent`` (a context, or None for
        the current span's), or the span of the ids `accepted` took (a tuple)."""
        attributes = {"agentflow.event.type": event.type, "agentflow.event.id": event.id}
        name = EVENT_NAMES[event.type]
        if type(parent) is tuple:
            made: Span = self.tracer.span(name, parent, _INTERNAL, attributes, now)  # type: ignore[attr-defined]
            return made
        return self.tracer.start_span(name, parent, _INTERNAL, attributes, start_time=now)

    def running(self, handle: Any, parent: object, agent: str | None = None) -> object:
        """The event starts running in this task: its span becomes the current one (a
        nested call's, one with a ``parent`` context, starts now under the current span).
        Returns the token `tracing.detach` takes.

        ``agent``: the event's agent runs right away, awaited here (the runner's plain
        path): its ``invoke_agent`` span starts now under the event's and is the current
        one instead, and `finished` ends it from the result (one context change, not two,
        and no coroutine around the agent's)."""
        found = self._events.get(handle)
        now = _time_ns()
        if found is not None and agent is not None and type(found[0]) is tuple:
            # the plain path, with the lean tracer's ids only (`accepted`): its agent's
            # span, under them, is the current one; the event's own is recorded at its end
            ids = found[0]
            attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
            name = INVOKE_NAMES[agent]
            running = self.tracer.new_span(  # type: ignore[attr-defined]
                self.tracer, name, ids[0], ids[1], ids[3], None, _INTERNAL,
                attributes, now,
            )  # fmt: skip
            self._events[handle] = (ids, now, (now - found[1]) / 1e9, running, found[1])
            return attach(running)
        if found is None:
            metadata = handle.event.metadata.get(TRACEPARENT)
            remote = None if parent is not None else _remote(parse_traceparent(metadata))
            span = self._event_span(handle.event, remote, now)
            wait = 0.0
        else:  # the queue wait is noted when the span ends, with the run time
            span = found[0]
            wait = (now - found[1]) / 1e9
            if type(span) is tuple:  # its ids only (`accepted`): held from now on
                span = self._event_span(handle.event, span, found[1])
        if agent is None:
            self._events[handle] = (span, now, wait)
            return attach(span)
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
        name = INVOKE_NAMES[agent]
        held: Any = span  # read as the lean span it is
        lean = self._lean
        if type(held) is lean:  # the child of a span in hand: no context to read
            running = self.tracer.new_span(  # type: ignore[attr-defined]
                self.tracer, name, held.trace_id, held.span_id, held.state,
                None, _INTERNAL, attributes, now,
            )  # fmt: skip
        else:
            inside = trace.set_span_in_context(span)
            running = self.tracer.start_span(name, inside, _INTERNAL, attributes, start_time=now)
        self._events[handle] = (span, now, wait, running)
        return attach(running)

    def finished(self, handle: Any, result: AgentResult) -> None:
        """The event ended: its outcome, run time and status, and its span ends (the
        agent's first, when `running` started it)."""
        found = self._events.pop(handle, None)
        if found is None:
            return
        outcome = result.outcome
        now = _time_ns()  # both spans end now
        if outcome is _SUCCEEDED and len(found) == 5:  # the plain path went well (ids
            event = handle.event  # and its agent's span, `running`): one step
            noted = {
                "agentflow.event.type": event.type,
                "agentflow.event.id": event.id,
                "agentflow.event.outcome": "succeeded",
                "agentflow.queue_wait_s": found[2],
                "agentflow.run_time_s": (now - found[1]) / 1e9,
            }
            if result.agent:
                noted["gen_ai.agent.name"] = result.agent
            name = EVENT_NAMES[event.type]
            self.tracer.end_with(found[3], now, name, found[0], found[4], noted)  # type: ignore[attr-defined]
            return
        error = result.error
        if len(found) > 3:  # (its agent's span, which `running` started)
            agent = found[3]
            if outcome is not _SUCCEEDED:
                self._outcome(agent, outcome, error)
            agent.end(now)
        span = found[0]
        ran = len(found) > 2  # (not: cancelled while queued)
        if type(span) is tuple:  # ids only, and no good end (that is `end_with`'s)
            event = handle.event
            span = self._event_span(event, span, found[4] if ran else found[1])
        lean = type(span) is self._lean  # its own dict, still open: no frame, no checks
        attributes: dict[str, Any] = span._attributes if lean else {}
        attributes["agentflow.event.outcome"] = str(outcome)
        attributes["agentflow.queue_wait_s"] = found[2] if ran else 0.0
        attributes["agentflow.run_time_s"] = (now - found[1]) / 1e9 if ran else 0.0
        if result.agent:
            attributes["gen_ai.agent.name"] = result.agent
        if not lean:
            span.set_attributes(attributes)  # one call, not one per attribute
        if outcome is _TIMED_OUT:
            self._status(span, "timeout", "timed out")
        elif outcome is not _SUCCEEDED:
            self._outcome(span, outcome, error)
        span.end(now)

    def _outcome(self, span: Span, outcome: Outcome, error: Any) -> None:
        """The status of a span whose event ended other than well: timed out, cancelled
        (and by whom), or the error's type and message."""
        if outcome is _TIMED_OUT:
            self._status(span, "cancelled", "timed out")
        elif outcome is _CANCELLED:
            why = error.message if error is not None else "cancelled"
            self._status(span, "cancelled", "cancelled by caller" if "caller" in why else why)
        elif error is not None:
            self._status(span, error.type, "")
            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"[:200]))

    @staticmethod
    def _status(span: Span, kind: str, reason: str) -> None:
        span.set_attribute("error.type", kind)
        if reason:
            span.set_attribute("agentflow.reason", reason)
            span.set_status(Status(StatusCode.ERROR, reason))
