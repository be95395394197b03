"""The config sections: one frozen attrs class per ``agentflow.toml`` table, `Config` the root.

The configuration is a tree of frozen attrs classes read once and then shared freely between
tasks: reading ``config.runner.worker_pool_size`` is a plain attribute access. ``Config()``
gives every default, so no file is ever required. The classes declare types, defaults,
bounds and secrets only; `parse_section` (in `convert`) turns TOML into them and back.
To add a section: write a frozen attrs class with defaults and add one field of `Config`.

Every number has a lower and an upper bound (its validator, such as ``between(1, 65536)``
or ``duration(gt=0, le=7 * DAY)``): the upper one is far above what a deployment needs and
below what breaks at start (a C int, a timer, memory). Secrets (``metadata=SECRET``) and
URLs (``metadata=URL``) never show a secret in a repr, a rendering or an error.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from ..errors import ConfigError
from ._aliases import register_aliases
from ._bounds import DAY, HOUR, INT32_MAX, Bounds, MaxItems, between, duration, size
from ._deployments import deployment_defaults, reshape_llm, reshape_router
from ._hosting import MemoryConfig, MonitoringConfig
from ._messages import expected
from ._secrets import SECRET, URL, masked_repr, redact_url, url_repr
from ._shape import register_reshape
from ._usage import LimitsConfig, PriceConfig
from .convert import parse_section, section_to_dict, section_to_toml
from .units import Duration, Size

__all__ = [
    "DEFAULT_FALLBACK_ON",
    "FAILURE_CLASSES",
    "CircuitBreakerConfig",
    "Config",
    "DeploymentConfig",
    "DistributedConfig",
    "LLMConfig",
    "LimitsConfig",
    "MCPConfig",
    "MCPServerConfig",
    "MemoryConfig",
    "MonitoringConfig",
    "PerformanceConfig",
    "PriceConfig",
    "RateLimitConfig",
    "RetryConfig",
    "RouterConfig",
    "RouterGroupConfig",
    "RunnerConfig",
    "RuntimeConfig",
    "TracingConfig",
]


@attrs.frozen
class RunnerConfig:
    """``[runner]``: admission bound, queue, worker pool and timeouts of the `Runner`.

    ``event_buffer_size = 0`` makes the queue an unbuffered (rendezvous) channel. Bounds:
    at most 1,000,000 events in flight and queued, 65,536 workers (one task each, started
    with the runner), an event timeout of 7 days and a drain of 1 day.
    ``max_nesting_depth`` bounds nested ``ctx.runner.call`` levels per event (1 to 64;
    past it `NestingTooDeep`). ``stream_buffer``: the progress items a streamed event
    (``runner.stream``) may have waiting for its caller before its code waits too (1 to
    65,536).
    """

    max_concurrent_events: int = attrs.field(default=1000, validator=between(1, 1_000_000))
    event_buffer_size: int = attrs.field(default=1000, validator=between(0, 1_000_000))
    worker_pool_size: int = attrs.field(default=50, validator=between(1, 65_536))
    event_timeout: Duration = attrs.field(default=30.0, validator=duration(gt=0, le=7 * DAY))
    drain_timeout: Duration = attrs.field(default=10.0, validator=duration(le=DAY))
    max_nesting_depth: int = attrs.field(default=8, validator=between(1, 64))
    stream_buffer: int = attrs.field(default=64, validator=between(1, 65_536))


def _gc_thresholds(instance: object, attribute: attrs.Attribute[Any], value: list[int]) -> None:
    """At most 3 C ints >= 0: what ``gc.set_threshold`` takes without an OverflowError."""
    if len(value) > 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT32_MAX for v in value
    ):
        what = f"at most 3 integers between 0 and {INT32_MAX} (gc.set_threshold)"
        raise ConfigError(expected(what, value), key=attribute.name)


@attrs.frozen
class RuntimeConfig:
    """``[runtime]``: the guide's runtime tuning, for Python.

    ``gc_thresholds`` (1 to 3 ints, empty = Python's default) goes to ``gc.set_threshold``;
    ``gc_freeze`` moves everything allocated during start-up out of the collector's reach
    (``gc.freeze()``); with neither, ``gc_auto`` (on by default) lets a runner admitting
    at least 2,000 events (``max_concurrent_events``) tune both while it is open (a
    generation-0 threshold of 10 per event, start-up frozen; see
    `agentflow_trio.observability.runtime.auto_gc_settings`); ``memory_limit`` is a soft
    RSS limit (0 = off): above it the runner refuses new events with `Overloaded` instead
    of being killed, checked every ``memory_check_interval``. Bounds: thresholds <= 2**31
    - 1 (a C int), a limit of at most 16TiB, a check at least every hour.
    """

    gc_thresholds: list[int] = attrs.field(factory=list, validator=_gc_thresholds)
    gc_freeze: bool = False
    gc_auto: bool = True
    memory_limit: Size = attrs.field(default=0, validator=size(le=2**44))
    memory_check_interval: Duration = attrs.field(default=1.0, validator=duration(gt=0, le=HOUR))


@attrs.frozen
class RetryConfig:
    """``[llm.retry]``: exponential backoff with jitter between ``base_delay`` and ``max_delay``.

    Bounds: at most 100 attempts; delays (a server's Retry-After included) of at most 1 hour.
    """

    enabled: bool = True
    max_attempts: int = attrs.field(default=3, validator=between(1, 100))
    base_delay: Duration = attrs.field(default=0.5, validator=duration(le=HOUR))
    max_delay: Duration = attrs.field(default=30.0, validator=duration(le=HOUR))


@attrs.frozen
class CircuitBreakerConfig:
    """``[llm.circuit_breaker]``: trip after ``failure_threshold`` consecutive failures.

    Bounds: thresholds of at most 1,000,000 failures and 10,000 probes; timeouts of 1 day.
    """

    enabled: bool = True
    failure_threshold: int = attrs.field(default=5, validator=between(1, 1_000_000))
    open_timeout: Duration = attrs.field(default=30.0, validator=duration(le=DAY))
    half_open_max_calls: int = attrs.field(default=1, validator=between(1, 10_000))
    call_timeout: Duration = attrs.field(default=60.0, validator=duration(gt=0, le=DAY))


@attrs.frozen
class RateLimitConfig:
    """``[llm.rate_limit]``: client-side request and token budgets; 0 means unlimited.

    Bounds: 100,000,000 requests and 10,000,000,000 tokens per minute.
    """

    enabled: bool = False
    requests_per_minute: int = attrs.field(default=0, validator=between(0, 10**8))
    tokens_per_minute: int = attrs.field(default=0, validator=between(0, 10**10))


@attrs.frozen
class DeploymentConfig:
    """``[llm.deployments.NAME]``: one model deployment (provider, credentials, connection
    pool, resilience stack) and its place in the router; also the keys of ``[llm]`` itself.

    ``base_url = ""`` means the provider's default. ``api_key`` and ``headers`` are
    secrets, and the password in ``base_url``'s userinfo: reprs, `Config.to_dict` and
    errors mask them. ``min_connections <= max_connections``. ``group`` is the model group
    callers ask for (``ChatRequest.model``; ``""`` = ``model``), ``weight`` its share of
    the group's traffic (0: only when no weighted deployment of the group can take it),
    ``max_context`` its context window in tokens (0 = unknown). Bounds: 65,536
    connections, 256 headers, a connect timeout of 1 hour, a request timeout and an idle
    time of 1 day, a connection lifetime of 30 days, a response body of 1 GiB (default 64
    MiB), a response head of 16 MiB (default 64 KiB), a weight of 1,000,000 and a context
    of 100,000,000 tokens.
    """

    provider: Literal["openai", "azure", "ollama", "anthropic", "openai_responses", "fake"] = (
        "openai"
    )
    model: str = "gpt-4o-mini"
    base_url: str = attrs.field(default="", metadata=URL, repr=url_repr)
    api_key: str = attrs.field(default="", metadata=SECRET, repr=masked_repr)
    api_version: str = "2024-10-21"
    deployment: str = ""
    organization: str = ""
    max_connections: int = attrs.field(default=100, validator=between(1, 65_536))
    min_connections: int = attrs.field(default=0, validator=between(0, 65_536))
    connection_timeout: Duration = attrs.field(default=10.0, validator=duration(gt=0, le=HOUR))
    request_timeout: Duration = attrs.field(default=60.0, validator=duration(gt=0, le=DAY))
    idle_timeout: Duration = attrs.field(default=300.0, validator=duration(le=DAY))
    max_connection_lifetime: Duration = attrs.field(default=3600.0, validator=duration(le=30 * DAY))
    headers: dict[str, str] = attrs.field(
        factory=dict, metadata=SECRET, repr=masked_repr, validator=MaxItems(256)
    )
    # "lean": the project's HTTP/1.1 client on trio streams (httptools); "httpx2": the
    # httpx2 client. Both honour the pool settings above and raise the same errors.
    transport: Literal["lean", "httpx2"] = "lean"
    # False: a fresh connection per request, closed after its response (both clients;
    # ``Connection: close`` is sent); ``min_connections`` is then not warmed up.
    connection_pooling: bool = True
    # What a response may bring in: the body (as received, as declared, once decoded, and a
    # whole stream) and the lean client's status line plus headers.
    max_response_bytes: Size = attrs.field(default=64 * 2**20, validator=size(ge=1024, le=2**30))
    max_header_bytes: Size = attrs.field(default=64 * 2**10, validator=size(ge=1024, le=16 * 2**20))
    group: str = ""
    weight: int = attrs.field(default=1, validator=between(0, 1_000_000))
    max_context: int = attrs.field(default=0, validator=between(0, 100_000_000))
    retry: RetryConfig = attrs.field(factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = attrs.field(factory=CircuitBreakerConfig)
    rate_limit: RateLimitConfig = attrs.field(factory=RateLimitConfig)

    def __attrs_post_init__(self) -> None:
        if self.min_connections > self.max_connections:
            limit = f"an integer <= max_connections ({self.max_connections})"
            raise ConfigError(expected(limit, self.min_connections), key="min_connections")

    @property
    def model_group(self) -> str:
        """The model group this deployment serves: ``group``, or ``model`` when unset."""
        return self.group or self.model


FAILURE_CLASSES: Final = (
    "rate_limit",
    "server_error",
    "connection",
    "timeout",
    "bad_response",
    "context_length",
    "content_filter",
    "auth",
    "not_found",
    "bad_request",
)
"""The failure classes a router group may fail over on (``fallback_on``)."""

DEFAULT_FALLBACK_ON: Final = ("rate_limit", "server_error", "connection", "timeout", "bad_response")


def _failure_classes(instance: object, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for item in value:
        if item not in FAILURE_CLASSES:
            listing = ", ".join(repr(c) for c in FAILURE_CLASSES)
            raise ConfigError(expected(f"one of {listing}", item), key=attribute.name)


@attrs.frozen
class RouterGroupConfig:
    """``[llm.router.groups.NAME]``: the failover policy of one model group.

    ``fallbacks``: groups tried, in order, once this group has no untried deployment left;
    ``context_fallbacks``: groups with a larger context window, tried instead when a
    deployment says the request is too long (``context_length_exceeded``). A failure of a
    class in ``fallback_on`` moves the request on; any other class ends it with the
    provider's typed error. ``first_token_timeout`` bounds a stream's opening and first
    chunk, ``stream_idle_timeout`` each later wait for a chunk (0 = off; both apart from
    ``request_timeout``). A deployment is cooled down (skipped) for ``cooldown`` after a
    timeout, a 429 (for its Retry-After, at most ``cooldown``) or ``allowed_fails``
    consecutive failures; then one probe at a time brings it back. The same deployment is
    tried again only for a wait of at most ``max_retry_wait``, and only when no untried
    deployment is left. Keys not given inherit from ``[llm.router]``. Bounds: 16
    fallbacks each, timeouts and cooldown of 1 day, 1,000,000 allowed failures, a retry
    wait of 1 hour.
    """

    fallbacks: list[str] = attrs.field(factory=list, validator=MaxItems(16))
    context_fallbacks: list[str] = attrs.field(factory=list, validator=MaxItems(16))
    fallback_on: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_FALLBACK_ON), validator=[MaxItems(16), _failure_classes]
    )
    first_token_timeout: Duration = attrs.field(default=30.0, validator=duration(le=DAY))
    stream_idle_timeout: Duration = attrs.field(default=30.0, validator=duration(le=DAY))
    cooldown: Duration = attrs.field(default=30.0, validator=duration(le=DAY))
    allowed_fails: int = attrs.field(default=3, validator=between(1, 1_000_000))
    max_retry_wait: Duration = attrs.field(default=1.0, validator=duration(le=HOUR))


@attrs.frozen
class RouterConfig:
    """``[llm.router]``: how requests are spread over deployments, and the group policies.

    ``strategy``: ``"weighted_random"`` (by ``weight``), ``"least_in_flight"`` or
    ``"lowest_latency"`` (a decaying average of time to first byte, trying another
    deployment with probability ``explore``). ``default_group`` answers requests that name
    no model (``""`` = the first deployment's group). ``shared_cooldowns``: with
    ``[distributed]``, cooldowns are shared through Redis by every worker. The policy keys
    (see `RouterGroupConfig`) set here apply to every group; ``groups.NAME`` overrides
    them. Bounds: 256 groups, ``explore`` between 0 and 1.
    """

    strategy: Literal["weighted_random", "least_in_flight", "lowest_latency"] = "weighted_random"
    default_group: str = ""
    explore: float = attrs.field(default=0.05, validator=Bounds(ge=0, le=1))
    shared_cooldowns: bool = False
    fallback_on: list[str] = attrs.field(
        factory=lambda: list(DEFAULT_FALLBACK_ON), validator=[MaxItems(16), _failure_classes]
    )
    first_token_timeout: Duration = attrs.field(default=30.0, validator=duration(le=DAY))
    stream_idle_timeout: Duration = attrs.field(default=30.0, validator=duration(le=DAY))
    cooldown: Duration = attrs.field(default=30.0, validator=duration(le=DAY))
    allowed_fails: int = attrs.field(default=3, validator=between(1, 1_000_000))
    max_retry_wait: Duration = attrs.field(default=1.0, validator=duration(le=HOUR))
    groups: dict[str, RouterGroupConfig] = attrs.field(factory=dict, validator=MaxItems(256))

    def group(self, name: str) -> RouterGroupConfig:
        """The policy of group ``name``: its table, or the router-wide keys."""
        policy = self.groups.get(name)
        if policy is not None:
            return policy
        names = [f.name for f in attrs.fields(RouterGroupConfig) if hasattr(self, f.name)]
        return RouterGroupConfig(**{name: getattr(self, name) for name in names})


register_reshape(RouterConfig, functools.partial(reshape_router, group=RouterGroupConfig))


@attrs.frozen
class _KeysMatch:
    """An attrs validator: every key of a table field matches ``pattern``."""

    pattern: re.Pattern[str]
    what: str

    def __call__(
        self, instance: object, attribute: attrs.Attribute[Any], table: Mapping[str, object]
    ) -> None:
        """Raises: ConfigError: a key does not match (the error names it)."""
        for name in table:
            if not self.pattern.fullmatch(name):
                raise ConfigError(expected(self.what, name), key=f"{attribute.name}.{name}")


_check_deployment_names = _KeysMatch(
    re.compile(r"[A-Za-z0-9_.-]+"), "a deployment name of letters, digits, '_', '.' and '-'"
)
_check_model_names = _KeysMatch(
    re.compile(r"[^\x00-\x1f\x7f]{1,256}"), "a model name of 1 to 256 printable characters"
)


@attrs.frozen
class LLMConfig(DeploymentConfig):
    """``[llm]``: provider, credentials, connection pool and the resilience stack (the keys
    of `DeploymentConfig`), and optionally several deployments behind a router.

    With no ``deployments`` the ``[llm]`` table is the one deployment (a group of one).
    With ``[llm.deployments.NAME]`` tables, each is a deployment and every key it does not
    give is inherited from ``[llm]`` (nested tables such as ``[llm.retry]`` key by key;
    ``headers`` as a whole). A table named after a provider (``[llm.azure]``,
    ``[llm.openai]``, as in the AgentFlow guide) is the deployment of that name with that
    ``provider``. Inheritance is done by the loader; in code, give each deployment in
    full (``attrs.evolve``). ``router`` spreads requests over the deployments.
    ``prices``: USD per million tokens by model name (`PriceConfig`), for
    ``AgentResult.usage.cost`` and ``[limits] max_cost``. ``output_mode``: how
    ``complete(..., output_type=T)`` asks for structured output (``"native"`` JSON
    schema, a forced ``"tool"`` call, a ``"prompted"`` JSON reply, or ``"auto"``: the
    best the deployment supports); ``output_retries``: how many times an invalid reply
    is sent back to the model (0 to 100). Bounds: 256 deployments, 4,096 prices.
    """

    deployments: dict[str, DeploymentConfig] = attrs.field(
        factory=dict, validator=[MaxItems(256), _check_deployment_names]
    )
    router: RouterConfig = attrs.field(factory=RouterConfig)
    prices: dict[str, PriceConfig] = attrs.field(
        factory=dict, validator=[MaxItems(4096), _check_model_names]
    )
    output_mode: Literal["auto", "native", "tool", "prompted"] = "auto"
    output_retries: int = attrs.field(default=1, validator=between(0, 100))

    def deployment_configs(self) -> dict[str, LLMConfig]:
        """Each deployment as a plain `LLMConfig` (no deployments of its own), by name;
        without deployments, ``{provider: self}``: the ``[llm]`` table is the one."""
        if not self.deployments:
            return {self.provider: self}
        names = [f.name for f in attrs.fields(DeploymentConfig)]
        return {
            name: LLMConfig(**{n: getattr(dep, n) for n in names})
            for name, dep in self.deployments.items()
        }

    def uses_router(self) -> bool:
        """Whether a `Router` serves this config: deployments or group policies are set."""
        return bool(self.deployments or self.router.groups)


register_reshape(LLMConfig, functools.partial(reshape_llm, deployment=DeploymentConfig))
register_aliases(
    DeploymentConfig,
    {"retry_max_attempts": "retry.max_attempts", "retry_initial_interval": "retry.base_delay"},
)


@attrs.frozen
class PerformanceConfig:
    """``[performance]``: the response cache (bounded by entries and bytes), batching, and
    the connection defaults of every LLM deployment.

    ``enable_request_batching`` (the AgentFlow guide's name) is ``enable_batching``.
    ``pool_size`` and ``enable_connection_pooling`` are the defaults of every deployment's
    ``max_connections`` and ``connection_pooling``: when a file is read they are written
    into ``[llm]`` unless ``[llm]`` gives those keys, and every deployment inherits them
    from there unless it gives its own (``None``: the built-in 100). A config built in code
    sets the deployments' keys. Bounds: a TTL of 30 days, 10,000,000 entries, 1TiB;
    batches of 10,000 items waiting at most 1 minute; a pool of 65,536 connections.
    """

    enable_caching: bool = False
    cache_ttl: Duration = attrs.field(default=3600.0, validator=duration(le=30 * DAY))
    cache_max_entries: int = attrs.field(default=10000, validator=between(1, 10_000_000))
    cache_max_bytes: Size = attrs.field(default=64 * 2**20, validator=size(le=2**40))
    enable_batching: bool = False
    batch_size: int = attrs.field(default=16, validator=between(1, 10_000))
    batch_timeout: Duration = attrs.field(default=0.01, validator=duration(le=60.0))
    enable_connection_pooling: bool = True
    pool_size: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(between(1, 65_536))
    )


register_aliases(PerformanceConfig, {"enable_request_batching": "enable_batching"})


_SERVER_NAME = re.compile(r"[A-Za-z0-9_-]+")


@attrs.frozen
class MCPServerConfig:
    """``[mcp.servers.NAME]``: one MCP server, spawned over stdio or reached over HTTP.

    Exactly one of ``command`` (a stdio server run as a subprocess with ``args``, ``env``
    and ``cwd``; ``env`` is added to a minimal inherited environment) and ``url`` (a
    streamable-HTTP endpoint, ``http://`` or ``https://``) is set. ``pool_size`` sessions
    (for stdio: that many subprocesses) serve calls round-robin. Every call runs under
    ``call_timeout``, every connect under ``connect_timeout``, and each session is pinged
    every ``health_interval``. ``enabled = false`` keeps the table but connects nothing.
    ``env`` values are secrets (and the password in ``url``'s userinfo): reprs,
    `Config.to_dict` and errors mask them; keep tokens in ``env``, not in ``args``.
    Bounds: 1,024 args and env entries, 256 sessions, a call timeout and a health interval
    of 1 day, a connect timeout of 1 hour.
    """

    command: str = ""
    args: list[str] = attrs.field(factory=list, validator=MaxItems(1024))
    env: dict[str, str] = attrs.field(
        factory=dict, metadata=SECRET, repr=masked_repr, validator=MaxItems(1024)
    )
    cwd: str = ""
    url: str = attrs.field(default="", metadata=URL, repr=url_repr)
    pool_size: int = attrs.field(default=2, validator=between(1, 256))
    health_interval: Duration = attrs.field(default=10.0, validator=duration(gt=0, le=DAY))
    call_timeout: Duration = attrs.field(default=30.0, validator=duration(gt=0, le=DAY))
    connect_timeout: Duration = attrs.field(default=10.0, validator=duration(gt=0, le=HOUR))
    enabled: bool = True

    def __attrs_post_init__(self) -> None:
        url = redact_url(self.url)
        if self.command and self.url:
            message = "set either command (a stdio server) or url (streamable HTTP), not both"
            raise ConfigError(f"{message}; got url {url!r}", key="url")
        if not self.command and not self.url:
            raise ConfigError(
                "expected a command (a stdio server) or a url (streamable HTTP), got neither",
                key="command",
            )
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(expected("an http:// or https:// URL", url), key="url")


_check_server_names = _KeysMatch(
    _SERVER_NAME, "a server name of letters, digits, '_' and '-' (it prefixes tool names)"
)


@attrs.frozen
class MCPConfig:
    """``[mcp]``: the MCP servers, one ``[mcp.servers.NAME]`` table each (none by default).

    ``NAME`` (letters, digits, ``_``, ``-``) names the server in errors and statistics and
    prefixes its tools' names (``NAME.tool``). Bound: 256 servers.
    """

    servers: dict[str, MCPServerConfig] = attrs.field(
        factory=dict, validator=[MaxItems(256), _check_server_names]
    )


def _non_empty(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ConfigError(expected("a non-empty string", value), key=attribute.name)


@attrs.frozen
class DistributedConfig:
    """``[distributed]``: scale-out over Redis Streams (``agentcli worker``, `RemoteRunner`).

    Producers ``XADD`` events to ``stream`` (trimmed with ``MAXLEN ~ maxlen``: keep it above
    the largest backlog, since trimming drops unread entries too). Workers read it in the
    consumer ``group``, at most ``batch`` entries per ``XREADGROUP`` (blocking ``block``),
    and never hold more than ``runner.max_concurrent_events``. A result is stored for
    ``result_ttl`` under ``{key_prefix}:result:{event id}`` (``results = "stream"`` also
    appends it to ``results_stream``) before the entry is acknowledged. Entries idle for
    ``claim_idle`` on a dead worker are reclaimed; a failed or timed-out event is offered
    again after ``retry_delay``; after ``max_deliveries`` deliveries it goes to
    ``dead_letter_stream`` with its last error. ``consumer = ""`` names a worker
    ``host-pid-random``. ``redis_url`` is ``redis://``, ``rediss://`` or ``unix://`` (checked
    by `load_config`, and by workers when connecting); keep the password out of it, in
    ``redis_password`` (a secret; used when the URL carries none); reprs, `Config.to_dict`
    and errors mask both. Bounds: ``maxlen`` 10**9, ``batch`` 10,000, 1,000 deliveries;
    result TTL 30 days, result timeout 7 days, claim idle and retry delay 1 day, other
    waits 1 hour. ``max_event_bytes`` bounds an entry's ``event`` field (1 KiB to 64 MiB):
    workers dead-letter a bigger one, `RemoteRunner.emit` refuses it.
    """

    redis_url: str = attrs.field(default="redis://127.0.0.1:6379/0", metadata=URL, repr=url_repr)
    redis_password: str = attrs.field(default="", metadata=SECRET, repr=masked_repr)
    stream: str = attrs.field(default="agentflow:events", validator=_non_empty)
    group: str = attrs.field(default="agentflow", validator=_non_empty)
    consumer: str = ""
    key_prefix: str = attrs.field(default="agentflow", validator=_non_empty)
    results: Literal["key", "stream"] = "key"
    results_stream: str = attrs.field(default="agentflow:results", validator=_non_empty)
    result_ttl: Duration = attrs.field(default=3600.0, validator=duration(ge=0.001, le=30 * DAY))
    maxlen: int = attrs.field(default=100000, validator=between(1, 10**9))
    max_event_bytes: Size = attrs.field(default=2**20, validator=size(ge=1024, le=64 * 2**20))
    batch: int = attrs.field(default=100, validator=between(1, 10_000))
    block: Duration = attrs.field(default=1.0, validator=duration(ge=0.001, le=HOUR))
    claim_idle: Duration = attrs.field(default=30.0, validator=duration(ge=0.001, le=DAY))
    max_deliveries: int = attrs.field(default=5, validator=between(1, 1000))
    retry_delay: Duration = attrs.field(default=1.0, validator=duration(le=DAY))
    dead_letter_stream: str = attrs.field(default="agentflow:dead", validator=_non_empty)
    connect_timeout: Duration = attrs.field(default=5.0, validator=duration(gt=0, le=HOUR))
    command_timeout: Duration = attrs.field(default=5.0, validator=duration(gt=0, le=HOUR))
    result_timeout: Duration = attrs.field(default=60.0, validator=duration(gt=0, le=7 * DAY))
    poll_interval: Duration = attrs.field(default=0.05, validator=duration(ge=0.001, le=HOUR))
    reconnect_max_delay: Duration = attrs.field(default=2.0, validator=duration(ge=0.001, le=HOUR))


def _endpoint(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not re.fullmatch(r"https?://[^\s]{1,2040}", value):
        what = "an http(s):// URL (such as http://127.0.0.1:4318/v1/traces) or empty"
        raise ConfigError(expected(what, value), key=attribute.name)


@attrs.frozen
class TracingConfig:
    """``[tracing]``: OpenTelemetry spans (GenAI conventions) for events, agent runs, model
    calls, tool and MCP calls, and the served requests (``observability.tracing``).

    ``enabled = false`` (the default) makes no span object at all. ``exporter``:
    ``"otlp-http"`` posts OTLP protobuf to ``endpoint`` (empty: the SDK's default,
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``http://localhost:4318/v1/traces``) with
    ``headers`` (a secret: masked in reprs, renderings and errors); ``"console"`` prints
    each span as JSON; ``"none"`` configures nothing and uses the process's own global
    tracer provider (your own OpenTelemetry setup). Both exporters need the ``tracing``
    extra. ``sample_ratio`` (0 to 1) samples new traces; a trace started elsewhere keeps
    its caller's decision. ``capture_content`` records prompts, completions and tool
    arguments and results on the spans (off by default: they may hold personal data);
    secrets are never recorded. ``service_name`` is the ``service.name`` resource.
    """

    enabled: bool = False
    exporter: Literal["otlp-http", "console", "none"] = "otlp-http"
    endpoint: str = attrs.field(default="", validator=_endpoint, metadata=URL, repr=url_repr)
    headers: dict[str, str] = attrs.field(
        factory=dict, metadata=SECRET, repr=masked_repr, validator=MaxItems(64)
    )
    sample_ratio: float = attrs.field(default=1.0, validator=Bounds(ge=0, le=1))
    capture_content: bool = False
    service_name: str = attrs.field(default="agentflow", validator=_non_empty)


@attrs.frozen
class Config:
    """The whole ``agentflow.toml``. ``Config()`` is every default; values are immutable.

    Build one with `load_config` or `Config.from_mapping`; render it with `to_dict` or
    `to_toml`.
    To add a section: write a frozen attrs class with defaults and add one field here.
    """

    runner: RunnerConfig = attrs.field(factory=RunnerConfig)
    memory: MemoryConfig = attrs.field(factory=MemoryConfig)
    monitoring: MonitoringConfig = attrs.field(factory=MonitoringConfig)
    llm: LLMConfig = attrs.field(factory=LLMConfig)
    performance: PerformanceConfig = attrs.field(factory=PerformanceConfig)
    tracing: TracingConfig = attrs.field(factory=TracingConfig)
    mcp: MCPConfig = attrs.field(factory=MCPConfig)
    runtime: RuntimeConfig = attrs.field(factory=RuntimeConfig)
    distributed: DistributedConfig = attrs.field(factory=DistributedConfig)
    limits: LimitsConfig = attrs.field(factory=LimitsConfig)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "<mapping>",
        env: Mapping[str, str] | None = None,
    ) -> Config:
        """Build a config from parsed TOML (nested dicts); ``env`` defaults to ``os.environ``.

        Raises:
            ConfigError: an unknown key, a wrong type, a value out of range, or an unset
                environment variable; ``source`` and the dotted ``key`` say where.
        """
        return parse_section(cls, data, source=source, env=env)

    def to_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        """The effective config as a plain TOML-able dict (durations as ``"30s"``).

        With ``mask_secrets`` non-empty secrets (``llm.api_key``, header values, MCP
        server ``env`` values, ``distributed.redis_password``) read ``"***"``.
        ``Config.from_mapping(c.to_dict(mask_secrets=False)) == c``.
        """
        return section_to_dict(self, mask_secrets=mask_secrets)

    def to_toml(self, *, mask_secrets: bool = True) -> str:
        """The effective config as TOML text, one ``[table]`` per section (what
        ``agentcli config show`` prints).

        Secrets are masked as by `to_dict`; with ``mask_secrets=False`` the text loads back
        to an equal config: ``Config.from_mapping(tomllib.loads(c.to_toml(mask_secrets=False)))
        == c``.
        """
        return section_to_toml(self, mask_secrets=mask_secrets)


register_reshape(Config, deployment_defaults)
