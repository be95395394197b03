"""How many requests per second the mock LLM serves on one core, against a bare trio baseline.

Each scenario starts a fresh server in a child process pinned to one core (when the machine
has two or more) and drives it from this process, pinned to another core, with ``c``
keep-alive connections (raw trio sockets, httptools response framing) for a fixed duration
after a short warm-up. The baseline is a minimal trio HTTP responder in the same harness:
httptools framing only, and one static pre-built response of the same shape and size as
the mock's chat reply, no JSON work. ``ratio`` is the scenario's rate over the baseline's.

CPU: ``client_cpu_us_per_req`` from ``resource.getrusage(RUSAGE_SELF)``, the server's from
``/proc/<pid>/stat``, both over the measured window; ``server_capacity_rps`` is requests per
server CPU second, the rate one free core would sustain (robust when other processes share
the cores, which ``server_cpu_util`` < 1 reveals). ``stats_match`` checks the mock's own
``GET /stats`` request count against every request this harness completed. If ``wrk`` is
on PATH the baseline and the chat scenario are also measured with ``wrk -t1``.

    python bench/mock_llm.py            # 10 s per scenario
    python bench/mock_llm.py --quick    # 2 s per scenario
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httptools
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentflow_trio import _json  # noqa: E402
from agentflow_trio.mockllm import MockLLM, MockLLMConfig  # noqa: E402
from bench._common import RawHTTPConnection  # noqa: E402

TARGET_RPS = 15_000
CHAT_BODY = json.dumps(
    {"model": "mock-gpt", "messages": [{"role": "user", "content": "Say hello to the benchmark"}]}
).encode()
STREAM_BODY = json.dumps(
    {
        "model": "mock-gpt",
        "stream": True,
        "messages": [{"role": "user", "content": "Say hello to the benchmark"}],
    }
).encode()
EMBED_BODY = json.dumps({"model": "mock-embed", "input": "hello benchmark"}).encode()


def http_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


SCENARIOS: dict[str, tuple[str, bytes]] = {
    "baseline_static": ("baseline", http_request("/v1/chat/completions", CHAT_BODY)),
    "mock_chat": ("mock", http_request("/v1/chat/completions", CHAT_BODY)),
    "mock_chat_stream": ("mock", http_request("/v1/chat/completions", STREAM_BODY)),
    "mock_embeddings": ("mock", http_request("/v1/embeddings", EMBED_BODY)),
}


# -- the servers (child processes) ------------------------------------------------------


def static_chat_response() -> bytes:
    """A chat completion exactly as big as the mock's, pre-built once."""
    body = _json.dumps(
        {
            "id": "chatcmpl-mock1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "mock-gpt",
            "system_fingerprint": "fp_mock",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Hello from the mock LLM.",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
        }
    )
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Framing:
    """httptools callbacks that only count complete messages."""

    __slots__ = ("complete",)

    def __init__(self) -> None:
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1


