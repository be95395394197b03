"""Scale out on Redis Streams: a worker process, and a producer that waits for results.

Start Redis, then one or more workers (each its own process, on any machine that
reaches Redis), then produce::

    redis-server --port 6379 &
    python examples/distributed_worker.py work --redis redis://127.0.0.1:6379/0 &
    python examples/distributed_worker.py work --redis redis://127.0.0.1:6379/0 &
    python examples/distributed_worker.py produce --redis redis://127.0.0.1:6379/0 --count 100

``agentcli worker --redis URL --stream S --group G --app MODULE:AGENTS`` does what ``work``
does, for your own agents. The agents here:

* ``echo``: returns its data; ``sleep``: sleeps ``data["ms"]`` milliseconds first;
* ``flaky``: raises when ``data["poison"]`` is true (it ends in the dead-letter stream);
* ``chat``: one chat completion (``--llm-url`` points at an OpenAI-compatible server, such
  as ``agentcli mock-llm``).

SIGINT or SIGTERM stops a worker gracefully (running events finish, unstarted ones are
handed back); a second signal stops it at once (what it held is reclaimed by the others
after ``claim_idle``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

import agentflow_trio as af
from agentflow_trio.config import Config, DistributedConfig, load_config
from agentflow_trio.distributed import RemoteRunner, run_worker


async def echo(ctx: af.Context, event: af.Event) -> Any:
    return dict(event.data)


async def sleep(ctx: af.Context, event: af.Event) -> Any:
    await trio.sleep(float(event.data.get("ms", 1)) / 1000)
    return {"slept_ms": event.data.get("ms", 1)}


async def flaky(ctx: af.Context, event: af.Event) -> Any:
    if event.data.get("poison"):
        raise ValueError(f"poison event {event.id}")
    return "ok"


async def chat(ctx: af.Context, event: af.Event) -> Any:
    if ctx.llm is None:
        raise RuntimeError("start the worker with --llm-url to use the chat agent")
    reply = await ctx.llm.complete(str(event.data.get("query", "Say hello.")), max_tokens=32)
    return {"answer": reply.text}


AGENTS: Mapping[str, Any] = {"echo": echo, "sleep": sleep, "flaky": flaky, "chat": chat}


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config) if args.config else Config()
    d = config.distributed
    changes: dict[str, Any] = {"redis_url": args.redis or d.redis_url}
    if args.claim_idle is not None:
        changes["claim_idle"] = args.claim_idle
    if args.results is not None:
        changes["results"] = args.results
    distributed: DistributedConfig = attrs.evolve(d, **changes)
    runner = config.runner
    if args.drain_timeout is not None:
        runner = attrs.evolve(runner, drain_timeout=args.drain_timeout)
    if args.max_in_flight is not None:
        runner = attrs.evolve(runner, max_concurrent_events=args.max_in_flight)
    if args.pool is not None:
        runner = attrs.evolve(runner, worker_pool_size=args.pool)
    return attrs.evolve(config, distributed=distributed, runner=runner)


@asynccontextmanager
async def _llm(config: Config, url: str | None) -> AsyncIterator[Any]:
    if url is None:
        yield None
        return
    from agentflow_trio.llm import open_llm_client

    llm = attrs.evolve(config.llm, provider="openai", base_url=url + "/v1", api_key="mock-key")
    async with open_llm_client(attrs.evolve(config, llm=llm)) as client:
        yield client


async def work(args: argparse.Namespace) -> None:
    config = _config(args)
    async with _llm(config, args.llm_url) as llm:
        stats = await run_worker(
            config,
            AGENTS,
            stream=args.stream,
            group=args.group,
            consumer=args.consumer,
            llm=llm,
            handle_signals=True,
        )
    print(
        f"worker {stats.consumer}: read {stats.read}, reclaimed {stats.reclaimed}, "
        f"stored {stats.stored}, duplicates {stats.duplicates}, released {stats.released}"
    )


async def produce(args: argparse.Namespace) -> None:
    async with RemoteRunner(_config(args), stream=args.stream) as remote:
        events = [af.Event("echo", {"n": n}) for n in range(args.count)]
        handles = await remote.emit_many(events)
        results = [await h.result(timeout=60) for h in handles]
    ok = sum(r.succeeded for r in results)
    print(f"{ok}/{len(results)} succeeded; first: {results[0].output if results else None}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["work", "produce"])
    parser.add_argument("--redis", help="redis://host:port/db (default: the config's)")
    parser.add_argument("--stream", default=None)
    parser.add_argument("--group", default=None)
    parser.add_argument("--consumer", default=None)
    parser.add_argument("--config", default=None, help="agentflow.toml")
    parser.add_argument("--claim-idle", type=float, default=None, help="seconds")
    parser.add_argument("--results", choices=["key", "stream"], default=None)
    parser.add_argument("--drain-timeout", type=float, default=None, help="seconds")
    parser.add_argument("--max-in-flight", type=int, default=None, help="events held at once")
    parser.add_argument("--pool", type=int, default=None, help="agents running at once")
    parser.add_argument("--llm-url", default=None, help="OpenAI-compatible base URL")
    parser.add_argument("--count", type=int, default=100, help="events to produce")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(work if args.role == "work" else produce, args)


if __name__ == "__main__":
    main()
