"""The router's parts below its public face: failure classes, per-deployment state, groups
and the three strategies.

Everything here is plain mutable state on slotted objects, read and written without locks
(trio runs one task at a time, and no ``await`` separates a check from its update). A
strategy looks at each deployment of a group once, allocates nothing, and skips what is
already tried this request (a bit in an int) or cooling down.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, final

from ..config import FAILURE_CLASSES
from ..errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    LLMTimeoutError,
    LocalRateLimitError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ResponseTooLargeError,
    TransportError,
)
from .base import Provider
from .types import ChatRequest, EmbeddingRequest

if TYPE_CHECKING:
    from ..config import DeploymentConfig, RouterGroupConfig

__all__ = [
    "ALPHA",
    "FAILURE_KINDS",
    "HEALTH",
    "SAME_RETRY",
    "SKIP",
    "Deployment",
    "Group",
    "classify",
    "least_in_flight",
    "lowest_latency",
    "retry_after",
    "weighted_random",
]

# The classes a group's `fallback_on` may name (the config's list), then the router's own.
FAILURE_KINDS: Final = (*FAILURE_CLASSES, "breaker_open", "local_limit", "other")
"""Every failure class the router tells apart, by index (`classify`)."""

(
    RATE_LIMIT,
    SERVER_ERROR,
    CONNECTION,
    TIMEOUT,
    BAD_RESPONSE,
    CONTEXT_LENGTH,
    CONTENT_FILTER,
    AUTH,
    NOT_FOUND,
    BAD_REQUEST,
    BREAKER_OPEN,
    LOCAL_LIMIT,
    OTHER,
) = range(len(FAILURE_KINDS))

SAME_RETRY: Final = (1 << RATE_LIMIT) | (1 << SERVER_ERROR) | (1 << CONNECTION)
"""Classes worth a second attempt on the same deployment (after a short wait)."""
HEALTH: Final = SAME_RETRY | (1 << TIMEOUT) | (1 << BAD_RESPONSE)
"""Classes that are the deployment's fault: they count towards its cooldown."""
SKIP: Final = (1 << BREAKER_OPEN) | (1 << LOCAL_LIMIT)
"""Classes where the deployment was never asked: move on, whatever ``fallback_on`` says."""

_CONTEXT_MARKERS: Final = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "prompt is too long",
    "too many tokens",
)
_FILTER_MARKERS: Final = (
    "content_filter",
    "content_policy",
    "content management policy",
    "responsibleaipolicyviolation",
    "safety system",
)
_CONNECT_WAITS: Final = frozenset({"ConnectTimeout", "PoolTimeout"})
ALPHA: Final = 0.2
"""The weight of a new sample in the decaying time-to-first-byte average."""


def classify(exc: BaseException) -> int:
    """The failure class (an index of `FAILURE_KINDS`) of an attempt's exception."""
    if isinstance(exc, APIStatusError):
        if isinstance(exc, LocalRateLimitError):
            return LOCAL_LIMIT
        if isinstance(exc, RateLimitError):
            return RATE_LIMIT
        if isinstance(exc, BadRequestError):
            text = f"{exc.excerpt} {exc}".lower()
            if any(marker in text for marker in _CONTEXT_MARKERS):
                return CONTEXT_LENGTH
            if any(marker in text for marker in _FILTER_MARKERS):
                return CONTENT_FILTER
            return BAD_REQUEST
        if isinstance(exc, AuthenticationError):
            return AUTH
        if isinstance(exc, NotFoundError):
            return NOT_FOUND
        return SERVER_ERROR if exc.retryable else BAD_REQUEST
    if isinstance(exc, CircuitOpenError):
        return BREAKER_OPEN
    if isinstance(exc, ResponseTooLargeError):
        return OTHER  # the same request gets the same answer anywhere
    if isinstance(exc, ResponseFormatError):
        return BAD_RESPONSE
    if isinstance(exc, LLMTimeoutError):
        cause = type(exc.__cause__).__name__
        return CONNECTION if cause in _CONNECT_WAITS else TIMEOUT
    if isinstance(exc, TransportError):
        return CONNECTION
    return OTHER


