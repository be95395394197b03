"""`SessionPool`: N sessions to one MCP server, round-robin, health-checked, self-healing.

Ownership is the point of this module (it is what pydantic-ai #2355/#2818 got wrong: "exit
cancel scope in a different task"). Each session has exactly one *owner task*, started by
`SessionPool.serve`. The owner enters the transport and ``ClientSession`` context managers,
stays inside them for the session's whole life, and is the only task that ever leaves
them. Callers never enter a session's context: they borrow the connected client and use
its request API (``call_tool``, ``send_ping``), which is safe from any task of the same
trio run while the owner keeps the context open. To drop a session, anyone *asks* its
owner (an event); the owner leaves the contexts, waits out a backoff and reconnects.

A session leaves rotation when its transport ends (the stdio server exited, the HTTP
stream closed: noticed at once), when a call on it fails for lack of a connection, or when
a ping gets no answer within ``min(health_interval, call_timeout)`` (a silent server).
Reconnects back off exponentially from 0.1 s to 10 s; the delay starts over once a session
has stayed up for a ``health_interval``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from ..config import MCPServerConfig, format_duration
from ..errors import MCPError
from ..observability import tracing as _tracing
from ._transport import describe_failure, is_transport_failure, open_client

if TYPE_CHECKING:
    from mcp import Client
    from mcp.types import CallToolResult, Tool

__all__ = ["PoolStatistics", "SessionPool", "SessionStatistics"]

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 10.0
_LIST_PAGES_MAX = 100
_ATTEMPTS = 2  # a call that lost its connection is retried once, on another session


@attrs.frozen
class SessionStatistics:
    """One session of a pool.

    ``calls`` counts the calls routed to it (including the one that failed over);
    ``failures`` the times it was taken out of rotation; ``reconnects`` the times it came
    back after that; ``last_error`` says why it was last taken out (or failed to connect).
    """

    index: int
    healthy: bool
    calls: int
    failures: int
    reconnects: int
    last_error: str


@attrs.frozen
class PoolStatistics:
    """A pool at one instant: ``healthy_sessions`` of ``total_sessions`` in rotation.

    ``calls`` counts `SessionPool.call_tool` attempts, ``failovers`` the calls retried on a
    second session after their first one lost its connection, ``pings_failed`` the health
    checks that took a session out, ``reconnects`` the sessions re-established.
    """

    server: str
    healthy_sessions: int
    total_sessions: int
    calls: int
    failovers: int
    pings_failed: int
    reconnects: int
    sessions: tuple[SessionStatistics, ...]


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    OPEN = "open"
    CLOSED = "closed"


class _Link:
    """One connection of a slot: its client once connected, and why it ended."""

    __slots__ = ("client", "connected_at", "ended", "leaving", "reason")

    def __init__(self) -> None:
        self.client: Client | None = None
        self.connected_at = math.inf
        self.ended = trio.Event()  # asks the owner to drop the connection
        self.leaving = False  # the owner is closing it: late failures are expected
        self.reason = ""


class _Slot:
    """A place in the pool, filled by successive `_Link`s by its owner task."""

    __slots__ = ("calls", "failures", "index", "last_error", "link", "reconnects", "settled")

    def __init__(self, index: int) -> None:
        self.index = index
        self.link: _Link | None = None  # set only while connected and in rotation
        self.settled = trio.Event()  # the first connection attempt is over
        self.calls = 0
        self.failures = 0
        self.reconnects = 0
        self.last_error = ""


@final
class SessionPool:
    """``config.pool_size`` sessions to the MCP server ``name``, used round-robin.

    A stdio session is its own server subprocess; an HTTP session its own MCP client with
    its own connections. The protocol version is negotiated per session by the SDK
    (2026-07-28 ``server/discover``, else the ``initialize`` handshake).

    Run it with ``await nursery.start(pool.serve)`` (it returns once every session has
    made its first attempt and the tools are listed) and, for health checks,
    ``await nursery.start(pool.serve_health_checks)``; cancelling that nursery closes every
    session and stops every subprocess this pool started.

    Guarantees of `call_tool`: it never waits for a session (with none healthy it fails at
    once); it never runs longer than its timeout; a call that lost its connection is retried
    once on another healthy session (never a call the server answered, even with an error);
    cancelling the caller cancels the MCP request (the SDK sends
    ``notifications/cancelled``) and leaves the session in rotation.
    """

    def __init__(
        self,
        name: str,
        config: MCPServerConfig,
        *,
        backoff: tuple[float, float] = (_BACKOFF_FIRST, _BACKOFF_MAX),
    ) -> None:
        self._name = name
        self._config = config
        self._backoff_first, self._backoff_max = backoff
        self._slots = tuple(_Slot(i) for i in range(config.pool_size))
        self._next = 0
        self._state = _State.NEW
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._tools: tuple[Tool, ...] = ()
        self._calls = 0
        self._failovers = 0
        self._pings_failed = 0

    @property
    def name(self) -> str:
        """The server's name (the key of its ``[mcp.servers.NAME]`` table)."""
        return self._name

    @property
    def config(self) -> MCPServerConfig:
        return self._config

    @property
    def tools(self) -> tuple[Tool, ...]:
        """The server's tools (``mcp.types.Tool``) as listed when the pool started."""
        return self._tools

    # ----------------------------------------------------------------- running

    async def serve(
        self, *, task_status: trio.TaskStatus[SessionPool] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own every session of the pool until cancelled (or `aclose`).

        Reports started (with the pool) once every session has made its first connection
        attempt and the tools are listed; sessions that failed keep retrying in the
        background. When it returns, every session is closed and every stdio subprocess
        of this pool has exited (the SDK closes stdin, then terminates, then kills).

        Raises:
            MCPError: before reporting started: no session could connect, or listing the
                tools failed; the message names the server and the cause.
            RuntimeError: the pool was already served.
        """
        if self._state is not _State.NEW:
            raise RuntimeError(f"SessionPool {self._name!r} can be served only once")
        self._state = _State.STARTING
        failure: MCPError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                for slot in self._slots:
                    nursery.start_soon(self._own, slot, name=f"mcp:{self._name}#{slot.index}")
                for slot in self._slots:
                    await slot.settled.wait()
                try:
                    self._tools = await self._list_tools()
                except MCPError as exc:
                    failure = exc
                    nursery.cancel_scope.cancel()
                else:
                    self._state = _State.OPEN
                    task_status.started(self)
        finally:
            self._state = _State.CLOSED
            for slot in self._slots:
                slot.link = None
            self._stopped.set()
        if failure is not None:
            raise failure

    async def serve_health_checks(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Ping every session in rotation every ``health_interval``, until cancelled.

        Each ping runs under ``min(health_interval, call_timeout)``. A ping that times out
        or finds the connection gone takes its session out (its owner reconnects it); any
        answer, even a JSON-RPC error (2026-era servers dropped ``ping``), proves it alive.
        """
        interval = self._config.health_interval
        task_status.started()
        deadline = trio.current_time()
        while True:
            deadline = max(deadline + interval, trio.current_time())
            await trio.sleep_until(deadline)
            async with trio.open_nursery() as nursery:
                for slot in self._slots:
                    link = slot.link
                    if link is not None and link.client is not None:
                        nursery.start_soon(self._probe, slot, link, link.client)

    async def aclose(self) -> None:
        """Stop `serve` and wait until every session is closed. Idempotent; always closes."""
        self._state = _State.CLOSED
        if self._scope is None:
            self._stopped.set()
            return
        self._scope.cancel()
        with trio.CancelScope(shield=True):
            await self._stopped.wait()

    # ----------------------------------------------------------------- calling

    async def call_tool(
        self,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> CallToolResult:
        """Call ``tool`` on the next healthy session and return the SDK's result.

        A tool that failed (``isError``) is a result, not an exception. ``timeout``
        (default ``call_timeout``) bounds the whole call, the failover included. A call
        retried after a lost connection may also have run on the lost session (the server
        may have died after running it): the retry is at-least-once.

        Raises:
            MCPError: no session is healthy; the call timed out; the connection was lost
                on two sessions (or on the only one); the server answered with a JSON-RPC
                error or a malformed result. The message names the server and the tool.
        """
        await trio.lowlevel.checkpoint()
        limit = self._config.call_timeout if timeout is None else timeout
        args = dict(arguments or {})
        tried: list[_Slot] = []
        lost = ""
        with trio.move_on_after(limit):
            while len(tried) < _ATTEMPTS:
                slot, link, client = self._checkout(tried, f"tools/call {tool!r}", lost)
                tried.append(slot)
                slot.calls += 1
                self._calls += 1
                if len(tried) > 1:
                    self._failovers += 1
                call = client.call_tool(tool, args)
                if _tracing.active is not None:  # a ``tools/call`` span around it
                    call = _tracing.active.mcp(self.name, tool, call)
                try:
                    return await call
                except Exception as exc:
                    if not is_transport_failure(exc):
                        what = f"tools/call {tool!r} failed: {describe_failure(exc)}"
                        raise self._error(what) from exc
                    lost = f"connection lost ({describe_failure(exc)})"
                    self._take_out(slot, link, f"call failed: {describe_failure(exc)}")
            raise self._error(f"tools/call {tool!r}: {lost} on {len(tried)} sessions")
        raise self._error(f"tools/call {tool!r} timed out after {format_duration(limit)}")

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool: health, calls per session, failovers, reconnects."""
        sessions = tuple(
            SessionStatistics(
                index=slot.index,
                healthy=slot.link is not None,
                calls=slot.calls,
                failures=slot.failures,
                reconnects=slot.reconnects,
                last_error=slot.last_error,
            )
            for slot in self._slots
        )
        return PoolStatistics(
            server=self._name,
            healthy_sessions=sum(s.healthy for s in sessions),
            total_sessions=len(sessions),
            calls=self._calls,
            failovers=self._failovers,
            pings_failed=self._pings_failed,
            reconnects=sum(s.reconnects for s in sessions),
            sessions=sessions,
        )

    # ----------------------------------------------------------------- internals

    def _error(self, message: str) -> MCPError:
        return MCPError(f"MCP server {self._name!r}: {message}")

    def _checkout(
        self, exclude: Sequence[_Slot], what: str, lost: str
    ) -> tuple[_Slot, _Link, Client]:
        """The next healthy slot in round-robin order, not in ``exclude``; never waits."""
        if self._state is _State.CLOSED:
            raise self._error(f"{what}: the pool is closed")
        count = len(self._slots)
        for step in range(count):
            slot = self._slots[(self._next + step) % count]
            link = slot.link
            if link is not None and link.client is not None and slot not in exclude:
                self._next = (slot.index + 1) % count
                return slot, link, link.client
        healthy = sum(slot.link is not None for slot in self._slots)
        cause = lost or next((s.last_error for s in self._slots if s.last_error), "")
        detail = f"; last error: {cause}" if cause else ""
        raise self._error(f"{what}: no healthy session ({healthy} of {count} up{detail})")

    def _take_out(self, slot: _Slot, link: _Link, reason: str) -> None:
        """Take ``link`` out of rotation and ask its owner to drop it (callers, pings and
        the transport watcher call this). Idempotent; ignored once the owner is closing it."""
        if not link.leaving:
            self._end(slot, link, reason)

    def _end(self, slot: _Slot, link: _Link, reason: str) -> None:
        if slot.link is link:
            slot.link = None
        if not link.ended.is_set():
            link.reason = reason
            slot.last_error = reason
            if link.client is not None:
                slot.failures += 1
            link.ended.set()

    async def _own(self, slot: _Slot) -> None:
        """The owner task of ``slot``: connect, hold, reconnect with backoff; forever."""
        delay = self._backoff_first
        while True:
            link = _Link()
            await self._hold(slot, link)
            slot.settled.set()
            if trio.current_time() - link.connected_at >= self._config.health_interval:
                delay = self._backoff_first
            await trio.sleep(delay)
            delay = min(delay * 2, self._backoff_max)

    async def _hold(self, slot: _Slot, link: _Link) -> None:
        """Connect ``link`` and keep its contexts open until it is asked to end."""
        config = self._config
        closed = partial(self._take_out, slot, link, "the transport closed")
        with trio.CancelScope(deadline=trio.current_time() + config.connect_timeout) as scope:
            try:
                async with open_client(config, closed) as client:
                    scope.deadline = math.inf  # the connect timeout covers the handshake only
                    self._attach(slot, link, client)
                    try:
                        await link.ended.wait()
                    finally:  # out of rotation before the contexts start closing
                        link.leaving = True
                        if slot.link is link:
                            slot.link = None
            except* Exception as group:  # Cancelled (never an Exception) propagates untouched
                self._end(slot, link, describe_failure(group))
        if scope.cancelled_caught:
            self._end(slot, link, f"no connection within {format_duration(config.connect_timeout)}")

    def _attach(self, slot: _Slot, link: _Link, client: Client) -> None:
        link.client = client
        link.connected_at = trio.current_time()
        if slot.settled.is_set():
            slot.reconnects += 1
        if not link.ended.is_set():  # the transport may have ended during the handshake
            slot.link = link
        slot.settled.set()

    async def _probe(self, slot: _Slot, link: _Link, client: Client) -> None:
        timeout = min(self._config.health_interval, self._config.call_timeout)
        with trio.move_on_after(timeout) as scope:
            try:
                await client.session.send_ping()
            except Exception as exc:
                if is_transport_failure(exc):
                    self._ping_failed(slot, link, f"ping failed: {describe_failure(exc)}")
                return
        if scope.cancelled_caught:
            self._ping_failed(slot, link, f"no answer to ping within {format_duration(timeout)}")

    def _ping_failed(self, slot: _Slot, link: _Link, reason: str) -> None:
        if slot.link is link:
            self._pings_failed += 1
        self._take_out(slot, link, reason)

    async def _list_tools(self) -> tuple[Tool, ...]:
        """Every page of ``tools/list`` from one healthy session, under ``call_timeout``."""
        tools: list[Tool] = []
        cursor: str | None = None
        with trio.move_on_after(self._config.call_timeout):
            _, _, client = self._checkout((), "tools/list", "")
            for _ in range(_LIST_PAGES_MAX):
                try:
                    page = await client.list_tools(cursor=cursor)
                except Exception as exc:
                    raise self._error(f"tools/list failed: {describe_failure(exc)}") from exc
                tools.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    return tuple(tools)
            raise self._error(f"tools/list sent more than {_LIST_PAGES_MAX} pages")
        limit = format_duration(self._config.call_timeout)
        raise self._error(f"tools/list timed out after {limit}")
