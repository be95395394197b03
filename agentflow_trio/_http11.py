"""A lean HTTP/1.1 server connection on a trio stream, parsed by httptools.

One call to :func:`serve_http_connection` owns one connection: it reads requests (bodies with
Content-Length or chunked), hands each complete one to ``handler(request, writer)`` in
arrival order, and keeps the connection alive as HTTP/1.1 allows. It exists because a
benchmark's mock server must cost far less than the client it measures: headers are
pre-built bytes, a whole response is one ``send_all``, and nothing is parsed twice
(``bench/mock_llm.py``). The mock LLM, the live dashboard and the debug server use it.

Guarantees:

- Exactly one handler call per complete request, in order; a request is never dropped
  silently. A body over ``max_body_bytes`` is discarded (bounded) and the request is
  still handed over with ``body_too_large`` set (the handler answers 413 in its own
  format), after which the connection closes.
- Bounds from the client, each answered by this module (JSON error body, then the
  connection closes; the handler is not called):

  ==================  =============  ==================================================
  parameter           default        what trips it
  ==================  =============  ==================================================
  max_header_bytes    64 KiB         request line + headers longer: 431
  header_timeout      10 s           a request head not complete this long after its
                                     first byte (for the first request: after the
                                     connection opened): 408, or a quiet close if no
                                     byte came
  idle_timeout        60 s           no next request this long on a kept-alive
                                     connection: quiet close; a body stalled this long:
                                     408; a response the client does not take this
                                     long: the connection ends
  max_body_bytes      (required)     a larger body: ``body_too_large`` (see above)
  ==================  =============  ==================================================

  After an error answer the connection is closed gracefully: the write side first, then
  at most `LINGER_BYTES` more input is read for at most `LINGER_SECONDS`, so the client
  reads the answer instead of a reset.
- A peer that goes away (``BrokenResourceError`` / ``ClosedResourceError``) ends the
  connection quietly; any other handler error is logged, answered with a 500 when
  possible, and ends only that connection. ``trio.Cancelled`` is never caught.
- The stream is always closed on return.
"""

from __future__ import annotations

import functools
import http
import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import attrs
import httptools
import trio

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_HEADER_BYTES",
    "Request",
    "ResponseWriter",
    "is_loopback_host",
    "serve_http_connection",
]

_log = logging.getLogger("agentflow_trio.http")

RECEIVE_SIZE: Final = 65536
JSON: Final = b"application/json"
DEFAULT_MAX_HEADER_BYTES: Final = 64 * 1024
"""Longest request head (request line and headers) accepted; longer is answered 431."""
DEFAULT_HEADER_TIMEOUT: Final = 10.0
"""Seconds a request head may take to arrive; then 408 (see the module docstring)."""
DEFAULT_IDLE_TIMEOUT: Final = 60.0
"""Seconds the server waits on a silent client (see the module docstring)."""
LINGER_SECONDS: Final = 2.0
LINGER_BYTES: Final = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


@attrs.frozen
class Request:
    """One parsed request. Header names are lower-case bytes; the body is complete."""

    method: bytes
    path: str
    query: str
    headers: dict[bytes, bytes]
    body: bytes
    keep_alive: bool
    body_too_large: bool = False


def is_loopback_host(host: bytes | str | None) -> bool:
    """True if a ``Host`` header value names this machine: ``localhost`` (or a name under
    ``.localhost``), or a loopback address, with or without a port; True when absent.

    A server bound to loopback checks it to refuse DNS rebinding: a web page whose name
    was re-pointed at 127.0.0.1 still sends its own name as the Host.
    """
    if host is None:
        return True
    text = host.decode("latin-1") if isinstance(host, bytes) else host
    text = text.strip().lower()
    if text.startswith("["):
        name = text[1 : text.find("]")] if "]" in text else text[1:]
    else:
        name, colon, port = text.rpartition(":")
        if not colon or not port.isdigit():
            name = text
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _error_body(message: str) -> bytes:
    text = message.replace("\\", "\\\\").replace('"', '\\"')
    return b'{"error":{"message":"%b","type":"invalid_request_error"}}' % text.encode(
        "ascii", "replace"
    )


