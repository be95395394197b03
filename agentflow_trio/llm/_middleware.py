"""The middleware layers: each one is a `Provider` wrapping the next one down.

`open_provider` stacks them in one order, outermost first: cache -> retry -> breaker ->
rate limit -> batching -> transport. Streams pass through retry, breaker and rate limit
for the *opening* only (the chunks are read outside them) and are never cached or batched.

A layer below the breaker must not hold a cancel scope or nursery across the ``yield`` of
its ``stream()``: the stream is opened inside the breaker's own timeout scope and read after
that scope has closed. The transports and `FakeProvider` hold none.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import trio

from .. import _json
from ..errors import ResponseFormatError
from ..resilience import Batcher, CircuitBreaker, RateLimiter, Retry, TTLCache, make_key
from .types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamChunk,
    Usage,
)

if TYPE_CHECKING:
    from .provider import Provider

__all__ = [
    "BatchLayer",
    "BreakerLayer",
    "CacheLayer",
    "RateLimitLayer",
    "RetryLayer",
    "estimate_tokens",
    "flush_embeddings",
    "response_size",
]

_Opener = Callable[[Callable[[], Awaitable[AsyncIterator[StreamChunk]]]], Awaitable[Any]]


@asynccontextmanager
async def _open_through(
    call: _Opener, inner: Provider, request: ChatRequest
) -> AsyncIterator[AsyncIterator[StreamChunk]]:
    """Open ``inner.stream(request)`` through ``call`` (each attempt a fresh opening)."""
    async with AsyncExitStack() as stack:

        async def open_once() -> AsyncIterator[StreamChunk]:
            return await stack.enter_async_context(inner.stream(request))

        chunks: AsyncIterator[StreamChunk] = await call(open_once)
        yield chunks


@final
class CacheLayer:
    """Answers repeated chat and embedding requests from a `TTLCache` (single-flight).

    A request whose ``ttl_policy`` TTL is <= 0 is answered but not stored (concurrent
    identical misses still share one upstream call). Streams are never cached.
    """

    def __init__(
        self,
        inner: Provider,
        cache: TTLCache[str, Any],
        ttl_policy: Callable[[Any], float],
        embed_ttl: float,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self._policy = ttl_policy
        self._embed_ttl = embed_ttl

    async def complete(self, request: ChatRequest) -> ChatResponse:
        # The policy runs only after a miss (a TTL <= 0 then just skips storing), so a hit
        # costs one key hash and one dict lookup.
        result: ChatResponse = await self.cache.get_or_call(
            request.to_cache_key(),
            self.inner.complete,
            request,
            ttl=functools.partial(self._policy, request),
        )
        return result

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        return self.inner.stream(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        if self._embed_ttl <= 0:
            return await self.inner.embed(request)
        key = make_key(_json.dumps_canonical(["embed", request.model, request.inputs]).decode())
        result: EmbeddingResponse = await self.cache.get_or_call(
            key, self.inner.embed, request, ttl=self._embed_ttl
        )
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()


@final
class RetryLayer:
    """Retries failed calls (and failed stream openings) with `Retry`."""

    def __init__(self, inner: Provider, retry: Retry) -> None:
        self.inner = inner
        self.retry = retry

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.retry.call(self.inner.complete, request)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        return _open_through(self.retry.call, self.inner, request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        return await self.retry.call(self.inner.embed, request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@final
class BreakerLayer:
    """Runs every call (every attempt, every stream opening) through a `CircuitBreaker`."""

    def __init__(self, inner: Provider, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self.breaker = breaker

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.breaker.call(self.inner.complete, request)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        return _open_through(self.breaker.call, self.inner, request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        return await self.breaker.call(self.inner.embed, request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def estimate_tokens(request: ChatRequest) -> int:
    """A rough token count for tokens-per-minute limits: 4 characters per token of the
    messages, plus ``max_tokens`` (what the provider reserves for the answer)."""
    chars = sum(len(m.content or "") for m in request.messages)
    return chars // 4 + 1 + (request.max_tokens or 0)


@final
class RateLimitLayer:
    """Takes a request (and its estimated tokens) from a `RateLimiter` before each call.

    The fast path takes the tokens without yielding (``acquire_nowait``): a yield between
    two calls of one task would leave its pooled connection idle while every other task
    runs its pool pass, and httpcore2 probes each idle socket on each pass. The call is
    still a checkpoint (the request below it is); a wait goes through ``acquire``.
    """

    def __init__(self, inner: Provider, limiter: RateLimiter, *, count_tokens: bool) -> None:
        self.inner = inner
        self.limiter = limiter
        self._count_tokens = count_tokens

    async def _take(self, tokens: int) -> None:
        try:
            self.limiter.acquire_nowait(tokens)
        except trio.WouldBlock:
            await self.limiter.acquire(tokens)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        await self._take(estimate_tokens(request) if self._count_tokens else 1)
        return await self.inner.complete(request)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        await self._take(estimate_tokens(request) if self._count_tokens else 1)
        async with self.inner.stream(request) as chunks:
            yield chunks

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        tokens = sum(len(t) for t in request.inputs) // 4 + 1 if self._count_tokens else 1
        await self._take(tokens)
        return await self.inner.embed(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@final
class BatchLayer:
    """Gathers concurrent embedding requests into one upstream call (`flush_embeddings`)."""

    def __init__(
        self, inner: Provider, batcher: Batcher[EmbeddingRequest, EmbeddingResponse]
    ) -> None:
        self.inner = inner
        self.batcher = batcher

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.inner.complete(request)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        return self.inner.stream(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        return await self.batcher.submit(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def flush_embeddings(
    inner: Provider, requests: Sequence[EmbeddingRequest]
) -> list[EmbeddingResponse]:
    """Embed ``requests`` with one upstream call per model, then split the answers back.

    Each request gets its own vectors, in its own order; the upstream usage is shared out
    in proportion to each request's number of inputs.
    """
    groups: dict[str | None, list[int]] = {}
    for position, request in enumerate(requests):
        groups.setdefault(request.model, []).append(position)
    out: list[EmbeddingResponse | None] = [None] * len(requests)
    for model, positions in groups.items():
        inputs = tuple(text for p in positions for text in requests[p].inputs)
        response = await inner.embed(EmbeddingRequest(inputs, model))
        if len(response.vectors) != len(inputs):
            raise ResponseFormatError(
                f"embedding batch: {len(response.vectors)} vectors for {len(inputs)} inputs"
            )
        start = 0
        for p in positions:
            count = len(requests[p].inputs)
            vectors = response.vectors[start : start + count]
            out[p] = EmbeddingResponse(
                vectors, _share(response.usage, count, len(inputs)), response.model
            )
            start += count
    return [r for r in out if r is not None]


def _share(usage: Usage | None, part: int, whole: int) -> Usage | None:
    if usage is None or whole == 0:
        return usage
    prompt = usage.prompt_tokens * part // whole
    total = usage.total_tokens * part // whole
    return Usage(prompt, total - prompt, total)


def response_size(value: Any) -> int:
    """Estimated bytes held by a cached response (the cache's ``sizeof``)."""
    if isinstance(value, ChatResponse):
        calls = sum(300 + 2 * len(c.raw_arguments) for c in value.tool_calls)
        return 400 + 3 * len(value.text) + calls
    if isinstance(value, EmbeddingResponse):
        return 200 + sum(56 + 32 * len(v) for v in value.vectors)
    return sys.getsizeof(value)
