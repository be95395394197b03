"""RunnerMetrics with a real Runner: hook-fed counters and histogram, scrape-time sources,
parsed back with prometheus_client's own text parser."""

from __future__ import annotations

import functools
from typing import Any

import attrs
import prometheus_client
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import agentflow_trio as af
from agentflow_trio.config import Config, RunnerConfig
from agentflow_trio.observability.metrics import DEFAULT_BUCKETS, RunnerMetrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: RunnerMetrics) -> Samples:
    """Every sample of ``render()``, by (sample name, sorted labels)."""
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def families(metrics: RunnerMetrics) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@af.agent
async def quick(ctx: af.Context, event: af.Event) -> str:
    await trio.sleep(0.02)
    return "ok"


@af.agent
async def slow(ctx: af.Context, event: af.Event) -> str:
    await trio.sleep(0.3)
    return "ok"


@af.agent
async def boom(ctx: af.Context, event: af.Event) -> str:
    await trio.sleep(0.004)
    raise RuntimeError("the agent broke")


AGENTS = {"quick": quick, "slow": slow, "boom": boom}


async def test_a_real_runner_is_counted_by_agent_and_outcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = RunnerMetrics()
    async with af.Runner(agents=AGENTS) as runner:
        metrics.attach(runner)
        async with trio.open_nursery() as nursery:
            for kind in ["quick"] * 3 + ["boom"] * 2 + ["slow", "nobody"]:
                nursery.start_soon(runner.call, af.Event(kind))
    s = scrape(metrics)
    totals = {
        (dict(labels)["agent_name"], dict(labels)["status"]): v
        for (name, labels), v in s.items()
        if name == "agent_requests_total"
    }
    assert totals == {
        ("quick", "succeeded"): 3,
        ("boom", "failed"): 2,
        ("slow", "succeeded"): 1,
        ("_other", "failed"): 1,  # no such agent: not a label of its own (OTHER_LABEL)
    }
    hist = "agent_request_duration_seconds"
    # quick ran 20 ms (virtual, exact): in the 0.025 bucket, not in 0.01
    assert value(s, f"{hist}_bucket", agent_name="quick", status="succeeded", le="0.01") == 0
    assert value(s, f"{hist}_bucket", agent_name="quick", status="succeeded", le="0.025") == 3
    assert value(s, f"{hist}_sum", agent_name="quick", status="succeeded") == pytest.approx(0.06)
    assert value(s, f"{hist}_bucket", agent_name="slow", status="succeeded", le="0.25") == 0
    assert value(s, f"{hist}_bucket", agent_name="slow", status="succeeded", le="0.5") == 1
    assert value(s, f"{hist}_bucket", agent_name="boom", status="failed", le="0.005") == 2
    assert value(s, f"{hist}_count", agent_name="boom", status="failed") == 2
    assert value(s, f"{hist}_bucket", agent_name="slow", status="succeeded", le="+Inf") == 1
    assert value(s, "agent_active_requests", agent_name="quick") == 0
    assert value(s, "runner_events_accepted_total", runner="runner") == 7
    assert value(s, "runner_events_completed_total", runner="runner", status="failed") == 3
    assert value(s, "runner_in_flight", runner="runner") == 0


async def test_buckets_are_the_guides(autojump_clock: trio.testing.MockClock) -> None:
    metrics = RunnerMetrics(process=False)
    metrics.observe_request("a", "succeeded", 0.0005)
    hist = families(metrics)["agent_request_duration_seconds"]
    edges = [float(s.labels["le"]) for s in hist.samples if s.name.endswith("_bucket")]
    assert edges == [*DEFAULT_BUCKETS, float("inf")]
    assert DEFAULT_BUCKETS == (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                               30, 60)  # fmt: skip


