"""The per-event work around one model call that belongs to the caller, not the provider:
the event's usage and budget, and text deltas sent to a streaming caller.

`LLMClient` sends every model call through `complete` and `stream` here. With no event
meter and no progress sink in the context they are a plain pass-through (two context
variable lookups). With a meter (`agentflow_trio.usage`): the call is checked against
the event's limits before it is sent (`UsageLimitExceeded` instead of sending) and
charged after it (``response.usage`` under ``response.model`` and
``response.deployment``); a stream is also checked as it goes, its output estimated at
4 characters a token until the provider's usage chunk says the real figure. With a
sink (`agentflow_trio.progress`): each chunk's text is sent to the caller as a
`TextDelta`, awaiting the sink, so a slow caller slows the model stream down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, final

import trio

from ..observability import tracing as _tracing
from ..progress import ProgressSink, current_sink, text_delta
from ..usage import UsageMeter, current_meter
from .base import Provider
from .types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamChunk,
    Usage,
    estimate_input_tokens,
)

__all__ = ["complete", "embed", "stream", "unmetered"]

_CHARS_PER_TOKEN: Final = 4


def _charge(meter: UsageMeter, request: ChatRequest, usage: Usage, model: str, dep: str) -> None:
    meter.charge(
        model or request.model or "",
        dep,
        usage.prompt_tokens,
        usage.completion_tokens,
        getattr(usage, "cached_tokens", 0),
        getattr(usage, "cache_creation_tokens", 0),
    )


def unmetered() -> bool:
    """True when `complete` would be a plain pass-through (no tracing, no event meter): a
    caller may then call the provider itself and save a frame per call."""
    return _tracing.active is None and current_meter() is None


async def complete(provider: Provider, request: ChatRequest) -> ChatResponse:
    """One completion, checked against and charged to the current event's usage.

    Raises:
        UsageLimitExceeded: the call would pass a limit of the event (nothing is sent).
        The provider's errors.
    """
    meter = current_meter()
    estimate = 0
    if meter is not None:
        estimate = estimate_input_tokens(request)
        meter.start_call(estimate)
    # a ``chat`` span around the call, opened and closed in this frame (no coroutine);
    # written so that bench/tracing_overhead.py's baseline build reads ``traced = None``
    traced = None if _tracing.active is None else _tracing.active
    chat = None if traced is None else traced.open_chat(request)
    try:
        response = await provider.complete(request)
    except BaseException as exc:
        if traced is not None:
            traced.close_chat(chat, None, exc)
        raise
    if traced is not None:
        traced.close_chat(chat, response, None)
    if meter is None:
        return response
    usage = response.usage
    if usage is None:  # nothing reported: charge the estimates
        usage = Usage(estimate, len(response.text) // _CHARS_PER_TOKEN)
    meter.charge(
        response.model or request.model or "",
        response.deployment,
        usage.prompt_tokens,
        usage.completion_tokens,
        getattr(usage, "cached_tokens", 0),
        getattr(usage, "cache_creation_tokens", 0),
    )
    return response


async def embed(provider: Provider, request: EmbeddingRequest) -> EmbeddingResponse:
    """One embeddings call, checked against and charged to the current event's usage (its
    inputs are input tokens; there is no output).

    Raises:
        UsageLimitExceeded: the call would pass a limit of the event (nothing is sent).
        The provider's errors.
    """
    meter = current_meter()
    if meter is None:
        return await provider.embed(request)
    estimate = sum(len(text) for text in request.inputs) // _CHARS_PER_TOKEN + 1
    meter.start_call(estimate)
    response = await provider.embed(request)
    used = response.usage
    tokens = used.prompt_tokens if used is not None and used.prompt_tokens else estimate
    meter.charge(response.model or request.model or "", response.deployment, tokens, 0, 0)
    return response


def stream(
    provider: Provider, request: ChatRequest
) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
    """One stream, checked against and charged to the current event's usage as it goes,
    its text sent to the current progress sink.

    Raises (on entering, or while iterating):
        UsageLimitExceeded: before sending, as `complete`; while streaming, once the
            output passes ``max_output_tokens`` or ``max_total_tokens`` (the stream is
            closed).
    """
    if _tracing.active is not None:  # a ``chat`` span around the stream
        provider = _tracing.active.provider(provider)
    meter = current_meter()
    sink = current_sink()
    if meter is None and sink is None:
        return provider.stream(request)
    return _metered(provider, request, meter, sink)


@asynccontextmanager
async def _metered(
    provider: Provider, request: ChatRequest, meter: UsageMeter | None, sink: ProgressSink | None
) -> AsyncIterator[AsyncIterator[StreamChunk]]:
    estimate = 0
    if meter is not None:
        estimate = estimate_input_tokens(request)
        meter.start_call(estimate)
    chunks: _Chunks | None = None
    try:
        async with provider.stream(request) as inner:
            chunks = _Chunks(inner, request, meter, sink, estimate)
            yield chunks
    finally:
        if meter is not None and chunks is not None:
            # A stream that never opened is charged nothing, as a completion that failed.
            chunks.charge()


@final
class _Chunks:
    """The provider's chunks, each counted and its text sent on before it is handed out."""

    __slots__ = ("_chars", "_deployment", "_estimate", "_inner", "_meter", "_model", "_request",
                 "_sink", "_usage")  # fmt: skip

    def __init__(
        self,
        inner: AsyncIterator[StreamChunk],
        request: ChatRequest,
        meter: UsageMeter | None,
        sink: ProgressSink | None,
        estimate: int,
    ) -> None:
        self._inner = inner
        self._request = request
        self._meter = meter
        self._sink = sink
        self._estimate = estimate
        self._chars = 0  # text and tool-call arguments streamed so far
        self._usage: Usage | None = None
        self._model = request.model or ""
        self._deployment = ""

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> StreamChunk:
        chunk = await self._inner.__anext__()
        text = chunk.delta_text
        sink = self._sink
        if sink is not None and text:
            delta = text_delta(text, chunk.model or self._model)
            try:  # reading the stream is the checkpoint; wait only while the caller lags
                sink.send_nowait(delta)
            except trio.WouldBlock:
                await sink.send(delta)
        meter = self._meter
        if meter is not None:
            self._note(chunk, meter)
        return chunk

    def _note(self, chunk: StreamChunk, meter: UsageMeter) -> None:
        chars = len(chunk.delta_text)
        for delta in chunk.tool_call_deltas:
            chars += len(delta.arguments)
        self._chars += chars
        if chunk.model:
            self._model = chunk.model
        if chunk.deployment:
            self._deployment = chunk.deployment
        if chunk.usage is not None:
            self._usage = chunk.usage
            output = chunk.usage.completion_tokens
        else:
            output = self._chars // _CHARS_PER_TOKEN
        if meter.limits is not None or meter.parent is not None:
            meter.check_stream(self._estimate, output)

    def charge(self) -> None:
        """Charge the stream's usage (the provider's figures, else the estimates)."""
        meter = self._meter
        assert meter is not None
        usage = self._usage or Usage(self._estimate, self._chars // _CHARS_PER_TOKEN)
        _charge(meter, self._request, usage, self._model, self._deployment)
