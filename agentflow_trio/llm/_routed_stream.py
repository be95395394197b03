"""`RoutedStream`: a router's stream, restarted elsewhere while nothing reached the caller.

The opening and first chunk of a deployment's stream are read within the group's
``first_token_timeout``; a failure, a stall or an end before that first chunk moves the
stream to the next deployment as any failed call would (`Plan`). Once a chunk has been
handed out, a failure, a gap longer than ``stream_idle_timeout`` or an end before
``finish_reason`` ends the stream with an `IncompleteStreamError` saying how much was
delivered. The last chunks say which deployment and model answered.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, final

import attrs
import trio

from ..errors import (
    IncompleteStreamError,
    LLMError,
    LLMTimeoutError,
    ResponseFormatError,
    StreamCutError,
    StreamEndedEarlyError,
    StreamStalledError,
)
from ._attempts import Core, Plan
from ._routing import Deployment, classify
from .types import ChatRequest, StreamChunk

__all__ = ["RoutedStream"]


@final
class RoutedStream:
    """The router's stream: an async context manager that is its own chunk iterator.

    ``__aenter__`` opens a deployment's stream and reads its first chunk (within
    ``first_token_timeout``), failing over until one gives a chunk; ``__anext__`` hands
    that chunk out, then the rest, each within ``stream_idle_timeout``; ``__aexit__``
    closes the deployment's stream. No cancel scope is held across a yield to the caller.
    """

    __slots__ = (
        "_chars",
        "_chunks",
        "_cm",
        "_core",
        "_count",
        "_dep",
        "_finished",
        "_pending",
        "_plan",
        "_probe",
        "_request",
        "_settled",
    )

    def __init__(self, core: Core, request: ChatRequest) -> None:
        self._core = core
        self._plan: Plan | None = None
        self._request = request
        self._dep: Deployment | None = None
        self._cm: AbstractAsyncContextManager[AsyncIterator[StreamChunk]] | None = None
        self._chunks: AsyncIterator[StreamChunk] | None = None
        self._pending: StreamChunk | None = None
        self._probe = False
        self._count = 0
        self._chars = 0
        self._finished = False
        self._settled = False

    async def __aenter__(self) -> RoutedStream:
        core = self._core
        plan = self._plan = core.plan(self._request.model, self._request)
        while True:
            dep = plan.pick()
            if dep is None:
                dep = await plan.wait_or_raise()
            probe = core.begin(dep)
            try:
                await self._open(dep)
            except Exception as exc:
                core.end(dep, probe)
                if not plan.failed(dep, exc, probe):
                    raise
                continue
            except BaseException:
                core.end(dep, probe)
                raise
            self._dep = dep
            self._probe = probe
            return self

    async def _open(self, dep: Deployment) -> None:
        cm = dep.provider.stream(dep.adapt_chat(self._request))
        limit = dep.group.first_token_timeout
        start = trio.current_time()
        entered = False
        first: StreamChunk | None = None
        try:
            with trio.CancelScope(deadline=start + limit if limit else math.inf):
                chunks = await cm.__aenter__()
                entered = True
                first = await chunks.__anext__()
        except BaseException as exc:
            if entered:
                await _close_quietly(cm)
            if isinstance(exc, StopAsyncIteration):
                raise StreamEndedEarlyError(
                    f"{dep.name}: the stream ended before its first chunk", deployment=dep.name
                ) from None
            raise
        if first is None:  # our own scope expired
            if entered:
                await _close_quietly(cm)
            raise StreamStalledError(
                f"{dep.name}: no first chunk within {limit:g}s (first_token_timeout)",
                deployment=dep.name,
            )
        dep.observe(trio.current_time() - start)
        self._cm, self._chunks, self._pending = cm, chunks, first

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> StreamChunk:
        chunk = self._pending
        if chunk is not None:
            self._pending = None
        else:
            chunk = await self._next()
        self._count += 1
        self._chars += len(chunk.delta_text)
        for delta in chunk.tool_call_deltas:
            self._chars += len(delta.arguments)
        if chunk.finish_reason is None and chunk.usage is None:
            return chunk
        if chunk.finish_reason is not None:
            self._finished = True
        dep = self._dep
        assert dep is not None
        # evolve, not a rebuild: every field (items, response_id, any later one) passes
        return attrs.evolve(chunk, model=chunk.model or dep.model, deployment=dep.name)

    async def _next(self) -> StreamChunk:
        chunks, dep = self._chunks, self._dep
        if chunks is None or dep is None:
            raise StopAsyncIteration
        idle = dep.group.idle_timeout
        try:
            if not idle or trio.current_time() + idle >= trio.current_effective_deadline():
                return await chunks.__anext__()
            with trio.move_on_after(idle):
                return await chunks.__anext__()
            raise StreamStalledError(
                f"{dep.name}: no chunk for {idle:g}s (stream_idle_timeout)", deployment=dep.name
            )
        except StopAsyncIteration:
            self._chunks = None
            if not self._finished:
                raise self._broken(
                    StreamEndedEarlyError(f"{dep.name}: the stream ended before finish_reason")
                ) from None
            self._settle(True)
            raise
        except Exception as exc:
            self._chunks = None
            raise self._broken(exc) from exc

    def _broken(self, exc: Exception) -> Exception:
        """Count ``exc`` against the deployment; the caller's error: the typed
        `IncompleteStreamError` saying what was delivered (other errors unchanged)."""
        dep = self._dep
        assert dep is not None
        self._settled = True
        kind = classify(exc)
        self._core.failed(dep, kind, exc, self._probe)
        if isinstance(exc, LLMTimeoutError):
            cls: type[IncompleteStreamError] = StreamStalledError
        elif isinstance(exc, ResponseFormatError):
            cls = StreamEndedEarlyError
        elif isinstance(exc, LLMError):
            cls = StreamCutError
        else:
            return exc
        self._core.errors += 1
        return cls(
            f"{dep.name}: the stream stopped after {self._count} chunks ({self._chars} "
            f"characters) had reached the caller: {exc}",
            delivered_chunks=self._count,
            delivered_chars=self._chars,
            deployment=dep.name,
        )

    def _settle(self, ok: bool) -> None:
        if not self._settled and ok and self._dep is not None:
            self._settled = True
            self._core.succeeded(self._dep, self._plan, None)

    async def __aexit__(self, *exc_info: object) -> None:
        cm, dep = self._cm, self._dep
        if cm is None or dep is None:
            return
        self._cm = self._chunks = self._pending = None
        self._settle(self._finished)
        try:
            await _close_quietly(cm)
        finally:
            self._core.end(dep, self._probe)


async def _close_quietly(cm: AbstractAsyncContextManager[Any]) -> None:
    """Leave a deployment's stream; an error while closing one we are done with is not
    the caller's (cancellation still propagates)."""
    with suppress(Exception):
        await cm.__aexit__(None, None, None)
