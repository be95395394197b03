"""Helpers shared by the bench scripts: CPU time, pinning, a call driver, JSON lines, a table."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httptools
import trio

ROOT = Path(__file__).resolve().parents[1]
Call = Callable[[int], Awaitable[Any]]
"""One benchmarked call; its argument keeps the request unique."""


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pin_to_core(core: int = 0) -> bool:
    """Pin this process to one core when the machine has more than one."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {core})
        return True
    return False


def measure(fn: Callable[[], int]) -> dict[str, float]:
    """Run ``fn`` (returns the number of operations); wall, CPU and per-op figures."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    ops = fn()
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {
        "ops": ops,
        "wall_s": round(wall, 4),
        "ops_per_s": round(ops / wall, 1),
        "cpu_us_per_op": round(cpu / ops * 1e6, 3),
    }


_OFFSETS: Iterator[int] = itertools.count(0, 1_000_000)


async def drive(call: Call, calls: int, concurrency: int) -> dict[str, float]:
    """``calls`` calls from ``concurrency`` tasks; wall and CPU over exactly that window.
    The calls' arguments are ``offset + i``, a fresh offset per run, so that no two
    requests of a script are the same (a cache would not see them again)."""
    counter = itertools.count()
    offset = next(_OFFSETS)

    async def worker() -> None:
        while (i := next(counter)) < calls:
            await call(offset + i)

    c0, t0 = cpu_seconds(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"calls_per_s": calls / wall, "cpu_us_per_call": cpu / calls * 1e6}


async def sample(
    callers: Mapping[str, Call],
    calls: int,
    concurrency: int,
    repeat: int,
    *,
    warmup: int,
    alternate: bool = False,
) -> dict[str, list[dict[str, float]]]:
    """Each caller's `drive` figures in ``repeat`` rounds of ``calls`` calls, after a
    warm-up of ``warmup`` calls each (connections, caches, code paths). ``alternate``:
    every other round runs the callers in reverse order, so that drift cancels out."""
    for call in callers.values():
        await drive(call, warmup, concurrency)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in callers}
    names = list(callers)
    for index in range(repeat):
        for name in names if not alternate or index % 2 == 0 else reversed(names):
            samples[name].append(await drive(callers[name], calls, concurrency))
    return samples


def scenario_row(name: str, runs: Iterable[Mapping[str, float]], **fields: Any) -> dict[str, Any]:
    """A scenario's row: its ``name``, ``fields`` (concurrency, calls, ...), then the median
    calls per second and CPU microseconds per call of its `drive` runs."""
    runs = list(runs)
    return {
        "scenario": name,
        **fields,
        "calls_per_s": round(statistics.median(r["calls_per_s"] for r in runs), 1),
        "cpu_us_per_call": round(statistics.median(r["cpu_us_per_call"] for r in runs), 1),
    }


CALL_COLUMNS = ["scenario", "concurrency", "calls_per_s", "cpu_us_per_call", "cpu_ratio", "target"]
"""The table of a calls benchmark (`scenario_row` rows and their ratio rows)."""


def parse_call_args(
    parser: argparse.ArgumentParser, *, quick: tuple[int, int], full: tuple[int, int]
) -> tuple[argparse.Namespace, int, int]:
    """Add ``--quick``, ``--calls`` and ``--repeat`` to ``parser`` and parse the command
    line: the arguments, the calls per scenario and the repeats (by default ``full`` or,
    with ``--quick``, ``quick``: each a ``(calls, repeats)`` pair)."""
    repeats = "repeat" if quick[1] == 1 else "repeats"
    parser.add_argument(
        "--quick", action="store_true", help=f"{quick[0]} calls, {quick[1]} {repeats}"
    )
    parser.add_argument("--calls", type=int, default=None, help="calls per scenario")
    parser.add_argument("--repeat", type=int, default=None, help="repeats (median kept)")
    args = parser.parse_args()
    calls, repeat = quick if args.quick else full
    return args, args.calls or calls, args.repeat or repeat


def emit(row: Mapping[str, Any]) -> None:
    """One JSON line per scenario on stdout."""
    print(json.dumps(row, sort_keys=False), flush=True)


def table(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> None:
    """A plain human table on stderr, so stdout stays JSON lines."""
    rows = list(rows)
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    out = sys.stderr
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=out)
    for r in rows:
        cells = (str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True))
        print("  ".join(cells), file=out)


def stop_child(child: subprocess.Popen[str], timeout: float) -> None:
    """SIGTERM ``child`` and wait up to ``timeout`` seconds; past that, SIGKILL and reap it."""
    child.terminate()
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@contextmanager
def mock_process(latency_ms: float = 0.0, *, command: Sequence[str] | None = None) -> Iterator[str]:
    """Start the mock LLM in a child process pinned to core 1; yield its URL; stop it by PID.

    ``command`` runs instead of ``agentcli mock-llm`` (``latency_ms`` then unused), for a
    mock the CLI cannot configure; it must print the same ``listening on URL`` line.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if command is None:
        command = [sys.executable, "-m", "agentflow_trio.cli", "mock-llm", "--port", "0"]
        command += ["--latency-ms", str(latency_ms)]
        if (os.cpu_count() or 1) < 2:  # PreciseClock polls: on one core it would slow the client
            command.append("--coarse-timers")
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if match is None:
            raise RuntimeError(f"mock LLM did not start: {line!r}")
        if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(child.pid, {1})
        yield match.group(1)
    finally:
        stop_child(child, timeout=5)


async def connect_tcp(host: str, port: int) -> trio.socket.SocketType:
    """A raw trio socket connected to ``host:port`` with Nagle off (closed if that fails)."""
    sock = trio.socket.socket()
    try:
        await sock.connect((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class RawHTTPConnection:
    """A benchmark floor: one keep-alive HTTP/1.1 connection on a raw trio socket, the
    request pre-encoded by the caller, responses framed by the ``httptools`` C parser and
    otherwise ignored (no headers, no body kept)."""

    __slots__ = ("_done", "_parser", "_sock")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._done = False
        self._parser = httptools.HttpResponseParser(self)

    @classmethod
    async def open(cls, host: str, port: int) -> RawHTTPConnection:
        return cls(await connect_tcp(host, port))

    def on_message_complete(self) -> None:  # httptools callback
        self._done = True

    async def round_trip(self, request: bytes) -> int:
        """Send ``request``, read one whole response; its status code."""
        view = memoryview(request)
        while view:
            view = view[await self._sock.send(view) :]
        self._done = False
        while not self._done:
            data = await self._sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._parser.feed_data(data)
        return int(self._parser.get_status_code())

    def close(self) -> None:
        self._sock.close()
