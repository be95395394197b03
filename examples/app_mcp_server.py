"""The MCP server of the example App (``examples/app.py`` starts it over stdio).

Written with the official ``mcp`` SDK; it imports nothing from agentflow_trio. Its tools:
``lookup(topic)`` (a short fact, and which server process answered) and ``stats()``
(how many lookups this process served).
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("facts", log_level="WARNING")
_served = {"lookups": 0}

FACTS = {
    "trio": "Trio is a Python library for async concurrency built on structured concurrency.",
    "mcp": "The Model Context Protocol lets models call tools that other programs offer.",
    "redis": "Redis is an in-memory data store, here the bus between serve and workers.",
}


@server.tool()
def lookup(topic: str) -> dict[str, object]:
    """A short fact about ``topic`` (the first known word in it), and who answered."""
    _served["lookups"] += 1
    words = [w.strip(".,?!").lower() for w in topic.split()]
    known = next((w for w in words if w in FACTS), None)
    fact = FACTS[known] if known else f"No fact on file about {topic!r}."
    return {"topic": known or topic, "fact": fact, "pid": os.getpid()}


@server.tool()
def stats() -> dict[str, int]:
    """This server process's counters."""
    return {"lookups": _served["lookups"], "pid": os.getpid()}


if __name__ == "__main__":
    server.run()
