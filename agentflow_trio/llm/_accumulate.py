"""Streams of `StreamChunk`: decode and guard one as it arrives, fold one into a response.

Decoding (`ChunkDecoder`): the body's payloads become chunks, and the stream's end is
judged by its answer, not only by its terminator: a body that ends cleanly after a chunk
with ``finish_reason`` is a whole answer even without ``data: [DONE]``; one that ends before
any is `StreamEndedEarlyError`.

Guarding (`GuardedChunks`): what the caller iterates. It counts what it hands out, and
turns a transport failure mid-stream into an `IncompleteStreamError` that says how much
was delivered, so a cut or stalled stream is never a truncated success.

Folding (`StreamAccumulator`, `collect_stream`): tool calls arrive in pieces keyed by
``index`` (id and name first, then argument fragments); the accumulator joins them and
parses the arguments once, at the end, with `ToolCall.parse` (so bad JSON from the model
becomes ``parse_error``, never an exception).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, ClassVar, Protocol, final

from ..errors import (
    IncompleteStreamError,
    LLMReadError,
    LLMTimeoutError,
    StreamCutError,
    StreamEndedEarlyError,
    StreamStalledError,
)
from .types import ChatResponse, ProviderItem, StreamChunk, ToolCall, Usage

__all__ = [
    "ChunkDecoder",
    "GuardedChunks",
    "GuardedStream",
    "StreamAccumulator",
    "collect_stream",
    "passthrough",
]


class _Payloads(Protocol):
    """What `ChunkDecoder` needs from ``_lines.SSEDecoder`` / ``NDJSONDecoder``."""

    done: bool
    terminator: ClassVar[str]

    @property
    def malformed(self) -> int: ...

    def feed(self, data: bytes) -> list[Any]: ...

    def end(self) -> list[Any]: ...


@final
class ChunkDecoder:
    """The `LineDecoder` of one stream that also parses: body bytes -> `StreamChunk` values.

    ``payloads`` cuts the body into JSON payloads, ``parse`` turns each into a chunk (None:
    nothing to say). Give the session `passthrough` as its ``parse``. ``finished`` turns
    true at the first chunk with a ``finish_reason``; ``malformed`` counts the payloads
    skipped as garbage. At the end of the body without the terminator, `finish` returns
    the last chunks if the answer had finished, else raises `StreamEndedEarlyError`.
    """

    __slots__ = ("_parse", "_payloads", "done", "finished")

    def __init__(self, payloads: _Payloads, parse: Callable[[Any], StreamChunk | None]) -> None:
        self._payloads = payloads
        self._parse = parse
        self.done = False
        self.finished = False

    @property
    def malformed(self) -> int:
        """Payloads skipped because they were not JSON."""
        return self._payloads.malformed

    def feed(self, data: bytes) -> list[StreamChunk]:
        """The chunks completed by ``data``."""
        payloads = self._payloads
        chunks = []
        parse = self._parse
        for payload in payloads.feed(data):  # `_chunks`, without its frame: every piece
            chunk = parse(payload)
            if chunk is not None:
                if chunk.finish_reason is not None:
                    self.finished = True
                chunks.append(chunk)
        self.done = payloads.done
        return chunks

    def finish(self) -> list[StreamChunk]:
        """The chunks left at the end of the body; the stream is then done.

        Raises:
            StreamEndedEarlyError: the body ended before both its terminator and any
                ``finish_reason`` (the counts are filled in by `GuardedChunks`).
            ResponseFormatError: every payload was malformed.
        """
        chunks = self._chunks(self._payloads.end())
        if not (self._payloads.done or self.finished):
            raise StreamEndedEarlyError(
                f"stream ended before {self._payloads.terminator} and before any finish_reason"
            )
        self.done = True
        return chunks

    def _chunks(self, payloads: list[Any]) -> list[StreamChunk]:
        out = []
        parse = self._parse
        for payload in payloads:
            chunk = parse(payload)
            if chunk is not None:
                if chunk.finish_reason is not None:
                    self.finished = True
                out.append(chunk)
        return out


def passthrough(chunk: StreamChunk) -> StreamChunk:
    """The session's ``parse`` for a `ChunkDecoder`, whose payloads are chunks already."""
    return chunk


