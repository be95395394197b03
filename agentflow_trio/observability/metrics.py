"""Prometheus metrics for a runner, its LLM calls, caches, breakers, pools and queues.

`RunnerMetrics` owns its own ``CollectorRegistry`` (never the process-wide default), so
several runners and tests in one process never clash. Two kinds of figures:

- Per-event figures, updated by runner hooks (`RunnerMetrics.before_event` /
  `RunnerMetrics.after_event`) and by `RunnerMetrics.observe_llm`: plain dict and list
  updates with no lock (trio runs them on one thread), about 20x cheaper than
  prometheus_client's locked metric objects.
- Everything a component already counts (runner queue depth and in-flight events, cache
  hits, breaker state, pool connections, memory guard) is read on scrape from the
  ``statistics`` callables given to the ``watch_*`` methods: nothing on the hot path.

Metric names follow the guide: ``agent_request_duration_seconds`` (histogram, buckets
`DEFAULT_BUCKETS`), ``agent_requests_total`` and ``agent_active_requests``, labelled
``agent_name`` and ``status`` (the event's outcome). Model usage, counted when an event
ends (`RunnerMetrics.observe_usage`, called by the runner with the event's own calls):
``llm_tokens_total`` (``agent_name``, ``model``, ``kind`` = ``input`` / ``output`` /
``cached``) and ``llm_cost_usd_total`` (``agent_name``, ``model``; models with a price).

Label values are bounded, so no input can grow the exposition without end: with a runner
attached, ``agent_name`` is one of its registered agents' names, or `OTHER_LABEL` for an
event whose type names none; without one (and for the ``provider`` and ``status`` of LLM
calls), at most ``max_label_values`` distinct values per label are kept and later ones
are counted under `OTHER_LABEL`.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..events import AgentResult, Event, Outcome
from ..usage import RunUsage

__all__ = [
    "BREAKER_STATE_VALUES",
    "CONTENT_TYPE",
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_LABEL_VALUES",
    "OTHER_LABEL",
    "RunnerMetrics",
]

_log = logging.getLogger("agentflow_trio.metrics")

DEFAULT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""The guide's latency buckets, in seconds (``+Inf`` is added)."""

BREAKER_STATE_VALUES: Final = {"closed": 0, "half_open": 1, "open": 2}
"""``circuit_breaker_state`` gauge values by breaker state."""

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
"""The content type of `RunnerMetrics.render`'s output (Prometheus text format)."""

OTHER_LABEL: Final = "_other"
"""The label value of an event type with no registered agent, or past the label bound."""

DEFAULT_MAX_LABEL_VALUES: Final = 1000
"""Distinct values kept per label when the allowed set is not known (see the module)."""

_AGENT_LABELS: Final = ("agent_name", "status")
_LLM_LABELS: Final = ("provider", "status")
_TOKEN_LABELS: Final = ("agent_name", "model", "kind")
_COST_LABELS: Final = ("agent_name", "model")

_Statistics = Callable[[], Any]


class _Histogram:
    """Bucket counts per label tuple; ``+Inf`` is the last bucket, the sum comes after it."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(float(b) for b in bounds))
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = [0.0] * (len(self.bounds) + 2)
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def family(self, name: str, doc: str, labels: Sequence[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=list(labels))
        edges = [repr(b) for b in self.bounds] + ["+Inf"]
        for key, row in sorted(self.series.items()):
            cumulative, total = [], 0.0
            for edge, count in zip(edges, row, strict=False):
                total += count
                cumulative.append((edge, total))
            family.add_metric([str(k) for k in key], cumulative, row[-1])
        return family


class _LabelBound:
    """Maps label values to themselves while fewer than ``limit`` were seen, or while they
    are in ``allowed`` when that is known; anything else to `OTHER_LABEL`."""

    __slots__ = ("allowed", "limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.allowed: frozenset[str] | None = None
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        allowed = self.allowed
        if allowed is not None:
            return value if value in allowed else OTHER_LABEL
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER_LABEL
        self.seen.add(value)
        return value


class _Families:
    """Builds gauge/counter families on demand during one scrape."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def gauge(self, name: str, doc: str, labels: Sequence[str], key: Sequence[str], v: Any) -> None:
        self._add(GaugeMetricFamily, name, doc, labels, key, v)

    def counter(
        self, name: str, doc: str, labels: Sequence[str], key: Sequence[str], v: Any
    ) -> None:
        self._add(CounterMetricFamily, name, doc, labels, key, v)

    def merge(self, other: _Families) -> None:
        for name, family in other.families.items():
            mine = self.families.get(name)
            if mine is None:
                self.families[name] = family
            else:
                mine.samples.extend(family.samples)

    def _add(
        self,
        kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
        name: str,
        doc: str,
        labels: Sequence[str],
        key: Sequence[str],
        value: Any,
    ) -> None:
        if value is None:
            return
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = kind(name, doc, labels=list(labels))
        family.add_metric([str(k) for k in key], float(value))  # type: ignore[attr-defined]


