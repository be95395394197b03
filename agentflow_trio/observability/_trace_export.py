"""The export side of the lean tracer: `SpanBatcher`'s thread hands batches of ended
spans (`Ended` records) to any SDK exporter as ``ReadableSpan`` values, made as the
exporter reads them (`Exported`, `readable`). Split from ``_trace_lean`` (which records
the spans) to keep each room small.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Final, final, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk import environment_variables as env
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, Status, StatusCode

from ._trace_lean import _FIELDS, _NO_STATE, _SAMPLED, Ended, _context, _new_tuple

__all__ = ["Exported", "SpanBatcher", "readable"]

_log = logging.getLogger(__name__)

_UNSET: Final = Status(StatusCode.UNSET)
_SCOPE: Final = InstrumentationScope("agentflow_trio")
_HAND_OFF: Final = 0.002  # seconds a full batch waits for the exporter thread to take it
_LAST_HAND_OFF: Final = 0.02  # ... and a full queue, when that thread is not exporting


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
        "kind",
        "name",
        "parent",
        "resource",
        "start_time",
    )

    # most spans have neither: class defaults, set on the instance when they have
    events: Sequence[Event] = ()
    status: Status = _UNSET
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
    if events:
        made.events = tuple([Event(n, a, t) for n, a, t in events])
    made.kind = kind
    if status is not None:
        made.status = status
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
        # slice, no call per span or per id (a third of the export thread's work). A
        # parent's ``SpanContext`` is made once in the run and kept until the parent span
        # itself comes (children end first) and takes it as its own context: one made
        # costs as much as the rest of the span, and a span's own context is not stored.
        resource, new, make = self.resource, _new_tuple, _new_exported
        contexts: dict[int, SpanContext] = {}
        known, taken = contexts.get, contexts.pop
        each = iter(self._fields)
        for ended in zip(*(each,) * _FIELDS, strict=True):  # whole spans only
            name, trace_id, span_id, parent_id, kind, extras, start, end, attributes = ended
            if extras is not None:
                yield readable(ended, resource)
                continue
            made: Any = make(Exported)
            made.name = name
            context = taken(span_id, None)
            if context is None or context[0] != trace_id:
                context = new(SpanContext, (trace_id, span_id, False, _SAMPLED, _NO_STATE, True))
            made.context = context
            if parent_id:
                parent = known(parent_id)
                if parent is None or parent[0] != trace_id:
                    ids = (trace_id, parent_id, False, _SAMPLED, _NO_STATE, True)
                    parent = contexts[parent_id] = new(SpanContext, ids)
                made.parent = parent
            else:
                made.parent = None
            made.resource = resource
            made.attributes = attributes
            made.kind = kind
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