def retry_after(exc: BaseException) -> float | None:
    """The error's Retry-After in seconds, if it is a finite number >= 0."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and 0 <= value < math.inf:
        return float(value)
    return None


@final
class Group:
    """A model group: its deployments, its policy, and the groups tried after it."""

    __slots__ = (
        "allowed_fails",
        "bounds",
        "chain",
        "context_chain",
        "cooldown",
        "deployments",
        "fallback_mask",
        "first_token_timeout",
        "idle_timeout",
        "max_retry_wait",
        "name",
        "sized",
        "total",
        "weighted",
    )

    def __init__(self, name: str, policy: RouterGroupConfig) -> None:
        self.name = name
        self.deployments: tuple[Deployment, ...] = ()
        self.chain: tuple[Group, ...] = (self,)
        self.context_chain: tuple[Group, ...] = ()
        self.fallback_mask = sum(1 << FAILURE_KINDS.index(k) for k in set(policy.fallback_on))
        self.first_token_timeout = policy.first_token_timeout
        self.idle_timeout = policy.stream_idle_timeout
        self.cooldown = policy.cooldown
        self.allowed_fails = policy.allowed_fails
        self.max_retry_wait = policy.max_retry_wait
        self.sized = False  # some deployment has a known max_context
        self.weighted: tuple[Deployment, ...] = ()  # weight > 0, for `draw`
        self.bounds: tuple[float, ...] = ()  # their cumulative weights
        self.total = 0

    def add(self, dep: Deployment) -> None:
        """Add ``dep`` to this group (at configuration time)."""
        self.deployments += (dep,)
        self.sized = self.sized or dep.max_context > 0
        if dep.weight:
            self.total += dep.weight
            self.weighted += (dep,)
            self.bounds += (float(self.total),)

    def draw(self, draw: Callable[[], float]) -> Deployment:
        """A weighted-random deployment when every one is ready and untried: one random
        number and a bisection, nothing else (the common case)."""
        if not self.total:
            return self.deployments[0]
        weighted = self.weighted
        if len(weighted) == 1:
            return weighted[0]
        return weighted[
            min(bisect.bisect_right(self.bounds, draw() * self.total), len(weighted) - 1)
        ]


@final
class Deployment:
    """One deployment under a router: its provider (stack), settings and live state.

    ``cooled`` is set by a cooldown and cleared by the first success after it ends; while
    set, the deployment is skipped until ``cooldown_until``, then admits one probe at a
    time (``probing``).
    """

    __slots__ = (
        "attempts",
        "base_delay",
        "bit",
        "cooldown_until",
        "cooldowns",
        "cooled",
        "failovers",
        "fails",
        "failures",
        "group",
        "in_flight",
        "index",
        "max_attempts",
        "max_context",
        "max_delay",
        "model",
        "name",
        "probes",
        "probing",
        "provider",
        "statistics",
        "successes",
        "ttft",
        "weight",
    )

    def __init__(
        self,
        index: int,
        name: str,
        config: DeploymentConfig,
        provider: Provider,
        group: Group,
        statistics: Callable[[], Any] | None = None,
    ) -> None:
        self.index = index
        self.bit = 1 << index
        self.name = name
        self.model = config.model
        self.provider = provider
        self.group = group
        self.weight = config.weight
        self.max_context = config.max_context
        retry = config.retry
        self.max_attempts = retry.max_attempts if retry.enabled else 1
        self.base_delay = retry.base_delay
        self.max_delay = retry.max_delay
        self.statistics = statistics
        self.in_flight = 0
        self.ttft = -1.0  # seconds; < 0 until the first sample
        self.cooled = False
        self.cooldown_until = -math.inf
        self.probing = False
        self.fails = 0  # consecutive failures counting towards a cooldown
        self.attempts = 0
        self.successes = 0
        self.failures = [0] * len(FAILURE_KINDS)
        self.cooldowns = 0
        self.failovers = 0
        self.probes = 0

    def adapt_chat(self, request: ChatRequest) -> ChatRequest:
        """``request`` for this deployment: a group name in ``model`` becomes its model."""
        model = request.model
        if model is None or model == self.model:
            return request
        return request.with_model(self.model)

    def adapt_embed(self, request: EmbeddingRequest) -> EmbeddingRequest:
        """As `adapt_chat`, for embeddings."""
        model = request.model
        if model is None or model == self.model:
            return request
        return EmbeddingRequest(request.inputs, self.model)

    def observe(self, seconds: float) -> None:
        """Add a time-to-first-byte sample to the decaying average."""
        self.ttft = seconds if self.ttft < 0 else self.ttft + ALPHA * (seconds - self.ttft)

    def cool(self, until: float) -> bool:
        """Skip this deployment until ``until`` (never shortening a cooldown); whether a new
        cooldown started."""
        if until > self.cooldown_until:
            self.cooldown_until = until
        if self.cooled:
            return False
        self.cooled = True
        self.cooldowns += 1
        return True

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The jittered wait before attempt ``attempt + 1`` on this deployment."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 64))
        return rng.uniform(0.0, ceiling)


def _blocked(d: Deployment, tried: int, now: float) -> bool:
    return bool(tried & d.bit) or (d.cooled and (d.probing or now < d.cooldown_until))


def weighted_random(
    deployments: Sequence[Deployment], tried: int, now: float, draw: Callable[[], float]
) -> Deployment | None:
    """A ready deployment, chosen with probability proportional to its weight; one of
    weight 0 only when no weighted one is ready."""
    total = 0
    spare = None
    for d in deployments:
        if tried & d.bit or (d.cooled and (d.probing or now < d.cooldown_until)):
            continue
        if d.weight:
            total += d.weight
        elif spare is None:
            spare = d
    if not total:
        return spare
    point = draw() * total
    chosen = None
    for d in deployments:
        if not d.weight or tried & d.bit or (d.cooled and (d.probing or now < d.cooldown_until)):
            continue
        chosen = d
        point -= d.weight
        if point < 0:
            break
    return chosen


def least_in_flight(
    deployments: Sequence[Deployment], tried: int, now: float, turn: int
) -> Deployment | None:
    """The ready deployment with the fewest calls in flight (weight 0 last); ties go
    round-robin from ``turn``."""
    best = None
    count = len(deployments)
    for i in range(count):
        d = deployments[(turn + i) % count]
        if _blocked(d, tried, now):
            continue
        if (
            best is None
            or (d.weight and not best.weight)
            or (bool(d.weight) == bool(best.weight) and d.in_flight < best.in_flight)
        ):
            best = d
    return best


def lowest_latency(
    deployments: Sequence[Deployment],
    tried: int,
    now: float,
    draw: Callable[[], float],
    explore: float,
) -> Deployment | None:
    """The ready deployment with the lowest decaying time to first byte (one never timed
    first); with probability ``explore`` a weighted-random one instead, so that a slower
    deployment's figure stays current."""
    if explore and draw() < explore:
        return weighted_random(deployments, tried, now, draw)
    best = None
    for d in deployments:
        if _blocked(d, tried, now):
            continue
        if (
            best is None
            or (d.weight and not best.weight)
            or (bool(d.weight) == bool(best.weight) and d.ttft < best.ttft)
        ):
            best = d
    return best