class _Collector:
    """The registry's view of a `RunnerMetrics`: everything is computed on scrape."""

    def __init__(self, metrics: RunnerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics.collect()

    def describe(self) -> Iterable[Metric]:
        return ()  # names are checked by tests, not by calling collect() at registration


class RunnerMetrics:
    """Prometheus figures of a runner and the services around it, in a registry of its own.

    Wire it with ``metrics.attach(runner)`` (adds the event hooks and watches
    ``runner.statistics``), or pass ``Hooks(**metrics.hook_kwargs())`` to a `Runner` and
    call ``watch_runner`` yourself. ``render()`` gives the text exposition
    (content type ``content_type``); ``registry`` can be served by any Prometheus tool.

    ``agent_request_duration_seconds`` observes events from ``before_event`` (the event
    starts running) to ``after_event``, on ``clock`` (default ``trio.current_time``, exact
    under ``MockClock``); ``agent_requests_total`` counts every ended event, including
    those cancelled before they started (which have no duration). A failing ``watch_*``
    callable never breaks a scrape: its figures are left out, it is logged and counted
    in ``agentflow_metrics_source_errors_total``. Label values are bounded (see the
    module docstring; ``max_label_values``).

    Raises:
        ValueError: ``max_label_values`` is below 1.
    """

    content_type: Final = CONTENT_TYPE

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        clock: Callable[[], float] = trio.current_time,
        process: bool = True,
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    ) -> None:
        if max_label_values < 1:
            raise ValueError(f"max_label_values must be >= 1, got {max_label_values}")
        self._agent_label = _LabelBound(max_label_values)
        self._provider_label = _LabelBound(max_label_values)
        self._status_label = _LabelBound(max_label_values)
        self._model_label = _LabelBound(max_label_values)
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._durations = _Histogram(buckets)
        self._requests: dict[tuple[str, str], int] = {}
        self._active: dict[str, int] = {}
        self._starts: dict[str, tuple[float, str]] = {}
        self._llm_durations = _Histogram(buckets)
        self._llm_requests: dict[tuple[str, str], int] = {}
        self._tokens: dict[tuple[str, str, str], int] = {}
        self._cost: dict[tuple[str, str], float] = {}
        self._agents: Mapping[str, Any] | None = None
        self._sources: dict[tuple[str, str], _Statistics] = {}
        self._source_errors: dict[str, int] = {}
        self.registry.register(_Collector(self))
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            if GC_COLLECTOR is not None:
                GCCollector(registry=self.registry)

    # ------------------------------------------------------------------ wiring
    def attach(self, runner: Any, *, name: str = "runner") -> None:
        """Hook into ``runner`` (its ``hooks`` lists) and watch ``runner.statistics``.

        Agent names for ``agent_active_requests`` come from ``runner.agents``, and only
        those names (and `OTHER_LABEL`) are ``agent_name`` values from then on.
        """
        self.install(runner.hooks)
        agents = getattr(runner, "agents", None)
        self._agents = agents
        if agents is not None:
            names = {getattr(agent, "name", key) for key, agent in agents.items()}
            self._agent_label.allowed = frozenset(agents) | frozenset(names)
        self.watch_runner(runner.statistics, name=name)

    def install(self, hooks: Any) -> None:
        """Append `before_event` / `after_event` to a `Hooks`' lists (once)."""
        if self.before_event not in hooks.before_event:
            hooks.before_event.append(self.before_event)
        if self.after_event not in hooks.after_event:
            hooks.after_event.append(self.after_event)

    def hook_kwargs(self) -> dict[str, list[Callable[..., object]]]:
        """Keyword arguments for ``Hooks(...)``: ``before_event`` and ``after_event``."""
        return {"before_event": [self.before_event], "after_event": [self.after_event]}

    # ------------------------------------------------------------------ hot path
    def before_event(self, event: Event) -> None:
        """Hook: ``event`` starts running; remember when, count it active."""
        label = event.type
        agents = self._agents
        if agents is not None:
            agent = agents.get(label)
            if agent is not None:
                label = agent.name
        label = self._agent_label(label)
        self._starts[event.id] = (self._clock(), label)
        self._active[label] = self._active.get(label, 0) + 1

    def after_event(self, event: Event, result: AgentResult) -> None:
        """Hook: ``event`` ended with ``result``; count it and observe its duration."""
        started = self._starts.pop(event.id, None)
        agent = result.agent or (started[1] if started is not None else event.type)
        key = (self._agent_label(agent), result.outcome.value)
        self._requests[key] = self._requests.get(key, 0) + 1
        if started is not None:
            self._durations.observe(key, self._clock() - started[0])
            self._active[started[1]] -= 1

    def observe_request(self, agent_name: str, status: str, seconds: float) -> None:
        """Count one agent request and observe its duration (for callers without hooks)."""
        key = (self._agent_label(agent_name), self._status_label(status))
        self._requests[key] = self._requests.get(key, 0) + 1
        self._durations.observe(key, seconds)

    def observe_llm(self, provider: str, status: str, seconds: float) -> None:
        """Count one LLM call of ``provider`` ending in ``status`` after ``seconds``."""
        key = (self._provider_label(provider), self._status_label(status))
        self._llm_requests[key] = self._llm_requests.get(key, 0) + 1
        self._llm_durations.observe(key, seconds)

    def observe_usage(self, agent_name: str, usage: RunUsage) -> None:
        """Count ``usage`` (an event's own model calls, by model) under ``agent_name``:
        tokens by kind, and the cost of the models that have a price."""
        agent = self._agent_label(agent_name)
        tokens, costs = self._tokens, self._cost
        for name, figures in usage.by_model.items():
            model = self._model_label(name or "unknown")
            for kind, n in (
                ("input", figures.input_tokens),
                ("output", figures.output_tokens),
                ("cached", figures.cached_tokens),
            ):
                key = (agent, model, kind)
                tokens[key] = tokens.get(key, 0) + n
            if figures.cost is not None:
                costs[(agent, model)] = costs.get((agent, model), 0.0) + figures.cost

    @contextmanager
    def llm_call(self, provider: str) -> Iterator[None]:
        """Time the block as one LLM call: status ``ok``, or the exception's class name.

        ``trio.Cancelled`` (any BaseException) is not counted: a cancelled call did not
        end, its caller gave up.
        """
        start = self._clock()
        try:
            yield
        except Exception as exc:
            self.observe_llm(provider, type(exc).__name__, self._clock() - start)
            raise
        self.observe_llm(provider, "ok", self._clock() - start)

    # ------------------------------------------------------------------ scrape sources
    def watch_runner(self, statistics: _Statistics, *, name: str = "runner") -> None:
        """Read a `RunnerStatistics` on scrape: queue depth, in flight, running, totals."""
        self._sources[("runner", name)] = statistics

    def watch_cache(self, name: str, statistics: _Statistics) -> None:
        """Read a `CacheStatistics` on scrape: hits, misses, entries, evictions."""
        self._sources[("cache", name)] = statistics

    def watch_breaker(self, name: str, statistics: _Statistics) -> None:
        """Read a `BreakerStatistics` on scrape: state (0 closed, 1 half-open, 2 open)."""
        self._sources[("breaker", name)] = statistics

    def watch_pool(self, name: str, statistics: _Statistics) -> None:
        """Read connection-pool statistics on scrape (``active``/``in_use``, ``idle``,
        ``queued``)."""
        self._sources[("pool", name)] = statistics

    def watch_queue(self, name: str, depth: Callable[[], int]) -> None:
        """Read a queue's depth on scrape (``queue_depth{queue=name}``)."""
        self._sources[("queue", name)] = depth

    def watch_llm(self, name: str, statistics: _Statistics) -> None:
        """Read an LLM stack's statistics on scrape: its ``cache``, ``breaker`` and
        ``pool`` parts (each may be None), labelled ``name``; with a ``router`` part, the
        router's totals and each deployment's attempts, failures by class, cooldowns,
        fail-overs, in-flight calls, time to first byte, breaker and pool."""
        self._sources[("llm", name)] = statistics

    def watch_memory_guard(self, statistics: _Statistics, *, name: str = "memory") -> None:
        """Read a `MemoryGuardStatistics` on scrape: shedding, RSS, limit, episodes."""
        self._sources[("guard", name)] = statistics

    def unwatch(self, name: str) -> None:
        """Stop reading every source registered under ``name``."""
        for key in [k for k in self._sources if k[1] == name]:
            del self._sources[key]

    # ------------------------------------------------------------------ output
    def render(self) -> bytes:
        """The registry in Prometheus text format (see ``content_type``)."""
        return generate_latest(self.registry)

    def exposition(self) -> tuple[bytes, str]:
        """``(render(), content_type)`` for HTTP handlers."""
        return self.render(), self.content_type

    def collect(self) -> Iterator[Metric]:
        """Every family this object owns, computed now (the registry calls this)."""
        yield self._durations.family(
            "agent_request_duration_seconds", "Agent event processing time.", _AGENT_LABELS
        )
        out = _Families()
        for (agent, status), n in sorted(self._requests.items()):
            out.counter("agent_requests", "Events ended, by agent and outcome.",
                        _AGENT_LABELS, (agent, status), n)  # fmt: skip
        for agent, n in sorted(self._active.items()):
            out.gauge("agent_active_requests", "Events running now.", ("agent_name",), (agent,), n)
        for (provider, status), n in sorted(self._llm_requests.items()):
            out.counter("llm_requests", "LLM calls, by provider and status.",
                        _LLM_LABELS, (provider, status), n)  # fmt: skip
        for key, n in sorted(self._tokens.items()):
            out.counter("llm_tokens", "Model tokens, by agent, model and kind.", _TOKEN_LABELS,
                        key, n)  # fmt: skip
        for cost_key, usd in sorted(self._cost.items()):
            out.counter("llm_cost_usd", "Model cost in USD, by agent and model.", _COST_LABELS,
                        cost_key, usd)  # fmt: skip
        for (kind, name), read in sorted(self._sources.items()):
            part = _Families()  # a source's figures go out all together, or not at all
            try:
                _READERS[kind](part, name, read())
            except Exception:
                self._source_errors[name] = self._source_errors.get(name, 0) + 1
                _log.warning("metrics source %s %r failed", kind, name, exc_info=True)
            else:
                out.merge(part)
        for name, n in sorted(self._source_errors.items()):
            out.counter("agentflow_metrics_source_errors", "Failed reads of a metrics source.",
                        ("source",), (name,), n)  # fmt: skip
        yield from out.families.values()
        if self._llm_requests:
            yield self._llm_durations.family(
                "llm_request_duration_seconds", "LLM call time.", _LLM_LABELS
            )


