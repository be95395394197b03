"""`LeanSession`: the adapters' HTTP session (``post_json``, ``open_stream``) on lean pools.

It implements the `Session` seam (``llm._session``) with the error contract of the httpx2
`HTTPSession`, so the OpenAI, Azure and Ollama adapters run on it unchanged: the same
`errors` classes for the same failures, status errors with a body excerpt,
`ResponseFormatError` for a body that is not the expected JSON or stream, streams through
the same incremental decoders.

What it saves per call: the request head is pre-encoded per URL (request line, host, the
provider's constant headers), so a call formats only the length; the response is parsed
by httptools into the few fields an adapter reads; no request or response objects, no
header dictionaries, no per-call cancel scope when an enclosing deadline (a breaker's
call timeout, an event timeout) already ends sooner than ``request_timeout``.

Sizes: a response's head, its body as received and its body once decoded are bounded by
the pool's ``max_header_bytes`` and ``max_response_bytes`` (a stream's in all);
crossing one raises `ResponseTooLargeError` and closes the connection.

Timeouts: ``request_timeout`` bounds a whole `post_json` exchange (first byte sent to last
byte read) and, for a stream, the head and then each wait for the next part;
``connection_timeout`` bounds the wait for a pool slot and the connect (TCP + TLS).

Cancellation: a call cancelled at any point closes its connection, unless the response
had been read to its end (then the connection is reused); its slot is always released.

``connection_pooling = false``: each request sends ``Connection: close`` and its
connection is closed after the response (a fresh connection per request).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final

import trio

from ..._deadline import CALL_DEADLINE, CallDeadline
from ..._owner import reraise_single
from ...errors import ConfigError, ResponseFormatError
from ...observability import tracing as _tracing
from .._accumulate import ChunkDecoder, GuardedChunks, passthrough
from .._bodies import decompressor
from .._httperrors import format_error, json_body, status_error
from .._lines import DEFAULT_MAX_LINE
from .._session import HTTPPoolStatistics, LineDecoder
from ._watchdog import Watchdog
from .chunks import BodyChunks
from .connection import Connection
from .exceptions import LeanHTTPError, UnsupportedURL
from .exchange import Exchange
from .mapping import to_llm_error
from .pool import ConnectionPool, PoolSettings
from .pools import PoolSet
from .url import DEFAULT_HEADERS, encode_headers, parse_url, request_bytes, request_prefix

if TYPE_CHECKING:
    from ...config import LLMConfig

__all__ = ["LeanSession", "open_lean_session"]

T = TypeVar("T")
_ERROR_BODY_LIMIT: Final = 4096
_DRAIN_LIMIT: Final = 65536
_MAX_TARGETS: Final = 256


def _traced(prefix: bytes) -> bytes:
    """``prefix`` with the current span's ``traceparent`` (tracing is on)."""
    instruments = _tracing.active
    return prefix if instruments is None else instruments.request_head(prefix)


def _text_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


def _merged(headers: Mapping[str, str], pooling: bool = True) -> list[tuple[str, str]]:
    """The default headers the caller does not name, then the caller's; without
    ``pooling``, ``Connection: close`` too (the server closes after its answer as well)."""
    names = {name.lower() for name in headers}
    defaults = [(name, value) for name, value in DEFAULT_HEADERS if name not in names]
    if not pooling and "connection" not in names:
        defaults.append(("connection", "close"))
    return defaults + list(headers.items())


def _request(target: _Target, body: bytes) -> tuple[bytes, bytes]:
    """The bytes to send for ``body`` to ``target`` (`request_bytes`), the trace context
    header added when a span is current."""
    prefix = target.prefix if _tracing.active is None else _traced(target.prefix)
    return request_bytes(prefix, body)


def _streams(conn: Connection, content_types: tuple[str, ...]) -> bool:
    """Whether ``conn``'s answer is a success with one of ``content_types``."""
    if conn.status >= 400:
        return False
    ctype = (conn.content_type or b"").decode("latin-1")
    return ctype.split(";", 1)[0].strip().lower() in content_types


