"""``agentflow.toml`` -> frozen attrs values; durations, sizes, ``${ENV}`` interpolation.

The configuration is a tree of frozen attrs classes (`Config` at the root), read once and
then shared freely between tasks: reading ``config.runner.worker_pool_size`` is a plain
attribute access. ``Config()`` gives every default, so no file is ever required.

The loader is a small generic machine: it walks ``attrs.fields`` of a section class with
its resolved type hints and converts each TOML value by the field's type. Adding a section
means adding an attrs class and one field of `Config`; nothing else changes. Supported
field types:

* ``int``, ``float``, ``bool``, ``str`` (bools are never ints and ints never bools);
* `Duration` (a float in seconds, written ``"100ms"``, ``"30s"``, ``"1h30m"`` or a number);
* `Size` (an int in bytes, written ``"64MiB"``, ``"10MB"``, ``"512KiB"`` or a number);
* ``Literal["a", "b"]`` (a choice), ``list[str]`` / ``tuple[str, ...]``, ``dict[str, str]``;
* another attrs class (a nested table) and ``dict[str, SectionClass]`` (named tables such
  as ``[mcp.servers.NAME]``).

Numeric bounds are `_Bounds` validators (``validator=_at_least(1)``): the loader reads them
to say what it expected, and a value built in code is checked by the same validator.
Secrets carry ``metadata=_SECRET_META`` and are masked by `section_to_dict`.

``${NAME}`` and ``${NAME:-default}`` are replaced in every string value (``$${`` writes a
literal ``${``); a number or bool field also accepts a string holding such a reference
(``worker_pool_size = "${WORKERS:-50}"``). Every problem raises `ConfigError` naming the
source, the dotted key, what was expected and what was found, for example::

    agentflow.toml: runner.worker_pool_size: expected an integer >= 1, got 'many' (str)
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, TypeVar

import attrs

from .errors import ConfigError

__all__ = [
    "CircuitBreakerConfig",
    "Config",
    "DistributedConfig",
    "Duration",
    "LLMConfig",
    "MCPConfig",
    "MCPServerConfig",
    "MemoryConfig",
    "MonitoringConfig",
    "PerformanceConfig",
    "RateLimitConfig",
    "RetryConfig",
    "RunnerConfig",
    "RuntimeConfig",
    "Size",
    "format_duration",
    "format_size",
    "load_config",
    "parse_duration",
    "parse_section",
    "parse_size",
    "section_to_dict",
]

_T = TypeVar("_T")


class _Kind(enum.Enum):
    DURATION = "duration"
    SIZE = "size"


Duration: TypeAlias = Annotated[float, _Kind.DURATION]
"""A duration in seconds (a float); TOML accepts ``"500ms"``, ``"30s"``, ``"1h30m"``, 2.5."""

Size: TypeAlias = Annotated[int, _Kind.SIZE]
"""A size in bytes (an int); TOML accepts ``"64MiB"``, ``"10MB"``, ``"512KiB"``, 1024."""

_SECRET = "agentflow_trio.secret"
_SECRET_META = {_SECRET: True}
_MASK = "***"


# --------------------------------------------------------------------------- durations

_DURATION_UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),
    "ms": Fraction(1, 10**3),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})(ns|us|µs|ms|s|m|h|d)")
_DURATION_TEXT = re.compile(rf"(?:{_NUMBER}(?:ns|us|µs|ms|s|m|h|d))+|{_NUMBER}")
_DURATION_EXAMPLES = "(such as '30s', '500ms' or '1h30m')"
_DURATION_EXPECTED = f"a duration >= 0 {_DURATION_EXAMPLES}"


def parse_duration(value: object) -> float:
    """Return ``value`` as seconds: ``"100ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1.5s"``.

    A plain number (int, float or numeric string) is seconds. Units: ns, us (µs), ms, s,
    m, h, d; components may repeat and are summed exactly, then rounded once to a float.

    Raises:
        ConfigError: ``value`` is negative, not finite, a bool, or not a duration.
    """
    if isinstance(value, str):
        text = value.strip()
        if not _DURATION_TEXT.fullmatch(text):
            raise ConfigError(_expected(_DURATION_EXPECTED, value))
        if text[-1].isdigit() or text[-1] == ".":
            total = Fraction(text)
        else:
            total = sum(
                (Fraction(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text)),
                Fraction(0),
            )
        return _finite_seconds(total, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _finite_seconds(value, value)
    raise ConfigError(_expected(_DURATION_EXPECTED, value))


def _finite_seconds(total: Fraction | float, original: object) -> float:
    try:
        seconds = float(total)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(_expected(_DURATION_EXPECTED, original))
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds as the shortest usual form: ``"30s"``, ``"500ms"``, ``"1h30m"``, ``"1.5s"``.

    ``parse_duration(format_duration(x)) == x`` for every finite ``x >= 0``.

    Raises:
        ValueError: ``seconds`` is negative or not finite.
    """
    seconds = float(seconds)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot render {seconds!r} as a duration")
    if seconds == 0:
        return "0s"
    if seconds.is_integer():
        hours, rest = divmod(int(seconds), 3600)
        minutes, secs = divmod(rest, 60)
        parts = ((hours, "h"), (minutes, "m"), (secs, "s"))
        return "".join(f"{n}{unit}" for n, unit in parts if n)
    millis = round(seconds * 1000)
    if seconds < 1 and millis and float(Fraction(millis, 1000)) == seconds:
        return f"{millis}ms"
    return f"{Decimal(repr(seconds)):f}s"


