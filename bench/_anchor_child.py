"""One anchors measurement in a child process: one scenario, one tree, one or both sides.

``bench/anchors.py --child SCENARIO --url URL --root TREE --sides raw,af`` lands here: the
agentflow_trio of ``TREE`` goes first on ``sys.path``, this process is pinned to core 0,
and the figures come back as one JSON line on stdout (``raw_*`` and ``af_*`` keys). An
in-flight scenario's side ``aiohttp`` runs on asyncio instead (``bench/_anchor_aiohttp.py``,
``aiohttp_*`` keys); without aiohttp installed it prints a one-line note and no figures.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import trio

from bench import _anchor_raw as raw
from bench._common import cpu_seconds, drive, pin_to_core, sample

Call = Callable[[int], Awaitable[Any]]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size now (not its peak)."""
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def _raw_callers(pool: raw.RawPool) -> dict[str, Call]:
    prior = raw.history()

    async def chat(i: int) -> Any:
        return await raw.chat(pool, i)

    async def stream(i: int) -> Any:
        return await raw.stream(pool, i)

    async def tool_loop(i: int) -> Any:
        return await raw.tool_loop(pool, i, [])

    async def history_loop(i: int) -> Any:
        return await raw.tool_loop(pool, i, prior)

    return {
        "chat": chat,
        "stream": stream,
        "tool_loop": tool_loop,
        "history_loop": history_loop,
        "in_flight": chat,
    }


async def _open(stack: AsyncExitStack, side: str, url: str, concurrency: int) -> dict[str, Call]:
    if side == "raw":
        pool = raw.RawPool(url)
        stack.callback(pool.close)
        return _raw_callers(pool)
    from bench._anchor_af import open_side

    return await open_side(stack, url, concurrency)


async def _ttfc(call: Call, n: int) -> float:
    """Median milliseconds from a stream's start to its first chunk with text, one at a time."""
    waits = []
    for i in range(n):
        start = trio.current_time()
        chunks, first = await call(10_000_000 + i)
        assert chunks > 0
        waits.append(first - start)
    return round(statistics.median(waits) * 1000, 4)


async def _fast(
    args: argparse.Namespace, spec: dict[str, Any], chunks: int, sides: list[str]
) -> dict[str, Any]:
    """Chat, stream and tool loops: every side in this process, alternating rounds."""
    scenario = "in_flight" if args.child.startswith("in_flight") else args.child
    concurrency = spec["concurrency"]
    calls = spec["quick"] if args.quick else spec["calls"]
    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        callers = {s: (await _open(stack, s, args.url, concurrency))[scenario] for s in sides}
        if args.profile:
            return await _profile(callers["af"], calls, concurrency)
        repeat = 1 if args.quick else 2
        warmup = min(calls, 2 * concurrency + 100)
        runs = await sample(callers, calls, concurrency, repeat, warmup=warmup, alternate=True)
        for side, figures in runs.items():
            cpu = statistics.median(r["cpu_us_per_call"] for r in figures)
            out[f"{side}_cpu_us"] = round(cpu, 2)
            out[f"{side}_calls_per_s"] = round(statistics.median(r["calls_per_s"] for r in figures))
            if scenario == "stream":
                out[f"{side}_cpu_us_per_chunk"] = round(cpu / chunks, 3)
        if scenario == "stream":
            for side, call in callers.items():
                out[f"{side}_ttfc_ms"] = await _ttfc(call, 60 if args.quick else 200)
    return out


async def _in_flight(args: argparse.Namespace, spec: dict[str, Any], side: str) -> dict[str, Any]:
    """N callers at 1 s model latency, one side: CPU per call and RSS per waiting event."""
    n = spec["concurrency"]
    async with AsyncExitStack() as stack:
        # Measured from after the side's imports and client are set up (as for every side):
        # what the N waiting events hold, not what a module costs once.
        call = (await _open(stack, side, args.url, n))["in_flight"]
        before = rss_bytes()
        peak = before

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_bytes())
                await trio.sleep(0.05)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await drive(call, n, n)  # connections open, code warm
            c0 = cpu_seconds()
            figures = await drive(call, n * spec["rounds"], n)
            cpu = cpu_seconds() - c0
            nursery.cancel_scope.cancel()
    return {
        f"{side}_cpu_us": round(cpu / (n * spec["rounds"]) * 1e6, 2),
        f"{side}_calls_per_s": round(figures["calls_per_s"]),
        f"{side}_rss_kb_per_event": round((peak - before) / n / 1024, 2),
        f"{side}_peak_rss_mb": round(peak / 2**20, 1),
    }


async def _profile(call: Call, calls: int, concurrency: int) -> dict[str, Any]:
    await drive(call, min(calls, 300), concurrency)
    profiler = cProfile.Profile()
    profiler.enable()
    await drive(call, calls, concurrency)
    profiler.disable()
    if out := os.environ.get("ANCHORS_PROFILE_OUT"):
        profiler.dump_stats(out)  # for pstats / snakeviz
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(40)
    print(f"{calls} calls at c={concurrency}", file=sys.stderr)
    print(text.getvalue(), file=sys.stderr)
    return {}


def _aiohttp_in_flight(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    """The in-flight scenario's asyncio + aiohttp side; no figures if aiohttp is missing."""
    try:
        from bench._anchor_aiohttp import in_flight
    except ImportError as exc:
        print(f"anchors: aiohttp side skipped ({exc})", file=sys.stderr)
        return {}
    import asyncio

    return asyncio.run(in_flight(args.url, spec["concurrency"], spec["rounds"], rss_bytes))


def child_main(args: argparse.Namespace, spec: dict[str, Any], chunks: int) -> None:
    """Measure and print one JSON line (see the module docstring)."""
    import json

    if args.root:
        sys.path.insert(0, args.root)
    pin_to_core(0)
    sides = args.sides.split(",")
    if args.child.startswith("in_flight") and sides[0] == "aiohttp":
        out = _aiohttp_in_flight(args, spec)
    elif args.child.startswith("in_flight"):
        out = trio.run(_in_flight, args, spec, sides[0])
    else:
        out = trio.run(_fast, args, spec, chunks, sides)
    print(json.dumps({"scenario": args.child, **out}), flush=True)