class _Target:
    __slots__ = ("pool", "prefix")

    def __init__(self, pool: ConnectionPool, prefix: bytes) -> None:
        self.pool = pool
        self.prefix = prefix


@final
class LeanSession:
    """A provider's pooled lean HTTP/1.1 client. Build it with `open_lean_session`.

    ``headers`` are sent with every request (encoded once); ``deployment`` names the
    target in every error.

    Raises:
        ConfigError: a header name or value contains CR, LF or NUL.
    """

    #: `post_json` and a stream's opening end their waits at the caller's `CALL_DEADLINE`
    #: when that comes first (and set its ``fired``), so a circuit breaker above needs no
    #: scope of its own.
    honours_call_deadline = True

    def __init__(
        self,
        pools: PoolSet,
        headers: Mapping[str, str],
        deployment: str,
        *,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        try:
            self._headers = encode_headers(_merged(headers, pools.settings.pooling))
        except ValueError as exc:
            raise ConfigError(str(exc), key="llm.headers") from exc
        self.pools = pools
        self.deployment = deployment
        self._timeout = pools.settings.request_timeout
        self._max_body = pools.settings.max_response_bytes
        self._max_line = max_line
        self._targets: dict[str, _Target] = {}
        self._watchdog: Watchdog | None = None  # set by `open_lean_session`
        # ``trio.current_time``, or (set by `open_lean_session`, whose trio run the session
        # lives in) the run's clock's own ``current_time``: the same reading, two frames
        # fewer per request.
        self._now: Callable[[], float] = trio.current_time

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            try:
                origin, path = parse_url(url)
                pool = self.pools.pool(origin)
            except LeanHTTPError as exc:
                raise to_llm_error(exc, self.deployment) from exc
            target = _Target(pool, request_prefix("POST", origin, path, self._headers))
            if len(self._targets) < _MAX_TARGETS:
                self._targets[url] = target
        return target

    async def post_json(self, url: str, body: bytes) -> Any:
        """POST ``body`` (JSON bytes) and return the decoded JSON answer.

        Raises:
            TransportError: no usable response (connect, timeout, connection lost).
            APIStatusError: an HTTP error status (the subclass of that status).
            ResponseFormatError: the answer is not JSON (wrong content type or malformed).
            ResponseTooLargeError: its head or body crossed a bound (`PoolSettings`).
            ConfigError: ``url`` is not http(s).
        """
        target = self._targets.get(url) or self._target(url)
        exchange = Exchange(target.pool)
        now = self._now()
        deadline, caller = self._deadline(now)
        watchdog = self._watchdog
        try:
            head, rest = _request(target, body)
            del body  # often an encoder's 4 KiB buffer: not held while the answer is awaited
            opened = exchange.open_nowait(now)
            if watchdog is not None and opened and exchange.conn.abortable:  # type: ignore[union-attr]
                # The common case: a connection at once; the watchdog keeps the deadline.
                watchdog.watch(exchange, deadline)
                try:
                    conn = await exchange.send(head, rest)
                    del head, rest  # sent: not held while the answer is awaited
                    content = await conn.receive_all()
                except LeanHTTPError:
                    if not exchange.expired:
                        raise
                    raise self._timed_out(exchange, caller) from None
                finally:
                    watchdog.unwatch(exchange)
            elif deadline >= trio.current_effective_deadline():  # ours could never fire
                if not opened:
                    await exchange.open()
                conn = await exchange.send(head, rest)
                del head, rest
                content = await conn.receive_all()
            else:
                with trio.CancelScope(deadline=deadline) as scope:
                    if not opened:
                        await exchange.open()
                    conn = await exchange.send(head, rest)
                    del head, rest
                    content = await conn.receive_all()
                if scope.cancelled_caught:
                    raise self._timed_out(exchange, caller)
            status = conn.status
            raw_headers = conn.headers
            if conn.content_encoding is not None:
                content = self._decompress(conn, conn.content_encoding, content)
            if status < 400:
                return self._json(conn, content)
        except LeanHTTPError as exc:
            raise to_llm_error(exc, self.deployment) from exc
        finally:
            if not exchange.close_nowait():
                await exchange.aclose()
        raise status_error(status, _text_headers(raw_headers), content, self.deployment)

    def _deadline(self, now: float) -> tuple[float, CallDeadline | None]:
        """When a request starting ``now`` must end: ``now + request_timeout``, or the
        caller's `CALL_DEADLINE` if that comes first (then returned too, to be told it
        fired)."""
        deadline = now + self._timeout
        caller = CALL_DEADLINE.get()
        if caller is not None and caller.at < deadline:
            return caller.at, caller
        return deadline, None

    def _timed_out(self, exchange: Exchange, caller: CallDeadline | None) -> LeanHTTPError:
        """The error for an exchange whose deadline ended it (the caller's, if given)."""
        if caller is not None:
            caller.fired = True
        return exchange.timeout_error(self._timeout)

    def _json(self, conn: Connection, content: bytes) -> Any:
        # Decoded before the connection goes back: an answer that is not what it claims
        # (a short Content-Length, say) may have more bytes coming, so it is not reused.
        ctype = conn.content_type
        kind = ctype.decode("latin-1") if ctype is not None else "application/json"
        try:
            return json_body(content, kind, self.deployment)
        except ResponseFormatError:
            conn.discard()
            raise

    def open_stream(
        self,
        url: str,
        body: bytes,
        decoder: LineDecoder,
        parse: Callable[[Any], T | None],
        content_types: tuple[str, ...],
    ) -> AbstractAsyncContextManager[AsyncIterator[T]]:
        """POST ``body`` and yield an iterator of ``parse(payload)`` for each streamed payload.

        The status and content type (one of ``content_types``) are checked before the block
        starts, with the same errors as `post_json`. Payloads for which ``parse`` returns
        None are skipped. The connection is returned to the pool if the stream was read to
        its end, closed otherwise; its slot is released on every exit, cancellation included.
        """
        return _Opening(self, url, body, decoder, parse, content_types)

    def open_guarded(
        self, url: str, body: bytes, decoder: ChunkDecoder, content_types: tuple[str, ...]
    ) -> AbstractAsyncContextManager[GuardedChunks]:
        """`open_stream` of ``decoder``'s chunks (``parse`` `passthrough`), iterated as
        `GuardedChunks`: what ``GuardedStream(open_stream(...), decoder, deployment)``
        yields, the guard built while the server works on its answer (no frame of its own
        in the wait for the first chunk)."""
        opening = _Opening(self, url, body, decoder, passthrough, content_types, guarded=True)
        return opening  # type: ignore[return-value]  # hands out GuardedChunks (guarded)

    async def _start(
        self,
        exchange: Exchange,
        head: bytes,
        rest: bytes,
        at: tuple[float, CallDeadline | None],
        opened: bool,
    ) -> Connection:
        """A stream's request sent and its head read, off `_Opening`'s fast path (no
        connection at once, no watchdog, or a stream it cannot abort): ``at`` is the
        request's deadline and the caller's `CallDeadline` (`_deadline`), ``opened``
        whether ``exchange`` holds a connection already. No scope of ours when an
        enclosing deadline (the breaker's call timeout, the event's) ends sooner: it
        could never fire first."""
        deadline, caller = at
        try:
            if deadline >= trio.current_effective_deadline():  # ours could never fire
                if not opened:
                    await exchange.open()
                conn = await exchange.send(head, rest)
                await conn.receive_head()
                return conn
            with trio.CancelScope(deadline=deadline):
                if not opened:
                    await exchange.open()
                conn = await exchange.send(head, rest)
                await conn.receive_head()
                return conn
            raise self._timed_out(exchange, caller)
        except LeanHTTPError as exc:
            raise to_llm_error(exc, self.deployment) from exc

    async def _check_stream(self, conn: Connection, content_types: tuple[str, ...]) -> None:
        """Raise unless ``conn``'s answer is a stream (`_streams`): its status error, or a
        `ResponseFormatError` for another content type (with the start of its body)."""
        if _streams(conn, content_types):
            return
        status = conn.status
        ctype = (conn.content_type or b"").decode("latin-1")
        body = await self._read_some(conn)
        if status >= 400:
            raise status_error(status, _text_headers(conn.headers), body, self.deployment)
        raise self._format_error(f"expected a stream, got content type {ctype!r}", body)

    async def _read_some(self, conn: Connection) -> bytes:
        # An error body, read (bounded) within the caller's `CALL_DEADLINE` as well.
        body = b""
        caller = CALL_DEADLINE.get()
        deadline = trio.current_time() + self._timeout
        if caller is not None and caller.at < deadline:
            deadline = caller.at
        try:
            with trio.move_on_at(deadline):
                while len(body) < _ERROR_BODY_LIMIT:
                    part = await conn.receive_part()
                    if part is None:
                        break
                    body += part
        except LeanHTTPError as exc:
            raise to_llm_error(exc, self.deployment) from exc
        if conn.content_encoding is not None:
            with suppress(ResponseFormatError):  # an error page cut short: show it as it came
                decoder = decompressor(conn.content_encoding, _ERROR_BODY_LIMIT, truncate=True)
                if decoder is not None:
                    body = decoder.feed(body) + decoder.flush()
        return body

    def _decompress(self, conn: Connection, coding: bytes, content: bytes) -> bytes:
        try:
            decoder = decompressor(coding, self._max_body)
            return content if decoder is None else decoder.feed(content) + decoder.flush()
        except ResponseFormatError as exc:
            conn.discard()  # a bomb or garbage: do not keep talking to it
            exc.deployment = self.deployment
            raise

    def _format_error(self, message: str, body: bytes) -> ResponseFormatError:
        return format_error(self.deployment, message, body)

    def pool_statistics(self) -> HTTPPoolStatistics:
        """A snapshot of the session's pools (summed over origins)."""
        return self.pools.statistics()

    async def warm_up(self, count: int, url: str, timeout: float) -> None:
        """Pre-open up to ``count`` connections to ``url``'s origin, within ``timeout``.

        Best effort: failures are logged at INFO and otherwise ignored.
        """
        try:
            origin, _ = parse_url(url)
        except UnsupportedURL:
            return  # the first call reports the bad URL
        with trio.move_on_after(timeout):
            await self.pools.pool(origin).fill(count)

    async def aclose(self) -> None:
        """Close every pool. Idempotent; never blocks."""
        await self.pools.aclose()


@final
class _Opening(Generic[T]):
    """`LeanSession.open_stream`'s context manager: a class, so a stream costs no
    generator frame; the exchange (slot and connection) is closed on every exit.
    ``guarded`` (`LeanSession.open_guarded`): the iterator handed out is the body's
    chunks as `GuardedChunks` (``decoder`` a `ChunkDecoder`, ``parse`` `passthrough`)."""

    __slots__ = ("_body", "_content_types", "_decoder", "_exchange", "_guarded", "_parse",
                 "_session", "_url")  # fmt: skip

    def __init__(
        self,
        session: LeanSession,
        url: str,
        body: bytes,
        decoder: LineDecoder,
        parse: Callable[[Any], T | None],
        content_types: tuple[str, ...],
        guarded: bool = False,
    ) -> None:
        self._session = session
        self._url = url
        self._guarded = guarded
        self._body: bytes | None = body
        self._decoder = decoder
        self._parse = parse
        self._content_types = content_types
        self._exchange: Exchange | None = None

    async def __aenter__(self) -> AsyncIterator[Any]:
        # The common case runs in this one frame: a connection at once, the request
        # written without waiting, the watchdog keeping the deadline, and the iterator
        # built while the server works on its answer rather than after the head arrives
        # (time to first chunk). Anything else goes through `LeanSession._start`.
        session = self._session
        target = session._targets.get(self._url) or session._target(self._url)
        body, self._body = self._body, None  # held no longer than it takes to send
        assert body is not None, "a stream is opened once"
        prefix = target.prefix if _tracing.active is None else _traced(target.prefix)
        head, rest = request_bytes(prefix, body)  # `_request`, without its frame
        del body
        exchange = self._exchange = Exchange(target.pool)
        try:
            now = session._now()
            caller = CALL_DEADLINE.get()  # `_deadline`, without its frame
            at: tuple[float, CallDeadline | None] = (now + session._timeout, None)
            if caller is not None and caller.at < at[0]:
                at = (caller.at, caller)
            watchdog = session._watchdog
            opened = watchdog is not None and exchange.open_nowait(now)
            conn = exchange.conn
            if opened and conn.abortable:  # type: ignore[union-attr]
                assert watchdog is not None and conn is not None
                watchdog.watch(exchange, at[0])
                try:
                    await trio.lowlevel.checkpoint_if_cancelled()  # nothing yields below
                    written = conn.send_nowait(head) if not rest else 0
                    if written < len(head):
                        conn = await exchange.send(head, rest, written)
                    else:
                        exchange.sent = True
                    del head, rest  # sent: not held while the stream is read
                    chunks, handed = self._chunks(conn, watchdog)
                    await conn.receive_head()
                except LeanHTTPError as exc:
                    error = session._timed_out(exchange, at[1]) if exchange.expired else exc
                    raise to_llm_error(error, session.deployment) from error
                finally:
                    watchdog.unwatch(exchange)
            else:
                conn = await session._start(exchange, head, rest, at, opened)
                del head, rest
                chunks, handed = self._chunks(conn, session._watchdog if conn.abortable else None)
            ctype = conn.plain_success_type()  # one of the types as it stands (the
            # usual), else the general check (a parameter, case, spaces; its errors) and
            # the body's content coding
            if ctype is None or ctype.decode("latin-1") not in self._content_types:
                if not _streams(conn, self._content_types):
                    await session._check_stream(conn, self._content_types)
                if conn.content_encoding is not None:
                    chunks.unzip(conn.content_encoding, session._max_body)
            return handed
        except BaseException:
            self._exchange = None
            await exchange.aclose()
            raise

    def _chunks(
        self, conn: Connection, watchdog: Watchdog | None
    ) -> tuple[BodyChunks[T], AsyncIterator[Any]]:
        # The body's iterator, and the one to hand out (itself, or it guarded).
        session = self._session
        deployment = session.deployment
        chunks = BodyChunks(
            conn, self._decoder, self._parse, deployment, session._timeout, watchdog
        )
        if not self._guarded:
            return chunks, chunks
        decoder = self._decoder
        assert isinstance(decoder, ChunkDecoder), "a guarded stream decodes chunks"
        return chunks, GuardedChunks(chunks, decoder, deployment)  # type: ignore[arg-type]

    async def __aexit__(self, *exc_info: object) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.aclose()


@asynccontextmanager
async def open_lean_session(
    llm: LLMConfig,
    *,
    headers: Mapping[str, str],
    deployment: str,
    base_url: str,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[LeanSession]:
    """A `LeanSession` with ``llm``'s pool settings; closed (every connection) on exit.

    ``min_connections`` connections to ``base_url``'s origin are opened before the block
    starts (best effort, within ``connection_timeout``). ``ssl_context`` replaces the
    system trust store (`default_ssl_context`).

    Raises:
        ConfigError: a header contains CR, LF or NUL.
    """
    pools = PoolSet(PoolSettings.from_config(llm), ssl_context=ssl_context)
    session = LeanSession(pools, headers, deployment)
    # The watchdog's nursery is left with no exception passed in: an error of the body
    # propagates as itself, never wrapped in a group (as with `NurseryOwner`).
    tasks = AsyncExitStack()
    nursery: trio.Nursery | None = None
    try:
        nursery = await tasks.enter_async_context(trio.open_nursery())
        watchdog = Watchdog()
        nursery.start_soon(watchdog.run)
        session._watchdog = watchdog
        session._now = trio.lowlevel.current_clock().current_time
        if llm.min_connections > 0:
            await session.warm_up(llm.min_connections, base_url, llm.connection_timeout)
        yield session
    finally:
        session._watchdog = None
        try:
            if nursery is not None:
                nursery.cancel_scope.cancel()
            try:
                await tasks.aclose()
            except BaseExceptionGroup as group:
                reraise_single(group)
        finally:
            await session.aclose()