# --------------------------------------------------------------------------- sizes

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_TEXT = re.compile(rf"({_NUMBER})\s*([A-Za-z]*)")
_SIZE_EXAMPLES = "(such as '64MiB', '10MB' or 4096)"
_SIZE_EXPECTED = f"a size >= 0 {_SIZE_EXAMPLES}"
_SIZE_RENDER = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_SIZE_RENDER_DECIMAL = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))


def parse_size(value: object) -> int:
    """Return ``value`` in bytes: an int, or ``"64MiB"``, ``"10MB"``, ``"512KiB"``, ``"1.5GiB"``.

    Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB, MB, GB, TB)
    powers of 1000; units are case-insensitive; ``B`` or no unit means bytes.

    Raises:
        ConfigError: ``value`` is negative, a bool, not a whole number of bytes, or garbage.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE_TEXT.fullmatch(value.strip())
        if match and match[2].lower() in _SIZE_UNITS:
            total = Fraction(match[1]) * _SIZE_UNITS[match[2].lower()]
            if total.denominator == 1:
                return int(total)
    raise ConfigError(_expected(_SIZE_EXPECTED, value))


def format_size(size: int) -> str:
    """Render bytes with the largest unit that divides them: ``"64MiB"``, ``"10MB"``, ``"7B"``.

    ``parse_size(format_size(n)) == n`` for every int ``n >= 0``.
    """
    for unit, factor in (*_SIZE_RENDER, *_SIZE_RENDER_DECIMAL):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


# --------------------------------------------------------------------------- field helpers


@attrs.frozen
class _Bounds:
    """Inclusive ``ge``/``le`` and exclusive ``gt`` limits; also an attrs validator."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def admits(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
        )

    def describe(self) -> str:
        if self.ge is not None and self.le is not None:
            return f" between {self.ge} and {self.le}"
        if self.gt is not None:
            return f" > {self.gt}"
        if self.ge is not None:
            return f" >= {self.ge}"
        return f" <= {self.le}" if self.le is not None else ""

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not self.admits(value):
            noun = "an integer" if isinstance(value, int) else "a number"
            raise ConfigError(_expected(noun + self.describe(), value), key=attribute.name)


def _at_least(minimum: int) -> _Bounds:
    return _Bounds(ge=minimum)


def _above(minimum: int) -> _Bounds:
    return _Bounds(gt=minimum)


def _between(minimum: int, maximum: int) -> _Bounds:
    return _Bounds(ge=minimum, le=maximum)


def _bounds_of(attribute: attrs.Attribute[Any]) -> _Bounds | None:
    """The field's `_Bounds` validator, if it has one (also inside ``attrs.validators.and_``)."""
    validator = attribute.validator
    candidates = getattr(validator, "_validators", (validator,))
    return next((v for v in candidates if isinstance(v, _Bounds)), None)


# --------------------------------------------------------------------------- sections


