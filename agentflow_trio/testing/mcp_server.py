"""A small real MCP server for tests and examples, written with the official SDK (``mcp`` extra).

    python path/to/agentflow_trio/testing/mcp_server.py          # stdio, one process per session
    python path/to/agentflow_trio/testing/mcp_server.py --http   # streamable HTTP, 127.0.0.1:0
                                                                 # (prints its port, then serves)

It imports nothing from agentflow_trio, so it runs by file path without the package installed;
the ``mcp_server`` fixture hands its stdio config to `MCPManager`. Its tools let a test see who
served a call (``whoami``: process id, HTTP peer port), whether a cancelled call reached the
server (``sleep`` + ``stats``), and a tool error (``fail``); also ``add`` and ``echo``. State is
per process. ``DEMO_EXTRA_TOOL=name`` adds one more tool (tool-naming tests).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("demo", log_level="WARNING")
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
def whoami(ctx: Context) -> dict[str, Any]:
    """Say which server process (and, over HTTP, which client connection) served this."""
    _stats["calls"] += 1
    request = ctx.request_context.request
    client = getattr(request, "client", None)
    return {"pid": os.getpid(), "peer": client.port if client else None, "calls": _stats["calls"]}


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


def _add_extra_tool() -> None:
    """``DEMO_EXTRA_TOOL=name`` adds a tool only this server offers (tool-naming tests)."""
    name = os.environ.get("DEMO_EXTRA_TOOL")
    if name:
        server.add_tool(lambda: name, name=name, description=f"A tool named {name}.")


def _serve_http() -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    _add_extra_tool()
    if sys.argv[1:] == ["--http"]:
        _serve_http()
    else:
        server.run()
