"""Requests/s that ``agentcli loadtest --target`` drives from one core, against baselines.

The mock LLM runs in a child process (``python -m agentflow_trio.cli mock-llm --port 0``)
pinned to core 1 when the machine has two or more cores; this process is pinned to core
0, so its ``getrusage`` CPU is the generator's alone. At each concurrency (closed model,
back-to-back requests, every one a ``POST /v1/chat/completions`` with a JSON body):

* ``raw_trio``: the floor. ``c`` raw trio sockets, one pre-encoded request each, the
  ``httptools`` C parser, nothing else: no JSON, no latency histogram, no pool.
* ``bare_httpx2``: ``c`` callers sharing one ``httpx2.AsyncClient`` (JSON encoded and
  decoded): what a load generator built on the usual client reaches.
* ``agentcli_loadtest``: `run_loadtest` exactly as ``agentcli loadtest --target URL
  --vus c`` runs it, with a scenario that posts the chat body and decodes the answer; its
  latency percentiles come from the run's own HDR histograms.

* ``benchmark_stream`` and ``benchmark_stream_streamed``: `run_benchmark` as ``agentcli
  benchmark --agent stream -c c`` runs it (in-process runner, the ``stream`` agent
  consuming ``ctx.llm.stream`` against the same mock), without and with ``--stream``
  (``runner.stream`` to the caller, each token timed: TTFT and ITL). ``cpu_ratio`` is the
  streamed run's CPU per request over the plain one's, same process; the plain one is the
  non-streamed path, whose CPU per request streaming must leave unchanged.

* ``locust_fasthttp`` (when ``locust`` is on PATH, or given with ``--locust``): locust's
  ``FastHttpUser`` (gevent + a C HTTP parser), one process pinned to the same core, the
  same POST, ``wait_time = constant(0)``; its own CSV summary gives requests/s.

``ratio`` is the scenario's requests/s over ``raw_trio``'s at the same concurrency;
``cpu_us_per_req`` is client CPU over requests. ``mock_counted`` checks that the mock's
own ``GET /stats`` request count grew by exactly the requests the load test issued.
Prints one JSON line per scenario, then a table on stderr.

    python bench/loadtest.py            # 3 s per scenario (about 30 s)
    python bench/loadtest.py --quick    # 1 s per scenario
    python bench/loadtest.py --locust /path/to/venv/bin/locust
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx2
import orjson
import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agentflow_trio.config import Config  # noqa: E402
from agentflow_trio.loadgen import LoadClient  # noqa: E402
from agentflow_trio.loadgen.benchmark import BenchmarkOptions, run_benchmark  # noqa: E402
from agentflow_trio.loadgen.loadtest import LoadTestOptions, Scenario, run_loadtest  # noqa: E402
from agentflow_trio.loadgen.stages import Plan  # noqa: E402
from bench._common import (  # noqa: E402
    RawHTTPConnection,
    cpu_seconds,
    emit,
    mock_process,
    pin_to_core,
    table,
)

PATH = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]}


# ---------------------------------------------------------------------------- baselines
def _raw_request(host: str, port: int) -> bytes:
    body = orjson.dumps(BODY)
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Span:
    """Requests done, and trio seconds and CPU seconds from the loop's start to its last
    completion: the same span `run_loadtest` reports over (setup excluded)."""

    def __init__(self) -> None:
        self.t0, self.c0 = trio.current_time(), cpu_seconds()
        self.count = 0

    def end(self) -> tuple[int, float, float]:
        return self.count, trio.current_time() - self.t0, cpu_seconds() - self.c0


async def raw_trio(
    host: str, port: int, concurrency: int, seconds: float
) -> tuple[int, float, float]:
    """``concurrency`` keep-alive sockets sending back to back until ``seconds`` pass."""
    request = _raw_request(host, port)
    span = _Span()
    stop_at = span.t0 + seconds

    async def connection() -> None:
        conn = await RawHTTPConnection.open(host, port)
        try:
            while trio.current_time() < stop_at:
                status = await conn.round_trip(request)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}")
                span.count += 1
        finally:
            conn.close()

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(connection)
    return span.end()


async def bare_httpx2(url: str, concurrency: int, seconds: float) -> tuple[int, float, float]:
    """``concurrency`` callers sharing one httpx2 client until ``seconds`` pass."""
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
        span = _Span()
        stop_at = span.t0 + seconds

        async def caller() -> None:
            while trio.current_time() < stop_at:
                response = await client.post(PATH, content=orjson.dumps(BODY), headers=headers)
                response.raise_for_status()
                orjson.loads(response.content)
                span.count += 1

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(caller)
        return span.end()


# ---------------------------------------------------------------------------- the CLI's path
async def _chat(client: LoadClient) -> None:
    response = await client.post(PATH, json=BODY)
    response.json()


async def agentcli_loadtest(url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """What ``agentcli loadtest --target URL --vus c --duration s`` runs."""
    options = LoadTestOptions(
        plan=Plan.constant(seconds, concurrency),
        scenario=Scenario(request=_chat, path="bench/loadtest.py"),
        target_url=url,
    )
    report = await run_loadtest(options)
    return report.to_dict()


async def agentcli_benchmark(
    url: str, concurrency: int, seconds: float, stream: bool
) -> dict[str, Any]:
    """What ``agentcli benchmark --agent stream -c c [--stream]`` runs, against ``url``."""
    llm = {"provider": "openai", "base_url": url + "/v1", "api_key": "sk-bench"}
    options = BenchmarkOptions(
        duration=seconds,
        users=concurrency,
        agent="stream",
        config=Config.from_mapping({"llm": llm}),
        stream=stream,
    )
    report = await run_benchmark(options)
    return report.to_dict()


def _benchmark_rows(
    url: str, concurrency: int, seconds: float, warm: float, base: dict[str, Any]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    plain_cpu = None
    for stream in (False, True):
        trio.run(agentcli_benchmark, url, concurrency, warm, stream)
        report = trio.run(agentcli_benchmark, url, concurrency, seconds, stream)
        cpu = report["cpu_seconds"] / max(report["requests"], 1)
        row = {
            "scenario": "benchmark_stream_streamed" if stream else "benchmark_stream",
            **base,
            "requests": report["requests"],
            "requests_per_s": round(report["requests_per_s"], 1),
            "cpu_us_per_req": round(cpu * 1e6, 1),
            "p50_ms": report["p50_ms"],
            "p99_ms": report["p99_ms"],
            "errors": report["errors"],
        }
        if stream:
            streaming = report["streaming"]
            row["cpu_ratio"] = round(cpu / plain_cpu, 3) if plain_cpu else None
            row["ttft_p50_ms"] = streaming["ttft"]["p50_ms"]
            row["ttft_p99_ms"] = streaming["ttft"]["p99_ms"]
            row["itl_p50_ms"] = streaming["itl"]["p50_ms"]
            row["itl_p99_ms"] = streaming["itl"]["p99_ms"]
            row["itl_samples"] = streaming["itl"]["count"]
        else:
            plain_cpu = cpu
        rows.append(row)
    return rows


async def mock_requests(url: str) -> int:
    async with httpx2.AsyncClient(base_url=url) as client:
        return int((await client.get("/stats")).json()["requests"])


# ---------------------------------------------------------------------------- locust
_LOCUSTFILE = f"""
from locust import FastHttpUser, constant, task