@final
class GuardedChunks:
    """The chunks of one stream as the caller iterates them (``async for``).

    ``delivered_chunks`` and ``delivered_chars`` (text plus tool-call argument characters)
    count what has been handed out; ``malformed`` counts the garbage events skipped. A
    transport failure before ``finish_reason`` raises `StreamCutError` (the connection
    broke) or `StreamStalledError` (no data for ``request_timeout``), chained to the
    transport's error and carrying those counts, as does `StreamEndedEarlyError`; after
    ``finish_reason`` the answer is whole, and such a failure just ends the iteration.
    Other errors (an error event, a size bound) pass through unchanged.
    """

    __slots__ = (
        "_chunks",
        "_decoder",
        "_deployment",
        "_ready",
        "delivered_chars",
        "delivered_chunks",
    )

    def __init__(
        self, chunks: AsyncIterator[StreamChunk], decoder: ChunkDecoder, deployment: str
    ) -> None:
        self._chunks = chunks
        self._decoder = decoder
        self._deployment = deployment
        # The session's decoded chunks not yet handed out, when it shows them (the lean
        # session's ``ready``): taken from here directly, one coroutine less per chunk.
        ready = getattr(chunks, "ready", None)
        self._ready: deque[StreamChunk] | None = ready if isinstance(ready, deque) else None
        self.delivered_chunks = 0
        self.delivered_chars = 0

    @property
    def malformed(self) -> int:
        """Events skipped because they were not JSON."""
        return self._decoder.malformed

    @property
    def finished(self) -> bool:
        """True once a chunk with ``finish_reason`` has been decoded."""
        return self._decoder.finished

    def __aiter__(self) -> GuardedChunks:
        return self

    async def __anext__(self) -> StreamChunk:
        ready = self._ready
        if ready:  # decoded already: what the session's ``__anext__`` would return
            chunk = ready.popleft()
        else:
            try:
                chunk = await self._chunks.__anext__()
            except IncompleteStreamError as exc:
                exc.delivered_chunks = self.delivered_chunks
                exc.delivered_chars = self.delivered_chars
                raise
            except (LLMReadError, LLMTimeoutError) as exc:
                if self._decoder.finished:
                    raise StopAsyncIteration from None  # the answer had arrived whole
                raise self._incomplete(exc) from exc
        self.delivered_chunks += 1
        deltas = chunk.tool_call_deltas
        if deltas:
            chars = len(chunk.delta_text)
            for delta in deltas:
                chars += len(delta.arguments)
            self.delivered_chars += chars
        else:
            self.delivered_chars += len(chunk.delta_text)
        return chunk

    def _incomplete(self, exc: LLMReadError | LLMTimeoutError) -> IncompleteStreamError:
        kind = StreamStalledError if isinstance(exc, LLMTimeoutError) else StreamCutError
        what = "stalled" if kind is StreamStalledError else "cut"
        return kind(
            f"{self._deployment}: stream {what} after {self.delivered_chunks} chunks "
            f"({self.delivered_chars} characters), before finish_reason: {exc}",
            delivered_chunks=self.delivered_chunks,
            delivered_chars=self.delivered_chars,
            deployment=self._deployment,
        )


@final
class GuardedStream:
    """``async with`` an opened session stream, its chunks as `GuardedChunks` (a class, not
    a generator context manager: a stream costs no extra frame to open and close)."""

    __slots__ = ("_decoder", "_deployment", "_opened")

    def __init__(
        self,
        opened: AbstractAsyncContextManager[AsyncIterator[StreamChunk]],
        decoder: ChunkDecoder,
        deployment: str,
    ) -> None:
        self._opened = opened
        self._decoder = decoder
        self._deployment = deployment

    async def __aenter__(self) -> GuardedChunks:
        chunks = await self._opened.__aenter__()
        return GuardedChunks(chunks, self._decoder, self._deployment)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._opened.__aexit__(exc_type, exc, tb)


class StreamAccumulator:
    """Collects chunks with `add`; `response` builds the `ChatResponse` seen so far."""

    __slots__ = (
        "_calls",
        "_deployment",
        "_finish",
        "_items",
        "_model",
        "_refusal",
        "_response_id",
        "_text",
        "_usage",
    )

    def __init__(self) -> None:
        self._model = ""
        self._deployment = ""
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._calls: dict[int, list[str]] = {}
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._items: list[ProviderItem] = []
        self._response_id = ""

    def add(self, chunk: StreamChunk) -> None:
        """Fold one chunk in."""
        if chunk.delta_text:
            self._text.append(chunk.delta_text)
        for delta in chunk.tool_call_deltas:
            call = self._calls.setdefault(delta.index, ["", "", ""])
            if delta.id:
                call[0] = delta.id
            if delta.name:
                call[1] = delta.name
            call[2] += delta.arguments
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.model:
            self._model = chunk.model
        if chunk.deployment:
            self._deployment = chunk.deployment
        if chunk.refusal:
            self._refusal.append(chunk.refusal)
        if chunk.items:
            self._items.extend(chunk.items)
        if chunk.response_id:
            self._response_id = chunk.response_id

    def response(self, model: str = "") -> ChatResponse:
        """The accumulated text, tool calls (in index order), finish reason, usage,
        refusal, vendor items and response id; the model and deployment the final chunks
        named (``model`` when they named none)."""
        calls = tuple(
            ToolCall.parse(c[0] or f"call_{i}", c[1], c[2]) for i, c in sorted(self._calls.items())
        )
        return ChatResponse(
            "".join(self._text),
            calls,
            self._finish,
            self._usage,
            self._model or model,
            deployment=self._deployment,
            refusal="".join(self._refusal) or None,
            items=tuple(self._items),
            response_id=self._response_id,
        )


async def collect_stream(chunks: AsyncIterable[StreamChunk], model: str = "") -> ChatResponse:
    """Consume ``chunks`` to the end and return the whole response."""
    acc = StreamAccumulator()
    async for chunk in chunks:
        acc.add(chunk)
    return acc.response(model)
