"""The debug server over real HTTP.

Rules: loopback only (127.0.0.1, port 0), the real clock, and an absolute
``trio.fail_after`` around every test body.
"""

from __future__ import annotations

import functools
import pstats
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
import trio.lowlevel
from prometheus_client.parser import text_string_to_metric_families

from agentflow_trio.errors import ConfigError
from agentflow_trio.observability import profiling
from agentflow_trio.observability.debug_server import serve_debug
from agentflow_trio.observability.metrics import RunnerMetrics

TIMEOUT = 20


@asynccontextmanager
async def debug_client(metrics: Any = None) -> AsyncIterator[httpx2.AsyncClient]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_debug, port=0, metrics=metrics))
        base = f"http://127.0.0.1:{port}"
        async with httpx2.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
            yield client
        nursery.cancel_scope.cancel()


def _crunch_numbers_for_the_profile(n: int) -> int:
    return sum(i % 7 for i in range(n))


async def _keep_busy() -> None:
    while True:
        _crunch_numbers_for_the_profile(5000)
        await trio.lowlevel.checkpoint()


async def _parked_for_debugging() -> None:
    await trio.sleep_forever()


async def test_tasks_lists_the_live_tree() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery, debug_client() as client:
            nursery.start_soon(_parked_for_debugging, name="visible-worker")
            reply = await client.get("/debug/tasks")
            nursery.cancel_scope.cancel()
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    assert "- visible-worker" in reply.text and "_parked_for_debugging" in reply.text
    assert "serve_debug" in reply.text  # the server's own tasks are in the tree too


async def test_profile_returns_the_top_functions_of_the_live_process() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery, debug_client() as client:
            nursery.start_soon(_keep_busy)
            reply = await client.get("/debug/profile", params={"seconds": "0.2"})
            nursery.cancel_scope.cancel()
    assert reply.status_code == 200
    assert reply.text.startswith("CPU profile of the whole process for 0.2s")
    assert "_crunch_numbers_for_the_profile" in reply.text
    assert "cumulative" in reply.text


async def test_profile_as_a_pstats_file(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery, debug_client() as client:
            nursery.start_soon(_keep_busy)
            reply = await client.get("/debug/profile?seconds=0.2&format=pstats")
            nursery.cancel_scope.cancel()
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/octet-stream"
    path = tmp_path / "profile.pstats"
    path.write_bytes(reply.content)
    names = {func[2] for func in pstats.Stats(str(path)).stats}  # type: ignore[attr-defined]
    assert "_crunch_numbers_for_the_profile" in names


async def test_a_second_concurrent_profile_is_refused() -> None:
    with trio.fail_after(TIMEOUT):
        async with debug_client() as client:
            with profiling.profile_cpu():  # this process is already being profiled
                busy = await client.get("/debug/profile?seconds=0.1")
            free = await client.get("/debug/profile?seconds=0.1")
    assert busy.status_code == 409 and "already running" in busy.text
    assert free.status_code == 200


async def test_bad_queries_get_400() -> None:
    with trio.fail_after(TIMEOUT):
        async with debug_client() as client:
            for query in ["seconds=abc", "seconds=-1", "seconds=1000", "format=svg",
                          "sort=bogus"]:  # fmt: skip
                reply = await client.get(f"/debug/profile?{query}")
                assert reply.status_code == 400, query
                assert query.split("=")[0] in reply.text


async def test_get_heap_changes_nothing_post_starts_and_stops_tracing() -> None:
    was_tracing = tracemalloc.is_tracing()
    if was_tracing:
        tracemalloc.stop()
    try:
        with trio.fail_after(TIMEOUT):
            async with debug_client() as client:
                off = await client.get("/debug/heap")
                assert not tracemalloc.is_tracing()  # a GET turned nothing on
                head = await client.head("/debug/heap")
                started = await client.post("/debug/heap/start")
                assert tracemalloc.is_tracing()
                again = await client.post("/debug/heap/start")
                hoard = [bytearray(512) for _ in range(4000)]
                top = await client.get("/debug/heap", params={"limit": "3"})
                del hoard
                stopped = await client.post("/debug/heap/stop")
                assert not tracemalloc.is_tracing()
                not_ours = await client.post("/debug/heap/stop")
                get_start = await client.get("/debug/heap/start")
                await client.post("/debug/heap/start")
            assert not tracemalloc.is_tracing()  # tracing started here ends with the server
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        if was_tracing:
            tracemalloc.start()
    assert off.status_code == 409 and "POST /debug/heap/start" in off.text
    assert head.status_code == 409 and head.content == b""
    assert started.status_code == 200 and "started" in started.text
    assert again.status_code == 200 and "already tracing" in again.text
    assert top.status_code == 200 and "top 3 allocation sites" in top.text
    assert "test_debug_server.py" in top.text
    assert stopped.status_code == 200
    assert not_ours.status_code == 409
    assert get_start.status_code == 405 and get_start.headers["allow"] == "POST"


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.0.0.1:6060", "LOCALHOST:1", "[::1]:6060"]
)
async def test_loopback_host_headers_are_served(host: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with debug_client() as client:
            reply = await client.get("/debug", headers={"host": host})
    assert reply.status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:6060", "10.1.2.3", "[::2]"])
async def test_other_host_headers_are_refused_421(host: str) -> None:
    """DNS rebinding: a page whose name now points at 127.0.0.1 sends its own name."""
    with trio.fail_after(TIMEOUT):
        async with debug_client() as client:
            for path in ["/debug/tasks", "/debug/heap", "/metrics"]:
                reply = await client.get(path, headers={"host": host})
                assert reply.status_code == 421, path
                assert "Host" in reply.text
            post = await client.post("/debug/heap/start", headers={"host": host})
    assert post.status_code == 421 and not tracemalloc.is_tracing()


async def test_allowed_hosts_extend_the_host_check() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(serve_debug, port=0, allowed_hosts=["debug.internal"])
            port = await nursery.start(serve)
            async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                named = await client.get("/debug", headers={"host": "debug.internal:6060"})
                other = await client.get("/debug", headers={"host": "evil.example"})
            nursery.cancel_scope.cancel()
    assert named.status_code == 200 and other.status_code == 421


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
    ],
)
async def test_requests_from_other_sites_pages_are_refused_403(headers: dict[str, str]) -> None:
    with trio.fail_after(TIMEOUT):
        async with debug_client() as client:
            post = await client.post("/debug/heap/start", headers=headers)
            get = await client.get("/debug/profile?seconds=5", headers=headers)
    assert post.status_code == 403 and get.status_code == 403
    assert not tracemalloc.is_tracing()


