"""One HTTP/1.1 client connection on a trio stream, responses parsed by httptools.

A `Connection` carries one request at a time: `begin`, `send`, `receive_head`, then the body
with `receive_all` (whole) or `receive_part` (as it arrives, for streams). Bodies may be
framed by Content-Length, chunked, or (without either) end when the server closes.
Interim ``1xx`` responses are skipped. When `receive_head`'s read brings a burst of body
too (a stream's first events), the body is kept back and parsed in two steps, its first
server-sent event (or half KiB) first: the first event is handed out without waiting for
all the others to be parsed.
The connection may carry another request only if the last response was read to its end,
the server allowed keep-alive (no ``Connection: close``, HTTP/1.1) and nothing followed it
(`reusable`); the pool checks that.

Sizes are bounded as the bytes arrive, exactly: the head (status line and headers, interim
heads included) must be complete within ``max_header_bytes``; a declared
``Content-Length`` may not exceed ``max_response_bytes``; and the whole response as
received (head and body with its framing; for a stream read with `receive_part`, the
whole stream) may not exceed ``max_header_bytes + max_response_bytes``. Crossing one
raises `ResponseTooLarge` before the bytes past the bound are parsed.

Failures raise the transport's own errors (`ReadFailed`, `WriteFailed`, `ProtocolFailed`,
`ResponseTooLarge`); timeouts are the caller's cancel scopes. A connection whose request
was interrupted (by an error or by cancellation) is never reusable: its owner closes it.
"""

from __future__ import annotations

import select
from contextlib import suppress
from typing import Final, Protocol

import httptools
import trio

from .._bodies import BODY_KEY, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_RESPONSE_BYTES, HEADER_KEY
from ._socket import RawSocketStream
from .exceptions import ProtocolFailed, ReadFailed, ResponseTooLarge, WriteFailed

__all__ = ["RECEIVE_SIZE", "Connection"]

RECEIVE_SIZE: Final = 65536
_HOLD_OVER: Final = 2048  # `receive_head` keeps a body back when a read brings more than this
_FIRST_STEP: Final = 512  # ... and hands out its first event (or this many bytes) on its own
_TICKET_WAIT: Final = 0.001  # how long a readable idle TLS connection may take to show EOF
_STREAM_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError)


