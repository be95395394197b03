"""Requests/s of ``agentcli serve --workers 2`` against ``--workers 1`` (the baseline), and
the CPU each process group spends per request, which says how high the ratio can go here.

Three process groups share the machine's cores: the mock LLM in its own process; the
server under test (``agentcli serve --port 0 --workers N``, its model calls going to that
mock through ``--config``); and this process, the load generator: ``c`` keep-alive
sockets sending ``POST /v1/events {"type": "chat", ...}`` back to back for ``--seconds``.
Nothing is pinned: the OS spreads the processes over the cores, as in a deployment.

The mock and the load generator are made as cheap as Python allows, so that the cores go
to the server: both are one ``epoll`` loop over non-blocking sockets, no event loop
library, no HTTP library; the mock answers every request with one precomputed OpenAI chat
completion (``--mock agentcli`` uses ``agentcli mock-llm`` instead, the project's full
mock), the load generator sends one pre-encoded request and reads the status line and
Content-Length of each answer.

Each ``--workers`` value runs ``--repeat`` rounds (alternating the order, so drift cancels
out; the median is kept); a round starts a fresh server, warms it up, then measures. Over
the measured window it reads the CPU seconds (user + system) of every process of each
group (``/proc/PID/stat``: the serve parent and its children; the mock; this process).

Prints one JSON line per scenario: requests/s, CPU microseconds per request of the serve
processes, the load generator and the mock, ``serve_cores`` (serve CPU seconds per wall
second: near 1.0 for ``--workers 1`` means it is serve-bound) and ``ratio_bound``: with
``cores`` cores shared by the three groups, ``--workers 2`` can at most do ``cores /
(serve + loadgen + mock)`` requests per CPU second while a serve-bound ``--workers 1``
does ``1 / serve``, so ``rps(2) / rps(1) <= cores * serve / (serve + loadgen + mock)``
(the per-request figures of the ``--workers 1`` round). Then a ``ratio`` line: the
measured ratio, the bound and the issue's target (1.7x on a 2-core machine). A machine
running other work gives less; the figures are reported, not asserted.

    python bench/serve_workers.py            # 5 s per round, 3 rounds each
    python bench/serve_workers.py --quick    # 2 s, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import cpu_seconds, emit, stop_child, table  # noqa: E402

BODY = {"type": "chat", "data": {"message": "hello"}}
CONCURRENCY = 200
LISTENING = re.compile(r"listening on (http://\S+)")
_TICK = os.sysconf("SC_CLK_TCK")
_REPLY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "mock-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hello from the bench mock"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
    }
)
MOCK_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
    % (len(_REPLY), _REPLY)
)


# -- the cheap mock: one epoll loop, one precomputed answer ------------------------------


def _requests_in(buffer: bytearray) -> int:
    """Drop every complete request from ``buffer``; how many there were."""
    count = 0
    while (end := buffer.find(b"\r\n\r\n")) >= 0:
        head = bytes(buffer[:end]).lower()
        at = head.find(b"content-length:")
        length = 0 if at < 0 else int(head[at + 15 :].split(b"\r\n", 1)[0])
        if len(buffer) < end + 4 + length:
            break
        del buffer[: end + 4 + length]
        count += 1
    return count


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent < len(data):  # rare on loopback: finish blocking
        sock.setblocking(True)
        sock.sendall(data[sent:])
        sock.setblocking(False)


def run_mock() -> None:
    """Answer every HTTP request on a free loopback port with `MOCK_RESPONSE`, until
    SIGTERM; prints ``listening on URL`` first."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    print(f"bench mock listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ, bytearray())
                continue
            conn, buffer = key.fileobj, key.data
            assert isinstance(conn, socket.socket)
            try:
                data = conn.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                selector.unregister(conn)
                conn.close()
                continue
            buffer += data
            if count := _requests_in(buffer):
                _send(conn, MOCK_RESPONSE * count)


# -- the cheap load generator ----------------------------------------------------------


class _Conn:
    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()


def _responses_in(buffer: bytearray) -> int:
    """Drop every complete response from ``buffer`` (each must be a 200 with a
    Content-Length); how many there were."""
    count = 0
    while (end := buffer.find(b"\r\n\r\n")) >= 0:
        head = bytes(buffer[:end]).lower()
        if head[9:12] != b"200":
            raise RuntimeError(f"a request failed: {head[:200]!r}")
        at = head.find(b"content-length:")
        length = int(head[at + 15 :].split(b"\r\n", 1)[0])
        if len(buffer) < end + 4 + length:
            break
        del buffer[: end + 4 + length]
        count += 1
    return count


def _request(host: str, port: int) -> bytes:
    body = orjson.dumps(BODY)
    head = (
        f"POST /v1/events HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def load(url: str, concurrency: int, seconds: float) -> tuple[int, float]:
    """``concurrency`` keep-alive connections sending back to back for ``seconds``:
    (requests answered, seconds from the first send to the last answer)."""
    host, port_text = url.removeprefix("http://").rsplit(":", 1)
    port = int(port_text)
    request = _request(host, port)
    selector = selectors.DefaultSelector()
    for _ in range(concurrency):
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, _Conn(sock))
    count, active = 0, concurrency
    t0 = last = time.perf_counter()
    stop_at = t0 + seconds
    for key in list(selector.get_map().values()):
        _send(key.data.sock, request)
    while active:
        for key, _ in selector.select():
            conn = key.data
            data = conn.sock.recv(65536)
            if not data:
                raise RuntimeError("the server closed a connection")
            conn.buffer += data
            if done := _responses_in(conn.buffer):
                count += done
                last = time.perf_counter()
                if last < stop_at:
                    _send(conn.sock, request)
                else:
                    selector.unregister(conn.sock)
                    conn.sock.close()
                    active -= 1
    return count, last - t0