def _field(stats: Any, *names: str) -> Any:
    for name in names:
        value = getattr(stats, name, None)
        if value is not None:
            return value
    return None


def _read_runner(out: _Families, name: str, s: Any) -> None:
    lab = ("runner",)
    out.gauge("runner_queue_depth", "Events waiting in the queue.", lab, (name,), s.queued)
    out.gauge("runner_in_flight", "Events accepted and not ended.", lab, (name,), s.in_flight)
    out.gauge("runner_running_events", "Events running.", lab, (name,), s.running_events)
    out.gauge("runner_running_agents", "Agents holding a worker slot.", lab, (name,),
              _field(s, "running_agents"))  # fmt: skip
    out.gauge("runner_peak_in_flight", "Most events in flight at once.", lab, (name,),
              _field(s, "peak_in_flight"))  # fmt: skip
    out.counter("runner_events_accepted", "Events accepted.", lab, (name,), s.accepted)
    out.counter("runner_events_refused", "Events refused.", lab, (name,), s.refused)
    out.counter("runner_hook_failures", "Hooks that raised.", lab, (name,),
                _field(s, "hook_failures"))  # fmt: skip
    for outcome in Outcome:
        out.counter("runner_events_completed", "Events ended, by outcome.", ("runner", "status"),
                    (name, outcome.value), _field(s, outcome.value))  # fmt: skip


