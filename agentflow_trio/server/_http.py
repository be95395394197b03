"""The HTTP/1.1 server `serve` runs: ASGI 3 over trio streams, parsed by httptools.

It replaced hypercorn on ``serve``'s path because of the CPU per request: hypercorn parses
with h11 (pure Python) and spends a task, several cancel scopes and two memory channels
on each request; this server parses with httptools (C), calls the app in the
connection's own task and writes each response head with its first body piece in one
``send_all``. ``bench/serve_workers.py`` measures it (CPU microseconds per request of the
serve processes; ``serve --workers 2`` over ``--workers 1``).

One connection is two tasks: a reader (reads, parses, queues complete request heads and
their bodies, notices the client leaving) and a handler (runs the app on each request,
in arrival order, and writes its answer). What the app sees is ASGI's ``http`` scope
(``http_version`` ``1.1`` or ``1.0``, ``path`` unquoted, ``raw_path``, ``query_string``,
lower-case header names, ``client``, ``server``); ``receive()`` gives the body
(``http.request`` pieces), then waits and returns ``http.disconnect`` once the client
has gone: how ``serve`` cancels the event of a client that left. ``send`` takes
``http.response.start`` and ``http.response.body``: a response whose app gave a
Content-Length (or sent one piece) goes out with it; a streamed one is chunked over
HTTP/1.1 and ends with the connection over HTTP/1.0. ``HEAD`` gets the head only.
``Expect: 100-continue`` is answered when the app first asks for the body.

Bounds, each answered by this module (``{"error": reason}``, then the connection closes;
the app is not called): a request head over `MAX_HEADER_BYTES` (431); a malformed
request (400; Content-Length with Transfer-Encoding: "ambiguous framing"); more than
`MAX_PIPELINED` requests waiting on one connection pauses reading it. A body is buffered
up to ``max_body_bytes + 1`` bytes (the app refuses it, 413) and the connection closes
after that answer. A connection with no request under way is closed after
`KEEP_ALIVE_TIMEOUT` seconds of silence; a request head or body that stalls for
`READ_TIMEOUT` seconds ends the connection. An app error before the response started is
a 500 (logged); after, the connection is cut so the client sees a short answer.
Cancelling the serving call closes every connection.
"""

from __future__ import annotations

import contextlib
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import httptools
import trio

from ._wire import DISCONNECT_EXTENSION

__all__ = [
    "KEEP_ALIVE_TIMEOUT",
    "MAX_HEADER_BYTES",
    "MAX_PIPELINED",
    "READ_TIMEOUT",
    "serve_listeners",
]

_log = logging.getLogger("agentflow_trio.server")

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]