def _pids(url: str, tries: int = 50) -> set[int]:
    """The serving processes ``/healthz`` names over fresh connections."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = f"GET /healthz HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n\r\n"
    seen: set[int] = set()
    for _ in range(tries):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(request.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        seen.add(int(json.loads(data.split(b"\r\n\r\n", 1)[1])["pid"]))
    return seen


# -- processes and their CPU -----------------------------------------------------------


def _cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/PID/task/*/children``)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(p) for p in f.read().split())
            except OSError:
                pass
    return found


@contextmanager
def _process(argv: list[str]) -> Iterator[tuple[str, int]]:
    """Run ``argv`` until it prints its ``listening on URL`` line; yield (URL, pid); SIGTERM."""
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert child.stdout is not None
        for line in child.stdout:
            match = LISTENING.search(line)
            if match:
                break
        else:
            raise RuntimeError(f"{' '.join(argv[:5])} did not start")
        yield match.group(1), child.pid
    finally:
        stop_child(child, timeout=30)


def _round(workers: int, config: str, seconds: float, mock_pid: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "agentflow_trio.cli", "serve", "--port", "0"]
    argv += ["--workers", str(workers), "--config", config, "--backlog", "4096"]
    with _process(argv) as (url, pid):
        load(url, CONCURRENCY, min(1.0, seconds))  # warm-up
        serve_pids = _tree(pid)
        before = sum(_cpu(p) for p in serve_pids), _cpu(mock_pid), cpu_seconds()
        count, wall = load(url, CONCURRENCY, seconds)
        after = sum(_cpu(p) for p in serve_pids), _cpu(mock_pid), cpu_seconds()
        serve, mock, loadgen = (b - a for a, b in zip(before, after, strict=True))
        return {
            "rps": count / wall,
            "serve_us": serve / count * 1e6,
            "loadgen_us": loadgen / count * 1e6,
            "mock_us": mock / count * 1e6,
            "serve_cores": serve / wall,
            "pids": _pids(url),
        }


def _row(workers: int, rounds: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    serve, loadgen, mock = median("serve_us"), median("loadgen_us"), median("mock_us")
    cores = os.cpu_count() or 1
    return {
        "scenario": f"serve_workers_{workers}",
        "concurrency": CONCURRENCY,
        "seconds": seconds,
        "rounds": len(rounds),
        "requests_per_s": round(median("rps"), 1),
        "serve_cpu_us_per_req": round(serve, 1),
        "loadgen_cpu_us_per_req": round(loadgen, 1),
        "mock_cpu_us_per_req": round(mock, 1),
        "serve_cores": round(median("serve_cores"), 2),
        "ratio_bound": round(cores * serve / (serve + loadgen + mock), 2),
        "serving_pids": len(rounds[-1]["pids"]),
        "cores": cores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 s, 1 round")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (median kept)")
    parser.add_argument(
        "--mock",
        choices=["bench", "agentcli"],
        default="bench",
        help="the model server: this script's epoll mock (default) or agentcli mock-llm",
    )
    parser.add_argument("--run-mock", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_mock:
        return run_mock()
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.mock == "bench":
        mock = [sys.executable, str(Path(__file__).resolve()), "--run-mock"]
    else:
        mock = [sys.executable, "-m", "agentflow_trio.cli", "mock-llm", "--port", "0"]
    rows: list[dict[str, Any]] = []
    with _process(mock) as (mock_url, mock_pid), tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "agentflow.toml"
        config.write_text(
            f'[llm]\nbase_url = "{mock_url}/v1"\napi_key = "bench"\n'
            '[monitoring]\nenable_metrics = false\nlog_level = "warning"\n'
            "[runner]\nmax_concurrent_events = 10000\nevent_buffer_size = 10000\n"
            "worker_pool_size = 400\n"
        )
        rounds: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        for index in range(repeat):
            for workers in (1, 2) if index % 2 == 0 else (2, 1):
                rounds[workers].append(_round(workers, str(config), seconds, mock_pid))
        for workers in (1, 2):
            rows.append(_row(workers, rounds[workers], seconds))
            emit({**rows[-1], "mock": args.mock})
    ratio = rows[1]["requests_per_s"] / rows[0]["requests_per_s"]
    summary = {
        "scenario": "ratio_workers_2_over_1",
        "ratio": round(ratio, 2),
        "bound": rows[0]["ratio_bound"],
        "target": 1.7,
        "serve_bound_at_1": rows[0]["serve_cores"] >= 0.9,
    }
    emit(summary)
    columns = ["scenario", "requests_per_s", "serve_cpu_us_per_req", "loadgen_cpu_us_per_req"]
    columns += ["mock_cpu_us_per_req", "serve_cores", "ratio_bound", "ratio"]
    table([*rows, summary], columns)


if __name__ == "__main__":
    main()
