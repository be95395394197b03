"""The per-deployment stack: the middleware layers above one transport, and their builder.

With deployments (``router``), each deployment gets its own stack without the retry layer
(the router decides the retries), and the cache sits above the router (`cache_layer`).

Each layer is a `Provider` wrapping the next one down; `open_stack` stacks the ones the
config turns on in one order, outermost first::

    cache -> retry -> circuit breaker -> rate limit -> batching (embeddings) -> transport

So a cache hit never reaches retry or the breaker; every retry attempt is seen by the
breaker; an open breaker ends the retries with `CircuitOpenError` unless its open time fits
before the caller's deadline; one 429 with Retry-After pauses every caller of that
deployment (one `PauseGate` per deployment per trio run, `deployment_gate`) for at most
``[llm.retry] max_delay``, however long the server asks. Retry and the
breaker are one layer class, `GuardLayer`, around each's ``call``. Streams pass through
retry, breaker and rate limit for their *opening* only (the chunks are read outside them)
and are never cached or batched.

A layer below the breaker must not hold a cancel scope or nursery across the ``yield`` of
its ``stream()``: the stream is opened inside the breaker's own timeout scope and read after
that scope has closed. The transports and `FakeProvider` hold none.
"""

from __future__ import annotations

import functools
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, TypeVarTuple, final

import attrs
import trio

from .. import _json
from ..errors import ResponseFormatError
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
    make_key,
    open_batcher,
)
from ._openings import OpenThrough
from ._session import HTTPPoolStatistics
from .base import Provider
from .router import Router, RouterStatistics
from .types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamChunk,
    Usage,
    estimate_tokens,
)

if TYPE_CHECKING:
    from ..config import LLMConfig, PerformanceConfig

