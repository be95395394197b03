"""Incremental, bounded decoders for streamed bodies: SSE (OpenAI, Azure) and NDJSON (Ollama).

Both take raw byte chunks as they arrive (`feed`) and return the JSON payloads completed by
that chunk. A line longer than ``max_line`` bytes, or an SSE event whose data lines add up
to more, raises `ResponseFormatError` instead of buffering without bound. `finish` is
called at end of body: a stream that ended before its terminator (``data: [DONE]`` for
SSE, an object with ``"done": true`` for NDJSON) raises `ResponseFormatError`, so a
truncated stream is an error, never a silent short answer; `end` is its lenient twin,
for a caller that knows better (the answer's ``finish_reason`` had arrived).

A payload that is not JSON raises `ResponseFormatError` by default. With
``max_malformed=n`` it is skipped and counted (``malformed``) instead, as long as no more
than ``n`` come in a row and at least one payload is valid by the end: one garbage event
in the middle of an answer costs that event, not the answer; a stream of garbage still
fails.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from .. import _json
from ..errors import ResponseFormatError

__all__ = ["DEFAULT_MAX_LINE", "MAX_MALFORMED", "NDJSONDecoder", "SSEDecoder", "excerpt"]

DEFAULT_MAX_LINE: Final = 1 << 20
"""Longest line, and longest SSE event (bytes), a stream decoder accepts: 1 MiB."""

MAX_MALFORMED: Final = 16
"""Malformed payloads in a row the providers' stream decoders skip before giving up."""

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

    def idle(self) -> bool:
        """True when no unterminated line is held back."""
        return not self._tail

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        return tail


class _Payloads:
    """JSON payloads with the malformed-payload policy shared by both decoders."""

    __slots__ = ("_max_malformed", "_run", "malformed", "valid")

    def __init__(self, max_malformed: int) -> None:
        if max_malformed < 0:
            raise ValueError(f"max_malformed must be >= 0, got {max_malformed}")
        self._max_malformed = max_malformed
        self._run = 0
        self.malformed = 0  # payloads skipped so far
        self.valid = 0  # payloads decoded so far

    def loads(self, payload: bytes, out: list[Any]) -> None:
        """Append ``payload`` decoded to ``out``, or skip it (see the module docstring)."""
        try:
            out.append(_json.loads(payload))
        except _json.JSONDecodeError as exc:
            self._run += 1
            if self._run > self._max_malformed:
                many = f"{self._run} malformed payloads in a row; " if self._run > 1 else ""
                raise ResponseFormatError(
                    f"{many}malformed JSON in stream: {exc}", excerpt=excerpt(payload)
                ) from exc
            self.malformed += 1
            return
        self._run = 0
        self.valid += 1

    def counted(self, good: int) -> None:
        """Count ``good`` valid payloads decoded in a row (by `SSEDecoder._bulk`, which
        counts them itself and reports them here once per piece, not once each)."""
        if good:
            self.valid += good
            self._run = 0

    def check_any(self) -> None:
        """At the end of a stream: raise if every payload was malformed."""
        if self.malformed and not self.valid:
            raise ResponseFormatError(
                f"no valid payload in the stream ({self.malformed} malformed, skipped)"
            )