class _HasFileno(Protocol):
    """A socket, trio's or the stdlib's: all `Connection.readable` and `Connection.abort`
    need of it."""

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class _Reader:
    """httptools callbacks: the state of the response being read on one connection.

    ``on_body`` is ``parts.append`` itself (one list for the connection's life, emptied
    in place): httptools calls it once per piece of body, once per server-sent event of a
    chunked stream, and a C method costs a fraction of a Python one. Body that follows
    the response's end (the start of an answer nobody asked for) is cut off after each
    feed instead (`Connection._feed`, from ``body_end``)."""

    __slots__ = (
        "body_end",
        "complete",
        "content_encoding",
        "content_type",
        "declared",
        "extra",
        "framed",
        "head_done",
        "headers",
        "interim",
        "keep_alive",
        "max_body",
        "no_body",
        "on_body",
        "parser",
        "parts",
        "reason",
        "received",
        "started",
        "status",
    )

    def __init__(self, max_body: int) -> None:
        self.parts: list[bytes] = []
        self.on_body = self.parts.append  # before the parser: it looks its callbacks up once
        self.body_end = 0  # len(parts) at the response's end (`Connection._feed`)
        self.parser = httptools.HttpResponseParser(self)
        self.max_body = max_body
        self._message()
        self.reset(no_body=False)
        self.complete = self.keep_alive = True  # a new connection is idle and in step

    def reset(self, *, no_body: bool) -> None:
        self.no_body = no_body
        self.started = self.complete = self.extra = False
        self.keep_alive = self.head_done = False
        self.received = self.declared = self.status = 0  # interim 1xx heads count too
        self.parts.clear()
        if self.headers:  # the last response's head is not kept while the next one waits
            self.headers: list[tuple[bytes, bytes]] = []
            self.reason = b""
            self.content_type: bytes | None = None
            self.content_encoding: bytes | None = None
        # The rest of the response's state is set afresh when it begins (_message).

    def _message(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers = []
        self.parts.clear()
        self.content_type = None
        self.content_encoding = None
        self.head_done = self.framed = self.interim = False

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True  # bytes after the response: the connection is out of step
            return
        self.started = True
        self._message()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done or self.complete:
            return  # chunked trailers: not part of the head
        self.headers.append((name, value))
        lower = name.lower()
        if lower == b"content-type":
            self.content_type = value
        elif lower == b"content-length":
            self.framed = True
            try:
                length = int(value)  # digits only: the parser checked them (uint64 at most)
            except ValueError:
                length = 0  # the parser reports the malformed header
            if length > self.max_body:
                self.declared = length
        elif lower == b"transfer-encoding":
            self.framed = True
        elif lower == b"content-encoding":
            self.content_encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: the real answer follows
            return
        self.status = status
        self.head_done = True
        if self.no_body:  # HEAD: headers only; the parser would wait for the body
            self.complete = True
            self.body_end = len(self.parts)

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if self.interim:
            self.started = False
            self._message()
            return
        self.complete = True
        self.body_end = len(self.parts)
        self.keep_alive = self.parser.should_keep_alive()


def _socket_of(stream: trio.abc.Stream) -> _HasFileno | None:
    inner: object = stream
    for _ in range(4):  # SSLStream -> SocketStream -> socket
        sock = getattr(inner, "socket", None)
        if sock is not None:
            return sock  # type: ignore[no-any-return]
        inner = getattr(inner, "transport_stream", None)
        if inner is None:
            return None
    return None


class Connection:
    """A connection and its parser. Not safe for two tasks at once (the pool ensures that).

    ``opened_at``, ``expires_at`` (lifetime end) and ``idle_since`` are trio clock times;
    ``requests`` counts the requests begun on it; ``fresh`` is True until it first waits
    idle in a pool (a fresh connection cannot have been closed by the server while idle).
    ``abortable``: whether `abort` can wake a task blocked on it (over a socket, not an
    in-memory stream). ``max_header_bytes`` and ``max_response_bytes`` bound each response
    (module docstring).
    """

    __slots__ = (
        "_held",
        "_max_body",
        "_max_head",
        "_max_total",
        "_reader",
        "_sock",
        "_stream",
        "abortable",
        "expires_at",
        "fresh",
        "idle_since",
        "opened_at",
        "requests",
        "tls",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        opened_at: float,
        expires_at: float,
        tls: bool,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._stream = stream
        self._reader = _Reader(max_response_bytes)
        self._max_head = max_header_bytes
        self._max_body = max_response_bytes
        self._max_total = max_header_bytes + max_response_bytes
        self.tls = tls
        self.opened_at = self.idle_since = opened_at
        self.expires_at = expires_at
        self.requests = 0
        self.fresh = True
        self._sock = _socket_of(stream)  # polled when idle (`readable`)
        self.abortable = self._sock is not None
        self._held: list[bytes] | None = None  # body bytes read, not parsed yet (receive_head)

    # -- state --------------------------------------------------------------------------

    @property
    def status(self) -> int:
        """The status of the response being read (0 before its head)."""
        return self._reader.status

    @property
    def reason(self) -> bytes:
        """The reason phrase of the response being read."""
        return self._reader.reason

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The response's headers as received (names keep their case), in order."""
        return self._reader.headers

    @property
    def content_type(self) -> bytes | None:
        """The response's Content-Type, if any."""
        return self._reader.content_type

    @property
    def content_encoding(self) -> bytes | None:
        """The response's Content-Encoding (lower case), if any."""
        return self._reader.content_encoding

    def plain_success_type(self) -> bytes | None:
        """The Content-Type of a success (status below 400; ``b""`` if it names none) whose
        body is not content-encoded; None for an error status or an encoded body. What a
        stream's opening checks, in one call (on None it checks each the long way)."""
        reader = self._reader
        if reader.status >= 400 or reader.content_encoding is not None:
            return None
        return reader.content_type or b""

    @property
    def complete(self) -> bool:
        """True once the whole response has been read."""
        return self._reader.complete

    @property
    def reusable(self) -> bool:
        """True if another request may follow: complete, keep-alive, nothing extra read."""
        reader = self._reader
        return reader.complete and reader.keep_alive and not reader.extra

    def readable(self) -> bool:
        """True if the idle socket has something to read: for plain HTTP, the server's
        EOF or bytes nobody asked for (the connection must not carry a request); for TLS,
        possibly only session tickets (see `only_tls_housekeeping`). A stream without a
        socket (tests) is never readable here; a closed one always is.

        A poll object per call, not one kept per connection: this runs once per checkout,
        and a kept one would cost every connection its memory while it waits."""
        sock = self._sock
        if sock is None:
            return False
        fd = sock.fileno()
        if fd < 0:
            return True
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        return bool(poll.poll(0))

    async def only_tls_housekeeping(self) -> bool:
        """For a readable idle TLS connection: True if what was waiting was only TLS
        housekeeping (TLS 1.3 session tickets, consumed here) and the connection is usable;
        False on EOF or application data. Waits at most 1 ms for more."""
        with trio.move_on_after(_TICKET_WAIT):
            with suppress(*_STREAM_ERRORS):
                await self._stream.receive_some(RECEIVE_SIZE)
            return False  # EOF or data: either way not in step for a new request
        return True  # only TLS housekeeping was waiting

    # -- one exchange ---------------------------------------------------------------------

    def begin(self, *, no_body: bool = False) -> None:
        """Start a new exchange; ``no_body`` for HEAD (the answer has headers only)."""
        self.requests += 1
        self._reader.reset(no_body=no_body)
        self._held = None

    def discard(self) -> None:
        """Never reuse this connection (its answer was refused, e.g. a body too large once
        decoded); its owner closes it at checkin."""
        self._reader.keep_alive = False

    async def send(self, head: bytes, body: bytes = b"") -> None:
        """Write the request (``head``, then ``body`` when given apart).

        Raises:
            WriteFailed: the connection broke (the server may have closed it).
        """
        try:
            await self._stream.send_all(head)
            if body:
                await self._stream.send_all(body)
        except _STREAM_ERRORS as exc:
            detail = str(exc) or type(exc).__name__
            raise WriteFailed(f"connection lost while sending: {detail}") from exc

    def send_nowait(self, data: bytes) -> int:
        """Write what of ``data`` the kernel takes at once, over plain TCP: how many bytes
        that was (0 over TLS or an in-memory stream, and on a failure, which `send` then
        meets and reports). Not a checkpoint, and no cancellation check: the caller makes
        one first (no other yield between it and this write)."""
        sock = self._sock
        if sock is None or type(self._stream) is not RawSocketStream:
            return 0
        try:
            return sock.send(data)  # type: ignore[attr-defined,no-any-return]
        except OSError:  # BlockingIOError included
            return 0

    async def receive_head(self) -> None:
        """Read until the response's head is complete (status and headers are then set).

        Raises:
            ReadFailed: the connection broke or closed first.
            ProtocolFailed: not a valid HTTP/1.1 response.
        """
        reader = self._reader
        stream = self._stream
        raw = stream if type(stream) is RawSocketStream else None
        while not reader.head_done:
            try:  # for the lean socket, its `receive_some` inlined (as in `receive_all`)
                if raw is None:
                    data = await stream.receive_some(RECEIVE_SIZE)
                else:
                    await trio.lowlevel.checkpoint()
                    got = raw.receive_nowait(RECEIVE_SIZE)
                    while got is None:
                        await trio.lowlevel.wait_readable(raw.socket)
                        got = raw.receive_nowait(RECEIVE_SIZE)
                    data = got
            except _STREAM_ERRORS as exc:
                raise ReadFailed(self._lost(f": {exc or type(exc).__name__}")) from exc
            end = data.find(b"\r\n\r\n") if len(data) > _HOLD_OVER else -1
            if end < 0:
                self._received(data)
                continue
            # A big first read (a stream's head and a burst of its events): parse the head,
            # keep the body back, and hand its first bytes out on their own, so the first
            # event is not held up by the parsing of all the others (time to first chunk).
            end += 4
            self._feed_head(data[:end])  # `_received`'s head case (not empty: no EOF)
            if reader.head_done and not reader.complete:
                # Up to the end of the first server-sent event when it ends within the
                # step (one parser callback for it, not one per event in the step): where
                # the body is cut changes nothing but when each piece is parsed.
                step = data.find(b"\n\n", end, end + _FIRST_STEP) + 2
                if step < 2:
                    step = end + _FIRST_STEP
                self._held = [data[end:step], data[step:]]
            else:  # an interim (1xx) head, or a response that has no body
                self._received(data[end:])

    def _feed_held(self) -> None:
        """Parse the next piece `receive_head` kept back."""
        held = self._held
        assert held
        piece = held.pop(0)
        if not held:
            self._held = None
        if piece:
            self._feed_body(piece)

    async def receive_all(self) -> bytes:
        """Read the rest of the body and return all of it not yet taken.

        Raises:
            ReadFailed: the connection broke or closed before the body's end.
            ProtocolFailed: malformed framing.
        """
        reader = self._reader
        while self._held:
            self._feed_held()
        stream = self._stream
        raw = stream if type(stream) is RawSocketStream else None
        # `_receive` inlined, and for the lean socket its `receive_some` too: two frames
        # fewer per connection waiting for its answer.
        while not reader.complete:
            try:
                if raw is None:
                    data = await stream.receive_some(RECEIVE_SIZE)
                else:
                    await trio.lowlevel.checkpoint()
                    got = raw.receive_nowait(RECEIVE_SIZE)
                    while got is None:
                        await trio.lowlevel.wait_readable(raw.socket)
                        got = raw.receive_nowait(RECEIVE_SIZE)
                    data = got
            except _STREAM_ERRORS as exc:
                raise ReadFailed(self._lost(f": {exc or type(exc).__name__}")) from exc
            self._received(data)
        return self._take()

    async def receive_part(self) -> bytes | None:
        """The next piece of the body as it arrives, or None at its end.

        Raises:
            ReadFailed: the connection broke or closed before the body's end.
            ProtocolFailed: malformed framing.
        """
        reader = self._reader
        while not reader.parts:
            if self._held:
                self._feed_held()
            elif reader.complete:
                return None
            else:
                await self._receive()
        return self._take()

    def part_nowait(self) -> bytes | None:
        """The next piece of the body if it has been read already, else None (no I/O)."""
        reader = self._reader
        while not reader.parts and self._held:
            self._feed_held()
        parts = reader.parts
        if not parts:
            return None
        # `_take`, without its frame: a stream's every part comes here
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        return data

    def _take(self) -> bytes:
        reader = self._reader
        parts = reader.parts
        if not parts:
            return b""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        return data

    async def _receive(self) -> None:
        try:
            data = await self._stream.receive_some(RECEIVE_SIZE)
        except _STREAM_ERRORS as exc:
            raise ReadFailed(self._lost(f": {exc or type(exc).__name__}")) from exc
        self._received(data)

    def _received(self, data: bytes | bytearray) -> None:
        """Parse what one read returned (``b""``: the server closed the connection)."""
        reader = self._reader
        if not data:
            if reader.head_done and not reader.framed and not reader.complete:
                reader.complete = True  # a body delimited by the end of the connection
                reader.keep_alive = False
                return
            raise ReadFailed(self._lost(""))
        if reader.head_done:
            self._feed_body(data)
        else:
            self._feed_head(data)

    def _feed_head(self, data: bytes | bytearray) -> None:
        # Feed at most max_header_bytes before the head is complete; a chunk crossing the
        # bound is split there, so a head just under it still passes whatever follows.
        reader = self._reader
        room = self._max_head - reader.received
        if len(data) <= room:
            reader.received += len(data)
            self._feed(data)
        else:
            if room > 0:
                self._feed(data[:room])
            reader.received = self._max_head
            if reader.head_done:
                self._feed_body(data[room:])
        if reader.declared:
            what = f"body (Content-Length {reader.declared})"
            raise self._too_large(what, self._max_body, BODY_KEY)
        if not reader.head_done and reader.received >= self._max_head:
            raise self._too_large("head", self._max_head, HEADER_KEY)

    def _feed_body(self, data: bytes | bytearray) -> None:
        reader = self._reader
        reader.received += len(data)
        if reader.received > self._max_total:
            raise self._too_large("body", self._max_body, BODY_KEY)
        self._feed(data)

    def _feed(self, data: bytes | bytearray) -> None:
        reader = self._reader
        if reader.complete:  # anything this feed adds to the body comes after its end
            reader.body_end = len(reader.parts)
        try:
            reader.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            reader.keep_alive = False  # the parser is stopped: never reuse the connection
            raise ProtocolFailed("the server switched protocols (upgrade)") from exc
        except httptools.HttpParserError as exc:
            reader.keep_alive = False
            raise ProtocolFailed(f"malformed HTTP response: {exc}") from exc
        if reader.complete:  # the body ends where the response did (`_Reader`)
            del reader.parts[reader.body_end :]

    def _too_large(self, what: str, limit: int, key: str) -> ResponseTooLarge:
        self._reader.keep_alive = False
        name = key.rpartition(".")[2]
        message = f"response {what} larger than {limit} bytes ({name} = {limit})"
        return ResponseTooLarge(message, limit=limit, key=key)

    def _lost(self, detail: str) -> str:
        reader = self._reader
        if reader.head_done:
            return f"connection closed mid-response (HTTP {reader.status}){detail}"
        if reader.started:
            return f"connection closed in the response head{detail}"
        return f"server closed the connection without answering{detail}"

    def abort(self) -> None:
        """Close the socket now, without waiting: a task blocked sending or receiving on
        it wakes with `WriteFailed` or `ReadFailed`. Never reused; `aclose` still runs."""
        self._reader.keep_alive = False
        sock = self._sock
        if sock is not None and sock.fileno() != -1:
            trio.lowlevel.notify_closing(sock)  # wake the waiters first, then close
            with suppress(OSError):
                sock.close()

    async def aclose(self) -> None:
        """Close at once (no TLS close_notify wait); safe under cancellation, idempotent."""
        with suppress(*_STREAM_ERRORS):  # closed either way
            await trio.aclose_forcefully(self._stream)
