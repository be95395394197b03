"""A bounded pool of keep-alive connections to one origin, with the guide's settings.

`PoolSettings` carries ``max_connections``, ``min_connections``, ``connection_timeout``,
``request_timeout``, ``idle_timeout`` and ``max_connection_lifetime``, and the bounds of
each response its connections read (``max_response_bytes``, ``max_header_bytes``). A
request borrows a slot (`acquire`: ``max_connections`` of them, counted as a
``trio.Semaphore`` counts, first come first served; a wait longer than
``connection_timeout`` raises `PoolTimeout`), then a
connection (`checkout`: the most recently used idle one, else a new one, opened within
``connection_timeout``), and gives both back (`checkin`, `release`) in its ``finally``.
Slots are counted, not owned (a semaphore, not a ``CapacityLimiter``: no borrower set to
maintain per call); the borrower's ``finally`` (`Exchange.aclose`) releases exactly once.

Guarantees:

- Open connections (idle + checked out) never exceed ``max_connections``: every slot
  holder has at most one connection, and a new one is opened only when none is idle.
- A connection goes back to the idle stack only if its response was read to the end and
  the server allowed keep-alive (`Connection.reusable`); anything else (an error, a
  cancellation mid-request, ``Connection: close``) closes it. Closing never waits, so it
  is safe in a cancelled ``finally``.
- An idle connection is never handed out past its lifetime (``max_connection_lifetime``
  after it was opened; <= 0 means no limit) or when the server has closed it (the socket
  is readable while idle); such connections are closed and the next one tried.
- Idle connections unused for ``idle_timeout`` are closed when the pool is next used,
  oldest first, but never below ``min_connections`` open connections (the floor survives
  idleness; lifetime still retires it). ``idle_timeout <= 0`` keeps no idle connection
  beyond that floor. ``fill`` pre-opens up to ``min_connections``; no background task
  exists, so nothing runs between calls.
- With ``pooling`` off no connection is kept idle (and ``fill`` opens none): each request
  has a connection of its own, closed after its response.
- After `aclose`, idle connections are closed, busy ones are closed when checked in, and
  new requests raise `PoolClosed`.
"""

from __future__ import annotations

import functools
import logging
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, final

import attrs
import trio

from .._bodies import DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_RESPONSE_BYTES, configured_limits
from .._session import HTTPPoolStatistics
from ._socket import open_raw_stream
from .connection import Connection
from .exceptions import ConnectFailed, ConnectTimeout, PoolClosed, PoolTimeout
from .tls import start_tls
from .url import Origin

if TYPE_CHECKING:
    from ...config import LLMConfig

__all__ = ["ConnectionPool", "Connector", "PoolSettings", "tcp_connector"]

_log = logging.getLogger("agentflow_trio.llm.lean")

Connector = Callable[[], Awaitable[trio.abc.Stream]]
"""Opens one connected stream to the pool's origin (TCP, then TLS for https)."""

_CONNECT_ERRORS: Final = (OSError, trio.BrokenResourceError)


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _at_least(minimum: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if value < minimum:
            raise ValueError(f"{attribute.name} must be >= {minimum}, got {value!r}")

    return check


@attrs.frozen(slots=True)
class PoolSettings:
    """The pool and timeout settings of one provider (``[llm]``), in seconds.

    ``request_timeout`` bounds one call from its first byte sent to its last byte read
    (for streams: the head, then each gap between two parts). ``max_response_bytes``
    bounds a response body (as received, as declared, once decoded; a stream in all) and
    ``max_header_bytes`` its head; crossing one raises `ResponseTooLarge`. ``pooling``
    False (``connection_pooling = false``): no connection is kept once its response is
    read, so every request opens its own. Validated on construction.
    """

    max_connections: int = attrs.field(default=100, validator=_at_least(1))
    min_connections: int = attrs.field(default=0, validator=_at_least(0))
    connection_timeout: float = attrs.field(default=10.0, validator=_positive)
    request_timeout: float = attrs.field(default=60.0, validator=_positive)
    idle_timeout: float = 300.0
    max_connection_lifetime: float = 3600.0
    max_response_bytes: int = attrs.field(
        default=DEFAULT_MAX_RESPONSE_BYTES, validator=_at_least(1)
    )
    max_header_bytes: int = attrs.field(default=DEFAULT_MAX_HEADER_BYTES, validator=_at_least(1))
    pooling: bool = True

    def __attrs_post_init__(self) -> None:
        if self.min_connections > self.max_connections:
            raise ValueError("min_connections must not exceed max_connections")

    @classmethod
    def from_config(cls, llm: LLMConfig) -> PoolSettings:
        """The settings of an ``[llm]`` section."""
        max_response_bytes, max_header_bytes = configured_limits(llm)
        return cls(
            max_connections=llm.max_connections,
            min_connections=llm.min_connections,
            connection_timeout=llm.connection_timeout,
            request_timeout=llm.request_timeout,
            idle_timeout=llm.idle_timeout,
            max_connection_lifetime=llm.max_connection_lifetime,
            max_response_bytes=max_response_bytes,
            max_header_bytes=max_header_bytes,
            pooling=llm.connection_pooling,
        )


def tcp_connector(origin: Origin, ssl_context: ssl.SSLContext | None) -> Connector:
    """A `Connector` for ``origin``: TCP (no Nagle) on a `RawSocketStream`, or TLS with
    ``ssl_context`` for https (on trio's own `SocketStream`)."""

    if not origin.tls:  # the lean socket path (see _socket), awaited with no frame between
        return functools.partial(open_raw_stream, origin.host, origin.port)

    async def connect() -> trio.abc.Stream:
        tcp = await trio.open_tcp_stream(origin.host, origin.port)
        assert ssl_context is not None
        return await start_tls(tcp, origin.host, ssl_context)

    return connect


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):  # trio's "all attempts to connect failed"
        cause = cause.exceptions[0]
    detail = str(cause) if cause is not None else ""
    return f"{text}: {detail}" if detail and detail not in text else text