class SSEDecoder:
    """Server-sent events to JSON payloads; ``data: [DONE]`` ends the stream (`done`).

    Only ``data`` fields matter to the model APIs; comments and other fields are skipped.
    Multi-line data is joined with newlines, as the SSE spec says; an event's data may not
    exceed ``max_line`` bytes in all either. ``max_malformed``: see the module docstring;
    ``malformed`` counts the events skipped.
    """

    __slots__ = ("_data", "_json", "_lines", "_max", "_size", "done")

    terminator: ClassVar[str] = "data: [DONE]"

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, *, max_malformed: int = 0) -> None:
        self._lines = _Lines(max_line)
        self._json = _Payloads(max_malformed)
        self._data: list[bytes] = []
        self._max = max_line
        self._size = 0
        self.done = False

    @property
    def malformed(self) -> int:
        """Events skipped because their data was not JSON."""
        return self._json.malformed

    def feed(self, data: bytes) -> list[Any]:
        """Payloads of the events completed by ``data``."""
        lines = self._lines
        if self._data or lines._tail:
            # An event begun in an earlier piece (a piece seldom ends where an event does):
            # its bytes go back in front of this piece, so the rest still takes `_bulk`.
            held = self._size + 7 * len(self._data) + len(lines._tail)
            if held + len(data) > self._max:
                return self._decode(lines.feed(data))  # the bounded, line-by-line way
            data = self._held() + data
        # ``bytes.find``, not ``in``: on Python 3.11 ``b"x" in data`` first tries its operand
        # as an int and pays for the failure (about three times the search).
        if len(data) <= self._max and data.find(b"\r") < 0:
            return self._bulk(data)
        return self._decode(lines.feed(data))

    def _held(self) -> bytes:
        """The event in progress as the bytes it came as (its data lines, then the
        unterminated line), taken out of the decoder."""
        begun = b"".join([b"data: " + value + b"\n" for value in self._data])
        self._data = []
        self._size = 0
        return begun + self._lines.flush()

    def _bulk(self, data: bytes) -> list[Any]:
        """`feed` for the common piece (nothing held back, LF line ends, under the bounds):
        one split on blank lines; an event that is one ``data: `` line (after an ``event:``
        line, say) is decoded at once, any other event and the unfinished tail go through
        the line decoder. The one-line ``data: `` event is tested first (every event of an
        OpenAI stream), and its valid payloads are counted once per piece (`counted`)."""
        events = data.split(b"\n\n")
        tail = events.pop()
        out: list[Any] = []
        payloads = self._json
        loads = _json.loads  # inline: a valid payload costs one decode, no method call
        good = 0  # valid payloads decoded here and not yet counted in ``payloads``
        for event in events:
            if not event.startswith(b"data: ") or event.find(b"\n") >= 0:
                # A named event (Anthropic, Responses) whose one data line comes last is
                # that line; any other event goes through the line decoder.
                cut = event.find(b"\ndata: ") + 1 if event.startswith(b"event: ") else 0
                if cut and event.find(b"\n", cut) < 0:
                    event = event[cut:]
                else:
                    payloads.counted(good)
                    good = 0
                    out += self._decode([*event.split(b"\n"), b""])
                    if self.done:
                        return out
                    continue
            payload = event[6:]
            if payload == b"[DONE]":
                self.done = True
                payloads.counted(good)
                payloads.check_any()
                return out
            try:
                out.append(loads(payload))
            except _json.JSONDecodeError:
                payloads.counted(good)
                good = 0
                payloads.loads(payload, out)  # the malformed policy (raises or counts)
                continue
            good += 1
        payloads.counted(good)
        if tail:
            out += self._decode(self._lines.feed(tail))
        return out

    def finish(self) -> list[Any]:
        """Payloads left at end of body; raises `ResponseFormatError` if ``[DONE]`` never came."""
        out = self.end()
        if not self.done:
            raise ResponseFormatError("event stream ended before data: [DONE]")
        return out

    def end(self) -> list[Any]:
        """Payloads left at end of body, whether ``[DONE]`` came or not.

        Raises `ResponseFormatError` only if every event was malformed.
        """
        out = self._decode([self._lines.flush(), b""])
        self._json.check_any()
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
                        self._json.check_any()
                    else:
                        self._json.loads(payload, out)
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
    """Newline-delimited JSON objects; an object with ``"done": true`` ends the stream.

    ``max_malformed``: see the module docstring; ``malformed`` counts the lines skipped.
    """

    __slots__ = ("_json", "_lines", "done")

    terminator: ClassVar[str] = 'an object with "done": true'

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, *, max_malformed: int = 0) -> None:
        self._lines = _Lines(max_line)
        self._json = _Payloads(max_malformed)
        self.done = False

    @property
    def malformed(self) -> int:
        """Lines skipped because they were not JSON."""
        return self._json.malformed

    def feed(self, data: bytes) -> list[Any]:
        """Objects completed by ``data``."""
        return self._decode(self._lines.feed(data))

    def finish(self) -> list[Any]:
        """Objects left at end of body; raises `ResponseFormatError` if none said done."""
        out = self.end()
        if not self.done:
            raise ResponseFormatError('NDJSON stream ended before an object with "done": true')
        return out

    def end(self) -> list[Any]:
        """Objects left at end of body, done or not (raises only if every line was malformed)."""
        out = self._decode([self._lines.flush()])
        self._json.check_any()
        return out

    def _decode(self, lines: list[bytes]) -> list[Any]:
        out: list[Any] = []
        for line in lines:
            if self.done:
                break
            if not line.strip():
                continue
            before = len(out)
            self._json.loads(line, out)
            if len(out) > before and isinstance(out[-1], dict) and out[-1].get("done") is True:
                self.done = True
                self._json.check_any()
                break
        return out
