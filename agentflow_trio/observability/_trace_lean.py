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
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final, final, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk import environment_variables as env
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from ._trace_context import RUNTIME, attach, current_span

__all__ = ["Ended", "LeanSpan", "LeanTracer", "SpanBatcher", "readable"]

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
_CLIENT: Final = SpanKind.CLIENT
_KINDS: Final = tuple(sorted(SpanKind, key=lambda kind: kind.value))  # by value: 0 to 4
_SCOPE: Final = InstrumentationScope("agentflow_trio")
_HAND_OFF: Final = 0.002  # seconds a full batch waits for the exporter thread to take it
_LAST_HAND_OFF: Final = 0.02  # ... and a full queue, when that thread is not exporting
_new_tuple: Final = tuple.__new__
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

    def __init__(
        self, finish: Callable[[Ended], None], ratio: float, batcher: SpanBatcher | None = None
    ) -> None:
        self.finish = finish
        self._bound = round(max(0.0, min(1.0, ratio)) * (1 << 64))
        # ``batcher``: `finish` is its `add`, whose common case (room in the batch) an
        # ending span does itself, without a call: extend its list
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
            return LeanSpan(
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
            made = LeanSpan(
                self, name, parent.trace_id, parent.span_id, parent.state, None, kind, attributes
            )
        else:
            made = self._start_below(parent, name, kind, attributes)
        var.set(Context({**previous, key: made}))
        return made, previous

    def ids(self) -> tuple[int, int, int, TraceState | None] | trace.Span | None:
        """Ids for a span under the current one, made later or never (`record`): (trace
        id, its span id, the parent's span id, trace state). A new trace that sampling
        drops gives its non-recording span instead; None: the current span is not a
        `LeanSpan` (`start_span` then makes the span)."""
        parent = current_span()
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
        made = LeanSpan(self, name, trace_id, parent_id, state, None, kind, attributes, start)
        made.span_id = span_id
        return made

    def record(
        self,
        name: str,
        ids: tuple[int, int, int, TraceState | None],
        start: int,
        end: int,
        attributes: dict[str, Any],
    ) -> None:
        """Record an internal span of `ids` that has ended and that nothing held (no
        status, no events): its fields go to the batch as `LeanSpan.end` sends them,
        without a span object."""
        trace_id, span_id, parent_id, state = ids
        extras = None if state is None else (None, None, None, state)
        ended = (name, trace_id, span_id, parent_id, 0, extras, start, end, attributes)
        pending = self._pending
        if pending is not None and len(pending) < self._room:
            pending += ended  # one C call: the exporter thread sees all of it or none
        else:
            self.finish(ended)

    def begin(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> list[Any] | None:
        """A span under the current one that runs with nothing holding it (a model
        call's: ``Instruments.open_chat``), as its `Ended` fields in a list; None when the
        current span is not a `LeanSpan`. `close` ends it; `held` makes it a span."""
        parent = current_span()
        if type(parent) is not LeanSpan:
            return None
        state = parent.state
        return [
            name,
            parent.trace_id,
            _random_bits(64) or 1,
            parent.span_id,
            0 if kind is _INTERNAL else 2 if kind is _CLIENT else kind.value,
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
        events, status, foreign, state = extras or (None, None, None, None)
        made = LeanSpan(
            self, name, trace_id, parent_id, state, foreign, _KINDS[kind], attributes, start
        )
        made.span_id = span_id
        made._events = events
        made._status = status
        return made

    @staticmethod
    def note_event(record: list[Any], name: str, attributes: Attributes) -> None:
        """Add an event to an open `begin` record (``LeanSpan.add_event``'s rules)."""
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
                return LeanSpan(
                    self, name, found.trace_id, found.span_id, state, found, kind, attributes,
                    start,
                )  # fmt: skip
            trace_id, state = found.trace_id, found.trace_state
        else:
            trace_id = _random_bits(128) or 1
            if (trace_id & _LOW_64) < self._bound:
                return LeanSpan(self, name, trace_id, 0, None, None, kind, attributes, start)
            state = None
        made = SpanContext(trace_id, _random_bits(64) or 1, False, _NOT_SAMPLED, state)
        return trace.NonRecordingSpan(made)


@final
class LeanSpan(trace.Span):
    """A recording span: ids as ints, attributes in a dict, events as tuples; `end` hands
    it to its tracer's ``finish`` once. ``parent_id`` is 0 for a root."""

    __slots__ = (
        "_attributes",
        "_end",
        "_events",
        "_foreign",
        "_kind",
        "_name",
        "_start",
        "_status",
        "_tracer",
        "parent_id",
        "span_id",
        "state",
        "trace_id",
    )

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        trace_id: int,
        parent_id: int,
        state: TraceState | None,
        foreign: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        start: int = 0,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self.trace_id = trace_id
        self.span_id = _random_bits(64) or 1
        self.parent_id = parent_id
        self.state = state
        self._foreign = foreign  # the parent's context when it is not a LeanSpan
        self._kind = kind
        # a dict is the caller's to give away (`Instruments` builds a fresh one per span)
        self._attributes: dict[str, Any] = (
            attributes if type(attributes) is dict else dict(attributes or ())
        )
        self._events: list[tuple[str, Attributes, int]] | None = None
        self._status: Status | None = None
        self._end = 0
        self._start = start or _time_ns()  # ``start``: the caller read the clock for it

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

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end:
            return
        if self._events is None:
            self._events = []
        if len(self._events) < _MAX_EVENTS:
            self._events.append((name, attributes, timestamp or _time_ns()))

    def update_name(self, name: str) -> None:
        if not self._end:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if not self._end:
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
        if self._end:
            return
        self._end = end = end_time or _time_ns()
        kind = self._kind
        events, status, foreign, state = self._events, self._status, self._foreign, self.state
        ended = (
            self._name,
            self.trace_id,
            self.span_id,
            self.parent_id,
            0 if kind is _INTERNAL else 2 if kind is _CLIENT else kind.value,
            None
            if events is None and status is None and foreign is None and state is None
            else (events, status, foreign, state),
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


LeanTracer.span_type = LeanSpan

Ended = Sequence[Any]
"""An ended `LeanSpan`, as `_FIELDS` values: name, trace id, span id, parent span id (0
for a root), ``SpanKind`` value, None or (events, status, the parent's context when it is
not a `LeanSpan`, trace state), start and end (ns), attributes. `SpanBatcher` keeps these
in one list, not an object per span: an ended span waiting for its batch is then nothing
the garbage collector counts or promotes (its attributes dict holds only text, numbers
and untracked tuples, so it is not tracked either). Per-span objects alive that long made
collections twice as frequent, and full ones come sooner."""

_FIELDS: Final = 9


@final
class Exported(ReadableSpan):
    """An ended span as exporters read it: a ``ReadableSpan`` whose fields are slots.

    Why: the SDK's ``ReadableSpan`` keeps its fields in private attributes behind
    properties, a Python call for every field an exporter reads (OTLP reads fifteen per
    span) and eleven stores in its constructor; here each read and store is a slot's.
    The private names (``to_json`` and the ``dropped_*`` properties read them) are
    aliases of the slots, and ``attributes`` is the span's own dict (read-only by
    contract: nothing writes to an ended span)."""

    __slots__ = (
        "attributes",
        "context",
        "end_time",
        "events",
        "kind",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )

    links: Sequence[trace.Link] = ()
    instrumentation_scope: InstrumentationScope | None = _SCOPE
    dropped_attributes = dropped_events = dropped_links = 0

    _name = property(lambda self: self.name)
    _context = property(lambda self: self.context)
    _parent = property(lambda self: self.parent)
    _attributes = property(lambda self: self.attributes)
    _kind = property(lambda self: self.kind)
    _start_time = property(lambda self: self.start_time)
    _end_time = property(lambda self: self.end_time)
    _status = property(lambda self: self.status)
    _events = property(lambda self: self.events)
    _resource = property(lambda self: self.resource)
    _links = property(lambda self: self.links)
    _instrumentation_scope = property(lambda self: self.instrumentation_scope)
    _instrumentation_info = None


_new_exported: Final = object.__new__


def readable(ended: Ended, resource: Resource) -> ReadableSpan:
    """The SDK's view of an ended span, what exporters take (made at export)."""
    name, trace_id, span_id, parent_id, kind, extras, start, end, attributes = ended
    if extras is None:
        events = status = state = None
        parent = _context(trace_id, parent_id, False, None) if parent_id else None
    else:
        events, status, foreign, state = extras
        if foreign is not None:
            parent = foreign
        else:
            parent = _context(trace_id, parent_id, False, state) if parent_id else None
    made: Any = _new_exported(Exported)  # slots, which mypy takes for the properties
    made.name = name
    made.context = _context(trace_id, span_id, False, state)
    made.parent = parent
    made.resource = resource
    made.attributes = attributes
    made.events = tuple([Event(n, a, t) for n, a, t in events]) if events else ()
    made.kind = _KINDS[kind]
    made.status = status or _UNSET
    made.start_time = start
    made.end_time = end
    span: ReadableSpan = made
    return span


@final
class _Readable(Sequence[ReadableSpan]):
    """A run of `Ended` fields as the ``ReadableSpan`` sequence exporters take, each span
    made as it is read: an exporter encoding span by span (OTLP) never holds them all."""

    __slots__ = ("_fields", "resource")

    def __init__(self, fields: list[Any], resource: Resource) -> None:
        self._fields = fields
        self.resource = resource

    def __len__(self) -> int:
        return len(self._fields) // _FIELDS

    @overload
    def __getitem__(self, index: int) -> ReadableSpan: ...

    @overload
    def __getitem__(self, index: slice) -> list[ReadableSpan]: ...

    def __getitem__(self, index: int | slice) -> ReadableSpan | list[ReadableSpan]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        at = index * _FIELDS
        return readable(self._fields[at : at + _FIELDS], self.resource)

    def __iter__(self) -> Iterator[ReadableSpan]:
        # A span without events, status or trace state (most) is made right here: no
        # slice, no call per span or per id (a third of the export thread's work).
        resource, new, kinds, make = self.resource, _new_tuple, _KINDS, _new_exported
        each = iter(self._fields)
        for ended in zip(*(each,) * _FIELDS, strict=True):  # whole spans only
            name, trace_id, span_id, parent_id, kind, extras, start, end, attributes = ended
            if extras is not None:
                yield readable(ended, resource)
                continue
            made: Any = make(Exported)
            made.name = name
            made.context = new(SpanContext, (trace_id, span_id, False, _SAMPLED, _NO_STATE, True))
            made.parent = (
                new(SpanContext, (trace_id, parent_id, False, _SAMPLED, _NO_STATE, True))
                if parent_id
                else None
            )
            made.resource = resource
            made.attributes = attributes
            made.events = ()
            made.kind = kinds[kind]
            made.status = _UNSET
            made.start_time = start
            made.end_time = end
            yield made

    def batches(self, size: int) -> Iterator[_Readable]:
        """This run cut in runs of at most ``size`` spans."""
        step = size * _FIELDS
        for at in range(0, len(self._fields), step):
            yield _Readable(self._fields[at : at + step], self.resource)


def _setting(name: str, default: int) -> int:
    """An ``OTEL_BSP_*`` integer (the SDK's batch settings), ``default`` when unset or bad."""
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        _log.warning("%s is not an integer: using %d", name, default)
        return default
    return value if value > 0 else default


@final
class SpanBatcher:
    """Ended spans (`Ended`), exported by a background thread in batches.

    The SDK's ``BatchSpanProcessor`` settings: a batch leaves every
    ``OTEL_BSP_SCHEDULE_DELAY`` ms (5000) or as soon as ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``
    spans (512) wait; past ``OTEL_BSP_MAX_QUEUE_SIZE`` (2048, at least two batches) new
    spans are dropped and counted (`dropped`). `add` (and an ending `LeanSpan`
    itself) is a list extension and a length check.

    The hand-off: a thread woken while the event loop keeps the GIL busy can wait for it
    indefinitely (the loop drops and retakes it at every ``epoll``, which restarts the
    waiter's switch timer), so the SDK's processor drops spans under load. Here the thread
    that fills a batch waits, without the GIL, up to 2 ms for the exporter thread to take
    it (20 ms when the queue is full and that thread idle: it was not scheduled yet); the
    exporter thread makes the ``ReadableSpan`` values as the exporter reads them. A slow
    exporter is not waited for: spans wait in the queue, and past it are dropped.
    """

    __slots__ = (
        "_batch",
        "_closing",
        "_delay",
        "_exporter",
        "_exporting",
        "_limit",
        "_pending",
        "_resource",
        "_taken",
        "_thread",
        "_wake",
        "_woken",
        "dropped",
    )

    def __init__(self, exporter: SpanExporter, resource: Resource) -> None:
        self._exporter = exporter
        self._resource = resource
        self._delay = _setting(env.OTEL_BSP_SCHEDULE_DELAY, 5000) / 1000
        self._batch = _setting(env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE, 512)
        self._limit = max(_setting(env.OTEL_BSP_MAX_QUEUE_SIZE, 2048), 2 * self._batch)
        # `Ended` fields, one span after another: spans join it whole (one C call, here
        # or in `LeanSpan.end`) and leave it whole (the exporter thread's one `del`)
        self._pending: list[Any] = []
        self._wake = threading.Event()  # set: spans to take (a full batch, or closing)
        self._taken = threading.Event()  # set: the exporter thread took what waited
        self._woken = False
        self._exporting = False  # the exporter thread is in an export: waiting is vain
        self._closing = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="agentflow-span-export", daemon=True)
        self._thread.start()

    def add(self, span: Ended) -> None:
        """Queue an ended span (any thread); a full batch goes to the exporter thread."""
        waiting = len(self._pending) // _FIELDS
        if waiting < self._batch:
            self._pending += span  # one C call: the exporter thread sees all of it or none
        elif self._closing:  # shut down: nothing takes spans any more
            self.dropped += 1
        elif waiting < self._limit:
            self._pending += span
            if not self._woken or waiting % self._batch == 0:
                self._hand_off(_HAND_OFF)
        elif not self._exporting and self._hand_off(_LAST_HAND_OFF):
            self._pending += span
        else:
            self.dropped += 1

    def _hand_off(self, timeout: float) -> bool:
        """Wake the exporter thread and wait (``timeout`` seconds at most) until it took
        the queue: whether it did."""
        self._woken = True
        self._taken.clear()
        self._wake.set()
        return self._taken.wait(timeout)

    def _run(self) -> None:
        otel_context.attach(
            otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
        )
        closing = False
        while not closing:
            self._wake.wait(self._delay)
            self._wake.clear()
            closing = self._closing
            pending = self._pending
            size = len(pending)  # whole spans: add extends the list in one call
            taken = _Readable(pending[:size], self._resource)
            del pending[:size]
            self._woken = False
            self._exporting = True
            self._taken.set()
            for batch in taken.batches(self._batch):
                self._export(batch)
            self._exporting = False

    def _export(self, batch: _Readable) -> None:
        try:
            self._exporter.export(batch)
        except Exception:  # an exporter's failure must not end the thread
            _log.exception("exporting %d spans failed", len(batch))

    def shutdown(self, timeout: float = 30.0) -> None:
        """Export what waits (within ``timeout`` seconds), then shut the exporter down."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)
        if self.dropped:
            _log.warning("%d spans were dropped: the export queue was full", self.dropped)
        self._exporter.shutdown()