@attrs.frozen
class RunnerConfig:
    """``[runner]``: admission bound, queue, worker pool and timeouts of the `Runner`.

    ``event_buffer_size = 0`` makes the queue an unbuffered (rendezvous) channel.
    """

    max_concurrent_events: int = attrs.field(default=1000, validator=_at_least(1))
    event_buffer_size: int = attrs.field(default=1000, validator=_at_least(0))
    worker_pool_size: int = attrs.field(default=50, validator=_at_least(1))
    event_timeout: Duration = attrs.field(default=30.0, validator=_above(0))
    drain_timeout: Duration = attrs.field(default=10.0, validator=_at_least(0))


def _gc_thresholds(instance: object, attribute: attrs.Attribute[Any], value: list[int]) -> None:
    if len(value) > 3 or any(v < 0 for v in value):
        raise ConfigError(
            f"expected at most 3 integers >= 0 (gc.set_threshold), got {value!r}",
            key=attribute.name,
        )


@attrs.frozen
class RuntimeConfig:
    """``[runtime]``: the guide's runtime tuning, for Python.

    ``gc_thresholds`` (1 to 3 ints, empty = Python's default) goes to ``gc.set_threshold``;
    ``gc_freeze`` moves everything allocated during start-up out of the collector's reach
    (``gc.freeze()``); ``memory_limit`` is a soft RSS limit (0 = off): above it the runner
    refuses new events with `Overloaded` instead of being killed, checked every
    ``memory_check_interval``.
    """

    gc_thresholds: list[int] = attrs.field(factory=list, validator=_gc_thresholds)
    gc_freeze: bool = False
    memory_limit: Size = attrs.field(default=0, validator=_at_least(0))
    memory_check_interval: Duration = attrs.field(default=1.0, validator=_above(0))


@attrs.frozen
class MemoryConfig:
    """``[memory]``: the bound and TTL of the session state cache (`SessionStore`)."""

    state_cache_size: int = attrs.field(default=10000, validator=_at_least(1))
    state_cache_ttl: Duration = attrs.field(default=3600.0, validator=_above(0))


@attrs.frozen
class MonitoringConfig:
    """``[monitoring]``: Prometheus metrics, the profiling/debug server, log level."""

    enable_metrics: bool = True
    metrics_port: int = attrs.field(default=9090, validator=_between(0, 65535))
    enable_profiling: bool = False
    profile_port: int = attrs.field(default=6060, validator=_between(0, 65535))
    log_level: Literal["debug", "info", "warning", "error"] = "info"


@attrs.frozen
class RetryConfig:
    """``[llm.retry]``: exponential backoff with jitter between ``base_delay`` and ``max_delay``."""

    enabled: bool = True
    max_attempts: int = attrs.field(default=3, validator=_at_least(1))
    base_delay: Duration = attrs.field(default=0.5, validator=_at_least(0))
    max_delay: Duration = attrs.field(default=30.0, validator=_at_least(0))


@attrs.frozen
class CircuitBreakerConfig:
    """``[llm.circuit_breaker]``: trip after ``failure_threshold`` consecutive failures."""

    enabled: bool = True
    failure_threshold: int = attrs.field(default=5, validator=_at_least(1))
    open_timeout: Duration = attrs.field(default=30.0, validator=_at_least(0))
    half_open_max_calls: int = attrs.field(default=1, validator=_at_least(1))
    call_timeout: Duration = attrs.field(default=60.0, validator=_above(0))


@attrs.frozen
class RateLimitConfig:
    """``[llm.rate_limit]``: client-side request and token budgets; 0 means unlimited."""

    enabled: bool = False
    requests_per_minute: int = attrs.field(default=0, validator=_at_least(0))
    tokens_per_minute: int = attrs.field(default=0, validator=_at_least(0))


