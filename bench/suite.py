"""The guide's "Typical Performance Characteristics" table, with agentflow_trio's figures.

``python -m bench`` (or ``python bench/suite.py``). The mock LLM runs in a child process
(``python -m agentflow_trio.cli mock-llm --port 0 --latency-ms L``) pinned to core 1 when
the machine has two or more cores; this process is pinned to core 0, so its ``getrusage``
CPU is the client's alone. At mock latency 0 and 50 ms and concurrency 1, 50 and 200,
each cell is a closed loop of ``concurrency`` callers for a fixed duration:

* ``single_agent``: ``runner.call`` of an agent making one ``ctx.llm.complete`` through the
  default provider stack (retry, breaker; OpenAI adapter) on the default lean transport;
* ``multi_agent``: ``af.collaborate`` of 3 agents, each making 2 cheap local tool calls
  (``ctx.tools.call_many``) and one LLM call; throughput is events/s (one event = one
  collaboration = 3 LLM calls + 6 tool calls);
* ``streaming``: items/s through ``open_tool_stream`` (``concurrency`` streams at once; no
  model, so it runs once, in the 0 ms block);
* baselines: ``bare_httpx2`` (one ``httpx2.AsyncClient`` POST + JSON decode per call, same
  concurrency) and the Little's-law bound (concurrency / latency).

Latency is measured from each call's intended start (closed loop: when its caller was
ready) in an HDR histogram (`LatencyRecorder`). CPU ms per invocation is
``getrusage(RUSAGE_SELF)`` over the cell / invocations; ``peak_rss_mb`` is the process's
peak so far (``ru_maxrss``). ``cpu_vs_bare`` is CPU per invocation over bare httpx2's in the
same cell. Writes a Markdown table (``--out``) and prints JSON lines, then the table.

Then issue #23's anchors (`bench.anchors`: chat, stream, tool loops, 2,000 and 10,000
in flight, each against a raw trio + httptools floor in the same run), added to the
Markdown file as a second table; ``--no-anchors`` skips them, and so does a run narrowed
by ``--seconds``, ``--latency`` or ``--concurrency`` (``agentcli benchmark --suite``
with its options); ``--anchors-only`` runs only them.

    python -m bench                 # about 5 minutes (3 s per cell, then the anchors)
    python -m bench --quick         # about 2 minutes (1 s per cell, quick anchors)
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import httpx2
import orjson
import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import agentflow_trio as af  # noqa: E402
from agentflow_trio.config import Config, LLMConfig, RunnerConfig  # noqa: E402
from agentflow_trio.llm import open_llm_client, user  # noqa: E402
from agentflow_trio.observability.stats import LatencyRecorder  # noqa: E402
from agentflow_trio.tools import ToolRegistry, open_tool_stream  # noqa: E402
from agentflow_trio.tools.streaming import StreamSink  # noqa: E402
from bench._common import cpu_seconds, emit, mock_process, pin_to_core  # noqa: E402

PROMPT = "Summarise the benchmark results in one sentence, please."
MAX_CONNECTIONS = 1024  # a collaboration at c=200 has 600 model calls in flight
STREAM_BATCH = 256
Call = Callable[[int], Awaitable[Any]]

TARGETS = {
    "single_0ms_c50_cpu_vs_bare": 0.3,
    "single_0ms_c50_per_s": 7000.0,
    "single_50ms_c200_per_s": 3800.0,
    "single_50ms_c200_p99_ms": 65.0,
    "multi_events_per_s": 1500.0,
    "stream_items_per_s": 200_000.0,
    "peak_rss_mb": 120.0,
}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024, 1)


# ---------------------------------------------------------------------------- drivers
async def closed_loop(
    call: Call, concurrency: int, seconds: float, stagger: float = 0.0
) -> dict[str, Any]:
    """``concurrency`` callers loop ``call`` until ``seconds`` have passed; every call
    started before the end is awaited and counted. Latency from each call's intended
    start (its caller was ready then: a closed loop has no schedule to fall behind).

    Caller ``k`` starts ``k * stagger / concurrency`` seconds in, so that callers do not
    move in lock-step waves (all sending, then all waiting) that neither a real
    workload nor the server would produce.

    Throughput (``per_s``) is steady-state: the calls that completed inside the window
    from ``stagger`` (every caller has started by then) to ``seconds``, over that
    window's length (``done / wall`` when the cell is shorter than ``stagger``).
    The ramp-in (fewer than ``concurrency`` callers) and the drain after ``seconds``
    (calls finishing one by one) are excluded, as wrk and locust do; latency percentiles
    and CPU per call count every call."""
    recorder = LatencyRecorder(series=False)
    record = recorder.record_from
    now = trio.current_time
    counter = itertools.count()
    begin = now()
    stop_at = begin + seconds
    window_from = begin + stagger
    done = 0
    in_window = 0
    failures = 0

    async def caller(delay: float) -> None:
        nonlocal done, in_window, failures
        await trio.sleep(delay)
        while (start := now()) < stop_at:
            try:
                await call(next(counter))
            except Exception:  # a failed call is counted, not fatal to the cell
                failures += 1
            end = now()
            record(start, end)
            done += 1
            if window_from <= end <= stop_at:
                in_window += 1

    c0, t0 = cpu_seconds(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(concurrency):
            nursery.start_soon(caller, k * stagger / concurrency)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    s = recorder.summary()
    return {
        "ops": done,
        "failures": failures,
        "per_s": round(
            in_window / window if (window := stop_at - window_from) > 0 else done / wall, 1
        ),
        "p50_ms": _r(s.p50_ms),
        "p95_ms": _r(s.p95_ms),
        "p99_ms": _r(s.p99_ms),
        "cpu_ms_per_op": round(cpu / max(done, 1) * 1000, 4),
        "wall_s": round(wall, 3),
        "peak_rss_mb": peak_rss_mb(),
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def stream_cell(concurrency: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` tool streams at once, each producing until ``seconds`` have
    passed; items/s over all of them, and per-batch delivery latency percentiles."""
    recorder = LatencyRecorder(series=False)
    now = trio.current_time
    stop_at = now() + seconds
    items = 0

    async def produce(sink: StreamSink[float]) -> None:
        send = sink.send
        while now() < stop_at:
            # a batch's first item carries its creation time; the rest are cheap ints
            await send(now())
            for i in range(STREAM_BATCH - 1):
                await send(i)

    async def consume() -> None:
        nonlocal items
        async with open_tool_stream(produce, batch_size=STREAM_BATCH) as batches:
            async for batch in batches:
                if isinstance(batch, list):
                    items += len(batch)
                    recorder.record_from(batch[0], now())

    c0, t0 = cpu_seconds(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(consume)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    s = recorder.summary()
    return {
        "ops": items,
        "failures": 0,
        "per_s": round(items / wall, 1),
        "p50_ms": _r(s.p50_ms),
        "p95_ms": _r(s.p95_ms),
        "p99_ms": _r(s.p99_ms),
        "cpu_ms_per_op": round(cpu / max(items, 1) * 1000, 6),
        "peak_rss_mb": peak_rss_mb(),
    }


# ---------------------------------------------------------------------------- callers
def bare_caller(client: httpx2.AsyncClient, url: str) -> Call:
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

    async def call(i: int) -> Any:
        message = {"role": "user", "content": f"{PROMPT} {i}"}
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": [message]})
        response = await client.post(url, content=body, headers=headers)
        response.raise_for_status()
        return orjson.loads(response.content)["choices"][0]["message"]["content"]

    return call


@af.agent(name="single")
async def single(ctx: af.Context, event: af.Event) -> str:
    reply = await ctx.llm.complete([user(event.data["q"])])
    return str(reply.text)


def _lookup(key: str) -> str:
    """A cheap local tool."""
    return key.upper()


def _add(a: int, b: int) -> int:
    """A cheap local tool."""
    return a + b


def _worker(name: str) -> af.Agent:
    @af.agent(name=name)
    async def work(ctx: af.Context, event: af.Event) -> dict[str, Any]:
        hits = await ctx.tools.call_many([("lookup", {"key": name}), ("add", {"a": 1, "b": 2})])
        reply = await ctx.llm.complete([user(f"{name}: {event.data['q']}")])
        return {"answer": reply.text, "tools": [h.ok for h in hits]}

    return work


def runner_caller(runner: af.Runner, kind: str) -> Call:
    async def call(i: int) -> Any:
        result = await runner.call(af.Event(kind, {"q": f"{PROMPT} {i}"}))
        if result.outcome is not af.Outcome.SUCCEEDED:
            raise RuntimeError(f"{kind}: {result.outcome.value}: {result.error}")
        return result.output

    return call


def _config(url: str, concurrency: int) -> Config:
    llm = LLMConfig(
        provider="openai", base_url=url + "/v1", api_key="sk-bench", max_connections=MAX_CONNECTIONS
    )
    workers = 4 * max(concurrency, 1) + 8  # a collaboration holds up to 4 slots
    runner = RunnerConfig(
        max_concurrent_events=10_000, event_buffer_size=10_000, worker_pool_size=workers
    )
    return attrs.evolve(Config(), llm=llm, runner=runner)


# ---------------------------------------------------------------------------- cells
async def run_latency(
    url: str, latency_ms: float, concurrencies: list[int], seconds: float, streaming: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    chat = url + "/v1/chat/completions"
    warm = min(0.3, seconds / 3)
    registry = ToolRegistry([af.tool(name="lookup")(_lookup), af.tool(name="add")(_add)])
    agents: dict[str, Any] = {
        "single": single,
        "multi": af.collaborate(_worker("a"), _worker("b"), _worker("c"), name="multi"),
    }
    config = _config(url, max(concurrencies))
    limits = httpx2.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
    )
    async with AsyncExitStack() as stack:
        bare_client = await stack.enter_async_context(
            httpx2.AsyncClient(limits=limits, timeout=60.0)
        )
        llm = await stack.enter_async_context(open_llm_client(config))
        runner = await stack.enter_async_context(
            af.Runner(config, agents=agents, llm=llm, tools=registry)
        )
        callers = {
            "bare_httpx2": bare_caller(bare_client, chat),
            "single_agent": runner_caller(runner, "single"),
            "multi_agent": runner_caller(runner, "multi"),
        }
        for concurrency in concurrencies:
            cells: dict[str, dict[str, Any]] = {}
            stagger = latency_ms / 1000
            for name, call in callers.items():
                await closed_loop(call, concurrency, warm, stagger)  # connections, code
                cells[name] = await closed_loop(call, concurrency, seconds, stagger)
            if streaming:
                await stream_cell(concurrency, warm)
                cells["streaming"] = await stream_cell(concurrency, seconds)
            base = cells["bare_httpx2"]["cpu_ms_per_op"]
            little = round(concurrency / (latency_ms / 1000), 1) if latency_ms > 0 else None
            for name, cell in cells.items():
                row: dict[str, Any] = {
                    "scenario": name,
                    "latency_ms": latency_ms if name != "streaming" else None,
                    "concurrency": concurrency,
                    **cell,
                    "unit": _UNITS[name],
                    "little_bound": little if name != "streaming" else None,
                }
                if name in ("single_agent", "multi_agent"):
                    row["cpu_vs_bare"] = round(cell["cpu_ms_per_op"] / base, 3)
                emit(row)
                rows.append(row)
    return rows


_UNITS = {
    "bare_httpx2": "calls/s",
    "single_agent": "invocations/s",
    "multi_agent": "events/s",
    "streaming": "items/s",
}


# ---------------------------------------------------------------------------- report
_COLUMNS = (
    ("scenario", "Scenario"),
    ("latency_ms", "Mock latency (ms)"),
    ("concurrency", "Concurrency"),
    ("per_s", "Throughput"),
    ("unit", "Unit"),
    ("p50_ms", "p50 (ms)"),
    ("p95_ms", "p95 (ms)"),
    ("p99_ms", "p99 (ms)"),
    ("cpu_ms_per_op", "CPU ms / op"),
    ("cpu_vs_bare", "CPU vs bare httpx2"),
    ("little_bound", "Little bound (/s)"),
    ("peak_rss_mb", "Peak RSS (MB)"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if value < 1 else f"{value:,.1f}"
    return str(value)


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, ""]
    lines.append("| " + " | ".join(title for _, title in _COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in _COLUMNS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in _COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _find(rows: list[dict[str, Any]], scenario: str, latency: float | None, c: int) -> Any:
    for row in rows:
        same = row["scenario"] == scenario and row["concurrency"] == c
        if same and (latency is None or row["latency_ms"] == latency):
            return row
    return None


def verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured figure and whether it is met."""
    out: list[dict[str, Any]] = []

    def check(name: str, value: Any, ok: bool) -> None:
        out.append({"target": name, "limit": TARGETS[name], "measured": value, "met": ok})

    s0 = _find(rows, "single_agent", 0.0, 50)
    if s0 is not None:
        check("single_0ms_c50_cpu_vs_bare", s0["cpu_vs_bare"], s0["cpu_vs_bare"] <= 0.3)
        check("single_0ms_c50_per_s", s0["per_s"], s0["per_s"] >= 7000)
    s50 = _find(rows, "single_agent", 50.0, 200)
    if s50 is not None:
        check("single_50ms_c200_per_s", s50["per_s"], s50["per_s"] >= 3800)
        check("single_50ms_c200_p99_ms", s50["p99_ms"], (s50["p99_ms"] or 1e9) <= 65)
    multi = [r["per_s"] for r in rows if r["scenario"] == "multi_agent"]
    if multi:
        check("multi_events_per_s", max(multi), max(multi) >= 1500)
    stream = [r["per_s"] for r in rows if r["scenario"] == "streaming"]
    if stream:
        check("stream_items_per_s", max(stream), max(stream) >= 200_000)
    rss = max(r["peak_rss_mb"] for r in rows)
    check("peak_rss_mb", rss, rss < 120)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1 s per cell instead of 3 s")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per cell")
    parser.add_argument("--latency", type=float, action="append", help="mock latency (ms)")
    parser.add_argument("--concurrency", type=int, action="append", help="callers")
    parser.add_argument("--out", default="bench-results.md", help="Markdown table file")
    parser.add_argument("--no-anchors", action="store_true", help="skip bench.anchors")
    parser.add_argument("--anchors-only", action="store_true", help="only bench.anchors")
    args = parser.parse_args(argv)
    if args.anchors_only:
        _anchors(args.quick)
        return
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    latencies = args.latency or [0.0, 50.0]
    concurrencies = args.concurrency or [1, 50, 200]
    pinned = pin_to_core(0)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for n, latency_ms in enumerate(latencies):
        with mock_process(latency_ms) as url:
            rows += trio.run(run_latency, url, latency_ms, concurrencies, seconds, n == 0)
    checks = verdicts(rows)
    for check in checks:
        emit({"scenario": "target", **check})
    elapsed = time.perf_counter() - started
    header = (
        f"Measured with `python -m bench{' ' if sys.argv[1:] else ''}{' '.join(sys.argv[1:])}` "
        f"({seconds:g} s per cell, {elapsed:.0f} s in all); client pinned to core 0: "
        f"{pinned}, mock LLM in its own process{' on core 1' if pinned else ''}; Python "
        f"{sys.version.split()[0]}, trio {trio.__version__}."
    )
    text = markdown(rows, header)
    text += "\n| Target | Limit | Measured | Met |\n|---|---|---|---|\n"
    text += "".join(
        f"| {c['target']} | {c['limit']:g} | {_cell(c['measured'])} | "
        f"{'yes' if c['met'] else 'no'} |\n"
        for c in checks
    )
    print(text, file=sys.stderr)
    narrowed = args.seconds is not None or args.latency or args.concurrency
    if not (args.no_anchors or narrowed):
        text += _anchors(args.quick)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)


_ANCHOR_COLUMNS = (
    ("scenario", "Anchor"),
    ("raw_cpu_us", "Raw CPU us / op"),
    ("af_cpu_us", "agentflow CPU us / op"),
    ("cpu_ratio", "Ratio"),
    ("af_cpu_us_per_chunk", "us / chunk"),
    ("af_ttfc_ms", "First chunk (ms)"),
    ("raw_ttfc_ms", "Raw first chunk (ms)"),
    ("af_rss_kb_per_event", "KB / event"),
    ("target", "Target"),
    ("met", "Met"),
)


def _anchors(quick: bool) -> str:
    """Run `bench.anchors` (its own JSON lines and table); its rows as a Markdown table."""
    from bench import anchors

    rows = anchors.main(["--quick"] if quick else [])
    lines = ["", "Anchors (`python -m bench.anchors`): agentflow_trio over a raw floor", ""]
    lines.append("| " + " | ".join(title for _, title in _ANCHOR_COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in _ANCHOR_COLUMNS) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k, _ in _ANCHOR_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
