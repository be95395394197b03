"""The anchors' second in-flight baseline: the raw side's chat call on asyncio + aiohttp.

Issue #23 asks that an event in flight cost at most the CPU of raw aiohttp, the client most
asyncio code would reach for. So this side does the raw side's ``chat`` (``bench/_anchor_raw.py``)
with aiohttp and nothing else: the same orjson body, URL and headers, one keep-alive POST per
call through one shared ``ClientSession`` (``TCPConnector(limit=0)``: a connection per waiting
caller), the answer decoded by orjson and its text taken. It is driven like
``bench._common.drive`` (N callers, a warm-up round, then the measured rounds) with the same
getrusage CPU and the peak RSS sampled every 50 ms, as ``bench/_anchor_child.py`` does for
the trio sides. asyncio only: no trio runs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from bench._anchor_raw import MODEL, PROMPT
from bench._common import cpu_seconds

Call = Callable[[int], Awaitable[str]]
_OFFSETS = itertools.count(0, 1_000_000)


def _chat(session: aiohttp.ClientSession, url: str) -> Call:
    endpoint = url.rstrip("/") + "/v1/chat/completions"
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

    async def chat(i: int) -> str:
        """One chat call: body, round trip, answer text (as ``bench._anchor_raw.chat``)."""
        body = orjson.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": f"{PROMPT} {i}"}]}
        )
        async with session.post(endpoint, data=body, headers=headers) as response:
            data = orjson.loads(await response.read())
        return str(data["choices"][0]["message"]["content"])

    return chat


async def drive(call: Call, calls: int, concurrency: int) -> dict[str, float]:
    """``bench._common.drive`` on asyncio: ``calls`` calls from ``concurrency`` tasks, each
    call's argument a fresh offset + i; wall and CPU over exactly that window."""
    counter = itertools.count()
    offset = next(_OFFSETS)

    async def worker() -> None:
        while (i := next(counter)) < calls:
            await call(offset + i)

    c0, t0 = cpu_seconds(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"calls_per_s": calls / wall, "cpu_us_per_call": cpu / calls * 1e6}


async def in_flight(
    url: str, concurrency: int, rounds: int, rss_bytes: Callable[[], int]
) -> dict[str, Any]:
    """N callers at the mock's latency: CPU per call and RSS per waiting event (the keys
    ``aiohttp_*`` of ``bench/_anchor_child.py``'s ``_in_flight``)."""
    n = concurrency
    connector = aiohttp.TCPConnector(limit=0)
    # aiohttp's own default headers off: the same request head as the raw side's
    skip = ("User-Agent", "Accept", "Accept-Encoding")
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=skip) as session:
        call = _chat(session, url)
        before = rss_bytes()  # after the imports and the session, as on the other sides
        peak = before

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss_bytes())
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            await drive(call, n, n)  # connections open, code warm
            c0 = cpu_seconds()
            figures = await drive(call, n * rounds, n)
            cpu = cpu_seconds() - c0
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    return {
        "aiohttp_cpu_us": round(cpu / (n * rounds) * 1e6, 2),
        "aiohttp_calls_per_s": round(figures["calls_per_s"]),
        "aiohttp_rss_kb_per_event": round((peak - before) / n / 1024, 2),
        "aiohttp_peak_rss_mb": round(peak / 2**20, 1),
    }
