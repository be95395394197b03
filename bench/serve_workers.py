"""Requests/s of ``agentcli serve --workers 2`` against ``--workers 1`` (the baseline).

Three kinds of process: the mock LLM (``agentcli mock-llm --port 0``) in its own; the
server under test (``agentcli serve --port 0 --workers N``, its model calls going to that
mock through ``--config``); and this one, the load generator: ``c`` keep-alive raw trio
sockets (pre-encoded request, ``httptools`` parser: the lightest client there is) sending
``POST /v1/events {"type": "chat", ...}`` back to back for ``--seconds``. Nothing is
pinned: the OS spreads the processes over the cores, as in a deployment.

Each ``--workers`` value runs ``--repeat`` rounds (alternating the order, so drift cancels
out; the median is kept); a round starts a fresh server, warms it up, then measures.
Prints one JSON line per scenario (requests/s, the serving pids that answered) and a
``ratio`` line: ``--workers 2``'s requests/s over ``--workers 1``'s, measured here. The
issue asks for 1.7x on a 2-core machine; the machine's cores are also running the mock and
this load generator, so the figure is reported, not asserted.

    python bench/serve_workers.py            # 5 s per round, 3 rounds each
    python bench/serve_workers.py --quick    # 2 s, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import RawHTTPConnection, emit, table  # noqa: E402

BODY = {"type": "chat", "data": {"message": "hello"}}
CONCURRENCY = 200
LISTENING = re.compile(r"listening on (http://\S+)")


@contextmanager
def _process(argv: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``argv`` until it prints its ``listening on URL`` line; yield the URL; SIGTERM."""
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env or dict(os.environ)
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            match = LISTENING.search(line)
            if match:
                break
        else:
            raise RuntimeError(f"{argv[3]} did not start")
        yield match.group(1)
    finally:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _request(host: str, port: int) -> bytes:
    body = orjson.dumps(BODY)
    head = (
        f"POST /v1/events HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _load(url: str, concurrency: int, seconds: float) -> float:
    """Requests/s of ``concurrency`` keep-alive connections sending back to back."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = _request(host, int(port))
    count = 0
    t0 = trio.current_time()
    stop_at = t0 + seconds
    last = t0

    async def connection() -> None:
        nonlocal count, last
        conn = await RawHTTPConnection.open(host, int(port))
        try:
            while trio.current_time() < stop_at:
                if await conn.round_trip(request) != 200:
                    raise RuntimeError("a request failed")
                count += 1
                last = trio.current_time()
        finally:
            conn.close()

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(connection)
    return count / (last - t0)


async def _pids(url: str, tries: int = 50) -> set[int]:
    """The serving processes ``/healthz`` names over fresh connections."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = f"GET /healthz HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n\r\n"
    seen: set[int] = set()
    for _ in range(tries):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request.encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        seen.add(int(json.loads(data.split(b"\r\n\r\n", 1)[1])["pid"]))
    return seen


def _round(workers: int, config: str, seconds: float) -> tuple[float, set[int]]:
    argv = [sys.executable, "-m", "agentflow_trio.cli", "serve", "--port", "0"]
    argv += ["--workers", str(workers), "--config", config, "--backlog", "4096"]
    with _process(argv) as url:
        trio.run(_load, url, CONCURRENCY, min(1.0, seconds))  # warm-up
        rps = trio.run(_load, url, CONCURRENCY, seconds)
        return rps, trio.run(_pids, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 s, 1 round")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (median kept)")
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    repeat = args.repeat or (1 if args.quick else 3)
    mock = [sys.executable, "-m", "agentflow_trio.cli", "mock-llm", "--port", "0"]
    rows: list[dict[str, Any]] = []
    with _process(mock) as mock_url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "agentflow.toml"
        config.write_text(
            f'[llm]\nbase_url = "{mock_url}/v1"\napi_key = "bench"\n'
            '[monitoring]\nenable_metrics = false\nlog_level = "warning"\n'
            "[runner]\nmax_concurrent_events = 10000\nevent_buffer_size = 10000\n"
            "worker_pool_size = 400\n"
        )
        figures: dict[int, list[float]] = {1: [], 2: []}
        pids: dict[int, set[int]] = {1: set(), 2: set()}
        for index in range(repeat):
            for workers in (1, 2) if index % 2 == 0 else (2, 1):
                rps, seen = _round(workers, str(config), seconds)
                figures[workers].append(rps)
                pids[workers] = seen
        for workers in (1, 2):
            row = {
                "scenario": f"serve_workers_{workers}",
                "concurrency": CONCURRENCY,
                "seconds": seconds,
                "rounds": repeat,
                "requests_per_s": round(statistics.median(figures[workers]), 1),
                "serving_pids": len(pids[workers]),
                "cores": os.cpu_count(),
            }
            rows.append(row)
            emit(row)
    ratio = rows[1]["requests_per_s"] / rows[0]["requests_per_s"]
    summary = {"scenario": "ratio_workers_2_over_1", "ratio": round(ratio, 2), "target": 1.7}
    emit(summary)
    table([*rows, summary], ["scenario", "concurrency", "requests_per_s", "serving_pids", "ratio"])


if __name__ == "__main__":
    main()
