"""The sections of the process that hosts an App: ``[memory]`` (where session state lives,
its bounds and compression) and ``[monitoring]`` (metrics endpoint, performance report,
debug server, logging). Declared here, re-exported by ``sections``, like every table:
types, defaults, bounds; the session stores (``distributed``, ``state``) and
``observability`` read them.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any, Final, Literal

import attrs

from ..errors import ConfigError
from ._bounds import DAY, between, duration, size
from ._messages import expected
from .units import Duration, Size

__all__ = ["DEFAULT_METRICS_PORT", "MemoryConfig", "MonitoringConfig", "zstd_available"]


def zstd_available() -> bool:
    """Whether the ``zstandard`` package can be imported (looked up, not imported)."""
    return importlib.util.find_spec("zstandard") is not None


def _host(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    """A host name or IP literal to bind: no scheme, port, path, space or control."""
    if not re.fullmatch(r"[A-Za-z0-9_.:%-]{1,253}", value):
        what = "a host name or IP address to bind (such as 127.0.0.1, ::1 or 0.0.0.0)"
        raise ConfigError(expected(what, value), key=attribute.name)


_MIN_INTERVAL = 0.1


def _interval(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    """0 (off), or at least 100ms (a report more often is noise, not a measurement)."""
    if 0 < value < _MIN_INTERVAL:
        what = "0 (off) or a duration >= 100ms"
        raise ConfigError(expected(what, value, shown=f"{value * 1000:g}ms"), key=attribute.name)


@attrs.frozen
class MemoryConfig:
    """``[memory]``: where session state lives, its bound, TTL and compression.

    ``backend``: ``"memory"`` (a bounded in-process `SessionStore`: ``state_cache_size``
    sessions, LRU) or ``"redis"`` (shared by every process and worker, on
    ``[distributed] redis_url``). A session is kept ``state_cache_ttl`` after its last
    write. ``max_state_bytes`` bounds one session's encoded state (1 KiB to 64 MiB; default
    1 MiB): a bigger one is refused, never truncated. ``enable_state_compression`` (the
    AgentFlow guide's key) compresses, in stores that persist, an encoded state larger
    than ``compression_threshold`` with ``compression``: ``"zstd"`` (needs the
    ``zstandard`` package), ``"zlib"`` or ``"auto"`` (zstd if ``zstandard`` is importable,
    else zlib; `codec` is the choice made). Bounds: at most 10,000,000 sessions, kept at
    most 30 days.
    """

    backend: Literal["memory", "redis"] = "memory"
    state_cache_size: int = attrs.field(default=10000, validator=between(1, 10_000_000))
    state_cache_ttl: Duration = attrs.field(default=3600.0, validator=duration(gt=0, le=30 * DAY))
    max_state_bytes: Size = attrs.field(default=2**20, validator=size(ge=1024, le=64 * 2**20))
    enable_state_compression: bool = False
    compression_threshold: Size = attrs.field(default=4096, validator=size(le=64 * 2**20))
    compression: Literal["auto", "zstd", "zlib"] = "auto"

    @property
    def codec(self) -> Literal["zstd", "zlib"]:
        """The codec compressed states are written with: ``compression``, with ``"auto"``
        resolved (``"zstd"`` when ``zstandard`` is importable, else ``"zlib"``)."""
        if self.compression == "auto":
            return "zstd" if zstd_available() else "zlib"
        return self.compression


class _DefaultPort(int):
    """The default ``metrics_port``: equal to 9090 in every way, yet a host can tell it
    from a 9090 the config sets (`MonitoringConfig.metrics_port_set`)."""

    __slots__ = ()


DEFAULT_METRICS_PORT: Final[int] = _DefaultPort(9090)
"""``[monitoring] metrics_port`` when the config does not set it: the port of the
long-running hosts (``agentcli serve``, ``worker``); the load commands use a free port."""


@attrs.frozen
class MonitoringConfig:
    """``[monitoring]``: Prometheus metrics, the performance report, the profiling/debug
    server, logging.

    ``enable_metrics``: every process that hosts an App serves Prometheus text at
    ``http://metrics_host:metrics_port/metrics`` (``observability.serve_metrics``;
    ``metrics_port = 0``: a free port, reported at start). Left unset, the port is
    `DEFAULT_METRICS_PORT` (9090) for the long-running hosts only (``agentcli serve``, its
    ``--workers`` children 9090 + their index, ``agentcli worker``), where a scraper looks
    for it; the load commands (``benchmark``, ``loadtest``) take a free port, so that they
    never collide with a deployment or each other, and the testing kit serves none.
    ``metrics_port_set`` says whether the config set it. ``metrics_host`` is loopback by
    default; another address exposes the figures to whoever can reach it.
    ``metrics_interval``: how often the `PerformanceMetrics` of the last interval
    (requests per second, latency percentiles, error rate, process figures) is logged
    and published as ``agentflow_performance_*`` gauges (0 = never; at least 100ms, at
    most 1 day). ``log_level`` and ``log_format`` (``"plain"`` text or ``"json"`` lines,
    with ``event_id`` and ``agent`` on each record logged while an event runs) configure
    the ``agentflow_trio`` loggers (``observability.configure_logging``).
    """

    enable_metrics: bool = True
    metrics_host: str = attrs.field(default="127.0.0.1", validator=_host)
    metrics_port: int = attrs.field(default=DEFAULT_METRICS_PORT, validator=between(0, 65535))
    metrics_interval: Duration = attrs.field(default=0.0, validator=[duration(le=DAY), _interval])
    enable_profiling: bool = False
    profile_port: int = attrs.field(default=6060, validator=between(0, 65535))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["plain", "json"] = "plain"

    @property
    def metrics_port_set(self) -> bool:
        """Whether the config set ``metrics_port`` (False: `DEFAULT_METRICS_PORT`, which
        each host resolves by its own rule: see the class docstring)."""
        return type(self.metrics_port) is not _DefaultPort