RECEIVE_SIZE: Final = 65536
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_PIPELINED: Final = 16
KEEP_ALIVE_TIMEOUT: Final = 5.0
"""Seconds a kept-alive connection with no request under way stays open (hypercorn's)."""
READ_TIMEOUT: Final = 60.0
"""Seconds a started request head or body may stall before the connection ends."""
LINGER_SECONDS: Final = 2.0
LINGER_BYTES: Final = 256 * 1024
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"
_AMBIGUOUS: Final = "both Content-Length and Transfer-Encoding: ambiguous framing, refused"
_REASONS: Final = {
    200: b"OK",
    202: b"Accepted",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    415: b"Unsupported Media Type",
    421: b"Misdirected Request",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %b\r\n" % (status, _REASONS.get(status, b"Status"))


def _error_response(status: int, why: str) -> bytes:
    text = why.replace("\\", "\\\\").replace('"', '\\"').encode("ascii", "replace")
    body = b'{"error":"%b"}' % text
    return _status_line(status) + (
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
        % (len(body), body)
    )


class _Request:
    """One request as the reader parses it; the handler turns it into a scope."""

    __slots__ = (
        "body",
        "buffered",
        "complete",
        "delivered",
        "expect_continue",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "too_large",
        "url",
        "wake",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b"GET"
        self.http_version = "1.1"
        self.keep_alive = True
        self.body: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.delivered = False  # the last body piece went to the app
        self.too_large = False
        self.expect_continue = False
        self.wake: trio.Event | None = None  # set when the body moves on or the client goes

    def poke(self) -> None:
        if self.wake is not None:
            self.wake.set()
            self.wake = None


class _Refused:
    """What the reader queues instead of a request it could not parse."""

    __slots__ = ("response",)

    def __init__(self, status: int, why: str) -> None:
        self.response = _error_response(status, why)


class _Connection:
    """The two tasks of one connection and what they share."""

    def __init__(
        self,
        stream: trio.SocketStream,
        app: ASGIApp,
        max_body: int,
        server: tuple[str, int] | None,
        client: tuple[str, int] | None,
    ) -> None:
        self.stream = stream
        self.app = app
        self.max_body = max_body
        self.server = server
        self.client = client
        self.parser = httptools.HttpRequestParser(self)
        self.current: _Request | None = None  # the request the parser is in
        self.ready: list[_Request | _Refused] = []  # heads parsed by the last feed
        self.head_size = 0  # bytes of the current head's parsed parts
        self.head_read = 0  # bytes read while a head was incomplete
        self.in_head = False
        self.send_queue, self.receive_queue = trio.open_memory_channel[_Request | _Refused](
            MAX_PIPELINED
        )
        self.gone = trio.Event()  # the client closed its side (or the connection broke)
        self.busy = False  # the handler is answering a request
        self.read_scope: trio.CancelScope | None = None
        self.on_gone: Callable[[], None] | None = None  # the app's disconnect callback
        self.extensions = {DISCONNECT_EXTENSION: self.watch}
        self.linger = False  # close gracefully: the client may still be sending a body

    # -- httptools callbacks (the reader's) -----------------------------------------------

    def on_message_begin(self) -> None:
        self.current = _Request()
        self.head_size = 0
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.lower(), value))
        self.head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        self.in_head = False
        if self.head_size > MAX_HEADER_BYTES:
            return  # refused after this feed (see _read), never handed to the app
        parser = self.parser
        request.method = parser.get_method()
        request.http_version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        for name, value in request.headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                request.too_large = True
            elif name == b"expect" and value.lower() == b"100-continue":
                request.expect_continue = True
        self.ready.append(request)

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        room = self.max_body + 1 - request.buffered
        if room <= 0:
            return  # the app refuses it at max_body + 1 bytes: drop the rest
        if len(body) > room:
            body = body[:room]
        request.body.append(body)
        request.buffered += len(body)
        if request.buffered > self.max_body:
            request.too_large = True
        request.poke()

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        request.complete = True
        request.poke()
        self.current = None

    # -- the reader -----------------------------------------------------------------------

    async def read_loop(self) -> None:
        """Read, parse and queue requests until the client goes or an error is queued."""
        try:
            await self._read()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.left()
            if self.current is not None:
                self.current.poke()
            self.send_queue.close()

    def left(self) -> None:
        """The client has gone: wake ``receive()`` and call the app's callback."""
        self.gone.set()
        callback, self.on_gone = self.on_gone, None
        if callback is not None:
            callback()

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """`DISCONNECT_EXTENSION`: call ``callback`` once the client has gone (at once if
        it has); returns the function that forgets it."""
        if self.gone.is_set():
            callback()
        else:
            self.on_gone = callback
        return self._unwatch

    def _unwatch(self) -> None:
        self.on_gone = None

    async def _read(self) -> None:
        stream, parser, ready = self.stream, self.parser, self.ready
        while True:
            with trio.CancelScope(deadline=self._read_deadline()) as scope:
                self.read_scope = scope
                data = await stream.receive_some(RECEIVE_SIZE)
            self.read_scope = None
            if scope.cancelled_caught or not data:
                return
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                ready.append(_Refused(400, "protocol upgrades are not served"))
            except httptools.HttpParserError as exc:
                text = str(exc)
                why = _AMBIGUOUS if "Content-Length" in text else f"malformed HTTP request: {text}"
                ready.append(_Refused(400, why))
            self.head_read = self.head_read + len(data) if self.in_head else 0
            too_long = max(self.head_size, self.head_read) > MAX_HEADER_BYTES
            if too_long and not (ready and isinstance(ready[-1], _Refused)):
                ready.append(_Refused(431, f"request head over {MAX_HEADER_BYTES} bytes"))
            for item in ready:
                await self.send_queue.send(item)
                if isinstance(item, _Refused):
                    return
            ready.clear()

    def _read_deadline(self) -> float:
        if self.current is not None:  # in a head or a body
            return trio.current_time() + READ_TIMEOUT
        if self.busy:
            return math.inf  # the app is at work: only its client's leaving matters
        return trio.current_time() + KEEP_ALIVE_TIMEOUT

    # -- the handler ----------------------------------------------------------------------

    async def handle_loop(self) -> None:
        """Answer each queued request in order until the connection must close."""
        async for item in self.receive_queue:
            if isinstance(item, _Refused):
                await self._write(item.response)
                return
            self.busy = True
            close = await self._answer(item)
            while not (close or item.complete or self.gone.is_set()):
                wake = item.wake = trio.Event()  # the rest of a body the app did not read
                await wake.wait()
            self.busy = False
            if close or self.gone.is_set():
                self.linger = not item.complete
                return
            scope = self.read_scope
            if scope is not None and self.current is None:
                scope.deadline = trio.current_time() + KEEP_ALIVE_TIMEOUT

    async def _answer(self, request: _Request) -> bool:
        """Run the app on ``request``; whether the connection must close after it."""
        exchange = _Exchange(self, request)
        try:
            await self.app(self._scope(request), exchange.receive, exchange.send)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return True
        except Exception:
            _log.exception("serve: unexpected error answering %r", request.url[:200])
            if not exchange.started:
                await self._write(_error_response(500, "internal server error"))
            return True
        if not exchange.finished:
            if not exchange.started:
                await self._write(_error_response(500, "the app sent no response"))
            return True
        return exchange.close or request.too_large

    def _scope(self, request: _Request) -> dict[str, Any]:
        raw_path, _, query = request.url.partition(b"?")
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": request.http_version,
            "method": request.method.decode("latin-1"),
            "scheme": "http",
            "path": urllib.parse.unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": request.headers,
            "client": self.client,
            "server": self.server,
            "extensions": self.extensions,
        }

    async def _write(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def drain_and_close(self) -> None:
        """End the write side, then read and drop what the client still sends (bounded),
        so that it reads the answer instead of a reset (once the reader has stopped)."""
        try:
            await self.stream.send_eof()
            left = LINGER_BYTES
            with trio.move_on_after(LINGER_SECONDS):
                while left > 0:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        return
                    left -= len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


class _Exchange:
    """ASGI ``receive`` and ``send`` for one request."""

    __slots__ = (
        "_headers",
        "_status",
        "chunked",
        "close",
        "conn",
        "finished",
        "head_only",
        "request",
        "started",
    )

    def __init__(self, conn: _Connection, request: _Request) -> None:
        self.conn = conn
        self.request = request
        self.started = False  # the head went out
        self.finished = False  # the last body piece went out
        self.chunked = False
        self.close = not request.keep_alive
        self.head_only = request.method == b"HEAD"
        self._status = 200
        self._headers: list[tuple[bytes, bytes]] = []

    async def receive(self) -> dict[str, Any]:
        request, conn = self.request, self.conn
        while True:
            if request.body or (request.complete and not request.delivered):
                body = b"".join(request.body) if len(request.body) != 1 else request.body[0]
                request.body = []
                more = not request.complete
                request.delivered = not more
                return {"type": "http.request", "body": body, "more_body": more}
            if conn.gone.is_set():
                return {"type": "http.disconnect"}
            if request.delivered:
                await conn.gone.wait()
                return {"type": "http.disconnect"}
            if request.expect_continue:
                request.expect_continue = False
                await conn._write(_CONTINUE)
            wake = request.wake = trio.Event()
            await wake.wait()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._status = int(message["status"])
            self._headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())]
            return
        if kind != "http.response.body" or self.finished:
            return
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        out = self._head(body, more) if not self.started else b""
        if self.head_only:
            body = b""
        if self.chunked:
            if body:
                out += b"%x\r\n%b\r\n" % (len(body), body)
            if not more:
                out += _LAST_CHUNK
        else:
            out += body
        if not more:
            self.finished = True
        if out:
            try:
                await self.conn._write(out)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.conn.left()  # the client left: the app hears of it
                self.finished = True
                self.close = True

    def _head(self, body: bytes, more: bool) -> bytes:
        self.started = True
        if self.request.too_large:
            self.close = True  # the rest of that body is not read: say so to the client
        headers = self._headers
        names = {name for name, _ in headers}
        lines = [_status_line(self._status)]
        lines.extend(b"%b: %b\r\n" % pair for pair in headers)
        if b"connection" in names and any(
            n == b"connection" and v.lower() == b"close" for n, v in headers
        ):
            self.close = True
        if b"content-length" not in names:
            if not more:
                lines.append(b"content-length: %d\r\n" % len(body))
            elif self.request.http_version == "1.1":
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                self.close = True  # an HTTP/1.0 body without a length ends with the connection
        if self.close and b"connection" not in names:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)


async def _serve_connection(stream: trio.SocketStream, app: ASGIApp, max_body: int) -> None:
    """Serve one accepted connection until it closes (see the module docstring)."""
    sock = stream.socket
    try:
        server, client = _address(sock.getsockname()), _address(sock.getpeername())
    except OSError:
        await trio.aclose_forcefully(stream)
        return
    conn = _Connection(stream, app, max_body, server, client)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.read_loop)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await conn.handle_loop()
            nursery.cancel_scope.cancel()
        if conn.linger:
            await conn.drain_and_close()
    finally:
        await trio.aclose_forcefully(stream)


def _address(value: Any) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None


async def serve_listeners(
    app: ASGIApp,
    listeners: list[trio.SocketListener],
    *,
    max_body_bytes: int,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listeners`` until cancelled (then every connection closes).
    ``max_body_bytes``: the largest body the app accepts (one byte more is buffered, so
    the app sees it is over)."""

    async def handler(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, app, max_body_bytes)

    await trio.serve_listeners(handler, listeners, task_status=task_status)