@attrs.frozen
class LLMConfig:
    """``[llm]``: provider, credentials, connection pool and the resilience stack.

    ``base_url = ""`` means the provider's default. ``api_key`` and ``headers`` are
    secrets: `Config.to_dict` masks them. ``min_connections <= max_connections``.
    """

    provider: Literal["openai", "azure", "ollama", "fake"] = "openai"
    model: str = "gpt-4o-mini"
    base_url: str = ""
    api_key: str = attrs.field(default="", metadata=_SECRET_META)
    api_version: str = "2024-10-21"
    deployment: str = ""
    organization: str = ""
    max_connections: int = attrs.field(default=100, validator=_at_least(1))
    min_connections: int = attrs.field(default=0, validator=_at_least(0))
    connection_timeout: Duration = attrs.field(default=10.0, validator=_above(0))
    request_timeout: Duration = attrs.field(default=60.0, validator=_above(0))
    idle_timeout: Duration = attrs.field(default=300.0, validator=_at_least(0))
    max_connection_lifetime: Duration = attrs.field(default=3600.0, validator=_at_least(0))
    headers: dict[str, str] = attrs.field(factory=dict, metadata=_SECRET_META)
    # "lean": the project's HTTP/1.1 client on trio streams (httptools); "httpx2": the
    # httpx2 client. Both honour the pool settings above and raise the same errors.
    transport: Literal["lean", "httpx2"] = "lean"
    retry: RetryConfig = attrs.field(factory=RetryConfig)
    circuit_breaker: CircuitBreakerConfig = attrs.field(factory=CircuitBreakerConfig)
    rate_limit: RateLimitConfig = attrs.field(factory=RateLimitConfig)

    def __attrs_post_init__(self) -> None:
        if self.min_connections > self.max_connections:
            limit = f"an integer <= max_connections ({self.max_connections})"
            raise ConfigError(_expected(limit, self.min_connections), key="min_connections")


