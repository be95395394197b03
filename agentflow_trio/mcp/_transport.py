"""Open one MCP client session (stdio or streamable HTTP) that reports when its transport ends.

This is the only module that touches the SDK's transports. `open_client` yields a
connected ``mcp.Client`` (handshake done) and calls ``on_closed`` the moment the server
side of the transport ends (the stdio server exited, the HTTP stream closed), so the pool
can take the session out of rotation before any caller or ping trips over it.

The SDK is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import anyio

from ..config import MCPServerConfig

if TYPE_CHECKING:
    from mcp import Client
    from mcp.client._transport import Transport, TransportStreams
    from mcp.shared._stream_protocols import ReadStream

__all__ = ["describe_failure", "is_transport_failure", "open_client"]

_T = TypeVar("_T")

_EXCERPT = 200


@asynccontextmanager
async def open_client(
    config: MCPServerConfig, on_closed: Callable[[], None]
) -> AsyncIterator[Client]:
    """Connect to the server ``config`` describes and yield the ready ``mcp.Client``.

    Must be entered and exited by the same task (the SDK opens task groups inside).
    ``on_closed`` is called (synchronously, possibly several times) when the transport's
    read side ends. The response cache of the SDK client is off: every call reaches the
    server.

    Raises:
        Exception: whatever the SDK raises when the server cannot be started, reached or
            the handshake fails (``OSError``, ``mcp.MCPError``, ``httpx2`` errors, ...).
    """
    from mcp import Client

    transport = _WatchedTransport(_transport_for(config), on_closed)
    async with Client(transport, cache=None) as client:
        yield client


def _transport_for(config: MCPServerConfig) -> Transport:
    if config.url:
        from mcp.client.streamable_http import streamable_http_client

        bare = _without_userinfo(config.url)
        if bare == config.url:
            return streamable_http_client(config.url)
        return _credentialed_http(config.url, bare)
    from mcp import StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=config.command,
        args=list(config.args),
        env=dict(config.env) or None,
        cwd=config.cwd or None,
    )
    return stdio_client(params, errlog=_errlog())


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@asynccontextmanager
async def _credentialed_http(url: str, bare: str) -> AsyncIterator[TransportStreams]:
    """Streamable HTTP to ``bare`` with ``url``'s userinfo sent as Basic auth: the URL the
    SDK and httpx2 log then carries no password."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    parts = urlsplit(url)
    auth = httpx2.BasicAuth(unquote(parts.username or ""), unquote(parts.password or ""))
    # The SDK's own client settings: 30 s to connect, write or wait for the pool; 300 s to
    # read (a server may hold a response stream open).
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(auth=auth, timeout=timeout, follow_redirects=False) as client,
        streamable_http_client(bare, http_client=client) as streams,
    ):
        yield streams


def _errlog() -> TextIO:
    """The server's stderr goes to ours, or to the real one if ours has no descriptor."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__ or sys.stderr
    return sys.stderr


def is_transport_failure(exc: BaseException) -> bool:
    """True if ``exc`` means the session's connection is gone (not that the server said no).

    Only these failures mark a session unhealthy and let a call move to another session.
    """
    import httpx2
    from mcp.shared.exceptions import MCPError as SDKError
    from mcp_types import CONNECTION_CLOSED

    if isinstance(exc, SDKError):
        return exc.code == CONNECTION_CLOSED
    return isinstance(
        exc,
        OSError
        | anyio.BrokenResourceError
        | anyio.ClosedResourceError
        | anyio.EndOfStream
        | httpx2.TransportError,
    )


def describe_failure(exc: BaseException) -> str:
    """A one-line description of an SDK failure for error messages and statistics."""
    from mcp.shared.exceptions import MCPError as SDKError

    if isinstance(exc, SDKError):
        text = f"error {exc.code}: {exc.message}"
    elif isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return describe_failure(exc.exceptions[0])
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


class _WatchedTransport:
    """A ``Transport`` whose read stream calls ``on_closed`` when it ends."""

    def __init__(self, inner: Transport, on_closed: Callable[[], None]) -> None:
        self._inner = inner
        self._on_closed = on_closed

    async def __aenter__(self) -> TransportStreams:
        read, write = await self._inner.__aenter__()
        return _WatchedReadStream(read, self._on_closed), write

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, tb)


class _WatchedReadStream(Generic[_T]):
    """Forwards a ``ReadStream``; its end (EOF or closed under the reader) is reported."""

    def __init__(self, inner: ReadStream[_T], on_closed: Callable[[], None]) -> None:
        self._inner = inner
        self._on_closed = on_closed

    @property
    def last_context(self) -> Any:
        # The SDK's dispatcher reads this optional attribute (the sender's contextvars).
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> _T:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_closed()
            raise

    def __aiter__(self) -> _WatchedReadStream[_T]:
        return self

    async def __anext__(self) -> _T:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_closed()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedReadStream[_T]:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._inner.__aexit__(exc_type, exc, tb)
