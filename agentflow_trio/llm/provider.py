"""The provider seam, the middleware stack built from config, and the `LLMClient` facade.

`Provider` is the one interface every layer shares, like httpx's transport: ``complete``,
its streaming twin ``stream``, ``embed`` and ``aclose``. Transports (OpenAI, Azure, Ollama,
`FakeProvider`) sit at the bottom; `open_provider` stacks the middleware on top, in one
order, outermost first::

    cache -> retry -> circuit breaker -> rate limit -> batching (embeddings) -> transport

Each layer is there only if the config turns it on. So a cache hit never reaches retry or
the breaker; every retry attempt is seen by the breaker; an open breaker ends the retries
with `CircuitOpenError` unless its open time fits before the caller's deadline; one 429
with Retry-After pauses every caller of that deployment (one `PauseGate` per deployment
per trio run). Streams go through retry, breaker and rate limit for their *opening* only
and are never cached.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

import attrs
import trio

from ..errors import ConfigError
from ..resilience import (
    DEFAULT_TTL,
    Batcher,
    BatcherStatistics,
    BreakerStatistics,
    CacheStatistics,
    CircuitBreaker,
    PauseGate,
    RateLimiter,
    RateLimiterStatistics,
    Retry,
    RetryStatistics,
    TTLCache,
    default_ttl_policy,
    open_batcher,
)
from ._middleware import (
    BatchLayer,
    BreakerLayer,
    CacheLayer,
    RateLimitLayer,
    RetryLayer,
    flush_embeddings,
    response_size,
)
from .http import PoolStatistics
from .types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    StreamChunk,
    ToolSpec,
    user,
)

if TYPE_CHECKING:
    from ..config import Config, LLMConfig, PerformanceConfig

__all__ = [
    "LLMClient",
    "Provider",
    "ProviderStack",
    "StackStatistics",
    "configured_ttl_policy",
    "deployment_gate",
    "open_llm_client",
    "open_provider",
    "open_stack",
    "open_transport",
]


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


@attrs.frozen(slots=True)
class StackStatistics:
    """A snapshot of every layer of a `ProviderStack` (None for a layer that is off)."""

    cache: CacheStatistics | None
    retry: RetryStatistics | None
    breaker: BreakerStatistics | None
    rate_limit: RateLimiterStatistics | None
    batching: BatcherStatistics | None
    pool: PoolStatistics | None


@final
class ProviderStack:
    """The composed provider `open_provider` yields; a `Provider` itself.

    ``layers`` lists the layers outermost first, the transport last. The resilience objects
    are exposed (None when their layer is off) for statistics and tests.
    """

    def __init__(
        self,
        layers: Sequence[Provider],
        *,
        cache: TTLCache[str, Any] | None = None,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        rate_limiter: RateLimiter | None = None,
        batcher: Batcher[EmbeddingRequest, EmbeddingResponse] | None = None,
    ) -> None:
        self.layers = tuple(layers)
        self.transport = self.layers[-1]
        self.cache = cache
        self.retry = retry
        self.breaker = breaker
        self.rate_limiter = rate_limiter
        self.batcher = batcher
        outer = self.layers[0]
        self._complete = outer.complete
        self._stream = outer.stream
        self._embed = outer.embed

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """A chat completion through every layer."""
        return await self._complete(request)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """A streamed completion; retry, breaker and rate limit apply to the opening."""
        return self._stream(request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeddings through every layer (batched when batching is on)."""
        return await self._embed(request)

    async def aclose(self) -> None:
        """Close the transport. Idempotent."""
        await self.transport.aclose()

    def statistics(self) -> StackStatistics:
        """A `StackStatistics` snapshot (``pool`` for HTTP transports only)."""
        session = getattr(self.transport, "session", None)
        return StackStatistics(
            cache=self.cache.statistics() if self.cache else None,
            retry=self.retry.statistics() if self.retry else None,
            breaker=self.breaker.statistics() if self.breaker else None,
            rate_limit=self.rate_limiter.statistics() if self.rate_limiter else None,
            batching=self.batcher.statistics() if self.batcher else None,
            pool=session.pool_statistics() if session is not None else None,
        )


_GATES: trio.lowlevel.RunVar[dict[str, PauseGate]] = trio.lowlevel.RunVar(
    "agentflow_trio.llm.gates"
)


