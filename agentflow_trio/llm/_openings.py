"""A stream's opening through the guards of a `ProviderStack` (retry, circuit breaker).

Streams pass through retry and the breaker for their *opening* only: the chunks are read
outside them. `OpenThrough` is that opening, an ``async with`` value: each attempt opens
the transport's stream afresh, and every opening that succeeded is closed with the block.

With the default stack (retry over a breaker with a call timeout, over the lean session)
the first attempt runs in `OpenThrough.__aenter__`'s own frame when the deployment is not
paused and the breaker is closed: the same counts and deadline as ``retry.call(
breaker.call_bounded, open_once)`` (`Retry.try_first`, `CircuitBreaker.bound_nowait`), three
frames fewer between the caller and the socket, which a stream's first chunk waits on
twice (the request going out, the answer coming back). A failure of that attempt goes on
through `Retry.call_after`, whose attempts are the whole way round.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Any, final

import trio

from .._deadline import CALL_DEADLINE
from ..resilience import CircuitBreaker, Retry
from .base import Provider
from .types import ChatRequest, StreamChunk

__all__ = ["OpenThrough", "Opener"]

Opener = Callable[[Callable[[], Awaitable[AsyncIterator[StreamChunk]]]], Awaitable[Any]]
"""Runs one opening attempt function through the guards (``retry.call``, say)."""


@final
class OpenThrough:
    """Opens ``inner.stream(request)`` through ``call`` (each attempt a fresh opening).

    ``guards``: the `Retry` and `CircuitBreaker` that ``call`` nests (``retry.call(
    breaker.call_bounded, ...)``), for the first attempt in this frame (module docstring);
    None: every attempt through ``call``.

    Every opening that succeeded is closed when the block exits, or at once if ``call``
    raises after it (a breaker's timeout, say). A class rather than a generator context
    manager over an exit stack: the opening costs no extra frames.
    """

    __slots__ = ("_call", "_guards", "_inner", "_opened", "_request")

    def __init__(
        self,
        call: Opener,
        inner: Provider,
        guards: tuple[Retry, CircuitBreaker] | None,
        request: ChatRequest,
    ) -> None:
        self._call = call
        self._inner = inner
        self._guards = guards
        self._request = request
        self._opened: list[AbstractAsyncContextManager[AsyncIterator[StreamChunk]]] = []

    async def _open_once(self) -> AsyncIterator[StreamChunk]:
        opening = self._inner.stream(self._request)
        chunks = await opening.__aenter__()
        self._opened.append(opening)
        return chunks

    async def __aenter__(self) -> AsyncIterator[StreamChunk]:
        try:
            guards = self._guards
            if guards is None:
                chunks: AsyncIterator[StreamChunk] = await self._call(self._open_once)
                return chunks
            retry, breaker = guards
            await trio.lowlevel.checkpoint_if_cancelled()  # as `Retry.call` does first
            if not retry.try_first():  # the deployment is paused: the whole way round
                chunks = await self._call(self._open_once)
                return chunks
            bound = breaker.bound_nowait()
            if bound is None:  # not closed: the breaker's own way, this attempt too
                try:
                    chunks = await breaker.call_bounded(self._open_once)
                    return chunks
                except Exception as exc:
                    failed = exc
            else:
                deadline, token = bound
                try:
                    opening = self._inner.stream(self._request)
                    chunks = await opening.__aenter__()
                except Exception as exc:
                    failed = breaker.bounded_failure(deadline, exc)
                else:
                    breaker.bounded_success()
                    self._opened.append(opening)
                    return chunks
                finally:
                    CALL_DEADLINE.reset(token)
            chunks = await retry.call_after(failed, breaker.call_bounded, self._open_once)
            return chunks
        except BaseException as exc:
            await self._close(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await self._close(exc_type, exc, tb)

    async def _close(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        opened = self._opened
        if not opened:
            return False
        if len(opened) == 1:  # the usual case: one opening, closed as `async with` would
            return bool(await opened.pop().__aexit__(exc_type, exc, tb))
        stack = AsyncExitStack()  # several: the last opened is closed first
        for opening in opened:
            stack.push_async_exit(opening)
        opened.clear()
        return bool(await stack.__aexit__(exc_type, exc, tb))