@functools.lru_cache(maxsize=512)
def _head(status: int, content_type: bytes, close: bool, chunked: bool) -> bytes:
    """The fixed start of a response head, up to (not including) the length or extra headers."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    parts = [f"HTTP/1.1 {status} {phrase}\r\n".encode(), b"content-type: ", content_type, b"\r\n"]
    if close:
        parts.append(b"connection: close\r\n")
    if chunked:
        parts.append(b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n")
    else:
        parts.append(b"content-length: ")
    return b"".join(parts)


def _header_lines(headers: Sequence[tuple[str, str]]) -> bytes:
    lines = []
    for name, value in headers:
        clean = f"{name}: {value}".replace("\r", " ").replace("\n", " ")
        lines.append(clean.encode("latin-1", "replace") + b"\r\n")
    return b"".join(lines)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class ResponseWriter:
    """Writes the responses of one connection; the handler's only way to answer.

    After a response sent with ``close=True`` or ``truncate=True`` the connection ends once
    the handler returns. Send errors (the peer went away, or did not take a response for
    ``idle_timeout``) propagate to the caller as ``trio.BrokenResourceError``.
    """

    __slots__ = ("_send_timeout", "_stream", "closing", "head_only", "keep_alive", "responded")

    def __init__(self, stream: trio.abc.Stream, send_timeout: float = math.inf) -> None:
        self._stream = stream
        self._send_timeout = send_timeout
        self.head_only = False  # answering a HEAD request: headers only, never a body
        self.keep_alive = True
        self.closing = False
        self.responded = False

    async def send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: bytes = JSON,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
        truncate: bool = False,
    ) -> None:
        """Send one complete response with a Content-Length, in a single write.

        ``truncate`` announces the full length, sends half the body, then ends the
        connection: a client sees the response cut short.
        """
        close = self._closes(close or truncate)
        extra = _header_lines(headers) if headers else b""
        out = body[: len(body) // 2] if truncate else body
        if self.head_only:
            out = b""
        head = _head(status, content_type, close, False)
        await self._send_all(b"%b%d\r\n%b\r\n%b" % (head, len(body), extra, out))

    async def send_chunked(
        self,
        status: int,
        parts: Sequence[bytes],
        *,
        content_type: bytes,
        headers: Sequence[tuple[str, str]] = (),
        delay: float = 0.0,
        truncate_after: int | None = None,
    ) -> None:
        """Send ``parts`` as one chunked body, each part its own chunk.

        With ``delay`` > 0 each part is written separately, ``delay`` seconds apart;
        otherwise all are written at once. ``truncate_after=n`` sends only the first ``n``
        parts, no terminating chunk, and ends the connection.
        """
        close = self._closes(truncate_after is not None)
        if truncate_after is not None:
            parts = parts[:truncate_after]
        head = _head(status, content_type, close, True)
        extra = _header_lines(headers) if headers else b""
        frames = [head + extra + b"\r\n"]
        if self.head_only:
            await self._send_all(frames[0])
            return
        frames.extend(_chunk(part) for part in parts)
        if truncate_after is None:
            frames.append(_LAST_CHUNK)
        if delay <= 0:
            await self._send_all(b"".join(frames))
            return
        await self._send_all(frames[0] + frames[1] if len(frames) > 1 else frames[0])
        for frame in frames[2:]:
            await trio.sleep(delay)
            await self._send_all(frame)

    async def _send_all(self, data: bytes) -> None:
        with trio.move_on_after(self._send_timeout):
            await self._stream.send_all(data)
            return
        raise trio.BrokenResourceError(f"the client took no data for {self._send_timeout:g}s")

    def _closes(self, close: bool) -> bool:
        self.responded = True
        if close or not self.keep_alive:
            self.closing = True
        return self.closing


@attrs.frozen
class _Limits:
    max_body: int
    max_head: int
    header_timeout: float
    idle_timeout: float


def _limits(
    max_body_bytes: int, max_header_bytes: int, header_timeout: float, idle_timeout: float
) -> _Limits:
    """The bounds, checked (a NaN or a negative bound would disable them silently)."""
    if not max_body_bytes >= 0 or not max_header_bytes > 0:
        raise ValueError(
            f"need max_body_bytes >= 0 and max_header_bytes > 0, got {max_body_bytes} "
            f"and {max_header_bytes}"
        )
    for name, value in (("header_timeout", header_timeout), ("idle_timeout", idle_timeout)):
        if not 0 < value <= math.inf:
            raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
    return _Limits(max_body_bytes, max_header_bytes, header_timeout, idle_timeout)


class _Reader:
    """httptools callbacks: collects complete requests into ``ready``, and tracks where in
    a request the parser is (between requests, in a head, in a body) for the bounds."""

    __slots__ = (
        "_body",
        "_body_size",
        "_head_size",
        "_headers",
        "_max_body",
        "_max_head",
        "_url",
        "aborted",
        "at_boundary",
        "begun",
        "expect_continue",
        "head_read",
        "head_started",
        "head_too_large",
        "in_head",
        "parser",
        "ready",
        "too_large",
    )

    def __init__(self, limits: _Limits) -> None:
        self._max_body = limits.max_body
        self._max_head = limits.max_head
        self.parser = httptools.HttpRequestParser(self)
        self.ready: list[Request] = []
        self.aborted = False
        self.at_boundary = True  # no byte of a next request seen yet
        self.in_head = False
        self.begun = 0  # requests begun on this connection
        self.head_read = 0  # bytes read while this head is incomplete (see _serve)
        self.head_started = trio.current_time()  # first request: when the connection opened
        self.head_too_large = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self.too_large = False
        self.expect_continue = False

    def on_message_begin(self) -> None:
        self._reset()
        if self.begun:
            self.head_started = trio.current_time()
        self.begun += 1
        self.head_read = 0
        self.at_boundary = False
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value
        self._head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self._head_size > self._max_head:
            self.head_too_large = True
            return
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self.too_large = True
        if self._headers.get(b"expect", b"").lower() == b"100-continue":
            if self.too_large:
                self.aborted = True  # answer 413 now: the client waits before sending the body
            else:
                self.expect_continue = True

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self.too_large or self.head_too_large:
            if self._body_size > 2 * self._max_body + RECEIVE_SIZE:
                self.aborted = True  # stop draining: answer now and close
            return
        if self._body_size > self._max_body:
            self.too_large = True
            self._body.clear()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.aborted = self.expect_continue = False
        self.at_boundary = True
        if not self.head_too_large:
            self.ready.append(self._request(self.parser.should_keep_alive()))

    def take_aborted(self) -> Request:
        """The request being read, cut short because its body is too large."""
        self.aborted = False
        return self._request(False)

    def _request(self, keep_alive: bool) -> Request:
        path, _, query = self._url.partition(b"?")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        return Request(
            self.parser.get_method(),
            path.decode("latin-1"),
            query.decode("latin-1"),
            self._headers,
            b"" if self.too_large else body,
            keep_alive,
            self.too_large,
        )


Handler = Callable[[Request, ResponseWriter], Awaitable[None]]


async def serve_http_connection(
    stream: trio.abc.Stream,
    handler: Handler,
    *,
    max_body_bytes: int,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the peer or a response closes it.

    The bounds are described in the module docstring.

    Raises:
        ValueError: a bound is out of range (checked before anything is read).
    """
    try:
        limits = _limits(max_body_bytes, max_header_bytes, header_timeout, idle_timeout)
        await _serve(stream, handler, limits)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the peer went away: nothing to answer
    finally:
        await trio.aclose_forcefully(stream)


