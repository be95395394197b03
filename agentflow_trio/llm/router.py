"""`Router`: one `Provider` over many deployments, with failover that never returns a broken
answer.

Each deployment keeps its own stack (pool, breaker, rate limiter: ``stack``); the router
sits above those stacks and below the cache, so everything above the seam is unchanged.
A request names a model group in ``ChatRequest.model`` (``EmbeddingRequest.model``; none:
the default group); the group's ``strategy`` picks a deployment (``weighted_random`` by
weight, ``least_in_flight``, ``lowest_latency``: a decaying average of time to first byte,
a weighted-random pick with probability ``explore``); each pick looks at each deployment
once and allocates nothing. A request's only allocation is its attempt record (`_Plan`),
plus the answer stamped with its deployment, and a copy of the request when the group's
name is not the deployment's model.

What happens on a failure, by class (``fallback_on`` of the requested group decides which
classes move a request on; the defaults are the first five rows)::

    class           raised as                              the request          the deployment
    --------------  -------------------------------------  -------------------  -----------------
    rate_limit      RateLimitError (429, Retry-After or    next deployment at   cooled for its
                    not)                                   once; see (1)        Retry-After (at
                                                                                most cooldown),
                                                                                else cooldown
    server_error    ServerError (5xx; error in a stream)   next deployment at   allowed_fails in
                                                           once; see (1)        a row: cooled
    connection      LLMConnectError, LLMReadError (reset), next deployment at   allowed_fails in
                    connect/pool timeout                   once; see (1)        a row: cooled
    timeout         LLMTimeoutError, BreakerTimeoutError,  next deployment at   cooled at once
                    no first chunk within                  once; never again    (never retried)
                    first_token_timeout                    on this one
    bad_response    ResponseFormatError (malformed body,   next deployment at   allowed_fails in
                    stream cut before its first chunk)     once                 a row: cooled
    context_length  BadRequestError saying the context     context_fallbacks    -
                    is too long                            groups, else raised
    content_filter  BadRequestError from a content policy  raised (2)           -
    auth            AuthenticationError (401, 403)         raised (2)           -
    not_found       NotFoundError (404)                    raised (2)           -
    bad_request     other 4xx                              raised (2)           -
    breaker_open    CircuitOpenError from its breaker      next deployment      skipped until the
                                                                                breaker's probe
    local_limit     LocalRateLimitError (own limiter)      next deployment      -
    other           anything else (a bug, a closed         raised unchanged     -
                    provider, ResponseTooLargeError)

(1) The same deployment is tried again only when no untried deployment is left in the
group or its ``fallbacks``, within the deployment's ``[retry] max_attempts`` for this
request, and only if the wait (jittered backoff from ``base_delay``, the Retry-After,
the rest of its cooldown) is at most ``max_retry_wait`` and ends before the caller's
deadline; a cooling deployment never tried by this request is waited for the same way.
Otherwise the request ends at once with the last attempt's own error, or, when every
deployment was cooling and none was tried, `CircuitOpenError` naming the group.
(2) No retry and no fallback unless the class is listed in ``fallback_on``: the caller
gets the provider's typed error, its reason in the message and ``excerpt``.

Order: the requested group's deployments (by the strategy), then each of its
``fallbacks`` groups in order, then the same-deployment retries of (1). A group's
requests start from the group itself every time, so a primary is used again as soon as it
is back. A deployment with ``max_context`` smaller than the request's estimated size
(`estimate_tokens`) is passed over while another fits.

Cooldowns and probes: a cooled deployment is skipped until its cooldown ends (also in
retries, and also when it is a group's only deployment); then it admits one request at a
time (the probe) until one succeeds. A dead deployment therefore sees at most one probe
per ``cooldown``, and a recovered one serves again at most ``cooldown`` plus one call
after it came back. Each deployment's own stack is built without its retry layer (the
router decides all retries, so no backoff sleep hides a failover); its breaker still
counts every attempt and its open state cools the deployment in the router too.

Streams: the opening and first chunk are bounded by ``first_token_timeout``, each later
chunk by ``stream_idle_timeout`` (apart from ``request_timeout``). A stream that fails,
stalls or ends before its first chunk reached the caller is restarted on the next
deployment without the caller noticing; once a chunk has reached the caller, a failure
ends the stream with an `IncompleteStreamError` (`StreamCutError`, `StreamStalledError`,
`StreamEndedEarlyError`) saying how many chunks and characters were delivered: never a
truncated success, and no assistant prefill is ever sent to another model. The last
chunks (``finish_reason``, usage) and every response say which ``deployment`` and
``model`` answered; usage is that attempt's alone.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from ._attempts import STRATEGIES, Core
from ._routed_stream import RoutedStream
from ._routing import FAILURE_KINDS, Deployment
from .base import Provider
from .types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamChunk

if TYPE_CHECKING:
    from ..config import DeploymentConfig, RouterConfig

__all__ = ["FAILURE_KINDS", "STRATEGIES", "DeploymentStatistics", "Router", "RouterStatistics"]


@attrs.frozen
class DeploymentStatistics:
    """A snapshot of one deployment under a `Router`.

    Attributes:
      name, group, model, weight: as configured.
      in_flight: calls and open streams now.
      attempts: calls and stream openings sent to it (probes included).
      successes: of those, the ones that answered (a stream: to its end).
      failures: failed attempts by class (`FAILURE_KINDS`; classes never seen left out).
      cooldowns: times it went from in service to cooled (a failed probe extends the
        cooldown it is in: see ``probes``); ``cooling``: whether it is now, for
        ``cooldown_remaining`` more seconds.
      failovers: failed attempts after which the request moved on to another deployment.
      probes: attempts made as the one probe after a cooldown.
      ttft: decaying average time to first byte (a whole call for ``complete``), None
        before the first answer; sampled on every 8th call unless the strategy is
        ``lowest_latency`` (every call and stream then).
      stack: its stack's `StackStatistics` (breaker, pool, ...), None if unknown.
    """

    name: str
    group: str
    model: str
    weight: int
    in_flight: int
    attempts: int
    successes: int
    failures: Mapping[str, int]
    cooldowns: int
    cooling: bool
    cooldown_remaining: float
    failovers: int
    probes: int
    ttft: float | None
    stack: Any = None


@attrs.frozen
class RouterStatistics:
    """A snapshot of a `Router`.

    Attributes:
      requests: calls, streams and embeddings asked of it.
      fallbacks: requests answered by a deployment of a ``fallbacks`` group.
      context_fallbacks: requests sent on to ``context_fallbacks`` groups.
      retries: same-deployment retries (after a short wait).
      refused: requests refused at once because every deployment was cooling down.
      errors: requests that ended with an error (refusals included; cancellation not).
      deployments: one `DeploymentStatistics` per deployment, in configuration order.
    """

    requests: int
    fallbacks: int
    context_fallbacks: int
    retries: int
    refused: int
    errors: int
    deployments: tuple[DeploymentStatistics, ...]


@final
class Router:
    """A `Provider` spreading requests over deployments, with the failover rules of this
    module's docstring.

    ``deployments`` maps each deployment's name to its config (for its group, model,
    weight, max_context and ``[retry]`` budget) and its provider: normally its own
    ``open_stack`` stack with the retry layer off (``open_provider`` builds them from
    ``[llm.deployments]``). ``config`` gives the strategy and the group policies;
    ``statistics`` optionally maps names to their stacks' ``statistics`` callables;
    ``rng`` drives the weighted picks and the retry jitter. ``on_cooldown(name, until)``
    is called when a deployment starts a cooldown lasting to ``until`` (trio time).

    Raises:
        ConfigError: no deployment, an unknown strategy, or a fallback or default group
            that no deployment serves.
    """

    def __init__(
        self,
        deployments: Mapping[str, tuple[DeploymentConfig, Provider]],
        config: RouterConfig | None = None,
        *,
        statistics: Mapping[str, Callable[[], Any]] | None = None,
        rng: random.Random | None = None,
        on_cooldown: Callable[[str, float], None] | None = None,
    ) -> None:
        from ..config import RouterConfig

        self._core = Core(
            deployments,
            config if config is not None else RouterConfig(),
            statistics or {},
            rng or random.Random(),
            on_cooldown,
        )
        self._closed = False

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """A chat completion from the first deployment that answers (see the module).

        Raises:
            NotFoundError: ``request.model`` names no group.
            CircuitOpenError: every deployment it could use is cooling down.
            Exception: otherwise the last attempt's own error (see the rules table).
        """
        core = self._core
        plan = core.plan(request.model, request)
        while True:
            dep = plan.pick()
            if dep is None:
                dep = await plan.wait_or_raise()
            probe = dep.cooled
            if probe:
                dep.probing = True
                dep.probes += 1
            dep.in_flight += 1
            attempts = dep.attempts = dep.attempts + 1
            timed = core.strategy == 2 or attempts & 7 == 1  # as Core.timed, inlined
            start = trio.current_time() if timed else 0.0
            model = request.model
            try:
                response = await dep.provider.complete(
                    request
                    if model is None or model == dep.model
                    else request.with_model(dep.model)
                )
            except Exception as exc:
                if not plan.failed(dep, exc, probe):
                    raise
                continue
            finally:
                dep.in_flight -= 1
                if probe:
                    dep.probing = False
            if timed or dep.cooled or dep.fails or dep.group is not plan.group:
                core.succeeded(dep, plan, trio.current_time() - start if timed else None)
            else:  # the common case of Core.succeeded, inlined
                dep.successes += 1
            # evolve, not a rebuild: every field (items, response_id, any later one) passes
            return attrs.evolve(response, model=response.model or dep.model, deployment=dep.name)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """A streamed completion, restarted elsewhere while nothing reached the caller;
        entering it raises as `complete`, reading it `IncompleteStreamError` if it breaks."""
        return RoutedStream(self._core, request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeddings from the first deployment of the group that answers; raises as
        `complete`."""
        core = self._core
        plan = core.plan(request.model, None)
        while True:
            dep = plan.pick()
            if dep is None:
                dep = await plan.wait_or_raise()
            probe = core.begin(dep)
            timed = core.timed(dep)
            start = trio.current_time() if timed else 0.0
            try:
                response = await dep.provider.embed(dep.adapt_embed(request))
            except Exception as exc:
                if not plan.failed(dep, exc, probe):
                    raise
                continue
            finally:
                core.end(dep, probe)
            core.succeeded(dep, plan, trio.current_time() - start if timed else None)
            model = response.model or dep.model
            return EmbeddingResponse(response.vectors, response.usage, model, dep.name)

    async def aclose(self) -> None:
        """Close every deployment's provider. Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for dep in self._core.deployments:
            await dep.provider.aclose()

    @property
    def providers(self) -> Mapping[str, Provider]:
        """Each deployment's provider (its stack), by name."""
        return {dep.name: dep.provider for dep in self._core.deployments}

    @property
    def groups(self) -> Mapping[str, tuple[str, ...]]:
        """Each model group's deployment names, in configuration order."""
        groups = self._core.groups.items()
        return {name: tuple(d.name for d in g.deployments) for name, g in groups}

    @property
    def default_group(self) -> str:
        """The group of requests that name no model."""
        return self._core.default.name

    def statistics(self) -> RouterStatistics:
        """A `RouterStatistics` snapshot."""
        core = self._core
        now = trio.current_time()
        return RouterStatistics(
            requests=core.requests,
            fallbacks=core.fallbacks,
            context_fallbacks=core.context_fallbacks,
            retries=core.retries,
            refused=core.refused,
            errors=core.errors,
            deployments=tuple(_snapshot(dep, now) for dep in core.deployments),
        )

    def cool_down(self, name: str, until: float) -> None:
        """Cool deployment ``name`` down until ``until`` (trio time), as if it had failed
        here: how a cooldown found by another worker arrives (``shared_cooldowns``).
        Unknown names are ignored; ``on_cooldown`` is not called."""
        for dep in self._core.deployments:
            if dep.name == name:
                self._core.cool(dep, until, announce=False)


def _snapshot(dep: Deployment, now: float) -> DeploymentStatistics:
    remaining = max(0.0, dep.cooldown_until - now) if dep.cooled else 0.0
    return DeploymentStatistics(
        name=dep.name,
        group=dep.group.name,
        model=dep.model,
        weight=dep.weight,
        in_flight=dep.in_flight,
        attempts=dep.attempts,
        successes=dep.successes,
        failures={FAILURE_KINDS[k]: n for k, n in enumerate(dep.failures) if n},
        cooldowns=dep.cooldowns,
        cooling=remaining > 0,
        cooldown_remaining=remaining,
        failovers=dep.failovers,
        probes=dep.probes,
        ttft=dep.ttft if dep.ttft >= 0 else None,
        stack=dep.statistics() if dep.statistics is not None else None,
    )
