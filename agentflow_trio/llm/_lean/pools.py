"""One `ConnectionPool` per origin, made on first use, with shared settings and TLS context."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import final

from .._session import HTTPPoolStatistics
from .exceptions import PoolClosed
from .pool import ConnectionPool, Connector, PoolSettings, tcp_connector
from .tls import default_ssl_context
from .url import Origin

__all__ = ["PoolSet"]


@final
class PoolSet:
    """The pools of a session or transport, keyed by `Origin`.

    ``ssl_context`` defaults to `default_ssl_context` (made only when an https origin is
    first used); ``connector`` builds each pool's `Connector` (tests swap in memory streams).
    """

    def __init__(
        self,
        settings: PoolSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connector: Callable[[Origin, ssl.SSLContext | None], Connector] = tcp_connector,
    ) -> None:
        self.settings = settings
        self._ssl_context = ssl_context
        self._connector = connector
        self._pools: dict[Origin, ConnectionPool] = {}
        self._closed = False

    def pool(self, origin: Origin) -> ConnectionPool:
        """The pool of ``origin`` (created on first use).

        Raises:
            PoolClosed: the set was closed.
        """
        pool = self._pools.get(origin)
        if pool is None:
            if self._closed:
                raise PoolClosed("the connection pools are closed")
            context = None
            if origin.tls:
                context = self._ssl_context or default_ssl_context()
            pool = ConnectionPool(
                self._connector(origin, context),
                self.settings,
                tls=origin.tls,
                name=f"{origin.scheme}://{origin.host_header()}",
            )
            self._pools[origin] = pool
        return pool

    def statistics(self) -> HTTPPoolStatistics:
        """The sum of every pool's statistics (all zero before the first request)."""
        snapshots = [pool.statistics() for pool in self._pools.values()]
        return HTTPPoolStatistics(
            connections=sum(s.connections for s in snapshots),
            active=sum(s.active for s in snapshots),
            idle=sum(s.idle for s in snapshots),
            requests=sum(s.requests for s in snapshots),
            queued=sum(s.queued for s in snapshots),
            opened=sum(s.opened for s in snapshots),
        )

    async def aclose(self) -> None:
        """Close every pool (idle connections now, busy ones at checkin). Idempotent."""
        self._closed = True
        for pool in self._pools.values():
            await pool.aclose()
