"""Scale-out on Redis Streams: 1 versus 2 worker processes, and the Redis hop versus a local
Runner, in one run.

Scenarios (a real redis-server on a free port; workers are ``examples/distributed_worker.py
work`` subprocesses; the producer is this process):

* ``local_echo``: the baseline, N echo events through an in-process `Runner`.
* ``redis_echo_1w`` / ``redis_echo_2w``: the same N events emitted to the stream (pipelined
  ``emit_many``) and run by 1 or 2 workers; timed from the first emit until the last result
  is stored. CPU per event counts every process: producer, workers and redis-server.
* ``hop_latency``: sequential ``call`` round trips, local `Runner` versus `RemoteRunner`
  with one idle worker: what one Redis hop adds to an event's latency.
* ``local_chat`` / ``redis_chat_1w`` / ``redis_chat_2w``: an LLM-bound agent (one chat
  completion against the mock LLM, ``agentcli mock-llm`` in its own process, with
  ``--latency-ms``), each worker running ``--pool`` agents at once. The issue's bar:
  2 workers give at least 1.6x the events/s of 1.

    python bench/distributed.py [--quick] [--events N] [--chat-events N] [--latency-ms 100]

Prints one JSON line per scenario on stdout and a table on stderr.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from _common import cpu_seconds, emit, table
from _redis import running_redis

import agentflow_trio as af
from agentflow_trio.config import Config, DistributedConfig, RunnerConfig
from agentflow_trio.distributed import RemoteRunner

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "examples" / "distributed_worker.py"
_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@contextmanager
def mock_llm(latency_ms: float) -> Iterator[tuple[str, int]]:
    """``agentcli mock-llm`` in its own process: (url, pid)."""
    args = [sys.executable, "-m", "agentflow_trio.cli", "mock-llm", "--port", "0"]
    args += ["--latency-ms", str(latency_ms)]
    process = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        if match is None:
            raise RuntimeError(f"mock-llm did not start: {line!r}")
        yield match[1], process.pid
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def workers(count: int, url: str, *extra: str) -> Iterator[list[int]]:
    """``count`` worker processes (default stream and group); stopped (SIGTERM) on exit."""
    procs = []
    for n in range(count):
        args = [sys.executable, str(WORKER), "work", "--redis", url, "--consumer", f"w{n}"]
        args += ["--results", "stream", *extra]
        procs.append(subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL))
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def _config(url: str, pool: int) -> Config:
    """Default names (each scenario starts from an empty Redis: FLUSHALL)."""
    d = DistributedConfig(redis_url=url, results="stream")
    runner = RunnerConfig(worker_pool_size=pool, max_concurrent_events=max(pool, 1000))
    return Config(distributed=d, runner=runner)


async def _echo(ctx: af.Context, event: af.Event) -> Any:
    return dict(event.data)


def _event(kind: str, n: int) -> af.Event:
    data = {"query": f"Question {n}: what is {n} + {n}?"} if kind == "chat" else {"n": n}
    return af.Event(kind, data)


# --------------------------------------------------------------------------- local


def local(kind: str, n: int, pool: int, llm_url: str | None, pids: list[int]) -> dict[str, Any]:
    """N events through an in-process Runner, ``pool`` at once."""

    async def main() -> float:
        config = Config(runner=RunnerConfig(worker_pool_size=pool, max_concurrent_events=1000))
        llm_cm: Any
        if llm_url is not None:
            from agentflow_trio.llm import open_llm_client

            llm = attrs.evolve(config.llm, base_url=llm_url + "/v1", api_key="mock-key")
            llm_cm = open_llm_client(attrs.evolve(config, llm=llm))
        else:
            llm_cm = _null()
        async with llm_cm as client:
            agents = {"echo": _echo, "chat": _chat}
            async with af.Runner(config, agents=agents, llm=client) as runner:
                t0 = time.perf_counter()
                handles = [await runner.emit(_event(kind, i)) for i in range(n)]
                for h in handles:
                    assert (await h.result()).succeeded
                return time.perf_counter() - t0

    return _measured(lambda: trio.run(main), n, pids)


class _null:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _chat(ctx: af.Context, event: af.Event) -> Any:
    reply = await ctx.llm.complete(str(event.data["query"]), max_tokens=32)
    return reply.text


# --------------------------------------------------------------------------- distributed


def remote(
    kind: str,
    n: int,
    n_workers: int,
    redis_url: str,
    redis_pid: int,
    pool: int,
    extra_pids: list[int],
    llm_url: str | None,
) -> dict[str, Any]:
    cfg = _config(redis_url, pool)
    extra = ["--pool", str(pool), "--max-in-flight", str(max(pool, 1000))]
    if llm_url is not None:
        extra += ["--llm-url", llm_url]

    async def ready() -> None:
        async with RemoteRunner(cfg) as remote:
            bus = remote._bus
            assert bus is not None
            await _wait_consumers(bus.client, cfg, n_workers)

    async def main() -> float:
        async with RemoteRunner(cfg) as remote:
            bus = remote._bus
            assert bus is not None
            events = [_event(kind, i) for i in range(n)]
            t0 = time.perf_counter()
            for start in range(0, n, 1000):
                await remote.emit_many(events[start : start + 1000])
            while int(await bus.client.xlen(cfg.distributed.results_stream)) < n:  # noqa: ASYNC110
                await trio.sleep(0.005)  # another process's progress: poll it
            elapsed = time.perf_counter() - t0
            stored = await bus.get_results([events[0].id, events[-1].id])
            assert all(p is not None for p in stored)
            return elapsed

    trio.run(_flush, cfg)
    with workers(n_workers, redis_url, *extra) as pids:
        trio.run(ready)  # started and idle: start-up is not measured
        return _measured(lambda: trio.run(main), n, [*pids, redis_pid, *extra_pids])


async def _flush(cfg: Config) -> None:
    """Start a scenario from an empty Redis (before its workers start)."""
    async with RemoteRunner(cfg) as remote:
        assert remote._bus is not None
        await remote._bus.client.flushall()


async def _wait_consumers(client: Any, cfg: Config, count: int) -> None:
    """Until ``count`` workers have joined the group (they are idle-polling)."""
    d = cfg.distributed
    while True:
        try:
            if len(await client.xinfo_consumers(d.stream, d.group)) >= count:
                return
        except Exception:  # the stream and group do not exist yet
            pass
        await trio.sleep(0.05)


def _measured(run: Any, n: int, pids: list[int]) -> dict[str, Any]:
    before = {pid: process_cpu(pid) for pid in pids}
    c0 = cpu_seconds()
    elapsed = run()
    cpu = cpu_seconds() - c0
    cpu += sum(process_cpu(pid) - t for pid, t in before.items())
    return {
        "events": n,
        "wall_s": round(elapsed, 3),
        "events_per_s": round(n / elapsed, 1),
        "cpu_us_per_event": round(cpu / n * 1e6, 1),
    }


# --------------------------------------------------------------------------- hop latency


def hop_latency(n: int, redis_url: str) -> dict[str, Any]:
    cfg = _config(redis_url, 50)

    async def local_calls() -> list[float]:
        out = []
        async with af.Runner(Config(), agents={"echo": _echo}) as runner:
            for i in range(n):
                t0 = time.perf_counter()
                await runner.call(_event("echo", i))
                out.append(time.perf_counter() - t0)
        return out

    async def remote_calls() -> list[float]:
        out = []
        async with RemoteRunner(cfg) as remote:
            bus = remote._bus
            assert bus is not None
            await _wait_consumers(bus.client, cfg, 1)
            for i in range(min(n, 100)):  # warm up: connections, scripts
                await remote.call(_event("echo", i))
            for i in range(n):
                t0 = time.perf_counter()
                assert (await remote.call(_event("echo", i))).succeeded
                out.append(time.perf_counter() - t0)
        return out

    local_times = trio.run(local_calls)
    trio.run(_flush, cfg)
    with workers(1, redis_url):
        remote_times = trio.run(remote_calls)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6, 1)

    return {
        "calls": n,
        "local_p50_us": pct(local_times, 0.5),
        "local_p99_us": pct(local_times, 0.99),
        "remote_p50_us": pct(remote_times, 0.5),
        "remote_p99_us": pct(remote_times, 0.99),
        "hop_p50_us": round(pct(remote_times, 0.5) - pct(local_times, 0.5), 1),
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--events", type=int, default=None, help="echo events per scenario")
    parser.add_argument("--chat-events", type=int, default=None, help="chat events per scenario")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="mock LLM latency")
    parser.add_argument("--pool", type=int, default=32, help="chat agents at once per worker")
    args = parser.parse_args()
    n = args.events or (4000 if args.quick else 20000)
    n_chat = args.chat_events or (1000 if args.quick else 3000)
    calls = 300 if args.quick else 2000
    rows: list[dict[str, Any]] = []

    def record(scenario: str, figures: dict[str, Any], **extra: Any) -> None:
        row = {"scenario": scenario, **figures, **extra}
        rows.append(row)
        emit(row)

    with ExitStack() as stack:
        redis = stack.enter_context(running_redis(Path(stack.enter_context(_tmpdir()))))
        assert redis.pid is not None
        base = local("echo", n, 50, None, [])
        record("local_echo", base)
        one = remote("echo", n, 1, redis.url, redis.pid, 50, [], None)
        record("redis_echo_1w", one, vs_local=_ratio(one, base))
        two = remote("echo", n, 2, redis.url, redis.pid, 50, [], None)
        record("redis_echo_2w", two, vs_local=_ratio(two, base), vs_1w=_ratio(two, one))
        hop = hop_latency(calls, redis.url)
        record(
            "hop_latency",
            hop,
            cpu_hop_us=round(one["cpu_us_per_event"] - base["cpu_us_per_event"], 1),
        )

        llm_url, mock_pid = stack.enter_context(mock_llm(args.latency_ms))
        setup = {"latency_ms": args.latency_ms, "pool_per_worker": args.pool}
        base_chat = local("chat", n_chat, args.pool, llm_url, [mock_pid])
        record("local_chat", base_chat, **setup)
        one_chat = remote("chat", n_chat, 1, redis.url, redis.pid, args.pool, [mock_pid], llm_url)
        record("redis_chat_1w", one_chat, vs_local=_ratio(one_chat, base_chat), **setup)
        two_chat = remote("chat", n_chat, 2, redis.url, redis.pid, args.pool, [mock_pid], llm_url)
        scale = _ratio(two_chat, one_chat)
        record("redis_chat_2w", two_chat, vs_1w=scale, meets_1_6x=scale >= 1.6, **setup)

    table(
        rows,
        ["scenario", "events", "events_per_s", "cpu_us_per_event", "vs_local", "vs_1w",
         "local_p50_us", "remote_p50_us", "hop_p50_us", "cpu_hop_us"],
    )  # fmt: skip


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    return round(a["events_per_s"] / b["events_per_s"], 2)


@contextmanager
def _tmpdir() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as d:
        yield d


if __name__ == "__main__":
    main()