async def test_active_requests_and_queue_depth_while_events_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()

    @af.agent
    async def held(ctx: af.Context, event: af.Event) -> str:
        await gate.wait()
        return "done"

    metrics = RunnerMetrics()
    config = Config(runner=RunnerConfig(worker_pool_size=2))
    async with af.Runner(config, agents={"held": held}) as runner:
        metrics.attach(runner)
        handles = [await runner.emit(af.Event("held")) for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        s = scrape(metrics)
        assert value(s, "agent_active_requests", agent_name="held") == 2
        assert value(s, "runner_running_events", runner="runner") == 2
        assert value(s, "runner_queue_depth", runner="runner") == 1
        assert value(s, "runner_in_flight", runner="runner") == 3
        gate.set()
        for handle in handles:
            assert (await handle.result()).succeeded
    s = scrape(metrics)
    assert value(s, "agent_active_requests", agent_name="held") == 0
    assert value(s, "agent_requests_total", agent_name="held", status="succeeded") == 3


async def test_hook_kwargs_build_hooks_for_a_runner(autojump_clock: trio.testing.MockClock) -> None:
    metrics = RunnerMetrics(process=False)
    hooks = af.Hooks(**metrics.hook_kwargs())
    async with af.Runner(agents=AGENTS, hooks=hooks) as runner:
        metrics.watch_runner(runner.statistics, name="main")
        await runner.call(af.Event("quick"))
        await runner.call(af.Event("boom"))
    s = scrape(metrics)
    assert value(s, "agent_requests_total", agent_name="quick", status="succeeded") == 1
    assert value(s, "agent_requests_total", agent_name="boom", status="failed") == 1
    assert value(s, "runner_events_accepted_total", runner="main") == 2


async def test_an_event_cancelled_in_the_queue_is_counted_without_a_duration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = RunnerMetrics(process=False)
    config = Config(runner=RunnerConfig(worker_pool_size=1))
    async with af.Runner(config, agents=AGENTS) as runner:
        metrics.attach(runner)
        first = await runner.emit(af.Event("slow"))
        queued = await runner.emit(af.Event("slow"))
        queued.cancel()
        await first.result()
    s = scrape(metrics)
    assert value(s, "agent_requests_total", agent_name="slow", status="cancelled") == 1
    assert value(s, "agent_request_duration_seconds_count", agent_name="slow",
                 status="succeeded") == 1  # fmt: skip
    assert ("agent_request_duration_seconds_count",
            (("agent_name", "slow"), ("status", "cancelled"))) not in s  # fmt: skip


@attrs.frozen
class FakeCacheStats:
    hits: int
    misses: int
    evictions: int
    expirations: int
    entries: int
    bytes: int
    coalesced: int


class FakeState:
    def __init__(self, value: str) -> None:
        self.value = value


@attrs.frozen
class FakeBreakerStats:
    state: FakeState
    failures: int = 0
    rejections: int = 0
    opened_count: int = 0


@attrs.frozen
class FakePoolStats:
    connections: int
    active: int
    idle: int
    requests: int
    queued: int
    opened: int


@attrs.frozen
class FakeStack:
    cache: FakeCacheStats | None
    breaker: FakeBreakerStats | None
    pool: FakePoolStats | None


def test_sources_are_read_on_scrape() -> None:
    metrics = RunnerMetrics(process=False)
    hits = [0]
    metrics.watch_cache("answers", lambda: FakeCacheStats(hits[0], 4, 1, 0, 7, 100, 2))
    breakers = {"llm": "closed", "search": "half_open", "mcp": "open"}
    for name, state in breakers.items():
        metrics.watch_breaker(name, functools.partial(FakeBreakerStats, FakeState(state), 3))
    metrics.watch_pool("openai", lambda: FakePoolStats(5, 2, 3, 4, 2, 9))
    metrics.watch_queue("batch", lambda: 11)
    hits[0] = 41  # read at scrape time, not when registered
    s = scrape(metrics)
    assert value(s, "cache_hits_total", cache="answers") == 41
    assert value(s, "cache_misses_total", cache="answers") == 4
    assert value(s, "cache_entries", cache="answers") == 7
    assert value(s, "circuit_breaker_state", breaker="llm") == 0
    assert value(s, "circuit_breaker_state", breaker="search") == 1
    assert value(s, "circuit_breaker_state", breaker="mcp") == 2
    assert value(s, "circuit_breaker_failures_total", breaker="mcp") == 3
    assert value(s, "pool_connections_in_use", pool="openai") == 2
    assert value(s, "pool_connections_idle", pool="openai") == 3
    assert value(s, "pool_requests_queued", pool="openai") == 2
    assert value(s, "queue_depth", queue="batch") == 11
    metrics.unwatch("batch")
    assert ("queue_depth", (("queue", "batch"),)) not in scrape(metrics)


def test_an_llm_stack_is_read_part_by_part() -> None:
    metrics = RunnerMetrics(process=False)
    stack = FakeStack(
        FakeCacheStats(5, 1, 0, 0, 1, 10, 0),
        FakeBreakerStats(FakeState("open")),
        None,  # a layer that is off is skipped
    )
    metrics.watch_llm("openai", lambda: stack)
    s = scrape(metrics)
    assert value(s, "cache_hits_total", cache="openai") == 5
    assert value(s, "circuit_breaker_state", breaker="openai") == 2
    assert not any(name.startswith("pool_") for name, _ in s)


def test_a_failing_source_leaves_the_rest_of_the_scrape_intact() -> None:
    metrics = RunnerMetrics(process=False)

    def broken() -> Any:
        raise OSError("gone")

    metrics.watch_cache("broken", broken)
    metrics.watch_breaker("weird", lambda: FakeBreakerStats(FakeState("sideways")))
    metrics.watch_queue("fine", lambda: 3)
    s = scrape(metrics)
    assert value(s, "queue_depth", queue="fine") == 3
    assert value(s, "agentflow_metrics_source_errors_total", source="broken") == 1
    assert value(s, "agentflow_metrics_source_errors_total", source="weird") == 1
    assert not any(name.startswith(("cache_", "circuit_")) for name, _ in s)


async def test_llm_calls_are_counted_by_provider_and_status(
    autojump_clock: trio.testing.MockClock,
) -> None:
    metrics = RunnerMetrics(process=False)
    with metrics.llm_call("openai"):
        await trio.sleep(0.2)
    with pytest.raises(af.LLMError), metrics.llm_call("openai"):
        await trio.sleep(0.03)
        raise af.LLMError("down")
    with trio.move_on_after(0.01), metrics.llm_call("openai"):
        await trio.sleep(1)  # cancelled: the call did not end, it is not counted
    s = scrape(metrics)
    assert value(s, "llm_requests_total", provider="openai", status="ok") == 1
    assert value(s, "llm_requests_total", provider="openai", status="LLMError") == 1
    assert sum(v for (name, _), v in s.items() if name == "llm_requests_total") == 2
    dur = "llm_request_duration_seconds"
    assert value(s, f"{dur}_bucket", provider="openai", status="ok", le="0.1") == 0
    assert value(s, f"{dur}_bucket", provider="openai", status="ok", le="0.25") == 1
    assert value(s, f"{dur}_sum", provider="openai", status="LLMError") == pytest.approx(0.03)


def test_each_instance_has_its_own_registry() -> None:
    a, b = RunnerMetrics(), RunnerMetrics()
    a.observe_request("x", "succeeded", 0.1)
    assert value(scrape(a), "agent_requests_total", agent_name="x", status="succeeded") == 1
    assert ("agent_requests_total", (("agent_name", "x"), ("status", "succeeded"))) not in scrape(b)
    default = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "agent_requests_total" not in default
    assert "process_resident_memory_bytes" in a.render().decode()  # process collectors
    body, content_type = a.exposition()
    assert content_type.startswith("text/plain") and b"agent_requests_total" in body


def test_memory_guard_statistics_are_exposed() -> None:
    from agentflow_trio.observability.runtime import MemoryGuard

    rss = [900]
    guard = MemoryGuard(1000, rss=lambda: rss[0])
    metrics = RunnerMetrics(process=False)
    metrics.watch_memory_guard(guard.statistics)
    guard.check()
    assert value(scrape(metrics), "memory_guard_shedding", guard="memory") == 0
    rss[0] = 1200
    guard.check()
    s = scrape(metrics)
    assert value(s, "memory_guard_shedding", guard="memory") == 1
    assert value(s, "memory_guard_rss_bytes", guard="memory") == 1200
    assert value(s, "memory_guard_episodes_total", guard="memory") == 1
