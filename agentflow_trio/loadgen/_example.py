"""The built-in example agents that ``agentcli benchmark``, ``loadtest`` and ``serve`` run.

* ``chat``: one chat completion through the whole provider stack (``ctx.llm.complete``):
  what a typical agent costs. Exactly one model request per event while nothing fails.
* ``stream``: the same as a streamed completion (``ctx.llm.stream``), chunks joined.
* ``noop``: returns at once; no model call. The runner's own overhead.

Events carry ``{"query": "..."}`` in ``data`` (`example_event` builds one).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Final

from ..agents import Agent, Context, agent
from ..events import Event

__all__ = ["EXAMPLE_AGENTS", "example_event"]

_SYSTEM: Final = "You are a concise assistant. Answer in one sentence."
_COUNTER = itertools.count()


def _messages(event: Event) -> list[Any]:
    from ..llm import system, user

    query = str(event.data.get("query", "Say hello."))
    return [system(_SYSTEM), user(query)]


def _need_llm(ctx: Context) -> Any:
    if ctx.llm is None:
        raise RuntimeError("this example agent needs an LLM client (the runner got llm=None)")
    return ctx.llm


@agent(name="chat", description="One chat completion through the provider stack.")
async def chat(ctx: Context, event: Event) -> dict[str, Any]:
    reply = await _need_llm(ctx).complete(_messages(event), max_tokens=64)
    usage = reply.usage
    return {"answer": reply.text, "tokens": usage.total_tokens if usage is not None else None}


@agent(name="stream", description="One streamed chat completion, chunks joined.")
async def stream(ctx: Context, event: Event) -> dict[str, Any]:
    parts: list[str] = []
    async with _need_llm(ctx).stream(_messages(event), max_tokens=64) as chunks:
        async for chunk in chunks:
            if chunk.delta_text:
                parts.append(chunk.delta_text)
    return {"answer": "".join(parts), "chunks": len(parts)}


@agent(name="noop", description="Returns at once; measures the runner alone.")
async def noop(ctx: Context, event: Event) -> str:
    return "ok"


EXAMPLE_AGENTS: Final[Mapping[str, Agent]] = {"chat": chat, "stream": stream, "noop": noop}
"""The built-in agents by event type."""


def example_event(agent_name: str) -> Event:
    """A fresh event for ``agent_name`` with a varying query (so no cache hides the model)."""
    n = next(_COUNTER)
    return Event(agent_name, {"query": f"Question {n}: what is {n} + {n}?"})