def deployment_gate(deployment: str) -> PauseGate:
    """The `PauseGate` of ``deployment`` shared by every caller in this trio run."""
    try:
        gates = _GATES.get()
    except LookupError:
        gates = {}
        _GATES.set(gates)
    gate = gates.get(deployment)
    if gate is None:
        gate = gates[deployment] = PauseGate()
    return gate


def _deployment_key(llm: LLMConfig) -> str:
    return f"{llm.provider}|{llm.base_url}|{llm.deployment or llm.model}"


def configured_ttl_policy(cache_ttl: float) -> Callable[[Any], float]:
    """`default_ttl_policy` with ``cache_ttl`` for its default class.

    Factual requests keep 24 hours and creative ones 5 minutes; everything else gets
    ``cache_ttl`` (``performance.cache_ttl``) instead of the built-in hour.
    """

    def policy(request: Any) -> float:
        ttl = default_ttl_policy(request)
        return cache_ttl if ttl == DEFAULT_TTL else ttl

    return policy


@asynccontextmanager
async def open_transport(llm: LLMConfig) -> AsyncIterator[Provider]:
    """The bottom layer for ``llm.provider``, closed on exit.

    Raises:
        ConfigError: an unknown provider, or Azure without ``base_url``.
    """
    from .azure import open_azure
    from .fake import FakeProvider
    from .ollama import open_ollama
    from .openai import open_openai

    opener: Callable[[LLMConfig], AbstractAsyncContextManager[Provider]]
    if llm.provider == "openai":
        opener = open_openai
    elif llm.provider == "azure":
        opener = open_azure
    elif llm.provider == "ollama":
        opener = open_ollama
    elif llm.provider == "fake":
        fake = FakeProvider(model=llm.model)
        try:
            yield fake
        finally:
            await fake.aclose()
        return
    else:
        raise ConfigError(f"unknown provider {llm.provider!r}", key="llm.provider")
    async with opener(llm) as transport:
        yield transport