@attrs.frozen
class PerformanceConfig:
    """``[performance]``: the response cache (bounded by entries and bytes) and batching."""

    enable_caching: bool = False
    cache_ttl: Duration = attrs.field(default=3600.0, validator=_at_least(0))
    cache_max_entries: int = attrs.field(default=10000, validator=_at_least(1))
    cache_max_bytes: Size = attrs.field(default=64 * 2**20, validator=_at_least(0))
    enable_batching: bool = False
    batch_size: int = attrs.field(default=16, validator=_at_least(1))
    batch_timeout: Duration = attrs.field(default=0.01, validator=_at_least(0))


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
    ``env`` values are secrets: `Config.to_dict` masks them.
    """

    command: str = ""
    args: list[str] = attrs.field(factory=list)
    env: dict[str, str] = attrs.field(factory=dict, metadata=_SECRET_META)
    cwd: str = ""
    url: str = ""
    pool_size: int = attrs.field(default=2, validator=_at_least(1))
    health_interval: Duration = attrs.field(default=10.0, validator=_above(0))
    call_timeout: Duration = attrs.field(default=30.0, validator=_above(0))
    connect_timeout: Duration = attrs.field(default=10.0, validator=_above(0))
    enabled: bool = True

    def __attrs_post_init__(self) -> None:
        if self.command and self.url:
            message = "set either command (a stdio server) or url (streamable HTTP), not both"
            raise ConfigError(f"{message}; got url {self.url!r}", key="url")
        if not self.command and not self.url:
            raise ConfigError(
                "expected a command (a stdio server) or a url (streamable HTTP), got neither",
                key="command",
            )
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(_expected("an http:// or https:// URL", self.url), key="url")


def _check_server_names(
    instance: object, attribute: attrs.Attribute[Any], servers: Mapping[str, object]
) -> None:
    for name in servers:
        if not _SERVER_NAME.fullmatch(name):
            what = "a server name of letters, digits, '_' and '-' (it prefixes tool names)"
            raise ConfigError(_expected(what, name), key=f"{attribute.name}.{name}")


@attrs.frozen
class MCPConfig:
    """``[mcp]``: the MCP servers, one ``[mcp.servers.NAME]`` table each (none by default).

    ``NAME`` (letters, digits, ``_``, ``-``) names the server in errors and statistics and
    prefixes its tools' names (``NAME.tool``).
    """

    servers: dict[str, MCPServerConfig] = attrs.field(factory=dict, validator=_check_server_names)


def _non_empty(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ConfigError(_expected("a non-empty string", value), key=attribute.name)


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
    when connecting); keep the password out of it, in ``redis_password`` (a secret, masked
    by `Config.to_dict`; used when the URL carries none).
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str = attrs.field(default="", metadata=_SECRET_META)
    stream: str = attrs.field(default="agentflow:events", validator=_non_empty)
    group: str = attrs.field(default="agentflow", validator=_non_empty)
    consumer: str = ""
    key_prefix: str = attrs.field(default="agentflow", validator=_non_empty)
    results: Literal["key", "stream"] = "key"
    results_stream: str = attrs.field(default="agentflow:results", validator=_non_empty)
    result_ttl: Duration = attrs.field(default=3600.0, validator=_Bounds(ge=0.001))
    maxlen: int = attrs.field(default=100000, validator=_at_least(1))
    batch: int = attrs.field(default=100, validator=_at_least(1))
    block: Duration = attrs.field(default=1.0, validator=_Bounds(ge=0.001))
    claim_idle: Duration = attrs.field(default=30.0, validator=_Bounds(ge=0.001))
    max_deliveries: int = attrs.field(default=5, validator=_at_least(1))
    retry_delay: Duration = attrs.field(default=1.0, validator=_at_least(0))
    dead_letter_stream: str = attrs.field(default="agentflow:dead", validator=_non_empty)
    connect_timeout: Duration = attrs.field(default=5.0, validator=_above(0))
    command_timeout: Duration = attrs.field(default=5.0, validator=_above(0))
    result_timeout: Duration = attrs.field(default=60.0, validator=_above(0))
    poll_interval: Duration = attrs.field(default=0.05, validator=_Bounds(ge=0.001))
    reconnect_max_delay: Duration = attrs.field(default=2.0, validator=_Bounds(ge=0.001))


@attrs.frozen
class Config:
    """The whole ``agentflow.toml``. ``Config()`` is every default; values are immutable.

    Build one with `load_config` or `Config.from_mapping`; render it with `to_dict`.
    To add a section: write a frozen attrs class with defaults and add one field here.
    """

    runner: RunnerConfig = attrs.field(factory=RunnerConfig)
    memory: MemoryConfig = attrs.field(factory=MemoryConfig)
    monitoring: MonitoringConfig = attrs.field(factory=MonitoringConfig)
    llm: LLMConfig = attrs.field(factory=LLMConfig)
    performance: PerformanceConfig = attrs.field(factory=PerformanceConfig)
    mcp: MCPConfig = attrs.field(factory=MCPConfig)
    runtime: RuntimeConfig = attrs.field(factory=RuntimeConfig)
    distributed: DistributedConfig = attrs.field(factory=DistributedConfig)

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


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML file (``env`` defaults to ``os.environ``).

    Raises:
        ConfigError: the file is missing or unreadable (names the path), is not valid
            TOML (names the line), or holds a bad value (names the dotted key).
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", source=source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", source=source) from None
    return Config.from_mapping(data, source=source, env=env)


# --------------------------------------------------------------------------- the machine


@attrs.frozen
class _Field:
    attribute: attrs.Attribute[Any]
    hint: Any


@attrs.frozen
class _Context:
    source: str
    env: Mapping[str, str]

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=key or None)


_FIELDS: dict[type[Any], dict[str, _Field]] = {}


def _fields(cls: type[Any]) -> dict[str, _Field]:
    """The init fields of an attrs class with resolved hints, by TOML key (cached)."""
    fields = _FIELDS.get(cls)
    if fields is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = {a.name: _Field(a, hints[a.name]) for a in attrs.fields(cls) if a.init}
        _FIELDS[cls] = fields
    return fields


def parse_section(
    cls: type[_T],
    data: Mapping[str, Any],
    *,
    source: str = "<mapping>",
    env: Mapping[str, str] | None = None,
) -> _T:
    """Build the attrs section ``cls`` from a parsed TOML table, by its fields' types.

    This is the machine behind `Config.from_mapping`; it works for any frozen attrs class
    whose fields are of the kinds listed in this module's docstring and all have defaults.

    Raises:
        ConfigError: as `Config.from_mapping`.
    """
    return _build(cls, data, "", _Context(source, os.environ if env is None else env))


def _build(cls: type[_T], data: object, prefix: str, ctx: _Context) -> _T:
    if not isinstance(data, Mapping):
        raise ctx.error(prefix, _expected("a table", data))
    fields = _fields(cls)
    kwargs: dict[str, Any] = {}
    for name, raw in data.items():
        key = _join(prefix, str(name))
        field = fields.get(name)
        if field is None:
            raise ctx.error(key, _unknown(key, str(name), fields))
        kwargs[field.attribute.alias or field.attribute.name] = _convert(
            field.hint, field.attribute, raw, key, ctx
        )
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ctx.error(_join(prefix, exc.key or ""), exc.reason) from None


def _convert(
    hint: Any, attribute: attrs.Attribute[Any], raw: object, key: str, ctx: _Context
) -> Any:
    origin = typing.get_origin(hint)
    bounds = _bounds_of(attribute)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        if _Kind.DURATION in extras:
            return _to_unit(parse_duration, _DURATION_EXAMPLES, raw, bounds, key, ctx)
        if _Kind.SIZE in extras:
            return _to_unit(parse_size, _SIZE_EXAMPLES, raw, bounds, key, ctx)
        return _convert(base, attribute, raw, key, ctx)
    if hint is bool:
        return _to_bool(raw, key, ctx)
    if hint is int or hint is float:
        return _to_number(hint, raw, bounds, key, ctx)
    if hint is str:
        return _to_str(raw, key, ctx)
    if origin is Literal:
        return _to_choice(typing.get_args(hint), raw, key, ctx)
    if attrs.has(hint):
        return _build(hint, raw, key, ctx)
    if origin in (list, tuple):
        return _to_sequence(origin, hint, raw, key, ctx)
    if origin in (dict, Mapping):
        return _to_dict(hint, attribute, raw, key, ctx)
    raise TypeError(f"unsupported config field type {hint!r} for {key!r}")


def _to_unit(
    parse: Callable[[object], float],
    examples: str,
    raw: object,
    bounds: _Bounds | None,
    key: str,
    ctx: _Context,
) -> Any:
    """A Duration or Size: interpolate, parse, check the field's bounds (default ``>= 0``)."""
    noun = ("a duration" if parse is parse_duration else "a size") + (_describe(bounds) or " >= 0")
    expected = _expected(f"{noun} {examples}", raw)
    try:
        value = parse(_text(raw, key, ctx))
    except ConfigError:
        raise ctx.error(key, expected) from None
    if bounds is not None and not bounds.admits(value):
        raise ctx.error(key, expected)
    return value