def _read_cache(out: _Families, name: str, s: Any) -> None:
    lab, key = ("cache",), (name,)
    out.counter("cache_hits", "Cache lookups answered from the cache.", lab, key, s.hits)
    out.counter("cache_misses", "Cache lookups not in the cache.", lab, key, s.misses)
    out.counter("cache_evictions", "Entries dropped to stay bounded.", lab, key,
                _field(s, "evictions"))  # fmt: skip
    out.counter("cache_coalesced", "Misses that waited on another caller's call.", lab, key,
                _field(s, "coalesced"))  # fmt: skip
    out.gauge("cache_entries", "Entries held.", lab, key, _field(s, "entries"))


def _breaker_state(s: Any) -> int:
    state = getattr(s, "state", s)
    text = str(getattr(state, "value", state)).lower().replace("-", "_")
    return BREAKER_STATE_VALUES[text]


def _read_breaker(out: _Families, name: str, s: Any) -> None:
    lab, key = ("breaker",), (name,)
    out.gauge("circuit_breaker_state", "0 closed, 1 half-open, 2 open.", lab, key,
              _breaker_state(s))  # fmt: skip
    out.counter("circuit_breaker_failures", "Calls counted as failures.", lab, key,
                _field(s, "failures"))  # fmt: skip
    out.counter("circuit_breaker_rejections", "Calls refused while open.", lab, key,
                _field(s, "rejections"))  # fmt: skip
    out.counter("circuit_breaker_opened", "Times the breaker opened.", lab, key,
                _field(s, "opened_count"))  # fmt: skip


