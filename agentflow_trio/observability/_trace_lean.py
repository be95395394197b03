"""`LeanTracer`: spans recorded in a few microseconds and exported in batches from a
background thread, where they become the SDK's ``ReadableSpan`` values.

Why: an OpenTelemetry SDK span costs about 30 µs of CPU (a sampler object, attribute
checks under a lock on every call, a copy when it ends, the ``BatchSpanProcessor``'s
per-span bookkeeping); an agent invocation makes four or five, more than the 25% of an
invocation that tracing may cost (``bench/tracing_overhead.py``). A `LeanSpan` keeps its
ids as ints, its attributes in a plain dict and its events as tuples; ending it appends
its fields (`Ended`) to one list. `SpanBatcher`'s thread hands a batch to any SDK exporter
(OTLP, console, in-memory) as a sequence whose ``ReadableSpan`` values (ids, events and
status objects) are made as the exporter reads them, honouring the SDK's ``OTEL_BSP_*``
settings. Without batching, each span is handed to a span processor as it ends. Used
when `open_tracing` builds the pipeline itself; with ``exporter = "none"`` the process's
own tracer provider makes the spans.

Sampling is the SDK's ``ParentBased(TraceIdRatioBased(ratio))``: a child follows its
parent's sampled flag (a remote parent's too); a root is sampled when the low 64 bits of
its random trace id fall under ``ratio``. An unsampled span is a ``NonRecordingSpan``
carrying real ids, so propagation still works.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from ._trace_context import CHAT, RUNTIME, SPAN_KEY, attach, current_context, current_span

__all__ = ["Ended", "LeanSpan", "LeanTracer", "new_span"]

_log = logging.getLogger(__name__)

_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED: Final = TraceFlags(TraceFlags.DEFAULT)
_NO_STATE: Final = TraceState()
_LOW_64: Final = (1 << 64) - 1
_SCALARS: Final = (str, bool, int, float)
_SCALAR_TYPES: Final = frozenset(_SCALARS)
_MAX_EVENTS: Final = 128
_UNSET: Final = Status(StatusCode.UNSET)
_INTERNAL: Final = SpanKind.INTERNAL
_new_tuple: Final = tuple.__new__
_new_object: Final = object.__new__
_time_ns: Final = time.time_ns
_random_bits: Final = random.getrandbits


def _context(trace_id: int, span_id: int, remote: bool, state: TraceState | None) -> SpanContext:
    """A sampled ``SpanContext`` of valid ids, without its constructor's checks (~1 µs)."""
    ids = (trace_id, span_id, remote, _SAMPLED, state or _NO_STATE, True)
    made: SpanContext = _new_tuple(SpanContext, ids)
    return made


def _valid(value: Any) -> Any:
    """``value`` as an attribute value: scalars and sequences of them as they are, the
    rest as text (the SDK would drop them with a warning)."""
    if type(value) is tuple and _SCALAR_TYPES.issuperset(map(type, value)):  # no frame
        return value
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Sequence) and all(isinstance(v, _SCALARS) for v in value):
        return tuple(value)
    return str(value)