def _to_bool(raw: object, key: str, ctx: _Context) -> bool:
    value = _from_env(raw, key, ctx)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ctx.error(key, _expected("a boolean (true or false)", raw))
    return value


def _to_number(kind: type, raw: object, bounds: _Bounds | None, key: str, ctx: _Context) -> Any:
    noun = "an integer" if kind is int else "a number"
    value = _from_env(raw, key, ctx)
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            raise ctx.error(key, _expected(noun + _describe(bounds), raw)) from None
    if isinstance(value, bool) or not isinstance(value, int if kind is int else int | float):
        raise ctx.error(key, _expected(noun + _describe(bounds), raw))
    if kind is float and not math.isfinite(value):
        raise ctx.error(key, _expected("a finite number" + _describe(bounds), raw))
    return _check_bounds(kind(value), bounds, noun, raw, key, ctx)


def _to_str(raw: object, key: str, ctx: _Context) -> str:
    if not isinstance(raw, str):
        raise ctx.error(key, _expected("a string", raw))
    return _interpolate(raw, key, ctx)


def _to_choice(choices: tuple[str, ...], raw: object, key: str, ctx: _Context) -> str:
    value = _text(raw, key, ctx)
    if value not in choices:
        listing = ", ".join(repr(c) for c in choices)
        hint = _suggest(value, choices) if isinstance(value, str) else ""
        raise ctx.error(key, _expected(f"one of {listing}", raw) + hint)
    return value


def _to_sequence(origin: type, hint: Any, raw: object, key: str, ctx: _Context) -> Any:
    item_type = typing.get_args(hint)[0]
    convert: Callable[[object, str, _Context], Any]
    if item_type is str:
        noun, convert = "strings", _to_str
    elif item_type is int:
        noun = "integers"
        convert = lambda item, item_key, ctx: _to_number(int, item, None, item_key, ctx)  # noqa: E731
    else:
        raise TypeError(f"unsupported config field type {hint!r} for {key!r}")
    if not isinstance(raw, list | tuple):
        raise ctx.error(key, _expected(f"an array of {noun}", raw))
    items = [convert(item, f"{key}[{i}]", ctx) for i, item in enumerate(raw)]
    return origin(items)


