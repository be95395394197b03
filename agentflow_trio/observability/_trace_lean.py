"""`LeanTracer`: spans recorded in a few microseconds, handed to the SDK's span processors
as ``ReadableSpan`` values when they end.

Why: an OpenTelemetry SDK span costs about 30 µs of CPU (a sampler object, attribute
checks under a lock on every call, a copy when it ends); an agent invocation makes four
or five, which is more than the 25% of an invocation that tracing may cost
(``bench/tracing_overhead.py``). A `LeanSpan` keeps a plain dict and a list, and builds
the one ``ReadableSpan`` (2-3 µs) the SDK's ``BatchSpanProcessor`` or
``SimpleSpanProcessor`` takes, so every SDK exporter (OTLP, console, in-memory) works
unchanged. Used when `open_tracing` builds the pipeline itself; with ``exporter =
"none"`` the process's own tracer provider makes the spans.

Sampling is the SDK's ``ParentBased(TraceIdRatioBased(ratio))``: a child follows its
parent's sampled flag (a remote parent's too); a root is sampled when the low 64 bits of
its random trace id fall under ``ratio``. An unsampled span is a ``NonRecordingSpan``
carrying real ids, so propagation still works.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

__all__ = ["LeanSpan", "LeanTracer"]

_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED: Final = TraceFlags(TraceFlags.DEFAULT)
_LOW_64: Final = (1 << 64) - 1
_SCALARS: Final = (str, bool, int, float)
_MAX_EVENTS: Final = 128
_UNSET: Final = Status(StatusCode.UNSET)


def _valid(value: Any) -> Any:
    """``value`` as an attribute value: scalars and sequences of them as they are, the
    rest as text (the SDK would drop them with a warning)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Sequence) and all(isinstance(v, _SCALARS) for v in value):
        return tuple(value)
    return str(value)


@final
class LeanTracer:
    """Makes `LeanSpan` values and gives the ended ones to ``processor``."""

    __slots__ = ("_bound", "processor", "resource", "scope")

    def __init__(self, processor: SpanProcessor, resource: Resource, ratio: float) -> None:
        self.processor = processor
        self.resource = resource
        self.scope = InstrumentationScope("agentflow_trio")
        self._bound = round(max(0.0, min(1.0, ratio)) * (1 << 64))

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
    ) -> trace.Span:
        """A span under ``context``'s span (default: the current one), or a new trace."""
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, state = parent.trace_id, parent.trace_state
            sampled = parent.trace_flags.sampled
            parent_context: SpanContext | None = parent
        else:
            trace_id, state, parent_context = random.getrandbits(128) or 1, None, None
            sampled = (trace_id & _LOW_64) < self._bound
        span_id = random.getrandbits(64) or 1
        flags = _SAMPLED if sampled else _NOT_SAMPLED
        made = SpanContext(trace_id, span_id, False, flags, state)
        if not sampled:
            return trace.NonRecordingSpan(made)
        return LeanSpan(self, name, made, parent_context, kind, dict(attributes or {}))


@final
class LeanSpan(trace.Span):
    """A recording span: attributes in a dict, events in a list; `end` hands it on once."""

    __slots__ = (
        "_attributes",
        "_context",
        "_ended",
        "_events",
        "_kind",
        "_name",
        "_parent",
        "_start",
        "_status",
        "_tracer",
    )

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._events: list[Event] = []
        self._status = _UNSET
        self._ended = False
        self._start = time.time_ns()

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended:
            self._attributes[key] = value if type(value) in _SCALARS else _valid(value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if not self._ended:
            for key, value in attributes.items():
                self._attributes[key] = value if type(value) in _SCALARS else _valid(value)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if not self._ended and len(self._events) < _MAX_EVENTS:
            self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended:
            return
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        recorded = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception)[:1000],
            **(attributes or {}),
        }
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        tracer = self._tracer
        done = ReadableSpan(
            self._name,
            self._context,
            self._parent,
            tracer.resource,
            self._attributes,
            self._events,
            (),
            self._kind,
            None,
            self._status,
            self._start,
            end_time or time.time_ns(),
            tracer.scope,
        )
        tracer.processor.on_end(done)