@final
class LeanTracer:
    """Makes `LeanSpan` values; ``finish`` takes each one as it ends, as an `Ended`
    tuple (`SpanBatcher.add`, or a function handing its `readable` to a span processor).
    Made with its ``batcher``, a span that ends while the batch has room extends the
    batcher's list itself, as ``add`` would."""

    __slots__ = ("_bound", "_pending", "_room", "finish")

    span_type: ClassVar[type[LeanSpan]]
    """The class of the spans it records (`Instruments` reads their ids directly)."""
    new_span: ClassVar[Callable[..., LeanSpan]]
    """`new_span`, for `Instruments`: a span of this tracer (pass it first)."""

    def __init__(self, finish: Callable[[Ended], None], ratio: float, batcher: Any = None) -> None:
        self.finish = finish
        self._bound = round(max(0.0, min(1.0, ratio)) * (1 << 64))
        # ``batcher`` (a ``_trace_export.SpanBatcher``): `finish` is its `add`, whose
        # common case (room in the batch) an ending span does itself, without a call:
        # extend its list
        self._pending = None if batcher is None else batcher._pending
        self._room = 0 if batcher is None else batcher._batch * _FIELDS

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        start_time: int | None = None,
    ) -> trace.Span:
        """A span under ``context``'s span (default: the current one), or a new trace;
        ``start_time`` (ns since the epoch): the caller's reading of the clock, for now."""
        parent = current_span() if context is None else trace.get_current_span(context)
        start = start_time or 0
        if type(parent) is LeanSpan:  # the usual case: no SpanContext needed
            return new_span(
                self, name, parent.trace_id, parent.span_id, parent.state, None, kind,
                attributes, start,
            )  # fmt: skip
        return self._start_below(parent, name, kind, attributes, start)

    def open_span(
        self, name: str, kind: SpanKind, attributes: dict[str, Any]
    ) -> tuple[trace.Span, object]:
        """A span under the current one, made the current one: the span, and the token
        `restore` takes back. What `start_span` and `attach` do, reading the context once
        and in one frame (an invocation opens three or four)."""
        if RUNTIME is None:  # pragma: no cover - another runtime context was configured
            made = self.start_span(name, None, kind, attributes)
            return made, attach(made)
        var, key = RUNTIME
        previous = var.get()
        parent = previous.get(key)
        if type(parent) is LeanSpan:
            made = new_span(
                self, name, parent.trace_id, parent.span_id, parent.state, None, kind, attributes
            )
        else:
            made = self._start_below(parent, name, kind, attributes)
        var.set(Context({**previous, key: made} if previous else {key: made}))
        return made, previous

    def ids(self) -> tuple[int, int, int, TraceState | None] | trace.Span | None:
        """Ids for a span under the current one, made later or never (`record`): (trace
        id, its span id, the parent's span id, trace state). A new trace that sampling
        drops gives its non-recording span instead; None: the current span is not a
        `LeanSpan` (`start_span` then makes the span)."""
        parent = current_context().get(SPAN_KEY)
        if type(parent) is LeanSpan:
            return parent.trace_id, _random_bits(64) or 1, parent.span_id, parent.state
        if parent is not None:
            return None
        trace_id = _random_bits(128) or 1
        if (trace_id & _LOW_64) < self._bound:
            return trace_id, _random_bits(64) or 1, 0, None
        made = SpanContext(trace_id, _random_bits(64) or 1, False, _NOT_SAMPLED, None)
        return trace.NonRecordingSpan(made)

    def span(
        self,
        name: str,
        ids: tuple[int, int, int, TraceState | None],
        kind: SpanKind,
        attributes: Attributes,
        start: int,
    ) -> LeanSpan:
        """The span of `ids`, started at ``start``: made once something must hold it."""
        trace_id, span_id, parent_id, state = ids
        made = new_span(self, name, trace_id, parent_id, state, None, kind, attributes, start)
        made.span_id = span_id
        return made

    def record(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int,
        state: TraceState | None,
        start: int,
        end: int,
        attributes: dict[str, Any],
    ) -> None:
        """Record an internal span that has ended and that nothing held (no status, no
        events): its fields go to the batch as `LeanSpan.end` sends them, without a span
        object (a good synchronous tool call's, an event's)."""
        extras = None if state is None else (None, None, None, state)
        ended = (name, trace_id, span_id, parent_id, _INTERNAL, extras, start, end, attributes)
        pending = self._pending
        if pending is not None and len(pending) < self._room:
            pending += ended  # one C call: the exporter thread sees all of it or none
        else:
            self.finish(ended)

    def end_with(
        self,
        span: LeanSpan,
        end: int,
        name: str,
        ids: tuple[int, int, int, TraceState | None],
        start: int,
        attributes: dict[str, Any],
    ) -> None:
        """End ``span`` at ``end`` and `record` the span of ``ids``, ended then too (an
        event's, whose agent's span is ``span``): both to the batch in one step."""
        if span._end:  # (ended already: by the agent's own code)
            self.record(name, *ids, start, end, attributes)
            return
        span._end = end
        trace_id, span_id, parent_id, state = ids
        both = (
            span._name,
            span.trace_id,
            span.span_id,
            span.parent_id,
            span._kind,
            span._extras,
            span._start,
            end,
            span._attributes,
            name,
            trace_id,
            span_id,
            parent_id,
            _INTERNAL,
            None if state is None else (None, None, None, state),
            start,
            end,
            attributes,
        )
        pending = self._pending
        if pending is not None and len(pending) < self._room - _FIELDS:
            pending += both  # one C call: the exporter thread sees all of it or none
        else:
            self.finish(both[:_FIELDS])
            self.finish(both[_FIELDS:])

    def begin(
        self, name: str, kind: SpanKind, attributes: dict[str, Any], parent: Any
    ) -> list[Any] | None:
        """A span under the current one that runs with nothing holding it (a model
        call's: ``Instruments.open_chat``), as its `Ended` fields in a list; None when the
        current span (``parent``) is not a `LeanSpan`. `close` ends it; `held` makes it a
        span."""
        if type(parent) is not LeanSpan:
            return None
        trace_id, parent_id, state = parent.trace_id, parent.span_id, parent.state
        outer = CHAT.get()
        if outer is not None and outer[1] is parent and not outer[0][7]:
            # a model call made inside another (a provider's own): under that call's span
            parent_id = outer[0][2]
        return [
            name,
            trace_id,
            _random_bits(64) or 1,
            parent_id,
            kind,
            None if state is None else [None, None, None, state],
            _time_ns(),
            0,
            attributes,
        ]

    def close(self, record: list[Any]) -> None:
        """End a `begin` record now: to the batch, as `LeanSpan.end` sends a span."""
        record[7] = _time_ns()
        pending = self._pending
        if pending is not None and len(pending) < self._room:
            pending += record  # one C call: the exporter thread sees all of it or none
        else:
            self.finish(record)

    def held(self, record: list[Any]) -> LeanSpan:
        """The span of an open `begin` record, for what must hold one (a failure's
        status, the generic span calls)."""
        name, trace_id, span_id, parent_id, kind, extras, start, _, attributes = record
        state = None if extras is None else extras[3]
        made = new_span(self, name, trace_id, parent_id, state, None, kind, attributes, start)
        made.span_id = span_id
        made._extras = extras
        return made

    @staticmethod
    def note_event(record: list[Any], name: str, attributes: Attributes) -> None:
        """Add an event to an open `begin` record (``LeanSpan.add_event``'s rules: none
        once it ended)."""
        if record[7]:
            return
        extras = record[5]
        if extras is None:
            record[5] = extras = [None, None, None, None]
        if extras[0] is None:
            extras[0] = []
        if len(extras[0]) < _MAX_EVENTS:
            extras[0].append((name, attributes, _time_ns()))

    def _start_below(
        self, parent: object, name: str, kind: SpanKind, attributes: Attributes, start: int = 0
    ) -> trace.Span:
        """A span under ``parent``, a span that is not a `LeanSpan` (a remote one, an SDK
        one, an invalid one) or None: a new trace then, sampled by the ratio."""
        found = None
        if parent is not None and isinstance(parent, trace.Span):  # (an ABC: dear check)
            found = parent.get_span_context()
        if found is not None and found.is_valid:
            if found.trace_flags.sampled:
                state = found.trace_state or None
                return new_span(
                    self, name, found.trace_id, found.span_id, state, found, kind, attributes,
                    start,
                )  # fmt: skip
            trace_id, state = found.trace_id, found.trace_state
        else:
            trace_id = _random_bits(128) or 1
            if (trace_id & _LOW_64) < self._bound:
                return new_span(self, name, trace_id, 0, None, None, kind, attributes, start)
            state = None
        made = SpanContext(trace_id, _random_bits(64) or 1, False, _NOT_SAMPLED, state)
        return trace.NonRecordingSpan(made)


