"""``[monitoring] enable_metrics`` / ``metrics_port``: `serve_metrics` over real HTTP, and
``metrics_interval``'s report published on it.

Rules: loopback only (127.0.0.1, port 0), the real clock, a real HTTP client (httpx2) and
the Prometheus parser as the judge of the text, an absolute ``trio.fail_after`` around
every test body; nothing asserts a duration.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import agentflow_trio as af
from agentflow_trio.config import MonitoringConfig
from agentflow_trio.observability import (
    PerformanceMetrics,
    PerformanceReporter,
    RunnerMetrics,
    report_performance,
    serve_metrics,
)

TIMEOUT = 20
ENDPOINT = MonitoringConfig(metrics_port=0)


@af.agent
async def echo(ctx: af.Context, event: af.Event) -> Any:
    return dict(event.data)


@asynccontextmanager
async def scraping(
    metrics: Any, monitoring: MonitoringConfig = ENDPOINT
) -> AsyncIterator[httpx2.AsyncClient]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_metrics, monitoring, metrics)
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
        nursery.cancel_scope.cancel()


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


async def test_a_scrape_reads_the_runner_figures_on_a_port_of_its_own() -> None:
    with trio.fail_after(TIMEOUT):
        metrics = RunnerMetrics(process=False)
        async with af.Runner(af.Config(), agents={"echo": echo}) as runner:
            metrics.attach(runner)
            for i in range(3):
                await runner.call(af.Event("echo", {"i": i}))
            async with scraping(metrics) as client:
                reply = await client.get("/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=")
        found = families(reply.text)
        [sample] = [s for s in found["agent_requests"].samples if s.name.endswith("_total")]
        assert sample.labels == {"agent_name": "echo", "status": "succeeded"}
        assert sample.value == 3
        assert "runner_events_accepted" in found


async def test_port_zero_reports_the_bound_port_and_cancel_closes_it() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, ENDPOINT, RunnerMetrics(process=False))
            assert isinstance(port, int) and port > 0
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.aclose()
            nursery.cancel_scope.cancel()
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


async def test_metrics_disabled_listens_nowhere() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            off = MonitoringConfig(enable_metrics=False, metrics_port=0)
            assert await nursery.start(serve_metrics, off, RunnerMetrics(process=False)) is None


async def test_a_busy_port_names_the_config_keys() -> None:
    with trio.fail_after(TIMEOUT):
        [taken] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = taken.socket.getsockname()[1]
        try:
            busy = MonitoringConfig(metrics_port=port)
            with pytest.raises(OSError) as info:
                await serve_metrics(busy, RunnerMetrics(process=False))
            assert info.value.errno == errno.EADDRINUSE
            assert "metrics_port" in str(info.value) and f"127.0.0.1:{port}" in str(info.value)
        finally:
            await taken.aclose()


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("HEAD", "/metrics", {}, 200),
        ("GET", "/", {}, 200),
        ("GET", "/debug/tasks", {}, 404),
        ("POST", "/metrics", {}, 405),
        ("GET", "/metrics", {"host": "rebound.example"}, 421),
        ("GET", "/metrics", {"origin": "https://evil.example"}, 403),
        ("GET", "/metrics", {"sec-fetch-site": "cross-site"}, 403),
    ],
)
async def test_what_the_endpoint_answers(
    method: str, path: str, headers: dict[str, str], status: int
) -> None:
    with trio.fail_after(TIMEOUT):
        async with scraping(RunnerMetrics(process=False)) as client:
            reply = await client.request(method, path, headers=headers)
        assert reply.status_code == status, reply.text
        if method == "HEAD":
            assert reply.content == b"" and int(reply.headers["content-length"]) > 0
        if path == "/" and status == 200:
            assert "/metrics" in reply.text


async def test_each_interval_report_is_published_on_the_endpoint() -> None:
    with trio.fail_after(TIMEOUT):
        metrics = RunnerMetrics(process=False)
        reporter = PerformanceReporter()
        reporter.publish_to(metrics)
        reported: list[PerformanceMetrics] = []
        all_reported = trio.Event()

        def on_report(snapshot: PerformanceMetrics) -> None:
            reported.append(snapshot)
            if sum(r.requests for r in reported) == 4:
                all_reported.set()

        reporter.listeners.append(on_report)
        monitoring = MonitoringConfig(metrics_port=0, metrics_interval=0.2)
        async with af.Runner(af.Config(), agents={"echo": echo}) as runner:
            reporter.attach(runner)
            async with trio.open_nursery() as nursery:
                await nursery.start(report_performance, monitoring, reporter)
                for i in range(4):
                    await runner.call(af.Event("echo", {"i": i}))
                await all_reported.wait()  # every event counted in exactly one interval
                async with scraping(metrics) as client:
                    found = families((await client.get("/metrics")).text)
                nursery.cancel_scope.cancel()
        latest = reporter.latest
        assert latest is not None and latest is reported[-1]
        assert found["agentflow_performance_requests"].samples[0].value == latest.requests
        assert latest.requests > 0 and latest.outcomes == {"succeeded": latest.requests}
        latency = found["agentflow_performance_latency_seconds"].samples
        assert {s.labels["quantile"]: s.value for s in latency} == {
            "0.5": latest.p50_ms / 1000,
            "0.95": latest.p95_ms / 1000,
            "0.99": latest.p99_ms / 1000,
        }


async def test_serve_metrics_serves_any_registry() -> None:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("widgets", "Widgets made.", registry=registry).inc(5)
    with trio.fail_after(TIMEOUT):
        async with scraping(registry) as client:
            text = (await client.get("/metrics")).text
    assert families(text)["widgets"].samples[0].value == 5
