"""Tools: parallel fan-out against sequential calls, streaming throughput against a bare
memory channel, and the registry's per-call overhead against a direct call, in one run.

- fanout: N tools that each sleep ``latency`` (simulated I/O), run with ``call_many`` vs
  one after another through the same registry, and vs a bare trio nursery (the floor).
- streaming: items through ``open_tool_stream`` (per-item ``sink.send`` and ready batches
  with ``send_batch``) vs a bare ``trio.open_memory_channel`` moving the same batches,
  with the same consumer loop and buffer.
- call_overhead: a trivial tool through ``ToolRegistry.call`` (lookup, jsonschema
  validation, timeout scope, result) vs awaiting the function directly.

    python bench/tools.py [--quick] [--items N] [--repeat R]

Prints one JSON line per scenario on stdout and a table on stderr. Single process, pinned
to one core when the machine has more.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(__file__))

from _common import cpu_seconds, emit, pin_to_core, table

from agentflow_trio.tools import StreamSink, ToolRegistry, open_tool_stream, tool

BATCH = 100
BUFFER = 8


# ----------------------------------------------------------------------------- fan-out


def _fanout_registry(latency: float) -> ToolRegistry:
    @tool
    async def io_tool(i: int) -> dict[str, Any]:
        """Simulated I/O."""
        await trio.sleep(latency)
        return {"i": i}

    return ToolRegistry([io_tool])


def _wall(fn: Callable[[], Awaitable[Any]]) -> float:
    async def main() -> float:
        start = time.perf_counter()
        await fn()
        return time.perf_counter() - start

    return trio.run(main)


def fanout(n: int, latency: float, repeat: int, max_parallel: int | None) -> dict[str, Any]:
    registry = _fanout_registry(latency)
    calls = [("io_tool", {"i": i}) for i in range(n)]

    async def parallel() -> None:
        results = await registry.call_many(None, calls, max_parallel=max_parallel)
        assert all(r.ok for r in results)

    measured = min(n, 20)  # sequential time is linear in n: measure 20 calls, scale

    async def sequential() -> None:
        for name, args in calls[:measured]:
            assert (await registry.call(None, name, args)).ok

    async def bare() -> None:
        limiter = trio.CapacityLimiter(max_parallel or n)

        async def one() -> None:
            async with limiter:
                await trio.sleep(latency)

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)

    par = statistics.median(_wall(parallel) for _ in range(repeat))
    bare_wall = statistics.median(_wall(bare) for _ in range(repeat))
    seq = _wall(sequential) * n / measured
    rounds = -(-n // (max_parallel or n))
    return {
        "scenario": f"fanout/{n}x{int(latency * 1000)}ms/cap={max_parallel or 'none'}",
        "tools": n,
        "latency_ms": latency * 1000,
        "ideal_ms": round(rounds * latency * 1000, 1),
        "fanout_ms": round(par * 1000, 2),
        "bare_nursery_ms": round(bare_wall * 1000, 2),
        "sequential_ms": round(seq * 1000, 2),
        "sequential_measured_calls": measured,
        "speedup": round(seq / par, 2),
        "overhead_vs_bare_ms": round((par - bare_wall) * 1000, 2),
    }


# ----------------------------------------------------------------------------- streaming


async def _consume(batches: Any) -> int:
    n = 0
    async for batch in batches:
        for _item in batch:
            n += 1
    return n


def _measure_stream(run: Callable[[], Awaitable[int]], repeat: int) -> tuple[float, float, int]:
    """Best items/s of ``repeat`` runs, and CPU microseconds per item of that run."""
    best: tuple[float, float, int] = (0.0, 0.0, 0)
    for _ in range(repeat):
        gc.collect()
        c0, t0 = cpu_seconds(), time.perf_counter()
        items = trio.run(run)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        if items / wall > best[0]:
            best = (items / wall, cpu / items * 1e6, items)
    return best


def streaming(items: int, repeat: int) -> list[dict[str, Any]]:
    ready = [list(range(i, min(i + BATCH, items))) for i in range(0, items, BATCH)]

    async def produce_items(sink: StreamSink[int]) -> None:
        send = sink.send
        for i in range(items):
            await send(i)

    async def produce_batches(sink: StreamSink[int]) -> None:
        for batch in ready:
            await sink.send_batch(batch)

    async def tool_items() -> int:
        async with open_tool_stream(produce_items, batch_size=BATCH, buffer=BUFFER) as batches:
            return await _consume(batches)

    async def tool_batches() -> int:
        async with open_tool_stream(produce_batches, batch_size=BATCH, buffer=BUFFER) as batches:
            return await _consume(batches)

    async def bare(per_item: bool) -> int:
        send, receive = trio.open_memory_channel[list[int]](BUFFER)

        async def producer() -> None:
            with send:
                if not per_item:
                    for batch in ready:
                        await send.send(batch)
                    return
                pending: list[int] = []
                for i in range(items):
                    pending.append(i)
                    if len(pending) >= BATCH:
                        await send.send(pending)
                        pending = []
                if pending:
                    await send.send(pending)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            with receive:
                return await _consume(receive)

    async def bare_items() -> int:
        return await bare(True)

    async def bare_batches() -> int:
        return await bare(False)

    rows = []
    for name, ours, base in (
        ("send_batch", tool_batches, bare_batches),
        ("send_per_item", tool_items, bare_items),
    ):
        o_rate, o_cpu, n = _measure_stream(ours, repeat)
        b_rate, b_cpu, _ = _measure_stream(base, repeat)
        rows.append(
            {
                "scenario": f"streaming/{name}",
                "items": n,
                "batch_size": BATCH,
                "buffer": BUFFER,
                "items_per_s": round(o_rate),
                "cpu_us_per_item": round(o_cpu, 4),
                "bare_items_per_s": round(b_rate),
                "bare_cpu_us_per_item": round(b_cpu, 4),
                "ratio_bare_over_tool": round(b_rate / o_rate, 3),
            }
        )
    return rows


# ----------------------------------------------------------------------------- overhead


def call_overhead(n: int, repeat: int) -> dict[str, Any]:
    @tool
    async def lookup(key: str, limit: int = 10) -> dict[str, Any]:
        """A trivial tool."""
        return {"key": key, "limit": limit}

    registry = ToolRegistry([lookup])
    args = {"key": "k", "limit": 3}

    async def via_registry() -> int:
        for _ in range(n):
            await registry.call(None, "lookup", args, call_id="c")
        return n

    async def direct() -> int:
        for _ in range(n):
            await lookup.fn(**args)
            await trio.lowlevel.checkpoint()
        return n

    def best(fn: Callable[[], Awaitable[int]]) -> float:
        out = []
        for _ in range(repeat):
            c0 = cpu_seconds()
            trio.run(fn)
            out.append((cpu_seconds() - c0) / n * 1e6)
        return min(out)

    ours, base = best(via_registry), best(direct)
    return {
        "scenario": "call_overhead/registry_vs_direct",
        "calls": n,
        "registry_cpu_us_per_call": round(ours, 2),
        "direct_cpu_us_per_call": round(base, 2),
        "added_us_per_call": round(ours - base, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--items", type=int, default=2_000_000, help="streamed items")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    items = 200_000 if args.quick else args.items
    repeat = 3 if args.quick else args.repeat
    pinned = pin_to_core(0)

    fan_rows = [
        fanout(10, 0.05, repeat, None),
        fanout(100, 0.05, repeat, None),
        fanout(100, 0.05, repeat, 10),
    ]
    if not args.quick:
        fan_rows.append(fanout(1000, 0.05, max(1, repeat // 2), None))
    for row in fan_rows:
        row["pinned_one_core"] = pinned
        emit(row)
    stream_rows = streaming(items, repeat)
    for row in stream_rows:
        row["pinned_one_core"] = pinned
        emit(row)
    overhead = call_overhead(5_000 if args.quick else 50_000, repeat)
    emit(overhead)

    table(
        fan_rows,
        ["scenario", "ideal_ms", "fanout_ms", "bare_nursery_ms", "sequential_ms", "speedup"],
    )
    print(file=sys.stderr)
    table(
        stream_rows,
        [
            "scenario",
            "items_per_s",
            "cpu_us_per_item",
            "bare_items_per_s",
            "ratio_bare_over_tool",
        ],
    )
    print(file=sys.stderr)
    table([overhead], ["scenario", "registry_cpu_us_per_call", "direct_cpu_us_per_call"])


if __name__ == "__main__":
    main()