async def serve_baseline(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    response = static_chat_response()

    async def handler(stream: trio.SocketStream) -> None:
        framing = _Framing()
        parser = httptools.HttpRequestParser(framing)
        try:
            while data := await stream.receive_some(65536):
                parser.feed_data(data)
                if framing.complete:
                    await stream.send_all(response * framing.complete)
                    framing.complete = 0
        except (trio.BrokenResourceError, httptools.HttpParserError):
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


async def serve_mock(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    await MockLLM(MockLLMConfig()).serve(task_status=task_status)


def child_main(kind: str, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_baseline if kind == "baseline" else serve_mock)
            print(port, flush=True)

    trio.run(run)


class Server:
    """A server child process: started pinned, stopped by its own pid."""

    def __init__(self, kind: str, cpu: int | None) -> None:
        command = [sys.executable, __file__, "--serve", kind]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# -- the load generator -----------------------------------------------------------------


class Load:
    def __init__(self) -> None:
        self.measuring = False
        self.total = 0
        self.ok = 0
        self.failed = 0
        self.latencies: list[float] = []


async def connection(port: int, request: bytes, load: Load, stop_at: float) -> None:
    conn = await RawHTTPConnection.open("127.0.0.1", port)
    try:
        clock = time.perf_counter
        while trio.current_time() < stop_at:
            start = clock()
            status = await conn.round_trip(request)
            load.total += 1
            if load.measuring:
                load.latencies.append(clock() - start)
                if status == 200:
                    load.ok += 1
                else:
                    load.failed += 1
    finally:
        conn.close()


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def drive(
    server: Server, request: bytes, connections: int, warmup: float, duration: float
) -> dict[str, Any]:
    load = Load()
    async with trio.open_nursery() as nursery:
        stop_at = trio.current_time() + warmup + duration
        for _ in range(connections):
            nursery.start_soon(connection, server.port, request, load, stop_at)
        await trio.sleep(warmup)
        load.measuring = True
        wall0, cpu0, server0 = time.perf_counter(), cpu_self(), server.cpu_seconds()
        await trio.sleep(duration)
        load.measuring = False
        wall = time.perf_counter() - wall0
        client_cpu, server_cpu = cpu_self() - cpu0, server.cpu_seconds() - server0
    done = load.ok + load.failed
    return {
        "rps": round(done / wall, 1),
        "requests": done,
        "failed": load.failed,
        "p50_ms": round(percentile(load.latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(load.latencies, 0.99) * 1000, 3),
        "server_cpu_us_per_req": round(server_cpu / max(done, 1) * 1e6, 1),
        "server_cpu_util": round(server_cpu / wall, 2),
        "server_capacity_rps": round(done / server_cpu) if server_cpu else None,
        "client_cpu_us_per_req": round(client_cpu / max(done, 1) * 1e6, 1),
        "client_cpu_util": round(client_cpu / wall, 2),
        "total_sent": load.total,
    }


async def mock_request_count(port: int) -> int:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return int(json.loads(data.partition(b"\r\n\r\n")[2])["requests"])


def run_scenario(
    name: str, args: argparse.Namespace, cpus: tuple[int | None, set[int] | None]
) -> dict[str, Any]:
    kind, request = SCENARIOS[name]
    server = Server(kind, cpus[0])
    try:
        figures = trio.run(drive, server, request, args.connections, args.warmup, args.duration)
        if kind == "mock":
            counted = trio.run(mock_request_count, server.port)
            figures["stats_match"] = counted == figures["total_sent"]
    finally:
        server.stop()
    return {
        "scenario": name,
        "connections": args.connections,
        "duration_s": args.duration,
        **figures,
    }


# -- wrk (optional) ---------------------------------------------------------------------


def run_wrk(
    name: str,
    kind: str,
    request_body: bytes,
    path: str,
    args: argparse.Namespace,
    cpus: tuple[int | None, set[int] | None],
) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"scenario": name, "skipped": "wrk is not on PATH"}
    server = Server(kind, cpus[0])
    script = (
        'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\n'
        f"wrk.body = {json.dumps(request_body.decode())}\n"
    )
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
            lua.write(script)
        command = [
            wrk,
            "-t1",
            f"-c{args.connections}",
            f"-d{max(1, round(args.duration))}s",
            "-s",
            lua.name,
        ]
        command.append(f"http://127.0.0.1:{server.port}{path}")
        output = subprocess.run(
            command, capture_output=True, text=True, timeout=args.duration + 30
        ).stdout
    finally:
        server.stop()
        os.unlink(lua.name)
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    rps = float(match.group(1)) if match else 0.0
    return {
        "scenario": name,
        "connections": args.connections,
        "duration_s": args.duration,
        "rps": rps,
    }


# -- main -------------------------------------------------------------------------------


def pin() -> tuple[int | None, set[int] | None]:
    """(server core, client cores): one core each when there are two or more."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    os.sched_setaffinity(0, {available[1]})
    return available[0], {available[1]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 s per scenario")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", "-c", type=int, default=50)
    parser.add_argument("--serve", choices=["mock", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        child_main(args.serve, args.cpu)
        return
    if args.quick:
        args.duration, args.warmup = 2.0, 0.5
    cpus = pin()
    header = {
        "scenario": "setup",
        "python": sys.version.split()[0],
        "json": _json.BACKEND,
        "server_cpu": cpus[0],
        "client_cpus": sorted(cpus[1]) if cpus[1] else None,
        "pinned": cpus[0] is not None,
    }
    print(json.dumps(header), flush=True)
    rows: list[dict[str, Any]] = []
    for name in SCENARIOS:
        row = run_scenario(name, args, cpus)
        baseline = rows[0]["rps"] if rows else row["rps"]
        row["ratio"] = round(row["rps"] / baseline, 3) if baseline else None
        if name == "mock_chat":
            row["target_rps"] = TARGET_RPS
            row["meets_target"] = row["rps"] >= TARGET_RPS
        rows.append(row)
        print(json.dumps(row), flush=True)
    wrk_rows = [
        run_wrk("wrk_baseline_static", "baseline", CHAT_BODY, "/v1/chat/completions", args, cpus),
        run_wrk("wrk_mock_chat", "mock", CHAT_BODY, "/v1/chat/completions", args, cpus),
    ]
    if "rps" in wrk_rows[0] and wrk_rows[0]["rps"]:
        for row in wrk_rows:
            row["ratio"] = round(row["rps"] / wrk_rows[0]["rps"], 3)
    for row in wrk_rows:
        print(json.dumps(row), flush=True)
    print()
    columns = ("req/s", "ratio", "p50 ms", "p99 ms", "srv us/req", "srv cap/s", "srv cpu")
    print(f"{'scenario':<22}" + "".join(f"{column:>11}" for column in columns))
    for row in rows + wrk_rows:
        if "skipped" in row:
            print(f"{row['scenario']:<22}  skipped: {row['skipped']}")
            continue
        print(
            f"{row['scenario']:<22}{row['rps']:>11.0f}{row.get('ratio') or 0:>11.2f}"
            f"{row.get('p50_ms', 0):>11.2f}{row.get('p99_ms', 0):>11.2f}"
            f"{row.get('server_cpu_us_per_req', 0):>11.1f}"
            f"{row.get('server_capacity_rps') or 0:>11.0f}"
            f"{row.get('server_cpu_util', 0):>11.2f}"
        )


if __name__ == "__main__":
    main()
