"""The `Provider` protocol: the one seam every LLM layer shares, like httpx's transport.

Transports (OpenAI, Azure, Ollama, `FakeProvider`) implement it at the bottom; the layers of
``stack`` (cache, retry, breaker, rate limit, batching), the whole `ProviderStack` and the
router implement it too, so anything written against a `Provider` runs on any of them. This
module holds only the protocol, so each of those imports it without importing the others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from .types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamChunk

__all__ = ["Provider"]


@runtime_checkable
class Provider(Protocol):
    """Anything that answers chat and embedding requests: a transport or a middleware layer.

    ``stream(request)`` returns an async context manager yielding an async iterator of
    `StreamChunk`; use ``async with provider.stream(req) as chunks: async for c in chunks``.
    The stream, and its pooled connection, is closed on every exit from the block,
    cancellation included. ``aclose`` releases what the provider owns; it is idempotent.
    """

    async def complete(self, request: ChatRequest) -> ChatResponse: ...

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]: ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse: ...

    async def aclose(self) -> None: ...
