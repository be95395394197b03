"""The anchors' agentflow_trio side: each scenario as a user writes it.

Imported after ``bench/anchors.py`` has put the agentflow_trio tree to measure first on
``sys.path`` (``--root``: this tree, or a ``git worktree`` of an older revision), so only
public names that every measured revision has are used here.

* chat: ``LLMClient.complete`` of one user message through the default stack (retry,
  breaker, usage metering; OpenAI adapter, lean transport);
* stream: ``async with llm.stream(...)``, every chunk read;
* tool loop: ``runner.call`` of a `tool_agent` with the four tools of the mock's plan
  (each an ``async def`` yielding once), optionally after ``history`` earlier messages;
* one call in flight: ``runner.call`` of an agent making one ``ctx.llm.complete``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio

import agentflow_trio as af
from agentflow_trio.config import Config, LLMConfig, RunnerConfig
from agentflow_trio.llm import open_llm_client, user
from agentflow_trio.llm.types import Message, ToolCall
from agentflow_trio.tools import ToolRegistry, tool_agent

PROMPT = "Summarise the benchmark results in one sentence, please."
Call = Callable[[int], Awaitable[Any]]


@af.tool
async def lookup(key: str) -> dict[str, Any]:
    """Look a key up in the catalogue.

    Args:
        key: The key.
    """
    await trio.lowlevel.checkpoint()
    return {"value": key.upper()}


@af.tool
async def add(a: int, b: int) -> dict[str, Any]:
    """Add two integers.

    Args:
        a: First.
    """
    await trio.lowlevel.checkpoint()
    return {"sum": a + b}


@af.tool
async def weather(city: str, unit: str) -> dict[str, Any]:
    """The weather in a city today.

    Args:
        city: The city.
        unit: celsius or fahrenheit.
    """
    await trio.lowlevel.checkpoint()
    return {"city": city, "temperature": 21, "unit": unit}


@af.tool
async def convert(value: float, source: str, target: str) -> dict[str, Any]:
    """Convert a value between units.

    Args:
        value: The value.
        source: From unit.
        target: To unit.
    """
    await trio.lowlevel.checkpoint()
    return {"value": value * 0.621, "unit": target}


def history(pairs: int = 10) -> tuple[Message, ...]:
    """The same ``4 * pairs`` earlier messages as the raw side's, as `Message` values."""
    out: list[Message] = []
    for n in range(pairs):
        call = ToolCall.parse(f"old_{n}", "lookup", f'{{"key":"h{n}"}}')
        out.append(user(f"Earlier question number {n}: what is h{n}?"))
        out.append(af.assistant(None, (call,)))
        out.append(af.tool_message(f"old_{n}", f'{{"value":"H{n}"}}'))
        out.append(af.assistant(f"h{n} is H{n}, as the catalogue says."))
    return tuple(out)


@af.agent(name="one_call")
async def one_call(ctx: af.Context, event: af.Event) -> str:
    reply = await ctx.llm.complete([user(event.data["q"])])
    return str(reply.text)


def _config(url: str, connections: int, events: int) -> Config:
    llm = LLMConfig(
        provider="openai",
        base_url=url + "/v1",
        api_key="sk-bench",
        model="gpt-4o-mini",
        max_connections=connections,
    )
    runner = RunnerConfig(
        max_concurrent_events=max(events, 100),
        event_buffer_size=max(events, 100),
        worker_pool_size=max(events, 100),
    )
    return attrs.evolve(Config(), llm=llm, runner=runner)


async def open_side(stack: AsyncExitStack, url: str, concurrency: int) -> dict[str, Call]:
    """Every scenario's caller on one client and one runner (``concurrency`` connections)."""
    config = _config(url, max(concurrency, 64), concurrency)
    llm = await stack.enter_async_context(open_llm_client(config))
    registry = ToolRegistry([lookup, add, weather, convert])
    agents = {
        "loop": tool_agent(tools=registry, name="loop"),
        "one_call": one_call,
    }
    runner = await stack.enter_async_context(af.Runner(config, agents=agents, llm=llm))
    prior = history()

    async def chat(i: int) -> Any:
        return (await llm.complete([user(f"{PROMPT} {i}")])).text

    async def stream(i: int) -> tuple[int, float]:
        chunks, first = 0, 0.0
        async with llm.stream([user(f"{PROMPT} {i}")]) as parts:
            async for chunk in parts:
                if chunk.delta_text:
                    if not chunks:
                        first = trio.current_time()
                    chunks += 1
        return chunks, first

    async def event(kind: str, data: dict[str, Any]) -> Any:
        result = await runner.call(af.Event(kind, data))
        if not result.succeeded:
            raise RuntimeError(f"{kind}: {result.outcome.value}: {result.error}")
        return result.output

    async def loop(i: int) -> Any:
        return await event("loop", {"query": f"{PROMPT} {i}"})

    async def history_loop(i: int) -> Any:
        return await event("loop", {"messages": [*prior, user(f"{PROMPT} {i}")]})

    async def in_flight(i: int) -> Any:
        return await event("one_call", {"q": f"{PROMPT} {i}"})

    return {
        "chat": chat,
        "stream": stream,
        "tool_loop": loop,
        "history_loop": history_loop,
        "in_flight": in_flight,
    }