def _read_pool(out: _Families, name: str, s: Any) -> None:
    lab, key = ("pool",), (name,)
    out.gauge("pool_connections_in_use", "Connections serving a request.", lab, key,
              _field(s, "in_use", "active"))  # fmt: skip
    out.gauge("pool_connections_idle", "Open idle connections.", lab, key, _field(s, "idle"))
    out.gauge("pool_requests_queued", "Requests waiting for a connection.", lab, key,
              _field(s, "queued"))  # fmt: skip


def _read_queue(out: _Families, name: str, depth: Any) -> None:
    out.gauge("queue_depth", "Items waiting in a queue.", ("queue",), (name,), depth)


def _read_llm(out: _Families, name: str, s: Any) -> None:
    for part, reader in (("cache", _read_cache), ("breaker", _read_breaker), ("pool", _read_pool)):
        stats = getattr(s, part, None)
        if stats is not None:
            reader(out, name, stats)
    router = getattr(s, "router", None)
    if router is not None:
        _read_router(out, name, router)


def _read_router(out: _Families, name: str, s: Any) -> None:
    """A `RouterStatistics`: the router's totals, then per deployment (labels bounded by
    the configured deployments and the fixed failure classes), its breaker and its pool."""
    for field in ("requests", "fallbacks", "context_fallbacks", "retries", "refused", "errors"):
        out.counter(f"llm_router_{field}", f"Router {field.replace('_', ' ')}.", ("llm",),
                    (name,), getattr(s, field))  # fmt: skip
    lab = ("llm", "deployment")
    for d in s.deployments:
        key = (name, d.name)
        out.counter("llm_deployment_attempts", "Attempts sent to a deployment.", lab, key,
                    d.attempts)  # fmt: skip
        out.counter("llm_deployment_successes", "Attempts a deployment answered.", lab, key,
                    d.successes)  # fmt: skip
        for kind, n in sorted(d.failures.items()):
            out.counter("llm_deployment_failures", "Failed attempts, by class.",
                        (*lab, "class"), (*key, kind), n)  # fmt: skip
        out.counter("llm_deployment_cooldowns", "Times a deployment began a cooldown.", lab, key,
                    d.cooldowns)  # fmt: skip
        out.counter("llm_deployment_failovers", "Failed attempts that moved a request on.",
                    lab, key, d.failovers)  # fmt: skip
        out.gauge("llm_deployment_in_flight", "Calls and streams on a deployment now.", lab,
                  key, d.in_flight)  # fmt: skip
        out.gauge("llm_deployment_cooling", "1 while a deployment is skipped.", lab, key,
                  int(d.cooling))  # fmt: skip
        if d.ttft is not None:
            out.gauge("llm_deployment_ttft_seconds", "Decaying average time to first byte.",
                      lab, key, d.ttft)  # fmt: skip
        stack = d.stack
        for part, reader in (("breaker", _read_breaker), ("pool", _read_pool)):
            stats = getattr(stack, part, None)
            if stats is not None:
                reader(out, f"{name}:{d.name}", stats)


def _read_guard(out: _Families, name: str, s: Any) -> None:
    lab, key = ("guard",), (name,)
    out.gauge("memory_guard_shedding", "1 while new events are refused.", lab, key,
              int(bool(s.shedding)))  # fmt: skip
    out.gauge("memory_guard_rss_bytes", "RSS at the last check.", lab, key, s.rss_bytes)
    out.gauge("memory_guard_limit_bytes", "The soft memory limit.", lab, key, s.limit_bytes)
    out.counter("memory_guard_episodes", "Times shedding switched on.", lab, key,
                _field(s, "episodes"))  # fmt: skip


_READERS: Final[dict[str, Callable[[_Families, str, Any], None]]] = {
    "runner": _read_runner,
    "cache": _read_cache,
    "breaker": _read_breaker,
    "pool": _read_pool,
    "queue": _read_queue,
    "llm": _read_llm,
    "guard": _read_guard,
}
