"""No-op events through the Runner versus a hand-written trio baseline, in one run.

The baseline is what a user would write without the framework: a nursery, a memory
channel and a CapacityLimiter. Both sides create the same `Event` objects, so the ratio is
the runner's own cost (admission, handles, timeouts, outcomes, hooks check, statistics).

    python bench/runner_overhead.py [--events N] [--quick]

Prints one JSON line per scenario on stdout and a table on stderr.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

import trio

sys.path.insert(0, os.path.dirname(__file__))

from _common import emit, measure, pin_to_core, table

import agentflow_trio as af

WORKERS = 50


async def _noop(ctx: af.Context, event: af.Event) -> None:
    return None


def _config(buffer: int) -> af.Config:
    return af.Config.from_mapping(
        {
            "runner": {
                "worker_pool_size": WORKERS,
                "event_buffer_size": buffer,
                "max_concurrent_events": buffer + WORKERS + 1,
            }
        }
    )


def runner_fire_and_forget(n: int) -> int:
    async def main() -> None:
        async with af.Runner(_config(1000), agents={"noop": _noop}) as runner:
            for _ in range(n):
                await runner.emit(af.Event("noop"))

    trio.run(main)
    return n


def baseline_fire_and_forget(n: int) -> int:
    async def main() -> None:
        limiter = trio.CapacityLimiter(WORKERS)
        send, receive = trio.open_memory_channel[af.Event](1000)

        async def work(event: af.Event) -> None:
            try:
                await _noop(None, event)  # type: ignore[arg-type]
            finally:
                limiter.release_on_behalf_of(event)

        async def dispatch(nursery: trio.Nursery) -> None:
            async for event in receive:
                await limiter.acquire_on_behalf_of(event)
                nursery.start_soon(work, event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dispatch, nursery)
            async with send:
                for _ in range(n):
                    await send.send(af.Event("noop"))

    trio.run(main)
    return n


def runner_call(n: int, callers: int) -> int:
    async def main() -> None:
        async with af.Runner(_config(1000), agents={"noop": _noop}) as runner:

            async def caller(k: int) -> None:
                for _ in range(k):
                    await runner.call(af.Event("noop"))

            async with trio.open_nursery() as nursery:
                for _ in range(callers):
                    nursery.start_soon(caller, n // callers)

    trio.run(main)
    return n // callers * callers


class _Job:
    __slots__ = ("done", "event", "result")

    def __init__(self, event: af.Event) -> None:
        self.event, self.result, self.done = event, None, trio.Event()


def baseline_call(n: int, callers: int) -> int:
    async def main() -> None:
        limiter = trio.CapacityLimiter(WORKERS)
        send, receive = trio.open_memory_channel[_Job](1000)

        async def work(job: _Job) -> None:
            try:
                job.result = await _noop(None, job.event)  # type: ignore[arg-type, func-returns-value]
            finally:
                limiter.release_on_behalf_of(job)
                job.done.set()

        async def dispatch(nursery: trio.Nursery) -> None:
            async for job in receive:
                await limiter.acquire_on_behalf_of(job)
                nursery.start_soon(work, job)

        async def caller(k: int) -> None:
            for _ in range(k):
                job = _Job(af.Event("noop"))
                await send.send(job)
                await job.done.wait()

        async with trio.open_nursery() as outer:
            outer.start_soon(dispatch, outer)
            async with trio.open_nursery() as nursery:
                for _ in range(callers):
                    nursery.start_soon(caller, n // callers)
            send.close()

    trio.run(main)
    return n // callers * callers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20,000 events per scenario")
    parser.add_argument("--repeat", type=int, default=3, help="best of N per side")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.events
    pinned = pin_to_core(0)
    gc.collect()
    scenarios = [
        ("fire_and_forget", lambda: runner_fire_and_forget(n), lambda: baseline_fire_and_forget(n)),
        ("call_c50", lambda: runner_call(n, 50), lambda: baseline_call(n, 50)),
        ("call_c1", lambda: runner_call(n // 4, 1), lambda: baseline_call(n // 4, 1)),
    ]
    rows = []
    for name, ours, base in scenarios:
        best_ours = min(
            (measure(ours) for _ in range(args.repeat)), key=lambda m: m["cpu_us_per_op"]
        )
        best_base = min(
            (measure(base) for _ in range(args.repeat)), key=lambda m: m["cpu_us_per_op"]
        )
        row = {
            "scenario": f"runner_overhead/{name}",
            "events": best_ours["ops"],
            "runner_events_per_s": best_ours["ops_per_s"],
            "runner_cpu_us_per_event": best_ours["cpu_us_per_op"],
            "baseline_events_per_s": best_base["ops_per_s"],
            "baseline_cpu_us_per_event": best_base["cpu_us_per_op"],
            "cpu_ratio": round(best_ours["cpu_us_per_op"] / best_base["cpu_us_per_op"], 3),
            "pinned_one_core": pinned,
        }
        emit(row)
        rows.append(row)
    table(
        rows,
        [
            "scenario",
            "runner_events_per_s",
            "runner_cpu_us_per_event",
            "baseline_events_per_s",
            "baseline_cpu_us_per_event",
            "cpu_ratio",
        ],
    )


if __name__ == "__main__":
    main()
