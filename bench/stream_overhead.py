"""Streaming to the caller: CPU per model chunk when the caller reads the event's items
(``runner.stream``) versus the agent consuming ``ctx.llm.stream`` with nobody streaming,
in one run.

The mock LLM runs in a child process (this script with ``--serve-mock``) answering every
chat request with a reply cut into ``K = --chunks`` (64) streamed chunks, pinned to core 1
when the machine has two or more cores; this process is pinned to core 0, so its
``getrusage`` CPU is the client's alone. Both scenarios run the same agent (``async with
ctx.llm.stream(...)``, reading every chunk) through the same `Runner`, `LLMClient` and
provider stack:

* ``agent_only``: ``await runner.call(event)``: no sink, the chunks stop at the agent
  (the baseline);
* ``to_caller``: ``async with runner.stream(event) as items``, the caller reading every
  item: each chunk's text also goes to the caller as a `TextDelta` through the bounded
  channel (``runner.stream_buffer``), then the `FinalResult`.

One runner serves both scenarios; they alternate in rounds of ``--events`` events
(``--concurrency`` callers running closed loops), the order swapped each round, over
``--repeat`` pairs of rounds. Per scenario: CPU microseconds per chunk (the median over
the rounds) and events per second; ``cpu_ratio`` is the median over the pairs of
to_caller's CPU per chunk over agent_only's in the same pair (target <= 1.10), with
its range.

    python bench/stream_overhead.py            # 20 pairs of 300-event rounds, c=1 and c=16
    python bench/stream_overhead.py --quick    # 6 pairs of 200-event rounds

Prints one JSON line per scenario on stdout and a table on stderr.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(__file__))

from _common import cpu_seconds, emit, mock_process, pin_to_core, table

import agentflow_trio as af
from agentflow_trio.config import LLMConfig, RetryConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.progress import FinalResult

REPLY = " ".join(f"token{i}" for i in range(256))  # 1.5 KiB: 64 chunks of ~24 characters


async def _serve_mock(chunks: int) -> None:
    from agentflow_trio.mockllm import MockLLMConfig, open_mock_llm

    config = MockLLMConfig(port=0, stream_chunks=chunks, reply_text=REPLY)
    async with open_mock_llm(config) as mock:
        print(f"mock LLM listening on {mock.url}", flush=True)
        await trio.sleep_forever()


@af.agent
async def reader(ctx: af.Context, event: af.Event) -> int:
    """Reads the whole stream, as an agent that needs the full answer does."""
    chunks = 0
    async with ctx.llm.stream("tell me everything", max_tokens=512) as stream:
        async for chunk in stream:
            if chunk.delta_text:
                chunks += 1
    return chunks


async def _caller(runner: af.Runner, streamed: bool, events: int, counts: list[int]) -> None:
    for _ in range(events):
        if not streamed:
            result = await runner.call(af.Event("read"))
        else:
            async with runner.stream(af.Event("read")) as items:
                async for item in items:
                    last = item
            assert isinstance(last, FinalResult)
            result = last.result
        assert result.succeeded, result.error
        counts.append(result.output)


async def _rounds(
    url: str, events: int, concurrency: int, repeat: int
) -> dict[str, list[dict[str, float]]]:
    """Both scenarios through one runner, alternating in rounds of ``events`` events (the
    order swapped each round), so each pair of rounds ran under the same conditions."""
    config = LLMConfig(base_url=url + "/v1", api_key="sk-bench", retry=RetryConfig(enabled=False))
    runner_config = af.Config.from_mapping({"runner": {"worker_pool_size": concurrency}})
    figures: dict[str, list[dict[str, float]]] = {"agent_only": [], "to_caller": []}
    async with open_provider(config) as provider:
        runner = af.Runner(runner_config, agents={"read": reader}, llm=LLMClient(provider))
        async with runner:
            for streamed in (False, True):  # connections open, code warm
                await _round(runner, streamed, 4 * concurrency, concurrency)
            for i in range(repeat):
                order = (False, True) if i % 2 == 0 else (True, False)
                for streamed in order:
                    name = "to_caller" if streamed else "agent_only"
                    figures[name].append(await _round(runner, streamed, events, concurrency))
    return figures


async def _round(
    runner: af.Runner, streamed: bool, events: int, concurrency: int
) -> dict[str, float]:
    counts: list[int] = []
    gc.collect()
    c0, t0 = cpu_seconds(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(concurrency):
            share = events // concurrency + (1 if i < events % concurrency else 0)
            nursery.start_soon(_caller, runner, streamed, share, counts)
    cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
    chunks = sum(counts)
    return {
        "cpu_us_per_chunk": cpu / chunks * 1e6,
        "events_per_s": len(counts) / wall,
        "chunks_per_event": chunks / len(counts),
    }


def run(url: str, events: int, concurrency: int, repeat: int) -> list[dict[str, Any]]:
    figures = trio.run(_rounds, url, events, concurrency, repeat)
    ratios = [
        s["cpu_us_per_chunk"] / b["cpu_us_per_chunk"]
        for b, s in zip(figures["agent_only"], figures["to_caller"], strict=True)
    ]
    rows = []
    for name, runs in figures.items():
        rows.append(
            {
                "scenario": f"stream_overhead/{name}/c={concurrency}",
                "events": events,
                "chunks_per_event": runs[0]["chunks_per_event"],
                "cpu_us_per_chunk": round(
                    statistics.median(r["cpu_us_per_chunk"] for r in runs), 3
                ),
                "events_per_s": round(statistics.median(r["events_per_s"] for r in runs), 1),
                "repeats": repeat,
            }
        )
    rows[1]["cpu_ratio"] = round(statistics.median(ratios), 3)
    rows[1]["cpu_ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--events", type=int, default=300, help="events per round")
    parser.add_argument("--repeat", type=int, default=20, help="pairs of rounds")
    parser.add_argument("--chunks", type=int, default=64, help="K: chunks per streamed reply")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 16])
    parser.add_argument("--serve-mock", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_mock:
        trio.run(_serve_mock, args.chunks)
        return
    events = 200 if args.quick else args.events
    repeat = 6 if args.quick else args.repeat
    pinned = pin_to_core(0)
    rows: list[dict[str, Any]] = []
    command = [sys.executable, __file__, "--serve-mock", "--chunks", str(args.chunks)]
    with mock_process(command=command) as url:
        for concurrency in args.concurrency:
            for row in run(url, events, concurrency, repeat):
                row["pinned_one_core"] = pinned
                emit(row)
                rows.append(row)
    columns = ["scenario", "chunks_per_event", "cpu_us_per_chunk", "events_per_s", "cpu_ratio"]
    table(rows, columns)


if __name__ == "__main__":
    main()
