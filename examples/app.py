"""An App: agents with tools, an MCP server from the config, sessions and a lifespan.

The same object runs unchanged wherever it is hosted (model calls go to the built-in mock
LLM unless the config names an endpoint, so no key is needed)::

    agentcli serve --app examples.app:app                      # HTTP: POST /v1/events
    APP_SESSIONS=redis agentcli worker --app examples.app:app --redis redis://127.0.0.1:6379/0
    agentcli benchmark --app examples.app:app --agent chat --requests 1000
    agentcli loadtest --app examples.app:app --vus 10 --duration 10s
    agentcli loadtest --script examples/app_loadtest.py --vus 10 --duration 10s
    python examples/app.py                                     # in code, three events

(run from the repository's root, so that ``examples.app`` imports). What it shows:

* ``chat`` calls two tools at once through ``ctx.tools``: ``word_count`` (a Python tool
  of the App) and ``facts__lookup`` (a tool of the MCP server that ``[mcp.servers.facts]``
  starts over stdio, ``examples/app_mcp_server.py``), then the model;
* ``notes`` keeps a list in its session's state (events with the same
  ``metadata.session_id`` see it; ``APP_SESSIONS=redis`` shares it through Redis between
  processes and workers);
* ``assistant`` is a ``tool_agent`` that carries the session's conversation across turns;
* the lifespan opens what the agents share (here a small style guide, standing in for a
  database pool) before the first event and closes it after the last; agents reach it
  with ``App.state_of(ctx)``.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

import agentflow_trio as af
from agentflow_trio.app import App
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

HERE = Path(__file__).resolve().parent

CONFIG = f"""
[runner]
event_timeout = "10s"

[memory]
# "memory": sessions live in this process; "redis": in [distributed] redis_url, shared
# by every process and worker (agentcli worker --redis URL sets that URL too).
backend = "${{APP_SESSIONS:-memory}}"
state_cache_ttl = "1h"

[distributed]
redis_url = "${{APP_REDIS_URL:-redis://127.0.0.1:6379/0}}"

[monitoring]
metrics_port = 0        # each process its own free port (two workers on one machine)

[mcp.servers.facts]
command = {sys.executable!r}
args = [{str(HERE / "app_mcp_server.py")!r}]
pool_size = 1
call_timeout = "5s"
connect_timeout = "20s"
"""


@attrs.frozen
class Resources:
    """What the lifespan opens once for every event (a database pool, a warm cache...)."""

    style: str
    opened: bool = True


@asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[Resources]:
    """Opened before the first event, closed after the last."""
    await trio.lowlevel.checkpoint()  # stands in for connecting somewhere
    yield Resources(style="Answer in one sentence, using the fact given.")


@tool
async def word_count(text: str) -> dict[str, int]:
    """Count the words of a text."""
    return {"words": len(text.split())}


tools = ToolRegistry([word_count])


@af.agent(description="Two tools at once (a Python one, an MCP one), then the model.")
async def chat(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    query = str(event.data.get("query", "What is trio?"))
    looked_up, counted = await ctx.tools.call_many(
        [("facts__lookup", {"topic": query}), ("word_count", {"text": query})]
    )
    fact = looked_up.output if looked_up.ok else {}
    style = App.state_of(ctx).style
    reply = await ctx.llm.complete(
        [af.system(f"{style} Fact: {fact.get('fact', 'none')}"), af.user(query)], max_tokens=64
    )
    return {
        "answer": reply.text,
        "fact": fact.get("fact"),
        "mcp_pid": fact.get("pid"),
        "words": counted.output["words"] if counted.ok else None,
    }


@af.agent(description="Keeps a list of notes in its session's state.")
async def notes(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    kept = list(ctx.state.get("notes", ()))
    note = event.data.get("note")
    if note is not None:
        kept.append(str(note))
        ctx.state.set("notes", kept)
    return {"notes": kept, "session": event.metadata.get("session_id"), "pid": os.getpid()}


assistant = tool_agent(
    tools=tools, system="You are a concise assistant.", name="assistant", history=20
)

app = App(
    {"chat": chat, "notes": notes, "assistant": assistant},
    tools=tools,
    lifespan=lifespan,
    config=af.Config.from_mapping(tomllib.loads(CONFIG)),
)


async def main() -> None:
    """Host the App as ``agentcli`` does (the built-in mock LLM answers) and send events."""
    from agentflow_trio.server.service import open_hosted_app

    async with open_hosted_app(app) as hosted, hosted.running.runner() as runner:
        print("tools:", ", ".join(sorted(runner.services.tools.names())))
        result = await runner.call(af.Event("chat", {"query": "What is trio?"}))
        print("chat:", result.unwrap())
        for note in ("buy milk", "call Ada"):
            done = await runner.call(
                af.Event("notes", {"note": note}, metadata={"session_id": "me"})
            )
        print("notes:", done.unwrap()["notes"])
        turn = await runner.call(
            af.Event("assistant", {"query": "Hello!"}, metadata={"session_id": "me"})
        )
        print("assistant:", turn.unwrap()["text"])
    print("closed: the MCP server process has exited, the lifespan is closed")


if __name__ == "__main__":
    trio.run(main)