def _to_dict(
    hint: Any, attribute: attrs.Attribute[Any], raw: object, key: str, ctx: _Context
) -> dict[str, Any]:
    key_type, value_type = typing.get_args(hint)
    if key_type is not str:
        raise TypeError(f"unsupported config field type {hint!r} for {key!r}")
    if not isinstance(raw, Mapping):
        raise ctx.error(key, _expected("a table", raw))
    return {
        str(name): _convert(value_type, attribute, item, _join(key, str(name)), ctx)
        for name, item in raw.items()
    }


def _check_bounds(
    value: Any, bounds: _Bounds | None, noun: str, raw: object, key: str, ctx: _Context
) -> Any:
    if bounds is not None and not bounds.admits(value):
        raise ctx.error(key, _expected(noun + bounds.describe(), raw))
    return value


def _describe(bounds: _Bounds | None) -> str:
    return bounds.describe() if bounds is not None else ""


# --------------------------------------------------------------------------- ${ENV}

_ENV_REF = re.compile(
    r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<has_default>:-(?P<default>[^}]*))?\})?"
)


def _from_env(raw: object, key: str, ctx: _Context) -> object:
    """For bool and number fields: only a string holding a ``${...}`` reference is text to
    parse (``workers = "${WORKERS:-50}"``); any other string stays a type error."""
    if isinstance(raw, str) and "${" in raw:
        return _interpolate(raw, key, ctx)
    return None if isinstance(raw, str) else raw


def _text(raw: object, key: str, ctx: _Context) -> object:
    """Interpolate ``raw`` if it is a string; other values pass through for the parser."""
    return _interpolate(raw, key, ctx) if isinstance(raw, str) else raw


def _interpolate(text: str, key: str, ctx: _Context) -> str:
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$${":
            return "${"
        name = match["name"]
        if name is None:
            raise ctx.error(
                key, f"malformed '${{' in {text!r}: write ${{NAME}} or ${{NAME:-default}}"
            )
        value = ctx.env.get(name)
        if match["has_default"] is not None:
            return value if value else match["default"]
        if value is None:
            raise ctx.error(
                key,
                f"environment variable {name!r} is not set "
                f"(write ${{{name}:-default}} to give a default)",
            )
        return value

    return _ENV_REF.sub(replace, text)


# --------------------------------------------------------------------------- rendering


def section_to_dict(section: Any, *, mask_secrets: bool = True) -> dict[str, Any]:
    """Render an attrs section as a plain TOML-able dict (the inverse of `parse_section`).

    Durations render as `format_duration` strings, sizes as `format_size` strings.
    With ``mask_secrets``, non-empty secret strings (and secret dicts' values) are ``"***"``.
    """
    out: dict[str, Any] = {}
    for name, field in _fields(type(section)).items():
        secret = mask_secrets and bool(field.attribute.metadata.get(_SECRET))
        value = getattr(section, field.attribute.name)
        out[name] = _render(field.hint, value, secret, mask_secrets)
    return out


def _render(hint: Any, value: Any, secret: bool, mask_secrets: bool) -> Any:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        extras = typing.get_args(hint)[1:]
        if _Kind.DURATION in extras:
            return format_duration(value)
        if _Kind.SIZE in extras:
            return format_size(value)
        return _render(typing.get_args(hint)[0], value, secret, mask_secrets)
    if attrs.has(hint):
        return section_to_dict(value, mask_secrets=mask_secrets)
    if origin in (list, tuple):
        return [_MASK if secret and v else v for v in value]
    if origin in (dict, Mapping):
        value_type = typing.get_args(hint)[1]
        return {k: _render(value_type, v, secret, mask_secrets) for k, v in value.items()}
    if secret and isinstance(value, str) and value:
        return _MASK
    return value


# --------------------------------------------------------------------------- messages


def _expected(what: str, found: object) -> str:
    return f"expected {what}, got {found!r} ({type(found).__name__})"


def _unknown(key: str, name: str, fields: Mapping[str, _Field]) -> str:
    known = ", ".join(sorted(fields)) or "(none)"
    return f"unknown key {key!r}{_suggest(name, fields)} (known keys: {known})"


def _suggest(name: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name