BODY = {BODY!r}


class Chat(FastHttpUser):
    wait_time = constant(0)

    @task
    def chat(self):
        with self.client.post("{PATH}", json=BODY, catch_response=True) as response:
            response.json()
"""


def locust_fasthttp(locust: str, url: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """One headless locust process (pinned to core 0) for ``seconds``; its CSV summary."""
    with tempfile.TemporaryDirectory() as tmp:
        locustfile = Path(tmp, "locustfile.py")
        locustfile.write_text(_LOCUSTFILE)
        command = [locust, "-f", str(locustfile), "--headless", "--only-summary"]
        command += ["-u", str(concurrency), "-r", str(concurrency * 100), "-H", url]
        command += ["-t", f"{max(int(seconds), 1)}s", "--csv", str(Path(tmp, "run"))]

        def pin() -> None:
            if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
                os.sched_setaffinity(0, {0})

        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=pin
        )
        summary = Path(tmp, "run_stats.csv")
        if not summary.is_file():
            raise RuntimeError(f"locust wrote no summary (exit {done.returncode}): {done.stderr}")
        with open(summary, newline="") as stats:
            total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
    return {
        "requests": int(total["Request Count"]),
        "requests_per_s": round(float(total["Requests/s"]), 1),
        "failures": int(total["Failure Count"]),
        "p50_ms": float(total["50%"]),
        "p99_ms": float(total["99%"]),
    }


# ---------------------------------------------------------------------------- driver
def run(
    url: str, concurrency: int, seconds: float, warm: float, locust: str | None
) -> list[dict[str, Any]]:
    host, port = url.removeprefix("http://").split(":")
    rows: list[dict[str, Any]] = []
    base = {"concurrency": concurrency, "seconds": seconds}

    trio.run(raw_trio, host, int(port), concurrency, warm)
    count, wall, cpu = trio.run(raw_trio, host, int(port), concurrency, seconds)
    floor = count / wall
    rows.append(
        {
            "scenario": "raw_trio",
            **base,
            "requests": count,
            "requests_per_s": round(floor, 1),
            "ratio": 1.0,
            "cpu_us_per_req": round(cpu / count * 1e6, 1),
        }
    )

    trio.run(bare_httpx2, url, concurrency, warm)
    count, wall, cpu = trio.run(bare_httpx2, url, concurrency, seconds)
    rows.append(
        {
            "scenario": "bare_httpx2",
            **base,
            "requests": count,
            "requests_per_s": round(count / wall, 1),
            "ratio": round(count / wall / floor, 3),
            "cpu_us_per_req": round(cpu / count * 1e6, 1),
        }
    )

    trio.run(agentcli_loadtest, url, concurrency, warm)
    before = trio.run(mock_requests, url)
    report = trio.run(agentcli_loadtest, url, concurrency, seconds)
    cpu = report["cpu_seconds"]  # the run's own measure, over the same span as its rate
    counted = trio.run(mock_requests, url) - before
    rate = report["requests_per_s"]
    rows.append(
        {
            "scenario": "agentcli_loadtest",
            **base,
            "requests": report["requests"],
            "requests_per_s": round(rate, 1),
            "ratio": round(rate / floor, 3),
            "cpu_us_per_req": round(cpu / max(report["requests"], 1) * 1e6, 1),
            "p50_ms": report["p50_ms"],
            "p99_ms": report["p99_ms"],
            "p999_ms": report["p999_ms"],
            "errors": report["errors"],
            "mock_counted": counted == report["issued"],
        }
    )

    rows.extend(_benchmark_rows(url, concurrency, seconds, warm, base))

    if locust is not None:
        figures = locust_fasthttp(locust, url, concurrency, max(seconds, 5.0))
        rows.append(
            {
                "scenario": "locust_fasthttp",
                **base,
                **figures,
                "ratio": round(figures["requests_per_s"] / floor, 3),
                "vs_agentcli": round(figures["requests_per_s"] / rate, 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s per scenario instead of 3 s")
    parser.add_argument("--concurrency", type=int, action="append", help="callers")
    parser.add_argument("--locust", help="locust executable (default: locust on PATH, if any)")
    args = parser.parse_args()
    locust = args.locust or shutil.which("locust")
    if locust is None:
        print("locust_fasthttp skipped: locust is not on PATH (--locust PATH)", file=sys.stderr)
    seconds = 1.0 if args.quick else 3.0
    pinned = pin_to_core(0)
    rows: list[dict[str, Any]] = []
    with mock_process() as url:
        for concurrency in args.concurrency or [50, 200]:
            for row in run(url, concurrency, seconds, warm=0.5, locust=locust):
                row["client_pinned"] = pinned
                emit(row)
                rows.append(row)
    columns = ["scenario", "concurrency", "requests_per_s", "ratio", "cpu_us_per_req"]
    table(rows, [*columns, "cpu_ratio", "p50_ms", "p99_ms", "ttft_p50_ms", "itl_p50_ms"])


if __name__ == "__main__":
    main()
