"""One request on a pooled connection, from borrowing a slot to giving everything back.

`Exchange.open` borrows a slot and a connection; `Exchange.send` writes the request and
returns the connection to read the response from; `Exchange.aclose` (always, in a
``finally``) checks the connection in (kept only if its response was read to the end) and
releases the slot. Timeouts are the caller's cancel scopes (`own_deadline` says whether
one is needed), or a `Watchdog` that calls `Exchange.expire` at the deadline.

A kept-alive connection that turns out to be closed when the request is written (the
write fails) is replaced once by a new connection and the request written again: the
server cannot have processed a request it did not receive. A failure after the request
was written is never retried here (a POST is not idempotent); it surfaces as `ReadFailed`.
"""

from __future__ import annotations

from typing import final

import trio

from .connection import Connection
from .exceptions import LeanHTTPError, ReadTimeout, WriteFailed, WriteTimeout
from .pool import ConnectionPool

__all__ = ["Exchange", "own_deadline"]


def own_deadline(timeout: float) -> float | None:
    """``now + timeout``, or None when an enclosing deadline already ends sooner.

    A cancel scope costs several microseconds; when the caller's own deadline (a breaker's
    call timeout, an event timeout) comes first, ours could never fire and is skipped.
    """
    deadline = trio.current_time() + timeout
    return deadline if deadline < trio.current_effective_deadline() else None


@final
class Exchange:
    """A request's slot and connection. Use once; `aclose` is idempotent and never blocks.

    ``sent`` tells whether the request was fully written (for naming a timeout).
    """

    __slots__ = (
        "_connect_timeout",
        "_drop",
        "_held",
        "_no_body",
        "_pool",
        "conn",
        "expired",
        "sent",
    )

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._held = False
        self._no_body = False
        self._connect_timeout: float | None = None
        self._drop: Connection | None = None  # taken back by `close_nowait`, to be closed
        self.conn: Connection | None = None
        self.sent = False
        self.expired = False  # a `Watchdog` ended it at its deadline

    def open_nowait(self, now: float | None = None) -> bool:
        """`open` without waiting, when a slot is free and an idle connection is good to
        use at once (the common case; no frame of its own). False: call `open`, which
        keeps the slot this may have borrowed. ``now``: the trio clock's time, if the
        caller has just read it.

        Raises:
            PoolClosed.
        """
        pool = self._pool
        if not self._held:
            if not pool.try_acquire():
                return False
            self._held = True
        conn = pool.checkout_nowait(now)
        if conn is None:
            return False
        self.conn = conn
        conn.begin()
        return True

    async def open(
        self,
        *,
        no_body: bool = False,
        pool_timeout: float | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        """Borrow a slot and a connection (``no_body`` for HEAD).

        The timeouts replace the pool's ``connection_timeout`` for this request.

        Raises:
            PoolTimeout, PoolClosed, ConnectTimeout, ConnectFailed.
        """
        pool = self._pool
        if not self._held:
            if not pool.try_acquire():
                await pool.acquire(pool_timeout)
            self._held = True
        self._no_body = no_body
        self._connect_timeout = connect_timeout
        conn = self.conn = await pool.checkout(connect_timeout)
        conn.begin(no_body=no_body)

    async def send(self, head: bytes, body: bytes = b"", written: int = 0) -> Connection:
        """Write the request on the open connection; returns the connection to read from.
        ``written``: how many bytes of ``head`` `Connection.send_nowait` wrote already.

        Raises:
            WriteFailed: the connection broke (after the one retry, if it was kept alive).
            ConnectTimeout, ConnectFailed: the replacement connection could not be opened.
        """
        conn = self.conn
        assert conn is not None, "open() first"
        try:
            await conn.send(head[written:] if written else head, body)
        except WriteFailed:
            if conn.fresh:
                raise
            # Kept alive, then closed by the server while idle: it never saw this request
            # (a part of it at most, which it cannot have acted on).
            self.conn = None
            await self._pool.checkin(conn)
            conn = self.conn = await self._pool.connect(self._connect_timeout)
            if self.expired:  # the deadline passed while connecting (nothing to abort then)
                conn.abort()
                raise WriteFailed("the request deadline passed while reconnecting") from None
            conn.begin(no_body=self._no_body)
            await conn.send(head, body)
        self.sent = True
        return conn

    def expire(self) -> None:
        """The request's deadline passed (a `Watchdog` calls this): mark it and abort its
        connection, so that the task waiting on it wakes at once."""
        self.expired = True
        if self.conn is not None:
            self.conn.abort()

    def timeout_error(self, timeout: float) -> LeanHTTPError:
        """The error for a request deadline that expired in this exchange's phase."""
        if self.sent:
            return ReadTimeout(f"no complete response within {timeout}s")
        return WriteTimeout(f"the request was not sent within {timeout}s")

    def close_nowait(self) -> bool:
        """`aclose` without waiting when nothing needs closing (the connection went back
        idle, or there was none): True. False: call `aclose` to close the connection."""
        conn, self.conn = self.conn, None
        if conn is not None and not self._pool.keep(conn):
            self._drop = conn
            return False
        self._release()
        return True

    async def aclose(self) -> None:
        """Check the connection in (closed unless reusable) and release the slot."""
        conn, self.conn = self.conn, None
        drop, self._drop = self._drop, None
        try:
            if conn is not None and not self._pool.keep(conn):
                drop = conn
            if drop is not None:
                await drop.aclose()
        finally:
            self._release()

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._pool.release()
