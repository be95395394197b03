"""The HTTP session seam: what the adapters need from an HTTP client, and nothing else.

Two clients implement `Session`: the lean HTTP/1.1 client of ``_lean`` (the default,
``[llm] transport = "lean"``) and the httpx2 one of ``http`` (the alternative, and the
fallback where the lean one cannot serve). Both import this module; neither imports the
other, and the adapters (OpenAI, Azure, Ollama) see only this interface, the way httpx's
client sees only ``AsyncBaseTransport``. `HTTPPoolStatistics` is the pool snapshot both
return, so `StackStatistics.pool` reads the same whichever client runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

if TYPE_CHECKING:
    from ._accumulate import ChunkDecoder, GuardedChunks

__all__ = ["HTTPPoolStatistics", "LineDecoder", "PoolStatistics", "Session"]

T = TypeVar("T")


class LineDecoder(Protocol):
    """What `Session.open_stream` needs from a stream decoder (``SSEDecoder``, ...).

    ``feed`` takes the next bytes of the body and returns the payloads they complete;
    ``finish`` is called at the end of the body (it raises `ResponseFormatError` if the
    stream stopped before its terminator); ``done`` turns true at the terminator.
    """

    done: bool

    def feed(self, data: bytes) -> list[Any]: ...

    def finish(self) -> list[Any]: ...


@attrs.frozen(slots=True)
class HTTPPoolStatistics:
    """A snapshot of an LLM session's connection pool (either client).

    ``connections`` open (``active`` serving a request + ``idle``); ``requests`` in the pool,
    of which ``queued`` still wait for a connection; ``opened`` connections made so far.
    After every call has returned (or been cancelled), ``requests == active == 0``.
    """

    connections: int
    active: int
    idle: int
    requests: int
    queued: int
    opened: int


PoolStatistics = HTTPPoolStatistics
"""The earlier name of `HTTPPoolStatistics` (``agentflow_trio.mcp`` has its own)."""


class Session(Protocol):
    """What the adapters need from an HTTP session: the lean one or the httpx2 one.

    ``deployment`` names the target in errors. ``post_json(url, body)`` POSTs JSON bytes
    and returns the decoded answer. ``open_stream(...)`` POSTs and yields an iterator of
    ``parse(payload)`` for each payload ``decoder`` cuts from the body (None results
    skipped); the connection is released on every exit from the block, cancellation
    included. ``open_guarded(url, body, decoder, content_types)`` is ``open_stream`` of a
    `ChunkDecoder`'s chunks handed out as `GuardedChunks` (what the chat adapters read).
    Both raise the `agentflow_trio.errors` classes: `TransportError` family for
    no usable response, `APIStatusError` subclasses for error statuses,
    `ResponseFormatError` for a body that is not the expected JSON or stream.
    ``pool_statistics`` feeds `StackStatistics.pool`; ``aclose`` is idempotent.
    """

    deployment: str

    async def post_json(self, url: str, body: bytes) -> Any: ...

    def open_stream(
        self,
        url: str,
        body: bytes,
        decoder: LineDecoder,
        parse: Callable[[Any], T | None],
        content_types: tuple[str, ...],
    ) -> AbstractAsyncContextManager[AsyncIterator[T]]: ...

    def open_guarded(
        self, url: str, body: bytes, decoder: ChunkDecoder, content_types: tuple[str, ...]
    ) -> AbstractAsyncContextManager[GuardedChunks]: ...

    def pool_statistics(self) -> HTTPPoolStatistics: ...

    async def aclose(self) -> None: ...