@asynccontextmanager
async def open_stack(
    transport: Provider,
    llm: LLMConfig,
    performance: PerformanceConfig | None = None,
    *,
    ttl_policy: Callable[[Any], float] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[ProviderStack]:
    """Stack the layers ``llm`` and ``performance`` turn on above ``transport``.

    The transport is not closed on exit (its owner closes it). With batching on, the
    batcher's nursery lives for the block: leaving it flushes what is pending.
    """
    async with AsyncExitStack() as stack:
        layers: list[Provider] = [transport]
        batcher: Batcher[EmbeddingRequest, EmbeddingResponse] | None = None
        if performance is not None and performance.enable_batching:
            opened: Batcher[EmbeddingRequest, EmbeddingResponse] = await stack.enter_async_context(
                open_batcher(
                    lambda items: flush_embeddings(transport, items),
                    batch_size=performance.batch_size,
                    batch_timeout=performance.batch_timeout,
                )
            )
            layers.append(BatchLayer(layers[-1], opened))
            batcher = opened
        limiter = _rate_limiter(llm)
        if limiter is not None:
            tpm = llm.rate_limit.tokens_per_minute > 0
            layers.append(RateLimitLayer(layers[-1], limiter, count_tokens=tpm))
        breaker = _breaker(llm)
        if breaker is not None:
            layers.append(BreakerLayer(layers[-1], breaker))
        retry = _retry(llm, rng)
        if retry is not None:
            layers.append(RetryLayer(layers[-1], retry))
        cache = None
        if performance is not None and performance.enable_caching:
            cache = TTLCache[str, Any](
                max_entries=performance.cache_max_entries,
                max_bytes=performance.cache_max_bytes,
                sizeof=response_size,
            )
            policy = ttl_policy or configured_ttl_policy(performance.cache_ttl)
            layers.append(CacheLayer(layers[-1], cache, policy, performance.cache_ttl))
        layers.reverse()
        yield ProviderStack(
            layers,
            cache=cache,
            retry=retry,
            breaker=breaker,
            rate_limiter=limiter,
            batcher=batcher,
        )


def _rate_limiter(llm: LLMConfig) -> RateLimiter | None:
    limits = llm.rate_limit
    if not limits.enabled or not (limits.requests_per_minute or limits.tokens_per_minute):
        return None
    return RateLimiter(
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
    )


def _breaker(llm: LLMConfig) -> CircuitBreaker | None:
    settings = llm.circuit_breaker
    if not settings.enabled:
        return None
    return CircuitBreaker(
        f"llm:{llm.provider}:{llm.deployment or llm.model}",
        failure_threshold=settings.failure_threshold,
        open_timeout=settings.open_timeout,
        half_open_max_calls=settings.half_open_max_calls,
        call_timeout=settings.call_timeout,
    )


def _retry(llm: LLMConfig, rng: random.Random | None) -> Retry | None:
    settings = llm.retry
    if not settings.enabled:
        return None
    return Retry(
        max_attempts=settings.max_attempts,
        base_delay=settings.base_delay,
        max_delay=settings.max_delay,
        gate=deployment_gate(_deployment_key(llm)),
        rng=rng,
    )


def _sections(
    config: LLMConfig | Config, performance: PerformanceConfig | None
) -> tuple[LLMConfig, PerformanceConfig | None]:
    llm = getattr(config, "llm", None)
    if llm is not None:
        return llm, performance if performance is not None else getattr(config, "performance", None)
    return config, performance  # type: ignore[return-value]


@asynccontextmanager
async def open_provider(
    config: LLMConfig | Config,
    performance: PerformanceConfig | None = None,
    *,
    transport: Provider | None = None,
    ttl_policy: Callable[[Any], float] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[ProviderStack]:
    """The full provider for a config: the transport plus every layer turned on.

    ``config`` is the ``[llm]`` section or a whole `Config` (whose ``performance`` is used
    unless one is passed). ``transport`` replaces the configured one (it is then not closed
    here); ``ttl_policy`` replaces `configured_ttl_policy`; ``rng`` seeds retry jitter.
    On exit pending batches are flushed, then the transport's client is closed.

    Raises:
        ConfigError: an unknown provider, or Azure without ``base_url``.
    """
    llm, perf = _sections(config, performance)
    async with AsyncExitStack() as stack:
        if transport is None:
            transport = await stack.enter_async_context(open_transport(llm))
        yield await stack.enter_async_context(
            open_stack(transport, llm, perf, ttl_policy=ttl_policy, rng=rng)
        )


Messages = ChatRequest | Sequence[Message] | str


@final
class LLMClient:
    """The convenience face of a provider (what agents get as ``ctx.llm``).

    ``await llm.complete([af.user("hi")], temperature=0)`` builds the `ChatRequest`:
    messages may be a `ChatRequest`, a sequence of `Message` or a plain string (one user
    message); keyword arguments are `ChatRequest` fields (``model``, ``temperature``,
    ``max_tokens``, ``tools``, ``tool_choice``, ``stop``, ``extra``).
    """

    __slots__ = ("provider",)

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def complete(self, messages: Messages, **fields: Any) -> ChatResponse:
        """A chat completion through the provider's stack."""
        return await self.provider.complete(_request(messages, fields))

    def stream(
        self, messages: Messages, **fields: Any
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """``async with llm.stream(messages) as chunks: async for chunk in chunks: ...``."""
        return self.provider.stream(_request(messages, fields))

    async def embed(
        self, texts: str | Sequence[str], *, model: str | None = None
    ) -> EmbeddingResponse:
        """Embeddings of ``texts`` (one vector per text, in order)."""
        inputs = (texts,) if isinstance(texts, str) else tuple(texts)
        return await self.provider.embed(EmbeddingRequest(inputs, model))


def _request(messages: Messages, fields: dict[str, Any]) -> ChatRequest:
    if isinstance(messages, ChatRequest):
        return attrs.evolve(messages, **fields) if fields else messages
    if "tools" in fields:
        fields["tools"] = tuple(
            t if isinstance(t, ToolSpec) else ToolSpec(**t) for t in fields["tools"]
        )
    if isinstance(fields.get("stop"), list):
        fields["stop"] = tuple(fields["stop"])
    msgs = (user(messages),) if isinstance(messages, str) else tuple(messages)
    return ChatRequest(msgs, **fields)


@asynccontextmanager
async def open_llm_client(
    config: LLMConfig | Config, performance: PerformanceConfig | None = None, **kwargs: Any
) -> AsyncIterator[LLMClient]:
    """`open_provider` wrapped in an `LLMClient`."""
    async with open_provider(config, performance, **kwargs) as provider:
        yield LLMClient(provider)
