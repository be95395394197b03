"""What may go on the wire as JSON: agent output made strict JSON, or refused with a reason,
the two ASGI calls that send an answer (`send_body`, `reply_json`), and the name of the
disconnect callback ``server._http`` offers the app (`DISCONNECT_EXTENSION`).

``serve`` answers with what agents return, and agents return anything (`result_json` is
the wire form of a result, streamed or not). `to_json_bytes`
turns a value into RFC 8259 JSON or raises `NotJSON` naming the first problem by its path
(``output.items[3]``): orjson would write NaN as ``null`` (silent corruption) and the
standard library would write ``NaN`` (not JSON); a deep value would exhaust either's
recursion. Rules:

- ``None``, ``bool``, ``int`` and ``str`` pass; a ``float`` passes if finite.
- Mappings with ``str`` keys become objects; lists and tuples arrays; sets and frozensets
  arrays (as everywhere in the package, `agentflow_trio._json`); attrs instances and
  dataclasses objects of their fields; enums their value.
- Anything else (``bytes``, arbitrary objects), a non-finite float, a non-``str`` key or
  nesting deeper than `MAX_DEPTH` raises `NotJSON`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final, TypeAlias

import attrs

from .. import _json
from ..events import AgentResult

__all__ = [
    "DISCONNECT_EXTENSION",
    "JSON_TYPE",
    "MAX_DEPTH",
    "DisconnectWatch",
    "NotJSON",
    "Receive",
    "Scope",
    "Send",
    "reply_json",
    "result_json",
    "send_body",
    "to_json_bytes",
]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]

DisconnectWatch: TypeAlias = Callable[[Callable[[], None]], Callable[[], None]]
"""``watch(callback) -> unwatch``: see `DISCONNECT_EXTENSION`."""
DISCONNECT_EXTENSION: Final = "agentflow.disconnect"
"""The ASGI scope extension of ``server._http``: ``watch(callback) -> unwatch`` calls
``callback()`` once the client has gone (at once if it already has)."""

MAX_DEPTH: Final = 128
"""Deepest nesting of arrays and objects sent (the result's own envelope included)."""
JSON_TYPE: Final = b"application/json"


class NotJSON(ValueError):
    """A value cannot be sent as JSON; the message names where and why."""


def result_json(result: AgentResult) -> dict[str, Any]:
    """The wire form of a result (tracebacks stay on the server); ``usage`` (the
    `RunUsage` figures) is there when the event made a model call."""
    error = result.error
    body = {
        "id": result.event_id,
        "status": "done",
        "outcome": result.outcome.value,
        "output": result.output,
        "error": None if error is None else {"type": error.type, "message": error.message},
        "agent": result.agent,
    }
    if result.usage is not None:
        body["usage"] = result.usage.to_dict()
    return body


def to_json_bytes(value: Any, where: str = "body") -> bytes:
    """``value`` as compact UTF-8 JSON, strictly (see the module docstring).

    Raises:
        NotJSON: ``value`` holds something JSON cannot carry; ``where`` starts the path.
    """
    try:
        plain = _plain(value, 0)
    except _Problem as problem:
        path = where + "".join(reversed(problem.path))
        if len(path) > 200:
            path = f"{path[:120]}...{path[-60:]}"
        raise NotJSON(f"{path} {problem.reason}") from None
    try:
        return _json.dumps(plain)
    except (TypeError, ValueError):  # orjson: integers past 64 bits, lone surrogates
        return json.dumps(plain, separators=(",", ":"), allow_nan=False).encode()


class _Problem(Exception):
    """Raised at the bad value; each level adds its step to ``path`` on the way out."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.path: list[str] = []


def _step(key: object) -> str:
    text = f"[{key}]" if isinstance(key, int) else f".{key}"
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(value: Any, depth: int) -> Any:
    """``value`` made of JSON types only (the same objects where already so)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _Problem(f"is {value!r}: JSON has no NaN or Infinity")
    if depth >= MAX_DEPTH:
        raise _Problem(f"is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Problem(f"has a key of type {type(key).__name__}: JSON keys are strings")
            try:
                out[key] = _plain(item, depth + 1)
            except _Problem as problem:
                problem.path.append(_step(key))
                raise
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = []
        for i, item in enumerate(value):
            try:
                items.append(_plain(item, depth + 1))
            except _Problem as problem:
                problem.path.append(_step(i))
                raise
        return items
    if isinstance(value, enum.Enum):
        return _plain(value.value, depth)
    if attrs.has(type(value)):
        fields = {f.name: getattr(value, f.name) for f in attrs.fields(type(value))}
        return _plain(fields, depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _plain(fields, depth)
    raise _Problem(f"is of type {type(value).__name__}, which JSON cannot carry")


async def reply_json(send: Send, status: int, body: Mapping[str, Any], **headers: str) -> None:
    """Answer ``status`` with ``body`` as strict JSON (`to_json_bytes`); each keyword is a
    header, its underscores sent as dashes (``retry_after`` -> ``retry-after``)."""
    extra = [(name.replace("_", "-"), value) for name, value in headers.items()]
    await send_body(send, status, to_json_bytes(body), JSON_TYPE, extra)


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    """Answer ``status`` with ``body`` in one piece (Content-Length set), plus ``extra``
    headers."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in extra or ()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
