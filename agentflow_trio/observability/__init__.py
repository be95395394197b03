"""Observability: latency statistics, Prometheus metrics, profiling, a debug server and
runtime tuning (GC settings, a soft memory limit).

Everything is re-exported lazily (on first use), so importing a light module such as
``agentflow_trio.observability.runtime`` does not pull in hdrh or prometheus_client.

- `stats`: `LatencyRecorder` (HDR), `PerformanceMetrics`, `StatsCollector`, `GCMonitor`.
- `metrics`: `RunnerMetrics` (its own Prometheus registry; hooks plus scrape-time reads).
- `profiling`: `profiled` (a whole run, into a file), `profile_cpu`, `cpu_profile`,
  `heap_top`, `task_tree`.
- `debug_server`: `serve_debug` (``/debug/tasks``, ``/debug/profile``, ``/debug/heap``,
  ``/metrics``).
- `runtime`: `apply_gc_settings`, `MemoryGuard`, `current_rss`, `peak_rss`.
- `metrics_server`: `serve_metrics` (``[monitoring] enable_metrics``: ``/metrics`` on a
  port of its own).
- `logs`: `configure_logging` (``log_level``, ``log_format``: plain or JSON lines with
  the event id and agent), `EventContextFilter`, `current_event`.
- `report`: `PerformanceReporter`, `report_performance` (``metrics_interval``: the
  `PerformanceMetrics` of each interval, logged and published).
- `tracing`: `open_tracing` (``[tracing]``: OpenTelemetry spans with the GenAI
  conventions), `current_traceparent`, `parse_traceparent`; free when off.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .debug_server import serve_debug as serve_debug
    from .logs import EventContextFilter as EventContextFilter
    from .logs import JSONFormatter as JSONFormatter
    from .logs import PlainFormatter as PlainFormatter
    from .logs import configure_logging as configure_logging
    from .logs import current_event as current_event
    from .metrics import DEFAULT_BUCKETS as DEFAULT_BUCKETS
    from .metrics import RunnerMetrics as RunnerMetrics
    from .metrics_server import METRICS_PATH as METRICS_PATH
    from .metrics_server import serve_metrics as serve_metrics
    from .profiling import PROFILE_KINDS as PROFILE_KINDS
    from .profiling import HeapEntry as HeapEntry
    from .profiling import ProfileError as ProfileError
    from .profiling import ProfilerBusy as ProfilerBusy
    from .profiling import check_profile as check_profile
    from .profiling import cpu_profile as cpu_profile
    from .profiling import ensure_tracing as ensure_tracing
    from .profiling import format_stats as format_stats
    from .profiling import heap_stats as heap_stats
    from .profiling import heap_top as heap_top
    from .profiling import profile_cpu as profile_cpu
    from .profiling import profile_sampling as profile_sampling
    from .profiling import profiled as profiled
    from .profiling import sampling_available as sampling_available
    from .profiling import stats_bytes as stats_bytes
    from .profiling import task_tree as task_tree
    from .report import PERFORMANCE_LOGGER as PERFORMANCE_LOGGER
    from .report import PerformanceReporter as PerformanceReporter
    from .report import report_performance as report_performance
    from .runtime import AppliedGCSettings as AppliedGCSettings
    from .runtime import MemoryGuard as MemoryGuard
    from .runtime import MemoryGuardStatistics as MemoryGuardStatistics
    from .runtime import apply_gc_settings as apply_gc_settings
    from .runtime import current_rss as current_rss
    from .runtime import peak_rss as peak_rss
    from .stats import CurvePoint as CurvePoint
    from .stats import GCMonitor as GCMonitor
    from .stats import GCStatistics as GCStatistics
    from .stats import LatencyRecorder as LatencyRecorder
    from .stats import LatencySummary as LatencySummary
    from .stats import PerformanceMetrics as PerformanceMetrics
    from .stats import SecondStats as SecondStats
    from .stats import StatsCollector as StatsCollector
    from .tracing import current_traceparent as current_traceparent
    from .tracing import open_tracing as open_tracing
    from .tracing import parse_traceparent as parse_traceparent

_MODULES: dict[str, tuple[str, ...]] = {
    "debug_server": ("serve_debug",),
    "logs": (
        "EventContextFilter",
        "JSONFormatter",
        "PlainFormatter",
        "configure_logging",
        "current_event",
    ),
    "metrics": ("DEFAULT_BUCKETS", "RunnerMetrics"),
    "metrics_server": ("METRICS_PATH", "serve_metrics"),
    "profiling": (
        "PROFILE_KINDS",
        "HeapEntry",
        "ProfileError",
        "ProfilerBusy",
        "check_profile",
        "cpu_profile",
        "ensure_tracing",
        "format_stats",
        "heap_stats",
        "heap_top",
        "profile_cpu",
        "profile_sampling",
        "profiled",
        "sampling_available",
        "stats_bytes",
        "task_tree",
    ),
    "report": ("PERFORMANCE_LOGGER", "PerformanceReporter", "report_performance"),
    "runtime": (
        "AppliedGCSettings",
        "MemoryGuard",
        "MemoryGuardStatistics",
        "apply_gc_settings",
        "current_rss",
        "peak_rss",
    ),
    "stats": (
        "CurvePoint",
        "GCMonitor",
        "GCStatistics",
        "LatencyRecorder",
        "LatencySummary",
        "PerformanceMetrics",
        "SecondStats",
        "StatsCollector",
    ),
    "tracing": ("current_traceparent", "open_tracing", "parse_traceparent"),
}
_LAZY: dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DEFAULT_BUCKETS",
    "METRICS_PATH",
    "PERFORMANCE_LOGGER",
    "PROFILE_KINDS",
    "AppliedGCSettings",
    "CurvePoint",
    "EventContextFilter",
    "GCMonitor",
    "GCStatistics",
    "HeapEntry",
    "JSONFormatter",
    "LatencyRecorder",
    "LatencySummary",
    "MemoryGuard",
    "MemoryGuardStatistics",
    "PerformanceMetrics",
    "PerformanceReporter",
    "PlainFormatter",
    "ProfileError",
    "ProfilerBusy",
    "RunnerMetrics",
    "SecondStats",
    "StatsCollector",
    "apply_gc_settings",
    "check_profile",
    "configure_logging",
    "cpu_profile",
    "current_event",
    "current_rss",
    "current_traceparent",
    "ensure_tracing",
    "format_stats",
    "heap_stats",
    "heap_top",
    "open_tracing",
    "parse_traceparent",
    "peak_rss",
    "profile_cpu",
    "profile_sampling",
    "profiled",
    "report_performance",
    "sampling_available",
    "serve_debug",
    "serve_metrics",
    "stats_bytes",
    "task_tree",
]
