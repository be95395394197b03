"""Events, results and errors to and from the bytes kept in Redis (JSON), and the bounds
of a stream entry, checked where it is made (`entry_fields`) and where it is read
(`decode_entry`).

Encoding is the package's one JSON place (``agentflow_trio._json``: read-only mappings as
objects, sets as arrays). Decoding is strict: a malformed payload raises ``ValueError``
(`MalformedEntry` for an entry, naming the bound that tripped). Bounds of an entry:

* ``MAX_EVENT_BYTES`` (1 MiB): the ``event`` field as sent (as much as ``serve`` takes);
  the default of ``max_bytes``, which callers take from ``distributed.max_event_bytes``;
* ``MAX_DEPTH`` (64): how deep the event's JSON nests;
* ``MAX_NAME_LENGTH`` (256 characters): the event id and type;
* ``MAX_TIMEOUT`` (7 days, as ``runner.event_timeout``): the ``timeout`` field, a
  number of seconds > 0 (no NaN, no infinity: a remote event always has a bound).

A stored result's ``usage`` (`RunUsage.to_dict`) is read back with each figure an
integer between 0 and 10**15 (cost: a number or null) and at most ``MAX_USAGE_KEYS``
(256) models or deployments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import attrs

from .._json import dumps, loads
from ..errors import ConfigError, MalformedEntry
from ..events import AgentResult, ErrorInfo, Event, Outcome
from ..observability import tracing as _tracing
from ..usage import RunUsage

__all__ = [
    "MAX_DEPTH",
    "MAX_EVENT_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_TIMEOUT",
    "MAX_USAGE_KEYS",
    "decode_entry",
    "decode_error",
    "decode_event",
    "decode_result",
    "encode_error",
    "encode_event",
    "encode_result",
    "entry_event_id",
    "entry_fields",
]

MAX_EVENT_BYTES: Final = 1 << 20
MAX_DEPTH: Final = 64
MAX_NAME_LENGTH: Final = 256
MAX_TIMEOUT: Final = 7 * 86400.0
MAX_USAGE_KEYS: Final = 256
_TRACEBACK_LIMIT: Final = 16384  # bytes of traceback kept with a stored error


def encode_event(event: Event) -> bytes:
    """The event as JSON (``type``, ``data``, ``metadata``, ``id``, ``created_at``).

    Raises:
        TypeError: ``data`` or ``metadata`` holds something JSON cannot encode.
    """
    return dumps(
        {
            "type": event.type,
            "data": event.data,
            "metadata": event.metadata,
            "id": event.id,
            "created_at": event.created_at,
        }
    )


def decode_event(payload: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """The inverse of `encode_event`. Raises ``ValueError`` on a malformed payload
    (`MalformedEntry` when it breaks a shape rule or a bound of the module docstring;
    ``max_bytes`` is the size bound)."""
    if len(payload) > max_bytes:
        raise _too_big(len(payload), max_bytes)
    try:
        obj = _object(payload)
    except ValueError as exc:  # orjson stops at 1024 levels: "depth limit exceeded"
        if "depth" in str(exc):
            raise _too_deep() from None
        raise
    data, metadata = obj.get("data", {}), obj.get("metadata", {})
    created_at = obj.get("created_at")
    if not isinstance(data, dict) or not isinstance(metadata, dict):
        raise MalformedEntry("the event's data and metadata must be JSON objects")
    if isinstance(created_at, bool) or not isinstance(created_at, int | float):
        raise MalformedEntry(f"the event's created_at must be a number, got {created_at!r}")
    if not math.isfinite(created_at):
        raise MalformedEntry("the event's created_at must be finite")
    if _depth(obj) > MAX_DEPTH:
        raise _too_deep()
    return Event(
        _name(obj.get("type"), "type"), data, metadata, _name(obj.get("id"), "id"), created_at
    )


def entry_event_id(fields: Mapping[bytes, bytes], entry_id: str) -> str:
    """The entry's ``id`` field if it is a well-formed event id, else ``entry_id`` (so
    that even a poison entry's outcome is stored under a short, known key)."""
    try:
        return _name(fields.get(b"id", b"").decode(), "id")
    except (UnicodeDecodeError, MalformedEntry):
        return entry_id


def decode_entry(
    fields: Mapping[bytes, bytes], event_id: str, *, max_bytes: int = MAX_EVENT_BYTES
) -> tuple[Event, float | None]:
    """The event of a stream entry and its run timeout (None: the worker's own rules);
    ``max_bytes`` bounds the ``event`` field.

    Raises:
        MalformedEntry: a field is missing or malformed, or breaks a bound (see the module
            docstring); the message says which. ``event_id`` is `entry_event_id`'s.
    """
    if b"id" not in fields or fields[b"id"] != event_id.encode():
        raise MalformedEntry("the entry's id field is missing or not a valid event id")
    payload = fields.get(b"event")
    if payload is None:
        raise MalformedEntry("the entry has no event field")
    try:
        event = decode_event(payload, max_bytes=max_bytes)
    except MalformedEntry:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise MalformedEntry(f"the event is not valid JSON of an event: {exc}") from None
    if event.id != event_id:
        raise MalformedEntry(f"the event's id {event.id!r} is not the entry's {event_id!r}")
    if _tracing.active is not None:  # the producer's span: the worker's event joins its trace
        event = _traced(event, fields.get(b"traceparent"))
    raw = fields.get(b"timeout")
    if raw is None:
        return event, None
    try:
        text = raw.decode("ascii")
        timeout = float(text)
    except (UnicodeDecodeError, ValueError):
        raise MalformedEntry(f"the entry's timeout {raw[:40]!r} is not a number") from None
    try:
        return event, check_timeout(timeout, "timeout")
    except ConfigError as exc:
        message = f"the entry's {exc} (MAX_TIMEOUT)"
        raise MalformedEntry(message, bound="MAX_TIMEOUT", limit=MAX_TIMEOUT) from None


