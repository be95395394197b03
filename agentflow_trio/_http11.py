"""A lean HTTP/1.1 server connection on a trio stream, parsed by httptools.

One call to :func:`serve_http_connection` owns one connection: it reads requests (bodies with
Content-Length or chunked), hands each complete one to ``handler(request, writer)`` in
arrival order, and keeps the connection alive as HTTP/1.1 allows. It exists because a
benchmark's mock server must cost far less than the client it measures: headers are
pre-built bytes, a whole response is one ``send_all``, and nothing is parsed twice.

Guarantees:

- Exactly one handler call per complete request, in order; a request is never dropped
  silently. A body over ``max_body_bytes`` is discarded (bounded) and the request is
  still handed over with ``body_too_large`` set, after which the connection closes.
- A peer that goes away (``BrokenResourceError`` / ``ClosedResourceError``) ends the
  connection quietly; any other handler error is logged, answered with a 500 when
  possible, and ends only that connection. ``trio.Cancelled`` is never caught.
- The stream is always closed on return.
"""

from __future__ import annotations

import functools
import http
import logging
from collections.abc import Awaitable, Callable, Sequence

import attrs
import httptools
import trio

__all__ = ["Request", "ResponseWriter", "serve_http_connection"]

_log = logging.getLogger("agentflow_trio.http")

RECEIVE_SIZE = 65536
JSON = b"application/json"
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
    the handler returns. Send errors (the peer went away) propagate to the caller as
    ``trio.BrokenResourceError``.
    """

    __slots__ = ("_stream", "closing", "head_only", "keep_alive", "responded")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
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
        await self._stream.send_all(b"%b%d\r\n%b\r\n%b" % (head, len(body), extra, out))

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
            await self._stream.send_all(frames[0])
            return
        frames.extend(_chunk(part) for part in parts)
        if truncate_after is None:
            frames.append(_LAST_CHUNK)
        if delay <= 0:
            await self._stream.send_all(b"".join(frames))
            return
        await self._stream.send_all(frames[0] + frames[1] if len(frames) > 1 else frames[0])
        for frame in frames[2:]:
            await trio.sleep(delay)
            await self._stream.send_all(frame)

    def _closes(self, close: bool) -> bool:
        self.responded = True
        if close or not self.keep_alive:
            self.closing = True
        return self.closing


class _Reader:
    """httptools callbacks: collects complete requests into ``ready``."""

    __slots__ = (
        "_body",
        "_body_size",
        "_headers",
        "_max_body",
        "_url",
        "aborted",
        "expect_continue",
        "parser",
        "ready",
        "too_large",
    )

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self.parser = httptools.HttpRequestParser(self)
        self.ready: list[Request] = []
        self.aborted = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self.too_large = False
        self.expect_continue = False

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
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
        if self.too_large:
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
    stream: trio.abc.Stream, handler: Handler, *, max_body_bytes: int
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the peer or a response closes it."""
    try:
        await _serve(stream, handler, max_body_bytes)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the peer went away: nothing to answer
    finally:
        await trio.aclose_forcefully(stream)


async def _serve(stream: trio.abc.Stream, handler: Handler, max_body_bytes: int) -> None:
    reader = _Reader(max_body_bytes)
    writer = ResponseWriter(stream)
    while True:
        data = await stream.receive_some(RECEIVE_SIZE)
        if not data:
            return
        try:
            reader.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            body = (
                b'{"error":{"message":"malformed HTTP request: %b","type":"invalid_request_error"}}'
            )
            await writer.send(400, body % str(exc).encode("latin-1", "replace"), close=True)
            return
        if reader.aborted:
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
                return


async def _handle(handler: Handler, request: Request, writer: ResponseWriter) -> None:
    try:
        await handler(request, writer)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise
    except Exception:
        _log.exception("mock server: unexpected error answering %s", request.path)
        if not writer.responded:
            body = b'{"error":{"message":"internal mock server error","type":"server_error"}}'
            await writer.send(500, body, close=True)
        writer.closing = True
