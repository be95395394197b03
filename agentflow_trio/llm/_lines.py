"""Incremental, bounded decoders for streamed bodies: SSE (OpenAI, Azure) and NDJSON (Ollama).

Both take raw byte chunks as they arrive (`feed`) and return the JSON payloads completed by
that chunk. A line longer than ``max_line`` bytes, or an SSE event whose data lines add up
to more, raises `ResponseFormatError` instead of buffering without bound. `finish` is
called at end of body: a stream that ended before its terminator (``data: [DONE]`` for
SSE, an object with ``"done": true`` for NDJSON) raises `ResponseFormatError`, so a
truncated stream is an error, never a silent short answer.
"""

from __future__ import annotations

from typing import Any, Final

from .. import _json
from ..errors import ResponseFormatError

__all__ = ["DEFAULT_MAX_LINE", "NDJSONDecoder", "SSEDecoder", "excerpt"]

DEFAULT_MAX_LINE: Final = 1 << 20
"""Longest line, and longest SSE event (bytes), a stream decoder accepts: 1 MiB."""

_EXCERPT: Final = 200


def excerpt(body: bytes | str, limit: int = _EXCERPT) -> str:
    """The start of ``body`` as one line of at most ``limit`` characters, for error messages."""
    text = body[: limit * 4].decode("utf-8", "replace") if isinstance(body, bytes) else body
    return " ".join(text[: limit * 2].split())[:limit]


class _Lines:
    """Splits byte chunks into complete lines, holding back the unterminated tail."""

    __slots__ = ("_max", "_tail")

    def __init__(self, max_line: int) -> None:
        self._tail = b""
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        if self._tail:
            data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()
        if len(data) > self._max and max(len(x) for x in (*lines, self._tail)) > self._max:
            raise ResponseFormatError(
                f"stream line longer than {self._max} bytes", excerpt=excerpt(data)
            )
        return lines

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail


def _loads(payload: bytes) -> Any:
    try:
        return _json.loads(payload)
    except _json.JSONDecodeError as exc:
        raise ResponseFormatError(
            f"malformed JSON in stream: {exc}", excerpt=excerpt(payload)
        ) from exc


class SSEDecoder:
    """Server-sent events to JSON payloads; ``data: [DONE]`` ends the stream (`done`).

    Only ``data`` fields matter to the model APIs; comments and other fields are skipped.
    Multi-line data is joined with newlines, as the SSE spec says; an event's data may not
    exceed ``max_line`` bytes in all either.
    """

    __slots__ = ("_data", "_lines", "_max", "_size", "done")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._lines = _Lines(max_line)
        self._data: list[bytes] = []
        self._max = max_line
        self._size = 0
        self.done = False

    def feed(self, data: bytes) -> list[Any]:
        """Payloads of the events completed by ``data``."""
        return self._decode(self._lines.feed(data))

    def finish(self) -> list[Any]:
        """Payloads left at end of body; raises `ResponseFormatError` if ``[DONE]`` never came."""
        out = self._decode([self._lines.flush(), b""])
        if not self.done:
            raise ResponseFormatError("event stream ended before data: [DONE]")
        return out

    def _decode(self, lines: list[bytes]) -> list[Any]:
        out: list[Any] = []
        for line in lines:
            if self.done:
                break
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    payload = b"\n".join(self._data)
                    self._data = []
                    self._size = 0
                    if payload == b"[DONE]":
                        self.done = True
                    else:
                        out.append(_loads(payload))
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
                self._size += len(value)
                if self._size > self._max:
                    raise ResponseFormatError(
                        f"stream event longer than {self._max} bytes", excerpt=excerpt(value)
                    )
        return out


class NDJSONDecoder:
    """Newline-delimited JSON objects; an object with ``"done": true`` ends the stream."""

    __slots__ = ("_lines", "done")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._lines = _Lines(max_line)
        self.done = False

    def feed(self, data: bytes) -> list[Any]:
        """Objects completed by ``data``."""
        return self._decode(self._lines.feed(data))

    def finish(self) -> list[Any]:
        """Objects left at end of body; raises `ResponseFormatError` if none said done."""
        out = self._decode([self._lines.flush()])
        if not self.done:
            raise ResponseFormatError('NDJSON stream ended before an object with "done": true')
        return out

    def _decode(self, lines: list[bytes]) -> list[Any]:
        out: list[Any] = []
        for line in lines:
            if self.done:
                break
            if not line.strip():
                continue
            obj = _loads(line)
            if isinstance(obj, dict) and obj.get("done") is True:
                self.done = True
            out.append(obj)
        return out