def entry_fields(
    event: Event, timeout: float | None, *, max_bytes: int = MAX_EVENT_BYTES
) -> dict[str | bytes, bytes | str]:
    """The stream fields of ``event``, checked against the bounds a worker applies
    (``max_bytes``: the size bound), so that what a producer sends is never
    dead-lettered as malformed.

    Raises:
        TypeError: ``event`` is not an `Event`, or its ``data`` or ``metadata`` holds
            something JSON cannot encode.
        ConfigError: ``timeout`` is NaN, not positive, infinite or over ``MAX_TIMEOUT``.
        MalformedEntry: the event breaks a shape rule or a bound (``type`` or ``id``
            not a string of 1 to 256 characters, data not a mapping, too big, too deep).
    """
    if not isinstance(event, Event):
        raise TypeError(f"expected an Event, got {event!r}")
    fields: dict[str | bytes, bytes | str] = {"id": event.id}
    if timeout is not None:
        fields["timeout"] = repr(check_timeout(timeout, "timeout"))
    payload = encode_event(event)
    # Exactly what the worker checks: shape, size, depth, names.
    decode_event(payload, max_bytes=max_bytes)
    fields["event"] = payload
    if _tracing.active is not None:  # carried so the worker's spans join this trace
        traceparent = _tracing.active.traceparent()
        if traceparent is not None:
            fields["traceparent"] = traceparent
    return fields


def _traced(event: Event, raw: bytes | None) -> Event:
    """``event`` with the entry's ``traceparent`` in its metadata, where the runner looks
    for the parent of an event emitted outside any span (garbage is ignored)."""
    traceparent = _tracing.parse_traceparent(raw)
    if traceparent is None:
        return event
    return attrs.evolve(event, metadata={**event.metadata, "traceparent": traceparent})


def check_timeout(value: object, key: str, *, upper: float = MAX_TIMEOUT) -> float:
    """``value`` as seconds: a number > 0 and <= ``upper`` (``math.inf`` is allowed only
    when ``upper`` is).

    Raises:
        ConfigError: NaN, not positive, over ``upper``, a bool or not a number.
    """
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= upper:
        return float(value)
    limit = "" if upper == math.inf else f" and at most {upper:g}"
    raise ConfigError(f"expected a number of seconds > 0{limit}, got {value!r}", key=key)


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH:
        raise MalformedEntry(
            f"the event's {what} must be a string of 1 to {MAX_NAME_LENGTH} characters "
            "(MAX_NAME_LENGTH)",
            bound="MAX_NAME_LENGTH",
            limit=MAX_NAME_LENGTH,
        )
    return value


def _depth(obj: Any) -> int:
    """How deep ``obj`` nests (a scalar: 0), without recursion; stops past MAX_DEPTH."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        stack.extend((child, level + 1) for child in item if isinstance(child, dict | list))
    return deepest


def _too_big(size: int, limit: int) -> MalformedEntry:
    return MalformedEntry(
        f"the event is {size} bytes, over the bound of {limit} "
        "(MAX_EVENT_BYTES, distributed.max_event_bytes)",
        bound="MAX_EVENT_BYTES",
        limit=limit,
    )


def _too_deep() -> MalformedEntry:
    return MalformedEntry(
        f"the event's JSON nests deeper than {MAX_DEPTH} levels (MAX_DEPTH)",
        bound="MAX_DEPTH",
        limit=MAX_DEPTH,
    )


def _error_obj(info: ErrorInfo) -> dict[str, str]:
    return {
        "type": info.type,
        "message": info.message,
        "traceback": info.traceback[-_TRACEBACK_LIMIT:],
    }


def encode_error(info: ErrorInfo) -> bytes:
    """An `ErrorInfo` as JSON, the traceback cut to its last 16 KiB."""
    return dumps(_error_obj(info))


def decode_error(payload: bytes) -> ErrorInfo:
    """The inverse of `encode_error`. Raises ``ValueError`` on a malformed payload."""
    return _error_from(_object(payload))


def _error_from(obj: Any) -> ErrorInfo:
    if not isinstance(obj, dict):
        raise ValueError("malformed error")
    return ErrorInfo(
        str(obj.get("type", "Error")), str(obj.get("message", "")), str(obj.get("traceback", ""))
    )


def encode_result(result: AgentResult) -> bytes:
    """A result as JSON.

    Raises:
        TypeError: ``output`` holds something JSON cannot encode.
    """
    error = result.error
    return dumps(
        {
            "outcome": result.outcome.value,
            "output": result.output,
            "error": _error_obj(error) if error is not None else None,
            "event_id": result.event_id,
            "agent": result.agent,
            "usage": result.usage.to_dict() if result.usage is not None else None,
        }
    )


def decode_result(payload: bytes) -> AgentResult:
    """The inverse of `encode_result`. Raises ``ValueError`` on a malformed payload."""
    obj = _object(payload)
    try:
        error, usage = obj.get("error"), obj.get("usage")
        return AgentResult(
            Outcome(obj["outcome"]),
            obj.get("output"),
            _error_from(error) if error is not None else None,
            obj.get("event_id"),
            obj.get("agent"),
            RunUsage.from_dict(usage, max_keys=MAX_USAGE_KEYS) if usage is not None else None,
        )
    except KeyError as exc:
        raise ValueError(f"malformed result: {exc!r}") from None


def _object(payload: bytes) -> dict[str, Any]:
    try:
        obj = loads(payload)
    except RecursionError:  # the stdlib fallback on very deep input (orjson: ValueError)
        raise ValueError("JSON nests too deep (depth limit exceeded)") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj
