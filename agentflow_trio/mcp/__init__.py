"""MCP servers as pooled, health-checked tool providers (the official ``mcp`` SDK, 2.x).

`MCPManager` connects the servers of ``[mcp.servers.NAME]`` for the duration of an
``async with``; each server gets a `SessionPool` whose sessions are each owned by one task,
used round-robin, pinged by a health loop and reconnected with backoff. Tools are exposed
as `MCPTool` values shaped like FunctionTools.

Importing this package does not import the SDK (``pip install 'agentflow_trio[mcp]'``);
the first connection does.
"""

from __future__ import annotations

from .manager import MCPManager as MCPManager
from .manager import MCPTool as MCPTool
from .pool import PoolStatistics as PoolStatistics
from .pool import SessionPool as SessionPool
from .pool import SessionStatistics as SessionStatistics

__all__ = ["MCPManager", "MCPTool", "PoolStatistics", "SessionPool", "SessionStatistics"]
