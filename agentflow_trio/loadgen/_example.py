"""The built-in example agents that ``agentcli benchmark``, ``loadtest`` and ``serve`` run.

* ``chat``: one chat completion through the whole provider stack (``ctx.llm.complete``):
  what a typical agent costs. Exactly one model request per event while nothing fails.
* ``stream``: the same as a streamed completion (``ctx.llm.stream``), chunks joined.
* ``noop``: returns at once; no model call. The runner's own overhead.

Events carry ``{"query": "..."}`` in ``data`` (`example_event` builds one), and may name
the model group to ask for in ``"model"`` (``ChatRequest.model``: with deployments, a
group of the router; without, the model sent to the one deployment). `example_agents`
binds a default group (``agentcli benchmark|loadtest --model``) for events naming none.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Final

from ..agents import Agent, Context, agent
from ..events import Event

__all__ = ["EXAMPLE_AGENTS", "example_agents", "example_event"]

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


def _fields(event: Event, model: str | None) -> dict[str, Any]:
    """The request's fields: a short answer, and the model group the event (or the
    agents' default) names."""
    chosen = event.data.get("model") or model
    if chosen is None:
        return {"max_tokens": 64}
    if not isinstance(chosen, str):
        raise TypeError(f"event data 'model' must be a model group name, got {chosen!r}")
    return {"max_tokens": 64, "model": chosen}


def _chat(model: str | None) -> Agent:
    @agent(name="chat", description="One chat completion through the provider stack.")
    async def chat(ctx: Context, event: Event) -> dict[str, Any]:
        reply = await _need_llm(ctx).complete(_messages(event), **_fields(event, model))
        usage = reply.usage
        return {"answer": reply.text, "tokens": usage.total_tokens if usage is not None else None}

    return chat


def _stream(model: str | None) -> Agent:
    @agent(name="stream", description="One streamed chat completion, chunks joined.")
    async def stream(ctx: Context, event: Event) -> dict[str, Any]:
        parts: list[str] = []
        async with _need_llm(ctx).stream(_messages(event), **_fields(event, model)) as chunks:
            async for chunk in chunks:
                if chunk.delta_text:
                    parts.append(chunk.delta_text)
        return {"answer": "".join(parts), "chunks": len(parts)}

    return stream


@agent(name="noop", description="Returns at once; measures the runner alone.")
async def noop(ctx: Context, event: Event) -> str:
    return "ok"


EXAMPLE_AGENTS: Final[Mapping[str, Agent]] = {
    "chat": _chat(None),
    "stream": _stream(None),
    "noop": noop,
}
"""The built-in agents by event type."""


def example_agents(model: str | None = None) -> Mapping[str, Agent]:
    """The built-in agents, asking for model group ``model`` unless an event names its
    own (``data["model"]``); `EXAMPLE_AGENTS` when ``model`` is None or empty."""
    if not model:
        return EXAMPLE_AGENTS
    return {"chat": _chat(model), "stream": _stream(model), "noop": noop}


def example_event(agent_name: str, *, model: str | None = None) -> Event:
    """A fresh event for ``agent_name`` with a varying query (so no cache hides the model);
    ``model`` names the model group its request asks for (``data["model"]``)."""
    n = next(_COUNTER)
    data: dict[str, Any] = {"query": f"Question {n}: what is {n} + {n}?"}
    if model:
        data["model"] = model
    return Event(agent_name, data)