@final
class ConnectionPool:
    """Connections to one origin (see the module docstring). ``name`` appears in errors."""

    def __init__(
        self, connect: Connector, settings: PoolSettings, *, tls: bool = False, name: str = ""
    ) -> None:
        self._connect = connect
        self.settings = settings
        self.name = name
        self._tls = tls
        # Slots as `trio.Semaphore` keeps them, without its frames on the free path: the
        # free count, and a line of waiters, to whom `release` hands its slot directly (so
        # a free slot means nobody waits).
        self._free = settings.max_connections
        self._waiters = trio.lowlevel.ParkingLot()
        self._idle_timeout = settings.idle_timeout
        self._idle: deque[Connection] = deque()
        self._active = 0
        self._closed = False
        self._lifetime = (
            settings.max_connection_lifetime if settings.max_connection_lifetime > 0 else math.inf
        )
        self.opened = 0

    # -- slots ----------------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Borrow a slot if one is free and nobody waits (never blocks, not a checkpoint).

        Raises:
            PoolClosed: the pool is closed.
        """
        if self._closed:
            raise PoolClosed(f"{self.name}: the connection pool is closed")
        if self._free:
            self._free -= 1
            return True
        return False

    async def acquire(self, timeout: float | None = None) -> None:
        """Borrow a slot, waiting in line if none is free.

        Not a checkpoint when a slot is free (the request's I/O checkpoints right after).
        ``timeout`` replaces ``connection_timeout`` for this wait.

        Raises:
            PoolTimeout: no slot within ``connection_timeout``.
            PoolClosed: the pool is closed.
        """
        if self.try_acquire():
            return
        if timeout is None:
            timeout = self.settings.connection_timeout
        with trio.move_on_after(timeout):
            await self._waiters.park()  # woken by `release`, which hands over its slot
            return
        raise PoolTimeout(
            f"{self.name}: no connection free within {timeout}s "
            f"(max_connections={self.settings.max_connections})"
        )

    def release(self) -> None:
        """Give back a slot (sync: safe in any ``finally``); call once per `acquire`."""
        waiters = self._waiters
        if waiters:
            waiters.unpark()  # the slot goes to the first in line, the count unchanged
        else:
            self._free += 1

    # -- connections ------------------------------------------------------------------------

    def checkout_nowait(self, now: float | None = None) -> Connection | None:
        """The most recently used idle connection if it is good to use without waiting
        (not expired, not readable, no idle ones due for pruning), else None: call
        `checkout`. Call with a slot held. ``now``: the trio clock's time, if the caller
        has just read it (else it is read here).

        Raises:
            PoolClosed.
        """
        if self._closed:
            raise PoolClosed(f"{self.name}: the connection pool is closed")
        idle = self._idle
        if not idle:
            return None
        if now is None:
            now = trio.current_time()
        conn = idle[-1]
        if (
            idle[0].idle_since + self._idle_timeout <= now
            or conn.expires_at <= now
            or conn.readable()
        ):
            return None
        idle.pop()
        self._active += 1
        return conn

    async def checkout(self, timeout: float | None = None) -> Connection:
        """An idle connection that is still good, or a new one. Call with a slot held.

        ``timeout`` replaces ``connection_timeout`` for a connect.

        Raises:
            PoolClosed, ConnectTimeout, ConnectFailed.
        """
        if self._closed:
            raise PoolClosed(f"{self.name}: the connection pool is closed")
        idle = self._idle
        if idle:
            now = trio.current_time()
            if idle[0].idle_since + self._idle_timeout <= now:
                await self._prune(now)
            while idle:
                conn = idle.pop()
                if conn.expires_at > now and (not conn.readable() or await self._settles(conn)):
                    self._active += 1
                    return conn
                await conn.aclose()
        return await self.connect(timeout)

    async def _settles(self, conn: Connection) -> bool:
        # A readable idle connection: closed by the server, unless it is TLS housekeeping.
        try:
            return conn.tls and await conn.only_tls_housekeeping()
        except BaseException:
            await conn.aclose()  # taken off the idle stack: never leave it unowned
            raise

    async def connect(self, timeout: float | None = None) -> Connection:
        """A new connection, counted as checked out. Call with a slot held.

        ``timeout`` replaces ``connection_timeout``.

        Raises:
            ConnectTimeout: connecting took longer than ``connection_timeout``.
            ConnectFailed: refused, unreachable, DNS or TLS failure (cause chained).
        """
        if timeout is None:
            timeout = self.settings.connection_timeout
        with trio.move_on_after(timeout):
            try:
                stream = await self._connect()
            except _CONNECT_ERRORS as exc:
                raise ConnectFailed(f"{self.name}: cannot connect: {_describe(exc)}") from exc
            now = trio.current_time()
            self.opened += 1
            self._active += 1
            settings = self.settings
            return Connection(
                stream,
                opened_at=now,
                expires_at=now + self._lifetime,
                tls=self._tls,
                max_header_bytes=settings.max_header_bytes,
                max_response_bytes=settings.max_response_bytes,
            )
        raise ConnectTimeout(f"{self.name}: connecting took longer than {timeout}s")

    def keep(self, conn: Connection) -> bool:
        """Take back a checked-out connection; True if it went idle, False if the caller
        must close it (`checkin` does both). Sync: the common path never awaits."""
        self._active -= 1
        now = trio.current_time()
        if (
            not conn.reusable
            or self._closed
            or conn.expires_at <= now
            or not self._keeps_idle()
            or not self.settings.pooling
        ):
            return False
        conn.idle_since = now
        conn.fresh = False
        self._idle.append(conn)
        return True

    async def checkin(self, conn: Connection) -> None:
        """Take back a checked-out connection: idle if reusable, else closed."""
        if not self.keep(conn):
            await conn.aclose()
            return
        now = conn.idle_since
        if self._idle[0].idle_since + self._idle_timeout <= now:
            await self._prune(now)

    def _keeps_idle(self) -> bool:
        if self._idle_timeout > 0:
            return True
        return self._active + len(self._idle) < self.settings.min_connections

    async def _prune(self, now: float) -> None:
        idle = self._idle
        limit = self._idle_timeout
        floor = self.settings.min_connections
        while idle and idle[0].idle_since + limit <= now and self._active + len(idle) > floor:
            await idle.popleft().aclose()

    async def fill(self, count: int) -> int:
        """Open connections until ``count`` are open (at most ``max_connections``).

        Connects concurrently, each holding a slot; best effort: failures are logged and
        skipped. Returns how many were opened.
        """
        if not self.settings.pooling:
            return 0  # nothing would be kept
        wanted = min(count, self.settings.max_connections) - self._active - len(self._idle)
        opened = 0
        failures: list[str] = []

        async def open_one() -> None:
            nonlocal opened
            if not self.try_acquire():
                return
            try:
                conn = await self.connect()
                opened += 1
                await self.checkin(conn)
            except (ConnectFailed, ConnectTimeout) as exc:
                failures.append(str(exc))
            finally:
                self.release()

        if wanted > 0 and not self._closed:
            async with trio.open_nursery() as nursery:
                for _ in range(wanted):
                    nursery.start_soon(open_one)
        if failures:
            _log.info(
                "pre-opening %d connection(s): %d failed: %s", wanted, len(failures), failures[0]
            )
        return opened

    def statistics(self) -> HTTPPoolStatistics:
        """Connections open (checked out + idle), slots borrowed and waited for, opened."""
        waiting = len(self._waiters)
        borrowed = self.settings.max_connections - self._free
        idle = len(self._idle)
        return HTTPPoolStatistics(
            connections=self._active + idle,
            active=self._active,
            idle=idle,
            requests=borrowed + waiting,
            queued=waiting,
            opened=self.opened,
        )

    async def aclose(self) -> None:
        """Close idle connections and refuse new requests; busy ones close at checkin.

        Idempotent; never blocks (closing is forceful).
        """
        self._closed = True
        while self._idle:
            await self._idle.pop().aclose()