__all__ = [
    "BatchLayer",
    "CacheLayer",
    "Guard",
    "GuardLayer",
    "ProviderStack",
    "RateLimitLayer",
    "StackStatistics",
    "cache_layer",
    "configured_ttl_policy",
    "deployment_gate",
    "estimate_tokens",
    "flush_embeddings",
    "open_stack",
    "response_size",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


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


class Guard(Protocol):
    """What `GuardLayer` runs each call through: `Retry` or `CircuitBreaker` (their ``call``)."""

    async def call(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T: ...


@final
class GuardLayer:
    """Runs every call, and every stream opening, through ``guard.call``.

    With a `Retry` it is the retry layer (failed calls and failed openings are retried);
    with a `CircuitBreaker` the breaker layer (every attempt counted, refused when open).
    """

    def __init__(self, inner: Provider, guard: Guard) -> None:
        self.inner = inner
        self.guard = guard
        # A breaker right above a transport whose HTTP session bounds its waits by the
        # caller's `CALL_DEADLINE` (the lean session): chat calls and stream openings go
        # through `CircuitBreaker.call_bounded`, whose call timeout costs no cancel scope.
        self._bounded: Callable[..., Coroutine[Any, Any, Any]] = (
            guard.call_bounded
            if isinstance(guard, CircuitBreaker) and _bounds_waits(inner)
            else guard.call
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        result: ChatResponse = await self._bounded(self.inner.complete, request)
        return result

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        return OpenThrough(self._bounded, self.inner, None, request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        return await self.guard.call(self.inner.embed, request)

    async def aclose(self) -> None:
        await self.inner.aclose()


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


@attrs.frozen(slots=True)
class StackStatistics:
    """A snapshot of every layer of a `ProviderStack` (None for a layer that is off).

    With deployments, the stack is a cache over a `Router`: ``router`` holds its
    statistics (each deployment's own stack in ``router.deployments[i].stack``).
    """

    cache: CacheStatistics | None
    retry: RetryStatistics | None
    breaker: BreakerStatistics | None
    rate_limit: RateLimiterStatistics | None
    batching: BatcherStatistics | None
    pool: HTTPPoolStatistics | None
    router: RouterStatistics | None = None


@final
class ProviderStack:
    """The composed provider `open_provider` yields; a `Provider` itself.

    ``layers`` lists the layers outermost first, the transport last. The resilience objects
    are exposed (None when their layer is off) for statistics and tests. With
    deployments, the bottom layer is a `Router` (also ``router``; None otherwise), below
    the cache, and the other layers live in each deployment's own stack.

    ``complete(request)``: a chat completion through every layer. ``stream(request)``: a
    streamed completion; retry, breaker and rate limit apply to its opening.
    ``embed(request)``: embeddings through every layer (batched when batching is on).
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
        self.router = self.transport if isinstance(self.transport, Router) else None
        self.cache = cache
        self.retry = retry
        self.breaker = breaker
        self.rate_limiter = rate_limiter
        self.batcher = batcher
        outer = self.layers[0]
        # The three calls are the outer layer's own (attributes, not methods: a call runs
        # no frame of this class), each `GuardLayer` on the way down folded in.
        self.complete: Callable[[ChatRequest], Coroutine[Any, Any, ChatResponse]] = _direct(outer)
        self.stream: Callable[
            [ChatRequest], AbstractAsyncContextManager[AsyncIterator[StreamChunk]]
        ] = _direct_stream(outer)
        self.embed: Callable[[EmbeddingRequest], Coroutine[Any, Any, EmbeddingResponse]] = (
            outer.embed
        )

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
            router=self.router.statistics() if self.router is not None else None,
        )


def _direct(layer: Provider) -> Callable[[ChatRequest], Coroutine[Any, Any, ChatResponse]]:
    """``layer.complete``, each `GuardLayer` on the way down folded into a partial of its
    guard's ``call`` (or ``call_bounded``): a call then runs no `GuardLayer.complete`
    frame of its own."""
    if isinstance(layer, GuardLayer):
        return functools.partial(layer._bounded, _direct(layer.inner))
    return layer.complete


def _direct_stream(
    layer: Provider,
) -> Callable[[ChatRequest], AbstractAsyncContextManager[AsyncIterator[StreamChunk]]]:
    """``layer.stream``, the `GuardLayer` run on the way down (retry over breaker) folded
    into one `OpenThrough` whose opener is their calls nested: ``retry.call(
    breaker.call_bounded, open_once)``. The same attempts, counts and closing as one
    `OpenThrough` per layer (an attempt that fails opened nothing), with one opening
    object and two frames fewer per stream; for exactly that pair, the first attempt
    in the opening's own frame (``_openings``)."""
    guards: list[Callable[..., Awaitable[Any]]] = []
    layers: list[GuardLayer] = []
    while isinstance(layer, GuardLayer):
        guards.append(layer._bounded)
        layers.append(layer)
        layer = layer.inner
    if not guards:
        return layer.stream
    pair = _retry_over_bounded(layers)
    call = guards.pop()
    while guards:
        call = functools.partial(guards.pop(), call)
    return functools.partial(OpenThrough, call, layer, pair)


def _retry_over_bounded(layers: list[GuardLayer]) -> tuple[Retry, CircuitBreaker] | None:
    # The `Retry` and `CircuitBreaker` of a retry layer right over a breaker layer whose
    # calls go through `call_bounded` (and nothing else between them), else None.
    if len(layers) != 2:
        return None
    retry, breaker = layers[0].guard, layers[1].guard
    if not (isinstance(retry, Retry) and isinstance(breaker, CircuitBreaker)):
        return None
    return (retry, breaker) if layers[1]._bounded == breaker.call_bounded else None


def _bounds_waits(transport: Provider) -> bool:
    # A provider whose ``complete`` waits on nothing but its session's ``post_json``
    # (every HTTP adapter) over a session that honours `CALL_DEADLINE`.
    session = getattr(transport, "session", None)
    return getattr(session, "honours_call_deadline", False) is True


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
async def open_stack(
    transport: Provider,
    llm: LLMConfig,
    performance: PerformanceConfig | None = None,
    *,
    ttl_policy: Callable[[Any], float] | None = None,
    rng: random.Random | None = None,
    name: str | None = None,
) -> AsyncIterator[ProviderStack]:
    """Stack the layers ``llm`` and ``performance`` turn on above ``transport``.

    The transport is not closed on exit (its owner closes it). With batching on, the
    batcher's nursery lives for the block: leaving it flushes what is pending. ``name``
    (a router's deployment name) names the breaker ``llm:NAME`` instead of
    ``llm:PROVIDER:MODEL``.
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
        breaker = _breaker(llm, name)
        if breaker is not None:
            layers.append(GuardLayer(layers[-1], breaker))
        retry = _retry(llm, rng)
        if retry is not None:
            layers.append(GuardLayer(layers[-1], retry))
        cache = None
        if performance is not None and performance.enable_caching:
            layer = cache_layer(layers[-1], performance, ttl_policy)
            cache = layer.cache
            layers.append(layer)
        layers.reverse()
        yield ProviderStack(
            layers,
            cache=cache,
            retry=retry,
            breaker=breaker,
            rate_limiter=limiter,
            batcher=batcher,
        )


def cache_layer(
    inner: Provider,
    performance: PerformanceConfig,
    ttl_policy: Callable[[Any], float] | None = None,
) -> CacheLayer:
    """A `CacheLayer` over ``inner`` with the cache ``performance`` configures (its
    bounds, and ``ttl_policy`` or `configured_ttl_policy`)."""
    cache = TTLCache[str, Any](
        max_entries=performance.cache_max_entries,
        max_bytes=performance.cache_max_bytes,
        sizeof=response_size,
    )
    policy = ttl_policy or configured_ttl_policy(performance.cache_ttl)
    return CacheLayer(inner, cache, policy, performance.cache_ttl)


def _rate_limiter(llm: LLMConfig) -> RateLimiter | None:
    limits = llm.rate_limit
    if not limits.enabled or not (limits.requests_per_minute or limits.tokens_per_minute):
        return None
    return RateLimiter(
        requests_per_minute=limits.requests_per_minute,
        tokens_per_minute=limits.tokens_per_minute,
    )


def _breaker(llm: LLMConfig, name: str | None) -> CircuitBreaker | None:
    settings = llm.circuit_breaker
    if not settings.enabled:
        return None
    return CircuitBreaker(
        f"llm:{name}" if name else f"llm:{llm.provider}:{llm.deployment or llm.model}",
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
