"""Optional Redis tiers for the LLM stack, shared by every worker of a deployment.

* `RedisCacheLayer`: a provider layer answering repeated chat requests from Redis (a
  second tier behind the in-process cache: one worker's answer serves all of them).
* `SharedRateLimiter` and `SharedRateLimitLayer`: one token bucket in Redis (a Lua script
  on the server's clock), so N workers together stay under one deployment's limit.

Both are layers in the sense of `agentflow_trio.llm.Provider` (``complete``, ``stream``,
``embed``, ``aclose``); stack them around a provider and hand the result to `LLMClient`::

    async with open_redis_client(url) as redis, open_provider(config) as stack:
        limiter = SharedRateLimiter(redis, "gpt-4o-mini", requests_per_minute=600)
        llm = LLMClient(RedisCacheLayer(SharedRateLimitLayer(stack, limiter), redis))

The cache is best effort: when Redis is unreachable a request goes to the provider (and
is not stored); the rate limiter is not: it raises `LocalRateLimitError` (its wait would
pass the caller's deadline) or `BrokerUnavailable` (Redis is down), never a silent pass.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from .._json import dumps, loads
from ..errors import LocalRateLimitError
from . import _scripts
from ._errors import BrokerUnavailable
from ._redis import is_outage, open_redis

if TYPE_CHECKING:
    from coredis import Redis

    from ..llm import (
        ChatRequest,
        ChatResponse,
        EmbeddingRequest,
        EmbeddingResponse,
        Provider,
        StreamChunk,
    )

__all__ = [
    "RedisCacheLayer",
    "RedisCacheStatistics",
    "SharedRateLimitLayer",
    "SharedRateLimiter",
    "open_redis_client",
]

_log = logging.getLogger("agentflow_trio.distributed.redis_cache")


def open_redis_client(
    url: str, *, password: str = "", connect_timeout: float = 5.0
) -> AbstractAsyncContextManager[Redis[bytes]]:
    """A coredis client (bytes replies) owned by the ``async with`` block.

    Raises:
        ConfigError: ``url`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL.
    """
    return open_redis(url, password=password, connect_timeout=connect_timeout)


# --------------------------------------------------------------------------- cache


@attrs.frozen(slots=True)
class RedisCacheStatistics:
    """Hits, misses, stores and requests answered without Redis (it was unreachable)."""

    hits: int
    misses: int
    stores: int
    bypassed: int


def _response_to_json(response: ChatResponse) -> bytes:
    """Every field of ``response`` but ``raw`` (the wire's own object, not kept), as JSON:
    vendor ``items`` and ``response_id`` included, so a cached tool turn still sends its
    thinking / reasoning back."""
    usage = response.usage
    return dumps(
        {
            "text": response.text,
            "tool_calls": [
                [c.id, c.name, dict(c.arguments), c.raw_arguments, c.parse_error]
                for c in response.tool_calls
            ],
            "finish_reason": response.finish_reason,
            "usage": attrs.astuple(usage) if usage is not None else None,
            "model": response.model,
            "deployment": response.deployment,
            "refusal": response.refusal,
            "items": [[i.provider, dict(i.data)] for i in response.items],
            "response_id": response.response_id,
        }
    )


def _response_from_json(payload: bytes) -> ChatResponse:
    from ..llm import ChatResponse, ProviderItem, ToolCall, Usage

    obj = loads(payload)
    usage = obj.get("usage")
    return ChatResponse(
        text=obj["text"],
        tool_calls=tuple(ToolCall(*call) for call in obj.get("tool_calls") or ()),
        finish_reason=obj.get("finish_reason"),
        usage=Usage(*usage) if usage is not None else None,
        model=obj.get("model", ""),
        deployment=obj.get("deployment", ""),
        refusal=obj.get("refusal"),
        items=tuple(ProviderItem(*item) for item in obj.get("items") or ()),
        response_id=obj.get("response_id", ""),
    )


@final
class RedisCacheLayer:
    """Answers repeated chat requests from Redis; streams and embeddings pass through.

    The key is ``{prefix}{request.to_cache_key()}`` (the canonical request hash);
    ``ttl`` is seconds, or a function of the request (``configured_ttl_policy``); a TTL
    <= 0 answers without storing. Concurrent identical misses on different workers each
    call the provider once (no cross-process single-flight: the in-process cache in
    front of it coalesces within a worker). Redis errors never fail a request: it goes
    to the provider, and the failure is counted in ``bypassed``. A checkpoint always.
    """

    def __init__(
        self,
        inner: Provider,
        redis: Redis[bytes],
        *,
        ttl: float | Callable[[ChatRequest], float] = 3600.0,
        prefix: str = "agentflow:llm:",
    ) -> None:
        self.inner = inner
        self.redis = redis
        self._ttl = ttl
        self._prefix = prefix
        self._hits = self._misses = self._stores = self._bypassed = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        key = self._prefix + request.to_cache_key()
        try:
            payload = await self.redis.get(key)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._bypassed += 1
            return await self.inner.complete(request)
        if payload is not None:
            try:
                response = _response_from_json(payload)
            except (ValueError, KeyError, TypeError):
                _log.warning("dropping an unreadable cached response at %s", key)
            else:
                self._hits += 1
                return response
        self._misses += 1
        response = await self.inner.complete(request)
        ttl = self._ttl(request) if callable(self._ttl) else self._ttl
        if ttl > 0:
            try:
                await self.redis.set(key, _response_to_json(response), px=max(1, round(ttl * 1000)))
                self._stores += 1
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._bypassed += 1
        return response

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        return self.inner.stream(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        return await self.inner.embed(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def statistics(self) -> RedisCacheStatistics:
        """Counters; cheap, no checkpoint."""
        return RedisCacheStatistics(self._hits, self._misses, self._stores, self._bypassed)


# --------------------------------------------------------------------------- rate limit


@final
class SharedRateLimiter:
    """A token bucket in Redis: ``requests_per_minute`` for everyone using ``name``.

    The bucket holds ``burst_seconds`` worth of the rate (full at first) and refills on
    the Redis server's clock, so workers on machines with skewed clocks agree. ``await
    acquire()`` takes a token, sleeping as long as the bucket says (never busy-polling).

    Guarantees: over any window of ``w`` seconds all holders together get at most
    ``capacity + rate * w`` tokens. If the wait would end after the caller's deadline
    (``trio.current_effective_deadline``) `LocalRateLimitError` is raised at once with
    ``retry_after``. Cancellation while waiting takes nothing. Not first-come-first-served
    across workers (a bucket, not a queue).
    """

    def __init__(
        self,
        redis: Redis[bytes],
        name: str,
        *,
        requests_per_minute: float,
        burst_seconds: float = 1.0,
        prefix: str = "agentflow:ratelimit:",
        url: str = "",
    ) -> None:
        if requests_per_minute <= 0 or burst_seconds <= 0:
            raise ValueError("requests_per_minute and burst_seconds must be > 0")
        self.name = name
        self.rate = requests_per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self._key = prefix + name
        self._url = url
        self._script = redis.register_script(_scripts.TOKEN_BUCKET)
        self.acquired = 0
        self.rejected = 0

    async def acquire(self, tokens: float = 1.0) -> None:
        """Take ``tokens`` from the shared bucket, waiting for them if need be.

        More than the bucket holds is taken when it is full (the bucket then stays empty
        for longer), so a large request cannot wait forever.

        Raises:
            LocalRateLimitError: the wait would pass the caller's deadline.
            BrokerUnavailable: Redis is unreachable (the limit cannot be checked).
        """
        tokens = min(tokens, self.capacity)
        while True:
            try:
                reply: Any = await self._script(
                    keys=[self._key], args=[repr(self.capacity), repr(self.rate), repr(tokens)]
                )
            except Exception as exc:
                if not is_outage(exc):
                    raise
                raise BrokerUnavailable(self._url or "redis", "rate limit", exc) from exc
            taken, wait_ms = int(reply[0]), int(reply[1])
            if taken:
                self.acquired += 1
                return
            wait = wait_ms / 1000
            if trio.current_time() + wait > trio.current_effective_deadline():
                self.rejected += 1
                raise LocalRateLimitError(
                    f"shared rate limit {self.name!r}: next token in {wait:.3f}s, after the "
                    "deadline",
                    retry_after=wait,
                    deployment=self.name,
                )
            await trio.sleep(wait)


@final
class SharedRateLimitLayer:
    """Takes one request token from a `SharedRateLimiter` before each provider call
    (chat, stream opening, embeddings)."""

    def __init__(self, inner: Provider, limiter: SharedRateLimiter) -> None:
        self.inner = inner
        self.limiter = limiter

    async def complete(self, request: ChatRequest) -> ChatResponse:
        await self.limiter.acquire()
        return await self.inner.complete(request)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        await self.limiter.acquire()
        async with self.inner.stream(request) as chunks:
            yield chunks

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        await self.limiter.acquire()
        return await self.inner.embed(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
