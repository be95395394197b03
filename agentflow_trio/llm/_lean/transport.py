"""`LeanTransport`: the lean HTTP/1.1 pools behind httpx2's transport interface.

``httpx2.AsyncClient(transport=LeanTransport(...))`` keeps the whole httpx2 API (auth,
redirects, hooks, cookies, response decoding) and swaps only what sits below it: the
connection pool, the HTTP/1.1 codec (httptools) and TLS (``trio.SSLStream``). Switching
back is dropping the argument. Per-request timeouts come from httpx2 (``pool``,
``connect``, ``write``, ``read`` of the request's ``timeout`` extension; ``read`` applies
to the head and to each later read of the body), failures are httpx2's own exceptions.

Each response is bounded by the settings' ``max_header_bytes`` and ``max_response_bytes``
as received (a crossing raises ``httpx2.DecodingError``); decoding a compressed body is
httpx2's own, so bound it with the lean session (or ``[llm] transport``) when a server may
send a compression bomb.

Where it cannot serve, it hands every request to ``httpx2.AsyncHTTPTransport`` and logs at
INFO why: an HTTP proxy, or HTTP/2. The response's connection goes back to the pool when
its body was read to the end and the response closed; closing it earlier closes the
connection. Its slot is released when the response is closed (httpx2 closes it for
``client.post``; ``client.stream`` closes it at the end of the block).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final, final

import httpx2
import trio

from .connection import Connection
from .exceptions import LeanHTTPError, ReadTimeout, UnsupportedURL
from .exchange import Exchange
from .mapping import to_httpx
from .pool import PoolSettings
from .pools import PoolSet
from .url import Origin

if TYPE_CHECKING:
    from ...config import LLMConfig

__all__ = ["LeanTransport"]

_log = logging.getLogger("agentflow_trio.llm.lean")
_PORTS: Final = {"http": 80, "https": 443}
_REFRAMED: Final = frozenset({b"content-length", b"transfer-encoding"})
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


def _seconds(value: Any) -> float:
    return math.inf if value is None else float(value)


def _head(request: httpx2.Request, body: bytes) -> bytes:
    lines = [b"%b %b HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        if name.lower() not in _REFRAMED:
            lines.append(b"%b: %b\r\n" % (name, value))
    if body or request.method in _BODY_METHODS:
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines)


class _Body(httpx2.AsyncByteStream):
    """The response body, read from the connection as httpx2 iterates it."""

    def __init__(
        self, exchange: Exchange, conn: Connection, timeout: float, request: httpx2.Request
    ) -> None:
        self._exchange = exchange
        self._conn = conn
        self._timeout = timeout
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            part = await self._next()
            if part is None:
                return
            yield part

    async def _next(self) -> bytes | None:
        try:
            with trio.move_on_after(self._timeout):
                return await self._conn.receive_part()
            raise ReadTimeout(f"no response data within {self._timeout}s")
        except LeanHTTPError as exc:
            raise to_httpx(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._exchange.aclose()


@final
class LeanTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport on lean HTTP/1.1 pools (one per origin, each with ``settings``).

    ``ssl_context`` replaces the system trust store. ``proxy`` or ``http2=True`` make it
    delegate to ``httpx2.AsyncHTTPTransport`` (logged at INFO).
    """

    def __init__(
        self,
        settings: PoolSettings | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | httpx2.Proxy | None = None,
        http2: bool = False,
    ) -> None:
        self.settings = settings or PoolSettings()
        self.pools = PoolSet(self.settings, ssl_context=ssl_context)
        self.fallback: httpx2.AsyncHTTPTransport | None = None
        reason = "an HTTP proxy is configured" if proxy is not None else None
        if http2:
            reason = "HTTP/2 was requested"
        if reason is not None:
            _log.info("lean HTTP transport cannot serve: %s; using httpx2's transport", reason)
            limits = httpx2.Limits(
                max_connections=self.settings.max_connections,
                max_keepalive_connections=self.settings.max_connections,
                keepalive_expiry=self.settings.idle_timeout,
            )
            self.fallback = httpx2.AsyncHTTPTransport(
                verify=ssl_context or True,
                http2=http2,
                limits=limits,
                proxy=proxy,
                trust_env=False,
            )

    @classmethod
    def from_config(cls, llm: LLMConfig, **kwargs: Any) -> LeanTransport:
        """A transport with ``llm``'s pool settings (``kwargs`` as for the constructor)."""
        return cls(PoolSettings.from_config(llm), **kwargs)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` and return the response with its body still to be read.

        Raises:
            httpx2.TransportError: the subclass of the failure (``PoolTimeout``,
                ``ConnectError``, ``ReadTimeout``, ``RemoteProtocolError``, ...).
        """
        if self.fallback is not None:
            return await self.fallback.handle_async_request(request)
        url = request.url
        scheme = url.scheme
        if scheme not in _PORTS or not url.raw_host:
            raise to_httpx(UnsupportedURL(f"cannot send to {url}"), request)
        host = url.raw_host.decode("ascii")
        pool = self.pools.pool(Origin(scheme, host, url.port or _PORTS[scheme]))
        timeouts = request.extensions.get("timeout") or {}
        read_timeout = _seconds(timeouts.get("read"))
        body = await request.aread()
        head = _head(request, body)
        exchange = Exchange(pool)
        try:
            await exchange.open(
                no_body=request.method == "HEAD",
                pool_timeout=_seconds(timeouts.get("pool", self.settings.connection_timeout)),
                connect_timeout=_seconds(timeouts.get("connect", self.settings.connection_timeout)),
            )
            write_timeout = _seconds(timeouts.get("write"))
            with trio.move_on_after(write_timeout) as scope:
                conn = await exchange.send(head, body)
            if scope.cancelled_caught:
                raise exchange.timeout_error(write_timeout)
            with trio.move_on_after(read_timeout) as scope:
                await conn.receive_head()
            if scope.cancelled_caught:
                raise exchange.timeout_error(read_timeout)
        except LeanHTTPError as exc:
            await exchange.aclose()
            raise to_httpx(exc, request) from exc
        except BaseException:
            await exchange.aclose()
            raise
        return httpx2.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(exchange, conn, read_timeout, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason},
        )

    async def aclose(self) -> None:
        """Close every pool (and the fallback transport). Idempotent."""
        await self.pools.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()
