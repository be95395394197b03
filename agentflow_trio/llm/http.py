"""The httpx2 session: one pooled HTTP client of a provider, and the error mapping at its edge.

`HTTPSession` is one of the two clients behind the `Session` seam (``_session``), the
alternative to the lean client of ``_lean``; ``open_http_session`` (``_open_session``) picks
one per ``[llm] transport``. This module does not know the lean client, nor it this one.

`open_httpx2_session` builds a single ``httpx2.AsyncClient`` from `LLMConfig`, shared by
every call of one provider:

* pool: ``httpx2.Limits(max_connections, max_keepalive_connections=max_connections,
  keepalive_expiry=idle_timeout)``; timeouts: ``httpx2.Timeout(request_timeout,
  connect=connection_timeout, pool=connection_timeout)`` (waiting for a pool slot longer
  than ``connection_timeout`` raises `LLMTimeoutError`).
* ``connection_pooling = false``: no keep-alive connection is kept
  (``max_keepalive_connections=0``) and ``Connection: close`` is sent, so every request
  has a fresh connection; nothing is warmed up.
* ``min_connections``: warmed up once at open by holding that many concurrent ``GET``
  requests to the provider's origin until all have their response headers (httpx2 has no
  "open a connection" call; ``GET`` rather than ``HEAD`` because some servers, the mock
  among them, wrongly send a body with a ``HEAD`` answer). Best effort: failures are
  ignored, and it is not a floor kept later (idle connections expire after ``idle_timeout``).
* ``max_connection_lifetime``: enforced by a network backend whose streams tell the pool
  they are "readable" once too old, which makes httpcore2 close them instead of reusing
  them (see ``_lifetime``). Installing it means replacing the transport's private
  ``_pool`` (httpx2 does not let a client choose the network backend); `pool_statistics`
  reads that pool too. Environment proxies are not used (``trust_env=False``).

Sizes (``_bodies``): the body is read raw and decoded here, not by httpx2, so that
``max_response_bytes`` bounds it as received, as declared (``Content-Length``) and once
decoded (gzip, deflate: the only codings asked for), for a stream in all; the head is
bounded by httpcore2's fixed 100 KiB. Crossing a bound raises `ResponseTooLargeError`;
the response is closed unread, which closes its connection.

Every httpx2 exception is mapped to the most specific `agentflow_trio.errors` class with
``from`` (`map_exception`), error statuses to `APIStatusError` subclasses with a body excerpt
of at most 200 characters (`status_error`), and a body that is not the expected JSON to
`ResponseFormatError`. Streams are read through the bounded, incremental `SSEDecoder` and
`NDJSONDecoder`; a stream whose body ends cleanly before its terminator raises
`ResponseFormatError`, one whose connection is cut mid-body `LLMReadError`. After the
terminator the rest of the body (normally just the end of the chunked encoding) is read,
at most 64 KiB, so the connection goes back to the pool instead of being closed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final

import httpcore2
import httpx2
import trio

from ..errors import ResponseFormatError
from ..observability import tracing as _tracing
from ._accumulate import ChunkDecoder, GuardedChunks, GuardedStream, passthrough
from ._bodies import (
    BODY_KEY,
    DEFAULT_MAX_RESPONSE_BYTES,
    Decompressor,
    configured_limits,
    decompressor,
    too_large,
)
from ._httperrors import (
    EXCEPTION_MAP,
    HTTPX_ERRORS,
    MAX_RETRY_AFTER,
    format_error,
    json_body,
    map_exception,
    parse_retry_after,
    status_error,
)
from ._lifetime import LifetimeBackend
from ._lines import DEFAULT_MAX_LINE, NDJSONDecoder, SSEDecoder, excerpt
from ._session import HTTPPoolStatistics as HTTPPoolStatistics
from ._session import LineDecoder as LineDecoder
from ._session import PoolStatistics as PoolStatistics
from ._session import Session as Session

if TYPE_CHECKING:
    from ..config import LLMConfig

__all__ = [
    "DEFAULT_MAX_LINE",
    "EXCEPTION_MAP",
    "HTTPX_ERRORS",
    "MAX_RETRY_AFTER",
    "HTTPPoolStatistics",
    "HTTPSession",
    "LineDecoder",
    "NDJSONDecoder",
    "PoolStatistics",
    "SSEDecoder",
    "Session",
    "build_client",
    "excerpt",
    "map_exception",
    "open_httpx2_session",
    "parse_retry_after",
    "status_error",
]

T = TypeVar("T")
_ERROR_BODY_LIMIT: Final = 4096
_DRAIN_LIMIT: Final = 65536
_CODINGS: Final = "gzip, deflate"  # what _bodies decodes, within max_response_bytes


def build_client(
    llm: LLMConfig, headers: Mapping[str, str]
) -> tuple[httpx2.AsyncClient, LifetimeBackend]:
    """The shared client for ``llm`` (see the module docstring) and its network backend."""
    pooling = llm.connection_pooling
    limits = httpx2.Limits(
        max_connections=llm.max_connections,
        max_keepalive_connections=llm.max_connections if pooling else 0,
        keepalive_expiry=llm.idle_timeout,
    )
    timeout = httpx2.Timeout(
        llm.request_timeout, connect=llm.connection_timeout, pool=llm.connection_timeout
    )
    names = {name.lower() for name in headers}
    if "accept-encoding" not in names:
        headers = {"accept-encoding": _CODINGS, **headers}
    if not pooling and "connection" not in names:
        headers = {**headers, "connection": "close"}
    backend = LifetimeBackend(llm.max_connection_lifetime)
    transport = httpx2.AsyncHTTPTransport(limits=limits, trust_env=False)
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=httpx2.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    client = httpx2.AsyncClient(
        headers=dict(headers), timeout=timeout, transport=transport, trust_env=False
    )
    return client, backend


@final
class HTTPSession:
    """A provider's pooled client: JSON posts and line streams, with errors mapped.

    Build it with `open_httpx2_session`. ``deployment`` names the target in every error;
    ``max_response_bytes`` bounds each body (module docstring).
    """

    def __init__(
        self,
        client: httpx2.AsyncClient,
        backend: LifetimeBackend,
        deployment: str,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.client = client
        self.deployment = deployment
        self._backend = backend
        self._max_line = max_line
        self._max_body = max_response_bytes

    async def post_json(self, url: str, body: bytes) -> Any:
        """POST ``body`` (JSON bytes) and return the decoded JSON answer.

        Raises:
            TransportError: no usable response (connect, timeout, connection lost).
            APIStatusError: an HTTP error status (the subclass of that status).
            ResponseFormatError: the answer is not JSON (wrong content type or malformed).
            ResponseTooLargeError: the body crossed ``max_response_bytes``.
        """
        request = self.client.build_request("POST", url, content=body)
        if _tracing.active is not None:  # the current span's traceparent
            _tracing.active.inject(request.headers)
        try:
            response = await self.client.send(request, stream=True)
            try:
                content = await self._read_body(response)
            finally:
                await response.aclose()
        except HTTPX_ERRORS as exc:
            raise map_exception(exc, self.deployment) from exc
        if response.status_code >= 400:
            raise status_error(response.status_code, response.headers, content, self.deployment)
        ctype = response.headers.get("content-type", "application/json")
        return json_body(content, ctype, self.deployment)

    @asynccontextmanager
    async def open_stream(
        self,
        url: str,
        body: bytes,
        decoder: LineDecoder,
        parse: Callable[[Any], T | None],
        content_types: tuple[str, ...],
    ) -> AsyncIterator[AsyncIterator[T]]:
        """POST ``body`` and yield an iterator of ``parse(payload)`` for each streamed payload.

        The status and content type (one of ``content_types``) are checked before the block
        starts, with the same errors as `post_json`. Payloads for which ``parse`` returns
        None are skipped. The response, and with it the pooled connection, is released on
        every exit from the block, including cancellation.
        """
        request = self.client.build_request("POST", url, content=body)
        if _tracing.active is not None:  # the current span's traceparent
            _tracing.active.inject(request.headers)
        try:
            response = await self.client.send(request, stream=True)
        except HTTPX_ERRORS as exc:
            raise map_exception(exc, self.deployment) from exc
        try:
            await self._check_stream(response, content_types)
            unzip = self._decoder(response, self._max_body)
            chunks = _ChunkStream(response, decoder, parse, self.deployment, unzip, self._max_body)
            try:
                yield chunks
            finally:
                await chunks.aclose()
        finally:
            await response.aclose()

    def open_guarded(
        self, url: str, body: bytes, decoder: ChunkDecoder, content_types: tuple[str, ...]
    ) -> AbstractAsyncContextManager[GuardedChunks]:
        """`open_stream` of ``decoder``'s chunks (``parse`` `passthrough`), iterated as
        `GuardedChunks`."""
        opened = self.open_stream(url, body, decoder, passthrough, content_types)
        return GuardedStream(opened, decoder, self.deployment)

    def pool_statistics(self) -> HTTPPoolStatistics:
        """A snapshot of the pool (reads httpcore2's private request list)."""
        pool = self.client._transport._pool  # type: ignore[attr-defined]
        connections = pool.connections
        idle = sum(1 for c in connections if c.is_idle())
        requests = list(pool._requests)
        queued = sum(1 for r in requests if r.is_queued())
        opened = self._backend.opened
        active = len(connections) - idle
        return HTTPPoolStatistics(len(connections), active, idle, len(requests), queued, opened)

    async def warm_up(self, count: int, url: str, timeout: float) -> None:
        """Open up to ``count`` connections with concurrent ``GET url`` requests.

        Each request keeps its response unread until all have their headers (or failed),
        so no two can share a connection; then each reads its (small) body, which returns
        the connection to the pool idle. Gives up after ``timeout`` seconds; errors are
        ignored (a server that closes connections after an error leaves none warm).
        """
        arrived = 0
        everyone = trio.Event()

        def arrive() -> None:
            nonlocal arrived
            arrived += 1
            if arrived >= count:
                everyone.set()

        async def hold_one() -> None:
            counted = False
            try:
                async with self.client.stream("GET", url) as response:
                    counted = True
                    arrive()
                    await everyone.wait()
                    await response.aread()
            except HTTPX_ERRORS:
                pass
            finally:
                if not counted:
                    arrive()

        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(hold_one)

    async def aclose(self) -> None:
        """Close the client and its pool. Idempotent; releases even when cancelled."""
        with trio.CancelScope(shield=True):
            await self.client.aclose()

    async def _check_stream(
        self, response: httpx2.Response, content_types: tuple[str, ...]
    ) -> None:
        status = response.status_code
        ctype = response.headers.get("content-type", "")
        if status < 400 and ctype.split(";", 1)[0].strip().lower() in content_types:
            return
        body = await self._read_some(response)
        if status >= 400:
            raise status_error(status, response.headers, body, self.deployment)
        raise self._format_error(f"expected a stream, got content type {ctype!r}", body)

    async def _read_body(self, response: httpx2.Response) -> bytes:
        # The whole body, raw then decoded, each within max_response_bytes.
        limit = self._max_body
        length = response.headers.get("content-length", "")
        if length.isdigit() and len(length) < 20 and int(length) > limit:
            raise too_large(f"body (Content-Length {length})", limit, BODY_KEY, self.deployment)
        unzip = self._decoder(response, limit)
        parts: list[bytes] = []
        received = 0
        async for data in response.aiter_raw():
            received += len(data)
            if received > limit:
                raise too_large("body", limit, BODY_KEY, self.deployment)
            parts.append(data if unzip is None else self._checked(unzip.feed, data))
        if unzip is not None:
            parts.append(self._checked(unzip.flush))
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _decoder(self, response: httpx2.Response, limit: int) -> Decompressor | None:
        coding = response.headers.get("content-encoding")
        if coding is None:
            return None
        unzip: Decompressor | None = self._checked(
            decompressor, coding.strip().lower().encode("latin-1"), limit
        )
        return unzip

    def _checked(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except ResponseFormatError as exc:
            exc.deployment = self.deployment
            raise

    async def _read_some(self, response: httpx2.Response) -> bytes:
        body = b""
        try:
            async for data in response.aiter_raw():
                body += data
                if len(body) >= _ERROR_BODY_LIMIT:
                    break
        except HTTPX_ERRORS as exc:
            raise map_exception(exc, self.deployment) from exc
        coding = response.headers.get("content-encoding")
        if coding is not None:
            try:  # an error page cut short: show it as it came
                coding_bytes = coding.strip().lower().encode("latin-1")
                unzip = decompressor(coding_bytes, _ERROR_BODY_LIMIT, truncate=True)
                if unzip is not None:
                    body = unzip.feed(body) + unzip.flush()
            except ResponseFormatError:
                pass
        return body

    def _format_error(self, message: str, body: bytes) -> ResponseFormatError:
        return format_error(self.deployment, message, body)


@asynccontextmanager
async def open_httpx2_session(
    llm: LLMConfig, *, headers: Mapping[str, str], deployment: str, base_url: str
) -> AsyncIterator[HTTPSession]:
    """Build the provider's httpx2 client, warm ``min_connections`` up, close it on exit.

    ``headers`` are sent with every request (set once here, not per call); the warm-up
    ``GET`` requests go to the origin of ``base_url``. Adapters call
    ``open_http_session`` instead, which picks this client or the lean one.
    """
    client, backend = build_client(llm, headers)
    max_body, _ = configured_limits(llm)
    session = HTTPSession(client, backend, deployment, max_response_bytes=max_body)
    try:
        if llm.min_connections > 0 and llm.connection_pooling:
            origin = str(httpx2.URL(base_url).copy_with(path="/", query=None, fragment=None))
            await session.warm_up(llm.min_connections, origin, llm.connection_timeout)
        yield session
    finally:
        await session.aclose()


class _ChunkStream(Generic[T]):
    """Async iterator over the parsed payloads of a streamed response body."""

    __slots__ = (
        "_decoder",
        "_deployment",
        "_left",
        "_limit",
        "_parse",
        "_pending",
        "_raw",
        "_unzip",
    )

    def __init__(
        self,
        response: httpx2.Response,
        decoder: LineDecoder,
        parse: Callable[[Any], T | None],
        deployment: str,
        unzip: Decompressor | None,
        limit: int,
    ) -> None:
        self._raw = response.aiter_raw()
        self._decoder = decoder
        self._parse = parse
        self._deployment = deployment
        self._unzip = unzip
        self._limit = self._left = limit  # raw bytes of the whole stream
        self._pending: deque[T] = deque()

    def __aiter__(self) -> _ChunkStream[T]:
        return self

    async def __anext__(self) -> T:
        pending = self._pending
        while not pending:
            decoder = self._decoder
            if decoder.done:
                await self._drain()
                raise StopAsyncIteration
            try:
                data = await self._raw.__anext__()
            except StopAsyncIteration:
                items = self._finish()
            except HTTPX_ERRORS as exc:
                raise map_exception(exc, self._deployment) from exc
            else:
                self._left -= len(data)
                if self._left < 0:
                    raise too_large("body", self._limit, BODY_KEY, self._deployment)
                items = self._decode(data)
            parse = self._parse
            for item in items:
                chunk = parse(item)
                if chunk is not None:
                    pending.append(chunk)
        return pending.popleft()

    def _decode(self, data: bytes) -> list[Any]:
        try:
            if self._unzip is not None:
                data = self._unzip.feed(data)
            return self._decoder.feed(data)
        except ResponseFormatError as exc:
            exc.deployment = self._deployment
            raise

    def _finish(self) -> list[Any]:
        try:
            tail = self._unzip.flush() if self._unzip is not None else b""
            items = self._decoder.feed(tail) if tail else []
            return items + self._decoder.finish()
        except ResponseFormatError as exc:
            exc.deployment = self._deployment
            raise

    async def _drain(self) -> None:
        # After the terminator only the end of the body should follow: read it (bounded),
        # so the connection goes back to the pool instead of being closed.
        left = _DRAIN_LIMIT
        try:
            async for data in self._raw:
                left -= len(data)
                if left < 0:
                    return
        except HTTPX_ERRORS:
            return  # the answer is complete; the connection is simply not reused

    async def aclose(self) -> None:
        await self._raw.aclose()