async def test_a_same_machine_origin_is_served() -> None:
    with trio.fail_after(TIMEOUT):
        async with debug_client() as client:
            reply = await client.get("/debug", headers={"origin": "http://localhost:3000"})
    assert reply.status_code == 200


async def test_a_large_body_is_413() -> None:
    with trio.fail_after(TIMEOUT):
        async with debug_client() as client:
            reply = await client.post("/debug/heap/start", content=b"x" * (128 * 1024))
    assert reply.status_code == 413 and not tracemalloc.is_tracing()


async def test_metrics_endpoint_serves_prometheus_text() -> None:
    metrics = RunnerMetrics()
    metrics.observe_request("answer", "succeeded", 0.02)
    metrics.observe_request("answer", "failed", 0.3)
    with trio.fail_after(TIMEOUT):
        async with debug_client(metrics) as client:
            reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    totals = {
        s.labels["status"]: s.value
        for s in families["agent_requests"].samples
        if s.name == "agent_requests_total"
    }
    assert totals == {"succeeded": 1, "failed": 1}
    assert families["agent_request_duration_seconds"].type == "histogram"


async def test_metrics_from_a_plain_registry() -> None:
    from prometheus_client import CollectorRegistry, Counter

    registry = CollectorRegistry()
    Counter("plain_things", "things", registry=registry).inc(3)
    with trio.fail_after(TIMEOUT):
        async with debug_client(registry) as client:
            reply = await client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    assert families["plain_things"].samples[0].value == 3


async def test_routing() -> None:
    with trio.fail_after(TIMEOUT):
        async with debug_client() as client:
            index = await client.get("/debug")
            missing = await client.get("/nowhere")
            no_metrics = await client.get("/metrics")
            post = await client.post("/debug/tasks")
            head = await client.head("/debug/tasks")
    assert index.status_code == 200 and "/debug/profile" in index.text
    assert missing.status_code == 404
    assert no_metrics.status_code == 404
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    assert head.status_code == 200 and head.content == b""


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "example.com"])
async def test_non_loopback_hosts_are_refused(host: str) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(ConfigError, match="loopback"):
        await serve_debug(host, 0)  # refused before anything is bound
