"""An agent that calls tools of an MCP server, the server declared in the config.

python examples/mcp_agent.py

The server is the demo MCP server of the tests (written with the official ``mcp`` SDK),
run over stdio: a pool of two sessions, so two server processes, used round-robin. Every
session, health loop and subprocess lives inside ``async with MCPManager(...)``.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import trio

import agentflow_trio as af
from agentflow_trio.mcp import MCPManager

# The testing kit's real MCP server (any MCP server works the same way).
DEMO_SERVER = Path(af.__file__).parent / "testing" / "mcp_server.py"

CONFIG = f"""
[runner]
event_timeout = "10s"

[mcp.servers.demo]
command = {sys.executable!r}
args = [{str(DEMO_SERVER)!r}]
pool_size = 2
health_interval = "5s"
call_timeout = "5s"
"""


@af.agent
async def calculator(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    """Add two numbers with the MCP server's ``add`` tool (``ctx.mcp`` is the manager)."""
    total = await ctx.mcp.call_tool("demo__add", {"a": event.data["a"], "b": event.data["b"]})
    return {"sum": total["result"]}


@af.agent
async def careful(ctx: af.Context, event: af.Event) -> str:
    """A tool error is a dict the agent (or the model) reads, not an exception."""
    reply = await ctx.mcp.call_tool("demo__fail", {"message": event.data["why"]})
    return f"the tool said no: {reply['error']['message']}"


async def main() -> None:
    config = af.Config.from_mapping(tomllib.loads(CONFIG))
    async with MCPManager(config.mcp) as mcp:
        print("tools:")
        for tool in mcp.tools():
            print(f"  {tool.name:<13} {tool.description}")

        agents = {"calc": calculator, "careful": careful}
        async with af.Runner(config, agents=agents, mcp=mcp) as runner:
            for a, b in [(1, 2), (20, 22), (7, 8), (100, 1)]:
                result = await runner.call(af.Event("calc", {"a": a, "b": b}))
                print(f"calc {a} + {b}:", result.unwrap())
            result = await runner.call(af.Event("careful", {"why": "no network today"}))
            print("careful:", result.unwrap())

        pids = [(await mcp.call_tool("demo__whoami"))["pid"] for _ in range(4)]
        print("whoami x4 served by server processes:", pids)  # round-robin over the pool

        stats = mcp.statistics()["demo"]
        print(
            f"pool: {stats.healthy_sessions}/{stats.total_sessions} healthy,",
            f"calls per session {[s.calls for s in stats.sessions]},",
            f"reconnects {stats.reconnects}",
        )
    print("closed: every session and server process is gone")


if __name__ == "__main__":
    trio.run(main)
