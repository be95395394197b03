"""A network backend for httpcore2 that retires connections older than a maximum lifetime.

httpcore2 has no connection-lifetime setting. It does ask an idle connection's stream
``get_extra_info("is_readable")`` before reusing it, and closes the connection when the
answer is True (a readable idle socket means the server hung up). The wrapped stream also
answers True once its lifetime is over, so the pool closes it the next time it would be
reused. Guarantees and gaps: a connection is never cut mid-request (only idle connections
are checked); a connection past its lifetime that is never reused lingers until
``keepalive_expiry`` or the pool closes.

It also counts connections opened, for `HTTPSession.pool_statistics`.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore2

__all__ = ["LifetimeBackend"]


class _LifetimeStream(httpcore2.AsyncNetworkStream):
    __slots__ = ("_expires_at", "_stream")

    def __init__(self, stream: httpcore2.AsyncNetworkStream, expires_at: float) -> None:
        self._stream = stream
        self._expires_at = expires_at

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        inner = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _LifetimeStream(inner, self._expires_at)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and time.monotonic() >= self._expires_at:
            return True
        return self._stream.get_extra_info(info)


class LifetimeBackend(httpcore2.AsyncNetworkBackend):
    """Trio network backend whose streams expire ``lifetime`` seconds after connecting.

    ``lifetime=inf`` (or <= 0) disables expiry and hands out the plain trio streams.
    ``opened`` counts successful connects.
    """

    def __init__(self, lifetime: float) -> None:
        self._backend = httpcore2.TrioBackend()
        self._lifetime = lifetime if lifetime > 0 else float("inf")
        self.opened = 0

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return self._wrap(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return self._wrap(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)

    def _wrap(self, stream: httpcore2.AsyncNetworkStream) -> httpcore2.AsyncNetworkStream:
        self.opened += 1
        if self._lifetime == float("inf"):
            return stream
        return _LifetimeStream(stream, time.monotonic() + self._lifetime)
