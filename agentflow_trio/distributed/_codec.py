"""Events, results and errors to and from the bytes kept in Redis (JSON).

Encoding is the package's one JSON place (``agentflow_trio._json``: read-only mappings as
objects, sets as arrays). Decoding is strict: a malformed payload raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any, Final

from .._json import dumps, loads
from ..events import AgentResult, ErrorInfo, Event, Outcome

__all__ = [
    "decode_error",
    "decode_event",
    "decode_result",
    "encode_error",
    "encode_event",
    "encode_result",
]

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


def decode_event(payload: bytes) -> Event:
    """The inverse of `encode_event`. Raises ``ValueError`` on a malformed payload."""
    obj = _object(payload)
    try:
        return Event(
            str(obj["type"]),
            dict(obj.get("data") or {}),
            dict(obj.get("metadata") or {}),
            str(obj["id"]),
            float(obj["created_at"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed event: {exc!r}") from None


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
        }
    )


def decode_result(payload: bytes) -> AgentResult:
    """The inverse of `encode_result`. Raises ``ValueError`` on a malformed payload."""
    obj = _object(payload)
    try:
        error = obj.get("error")
        return AgentResult(
            Outcome(obj["outcome"]),
            obj.get("output"),
            _error_from(error) if error is not None else None,
            obj.get("event_id"),
            obj.get("agent"),
        )
    except KeyError as exc:
        raise ValueError(f"malformed result: {exc!r}") from None


def _object(payload: bytes) -> dict[str, Any]:
    obj = loads(payload)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj
