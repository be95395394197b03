"""`FakeProvider`: an in-memory provider built around a handler, like httpx's MockTransport.

For unit tests of agents and of the middleware stack: no sockets, no clock of its own, so
it runs exactly under ``MockClock(autojump_threshold=0)``. Each call is a checkpoint.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Final, TypeAlias, final

import trio

from .types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamChunk,
    ToolCallDelta,
    Usage,
)

__all__ = ["EmbedHandler", "FakeProvider", "Handler", "Reply"]

Reply: TypeAlias = ChatResponse | str | BaseException
"""What a handler returns: a full response, just the text, or an exception to raise."""
Handler: TypeAlias = Callable[[ChatRequest], Reply | Awaitable[Reply]]
EmbedHandler: TypeAlias = Callable[
    [EmbeddingRequest], EmbeddingResponse | BaseException | Awaitable[EmbeddingResponse]
]

_WORDS: Final = re.compile(r"\S+\s*|\s+")


@final
class FakeProvider:
    """A `Provider` whose answers come from ``handler(request)`` (sync or async).

    The handler returns a `ChatResponse`, a ``str`` (wrapped as a response with finish
    reason ``"stop"``) or an exception instance, which the call raises. Without a handler
    the provider echoes the last user message. Every request is recorded in `requests`
    (chat) or `embed_requests`, in call order.

    `stream` serves the same reply split into word chunks, tool calls as one delta each,
    then a final chunk with the finish reason and usage; an exception reply is raised when
    the stream is opened. `embed` returns deterministic vectors of ``dim`` floats derived
    from each text (or uses ``embed_handler``). After `aclose`, calls raise
    ``trio.ClosedResourceError``. ``native_output`` is true: structured output's ``auto``
    mode sends it ``response_format`` requests, and a handler answers with the JSON text.
    """

    native_output: Final = True

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        embed_handler: EmbedHandler | None = None,
        model: str = "fake-model",
        dim: int = 8,
    ) -> None:
        self._handler: Handler = handler if handler is not None else _echo
        self._embed_handler = embed_handler
        self.model = model
        self.dim = dim
        self.requests: list[ChatRequest] = []
        self.embed_requests: list[EmbeddingRequest] = []
        self.closed = False

    @classmethod
    def scripted(
        cls,
        replies: Iterable[Reply],
        *,
        embed_handler: EmbedHandler | None = None,
        model: str = "fake-model",
        dim: int = 8,
    ) -> FakeProvider:
        """A provider answering with ``replies`` in order, whatever the request.

        Running out of replies raises ``RuntimeError`` (the test scripted too few).
        """
        queue = deque(replies)

        def next_reply(request: ChatRequest) -> Reply:
            if not queue:
                raise RuntimeError("FakeProvider.scripted: no replies left")
            return queue.popleft()

        return cls(next_reply, embed_handler=embed_handler, model=model, dim=dim)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Record ``request`` and return the handler's reply."""
        await trio.lowlevel.checkpoint()
        return await self._reply(request)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        """Record ``request`` and stream the handler's reply in chunks."""
        await trio.lowlevel.checkpoint()
        response = await self._reply(request)
        yield _Chunks(_split(response))

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Record ``request``; one deterministic vector per input."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        self.embed_requests.append(request)
        if self._embed_handler is None:
            vectors = tuple(_vector(text, self.dim) for text in request.inputs)
            tokens = sum(len(t.split()) for t in request.inputs)
            return EmbeddingResponse(vectors, Usage(tokens, 0, tokens), request.model or self.model)
        result = self._embed_handler(request)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, BaseException):
            raise result
        return result

    async def aclose(self) -> None:
        """Refuse further calls. Idempotent."""
        self.closed = True
        await trio.lowlevel.checkpoint()

    async def _reply(self, request: ChatRequest) -> ChatResponse:
        self._check_open()
        self.requests.append(request)
        reply = self._handler(request)
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, str):
            prompt = sum(len((m.content or "").split()) for m in request.messages)
            done = len(reply.split())
            usage = Usage(prompt, done, prompt + done)
            return ChatResponse(reply, (), "stop", usage, request.model or self.model)
        return reply

    def _check_open(self) -> None:
        if self.closed:
            raise trio.ClosedResourceError("FakeProvider is closed")


class _Chunks:
    """Async iterator over prepared chunks; each step is a checkpoint."""

    __slots__ = ("_chunks",)

    def __init__(self, chunks: list[StreamChunk]) -> None:
        self._chunks = deque(chunks)

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> StreamChunk:
        await trio.lowlevel.checkpoint()
        if not self._chunks:
            raise StopAsyncIteration
        return self._chunks.popleft()


def _split(response: ChatResponse) -> list[StreamChunk]:
    chunks = [StreamChunk(piece) for piece in _WORDS.findall(response.text)]
    chunks.extend(
        StreamChunk("", (ToolCallDelta(i, c.id, c.name, c.arguments_json()),))
        for i, c in enumerate(response.tool_calls)
    )
    chunks.append(StreamChunk("", (), response.finish_reason or "stop", response.usage))
    return chunks


def _echo(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return f"echo: {message.content or ''}"
    return "echo:"


def _vector(text: str, dim: int) -> tuple[float, ...]:
    out: list[float] = []
    counter = 0
    while len(out) < dim:
        digest = hashlib.blake2b(f"{counter}:{text}".encode(), digest_size=64).digest()
        out.extend(b / 127.5 - 1.0 for b in digest)
        counter += 1
    return tuple(out[:dim])
