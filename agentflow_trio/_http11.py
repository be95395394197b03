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
  reads the answer instead of a reset. The timeouts are kept by one watchdog task per
  connection (`_Watch`): a wait costs two attribute writes instead of a cancel scope,
  which measured 5x the per-request overhead.
- A peer that goes away (``BrokenResourceError`` / ``ClosedResourceError``) ends the
  connection quietly; any other handler error is logged, answered with a 500 when
  possible, and ends only that connection. ``trio.Cancelled`` is never caught.
- The stream is always closed on return.
"""

from __future__ import annotations

import contextlib
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


@functools.lru_cache(maxsize=1024)
def is_loopback_host(host: bytes | str | None) -> bool:
    """True if a ``Host`` header value names this machine: ``localhost`` (or a name under
    ``.localhost``), or a loopback address, with or without a port; True when absent.

    A server bound to loopback checks it to refuse DNS rebinding: a web page whose name
    was re-pointed at 127.0.0.1 still sends its own name as the Host. Answers are cached
    (the last 1,024 values): a served request checks its Host each time, and parsing an
    address cost more than the rest of the check.
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

    __slots__ = ("_stream", "_watch", "closing", "head_only", "keep_alive", "responded")

    def __init__(self, stream: trio.abc.Stream, watch: _Watch | None = None) -> None:
        self._stream = stream
        self._watch = watch
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
        watch = self._watch
        if watch is None:
            await self._stream.send_all(data)
            return
        now = watch.sent_at = trio.current_time()
        watch.wait(_SEND, now + watch.idle_timeout)
        try:
            await self._stream.send_all(data)
        finally:
            watch.deadline = math.inf

    def _closes(self, close: bool) -> bool:
        self.responded = True
        if close or not self.keep_alive:
            self.closing = True
        return self.closing


_HEAD: Final = "head"
_IDLE: Final = "idle"
_BODY: Final = "body"
_SEND: Final = "send"


class _Watch:
    """The one deadline a connection waits under, checked by `_watchdog`.

    Setting two attributes per wait costs far less than a cancel scope per read or write
    (a benchmark's mock answers tens of thousands of requests a second). ``deadline`` is
    ``inf`` while nothing waits on the client (a handler runs), so a handler is never
    cancelled for being slow; only waits on the client are.
    """

    __slots__ = ("deadline", "expired", "idle_timeout", "sent_at", "waiting")

    def __init__(self, idle_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.sent_at = trio.current_time()  # when the last response write started
        self.deadline = math.inf
        self.waiting = _IDLE  # what the connection waits for while deadline is finite
        self.expired = False

    def wait(self, what: str, deadline: float) -> None:
        self.waiting = what
        self.deadline = deadline


async def _watchdog(watch: _Watch, scope: trio.CancelScope, period: float) -> None:
    """Cancel ``scope`` once ``watch.deadline`` passes. It sleeps until the deadline it
    sees, at most ``period`` (the shortest timeout): a deadline set while it sleeps is
    at least ``period`` ahead in practice, so it is not noticed late."""
    while True:
        now = trio.current_time()
        deadline = watch.deadline
        if now >= deadline:
            watch.expired = True
            scope.cancel()
            return
        await trio.sleep_until(min(deadline, now + period))


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
        # When the open head began: for the first request, when the connection opened;
        # later, when a read ended with an incomplete head (see _read_requests).
        self.head_started = trio.current_time()
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
    watch = _Watch(limits.idle_timeout)
    writer = ResponseWriter(stream, watch)
    period = min(limits.header_timeout, limits.idle_timeout)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watchdog, watch, nursery.cancel_scope, period)
        # The peer going away ends the connection here: out of the nursery it would come
        # wrapped in an exception group.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await _read_requests(stream, handler, limits, reader, writer, watch)
        nursery.cancel_scope.cancel()
    if not watch.expired or watch.waiting in (_IDLE, _SEND):
        return  # done; or idle (a quiet close); or the client took no response
    if watch.waiting == _HEAD:
        message = f"request head not received within {limits.header_timeout:g}s (header_timeout)"
    else:
        message = f"request body stalled for {limits.idle_timeout:g}s (idle_timeout)"
    with trio.move_on_after(limits.idle_timeout):  # the watchdog is gone: bound the answer
        await _refuse(stream, writer, 408, message)


async def _read_requests(
    stream: trio.abc.Stream,
    handler: Handler,
    limits: _Limits,
    reader: _Reader,
    writer: ResponseWriter,
    watch: _Watch,
) -> None:
    idle_deadline = reader.head_started + limits.header_timeout  # the first request
    while True:
        if reader.at_boundary:
            watch.wait(_IDLE, idle_deadline)
        elif reader.in_head:
            watch.wait(_HEAD, reader.head_started + limits.header_timeout)
        else:
            watch.wait(_BODY, trio.current_time() + limits.idle_timeout)
        data = await stream.receive_some(RECEIVE_SIZE)
        watch.deadline = math.inf
        if not data:
            return
        fresh, begun = reader.at_boundary, reader.begun
        try:
            reader.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            await _refuse(stream, writer, 400, f"malformed HTTP request: {exc}")
            return
        if reader.in_head:
            if reader.begun == begun or (fresh and reader.begun == begun + 1):
                reader.head_read += len(data)  # all of this read belongs to the open head
            if reader.begun != begun and reader.begun > 1:
                reader.head_started = trio.current_time()  # (rare: heads come whole)
        if reader.aborted and not reader.head_too_large:
            reader.ready.append(reader.take_aborted())
        elif reader.expect_continue:
            reader.expect_continue = False
            await writer._send_all(_CONTINUE)
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
            idle_deadline = watch.sent_at + limits.idle_timeout


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