@final
class LeanSpan(trace.Span):
    """A recording span: ids as ints, attributes in a dict, events as tuples; `end` hands
    it to its tracer's ``finish`` once. ``parent_id`` is 0 for a root. Made by
    `new_span` (no ``__init__``)."""

    __slots__ = (
        "_attributes",
        "_end",
        "_extras",
        "_kind",
        "_name",
        "_start",
        "_tracer",
        "parent_id",
        "span_id",
        "state",
        "trace_id",
    )

    _tracer: LeanTracer
    _name: str
    trace_id: int
    span_id: int
    parent_id: int
    state: TraceState | None
    _kind: SpanKind
    _attributes: dict[str, Any]
    _extras: list[Any] | None
    _end: int
    _start: int

    def traceparent(self) -> str:
        """This span's W3C ``traceparent`` (always sampled)."""
        return "00-%032x-%016x-01" % (self.trace_id, self.span_id)  # noqa: UP031 (faster)

    def get_span_context(self) -> SpanContext:
        return _context(self.trace_id, self.span_id, False, self.state)

    def is_recording(self) -> bool:
        return not self._end

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._end:
            self._attributes[key] = value if type(value) in _SCALARS else _valid(value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if not self._end:
            own = self._attributes
            for key, value in attributes.items():
                own[key] = value if type(value) in _SCALARS else _valid(value)

    def _own_extras(self) -> list[Any]:
        extras = self._extras
        if extras is None:
            extras = self._extras = [None, None, None, None]
        return extras

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end:
            return
        extras = self._own_extras()
        if extras[0] is None:
            extras[0] = []
        if len(extras[0]) < _MAX_EVENTS:
            extras[0].append((name, attributes, timestamp or _time_ns()))

    def update_name(self, name: str) -> None:
        if not self._end:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if not self._end:
            made = status if isinstance(status, Status) else Status(status, description)
            self._own_extras()[1] = made

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
        if self._end:
            return
        self._end = end = end_time or _time_ns()
        ended = (
            self._name,
            self.trace_id,
            self.span_id,
            self.parent_id,
            self._kind,
            self._extras,
            self._start,
            end,
            self._attributes,
        )
        tracer = self._tracer
        pending = tracer._pending
        if pending is not None and len(pending) < tracer._room:
            pending += ended  # one C call: the exporter thread sees all of it or none
        else:
            tracer.finish(ended)


def new_span(
    tracer: LeanTracer,
    name: str,
    trace_id: int,
    parent_id: int,
    state: TraceState | None,
    foreign: SpanContext | None,
    kind: SpanKind,
    attributes: Attributes,
    start: int = 0,
) -> LeanSpan:
    """A new `LeanSpan` (its own id, under ``parent_id``; ``foreign``: the parent's
    context when it is not a `LeanSpan`), made with ``object.__new__`` and the slots'
    stores: a class's call with an ``__init__`` costs a third more (an invocation makes
    one or two). ``start``: the caller's reading of the clock, 0 for now."""
    made: LeanSpan = _new_object(LeanSpan)
    made._tracer = tracer
    made._name = name
    made.trace_id = trace_id
    made.span_id = _random_bits(64) or 1
    made.parent_id = parent_id
    made.state = state
    made._kind = kind
    # a dict is the caller's to give away (`Instruments` builds a fresh one per span)
    made._attributes = attributes if type(attributes) is dict else dict(attributes or ())
    # `Ended`'s extras, made when the span first has one: [events, status, the parent's
    # context when it is not a LeanSpan, trace state]
    made._extras = None if foreign is None and state is None else [None, None, foreign, state]
    made._end = 0
    made._start = start or _time_ns()
    return made


LeanTracer.span_type = LeanSpan
LeanTracer.new_span = staticmethod(new_span)

Ended = Sequence[Any]
"""An ended `LeanSpan`, as `_FIELDS` values: name, trace id, span id, parent span id (0
for a root), its ``SpanKind``, None or (events, status, the parent's context when it is
not a `LeanSpan`, trace state), start and end (ns), attributes. `SpanBatcher` keeps these
in one list, not an object per span: an ended span waiting for its batch is then nothing
the garbage collector counts or promotes (its attributes dict holds only text, numbers
and untracked tuples, so it is not tracked either). Per-span objects alive that long made
collections twice as frequent, and full ones come sooner."""

_FIELDS: Final = 9
