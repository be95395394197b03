"""The ``chat`` spans around a provider's calls and streams: `TracedProvider`.

`Instruments.provider` wraps a provider in one (kept while the provider stays the same);
each call or stream then runs under a ``chat`` span that `Instruments` opens, fills with
what the model answered and ends. A stream's span notes its time to the first chunk.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, final

from opentelemetry.trace import Span

from ._trace_context import attach, detach

__all__ = ["TracedProvider"]


@final
class TracedProvider:
    """A provider whose calls and streams each run under a ``chat`` span."""

    __slots__ = ("_inner", "_instruments")

    def __init__(self, instruments: Any, inner: Any) -> None:
        self._instruments = instruments
        self._inner = inner

    async def complete(self, request: Any) -> Any:
        inst = self._instruments
        opened = inst.open_chat(request)
        try:
            response = await self._inner.complete(request)
        except BaseException as exc:
            inst.close_chat(opened, None, exc)
            raise
        inst.close_chat(opened, response, None)
        return response

    def stream(self, request: Any) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
        return _traced_stream(self._instruments, self._inner, request)

    async def embed(self, request: Any) -> Any:
        return await self._inner.embed(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def _traced_stream(inst: Any, inner: Any, request: Any) -> AsyncIterator[AsyncIterator[Any]]:
    span = inst.chat_span(request, True)
    started = time.perf_counter_ns()
    chunks: _StreamNotes | None = None
    try:
        token = attach(span)
        try:
            opened = inner.stream(request)
            source = await opened.__aenter__()
        finally:
            detach(token)
        try:
            chunks = _StreamNotes(span, source, started, inst.capture_content)
            yield chunks
        except BaseException as exc:
            if not await opened.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await opened.__aexit__(None, None, None)
    except BaseException as exc:
        inst.failed(span, exc)
        raise
    finally:
        if chunks is not None:
            inst.answered(
                span,
                chunks.model,
                chunks.deployment,
                chunks.finish,
                chunks.usage,
                "".join(chunks.text) if inst.capture_content else "",
            )
        span.end()


@final
class _StreamNotes:
    """A stream's chunks, passed on; notes the first one's time and the last figures."""

    __slots__ = (
        "_capture",
        "_inner",
        "_span",
        "_started",
        "deployment",
        "finish",
        "model",
        "text",
        "usage",
    )

    def __init__(self, span: Span, inner: AsyncIterator[Any], started: int, capture: bool) -> None:
        self._span = span
        self._inner = inner
        self._started = started
        self._capture = capture
        self.model = self.deployment = ""
        self.finish: str | None = None
        self.usage: Any = None
        self.text: list[str] = []

    def __aiter__(self) -> _StreamNotes:
        return self

    async def __anext__(self) -> Any:
        chunk = await self._inner.__anext__()
        if self._started:
            seconds = (time.perf_counter_ns() - self._started) / 1e9
            self._span.set_attribute("gen_ai.response.time_to_first_chunk", seconds)
            self._span.add_event("gen_ai.first_chunk")
            self._started = 0
        if chunk.model:
            self.model = chunk.model
        if chunk.deployment:
            self.deployment = chunk.deployment
        if chunk.finish_reason:
            self.finish = chunk.finish_reason
        if chunk.usage is not None:
            self.usage = chunk.usage
        if self._capture and chunk.delta_text and len(self.text) < 4096:
            self.text.append(chunk.delta_text)
        return chunk