async def _serve(stream: trio.abc.Stream, handler: Handler, limits: _Limits) -> None:
    reader = _Reader(limits)
    writer = ResponseWriter(stream, limits.idle_timeout)
    timer = trio.CancelScope()  # one scope for the whole loop: only reads get a deadline
    idle_deadline = reader.head_started + limits.header_timeout
    with timer:
        while True:
            if reader.at_boundary:
                timer.deadline = idle_deadline
            elif reader.in_head:
                timer.deadline = reader.head_started + limits.header_timeout
            else:
                timer.deadline = trio.current_time() + limits.idle_timeout
            data = await stream.receive_some(RECEIVE_SIZE)
            timer.deadline = math.inf
            if not data:
                return
            fresh, begun = reader.at_boundary, reader.begun
            try:
                reader.parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                await _refuse(stream, writer, 400, f"malformed HTTP request: {exc}")
                return
            if reader.in_head and (reader.begun == begun or (fresh and reader.begun == begun + 1)):
                reader.head_read += len(data)  # all of this read belongs to the open head
            if reader.aborted and not reader.head_too_large:
                reader.ready.append(reader.take_aborted())
            elif reader.expect_continue:
                reader.expect_continue = False
                await stream.send_all(_CONTINUE)
            ready, reader.ready = reader.ready, []
            for request in ready:
                writer.keep_alive = request.keep_alive and not request.body_too_large
                writer.head_only = request.method == b"HEAD"
                writer.responded = False
                await _handle(handler, request, writer)
                if writer.closing:
                    if request.body_too_large:
                        await _linger(stream)  # the rest of the body is likely on its way
                    return
            if reader.head_too_large or reader.head_read > limits.max_head:
                message = f"request head over {limits.max_head} bytes (max_header_bytes)"
                await _refuse(stream, writer, 431, message)
                return
            if ready:
                idle_deadline = trio.current_time() + limits.idle_timeout
    if reader.at_boundary:
        return  # nothing more was asked: a quiet close
    if reader.in_head:
        message = f"request head not received within {limits.header_timeout:g}s (header_timeout)"
    else:
        message = f"request body stalled for {limits.idle_timeout:g}s (idle_timeout)"
    await _refuse(stream, writer, 408, message)


async def _refuse(stream: trio.abc.Stream, writer: ResponseWriter, status: int, why: str) -> None:
    """Answer ``status`` with ``why`` (JSON), then close gracefully (see `_linger`)."""
    writer.head_only = False
    await writer.send(status, _error_body(why), close=True)
    await _linger(stream)


async def _linger(stream: trio.abc.Stream) -> None:
    """End the write side, then read and drop what the client still sends (bounded in bytes
    and time): closing with unread input would reset the connection and could destroy the
    answer before the client reads it."""
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        return
    await stream.send_eof()
    left = LINGER_BYTES
    with trio.move_on_after(LINGER_SECONDS):
        while left > 0:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            left -= len(data)


async def _handle(handler: Handler, request: Request, writer: ResponseWriter) -> None:
    try:
        await handler(request, writer)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise
    except Exception:
        _log.exception("HTTP server: unexpected error answering %s", request.path)
        if not writer.responded:
            body = b'{"error":{"message":"internal server error","type":"server_error"}}'
            await writer.send(500, body, close=True)
        writer.closing = True
