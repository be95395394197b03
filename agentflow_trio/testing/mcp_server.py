"""A small real MCP server for tests, written with the official SDK (the ``mcp`` extra).

    python path/to/agentflow_trio/testing/mcp_server.py        # stdio, one process per session

The ``mcp_server`` fixture hands its stdio config to `MCPManager`; run it by file path (it
imports nothing from agentflow_trio, so it works without the package installed). Tools:
``add``, ``echo``, ``sleep`` (counts calls in progress and calls cancelled by the client),
``stats`` (this process's counters), ``fail`` (always a tool error) and ``whoami`` (the
process id). State is per process.
"""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("agentflow-test", log_level="WARNING")
_stats = {"calls": 0, "active": 0, "cancelled": 0, "finished": 0}


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    _stats["calls"] += 1
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    _stats["calls"] += 1
    return text


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, counting calls in progress and calls cancelled by the client."""
    _stats["calls"] += 1
    _stats["active"] += 1
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _stats["cancelled"] += 1
        raise
    finally:
        _stats["active"] -= 1
    _stats["finished"] += 1
    return f"slept {seconds}s"


@server.tool()
def stats() -> dict[str, int]:
    """This process's counters: calls, active sleeps, cancelled and finished sleeps."""
    return dict(_stats)


@server.tool()
def fail(message: str) -> str:
    """Always fail with a tool error carrying ``message``."""
    raise ToolError(message)


@server.tool()
def whoami() -> dict[str, int]:
    """The id of the process serving this session."""
    _stats["calls"] += 1
    return {"pid": os.getpid(), "calls": _stats["calls"]}


if __name__ == "__main__":
    server.run()
