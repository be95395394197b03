"""`MCPTestServer`: the kit's real MCP server (``mcp_server.py``), as configs for `MCPManager`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..config import MCPConfig, MCPServerConfig

if TYPE_CHECKING:
    from ..mcp import MCPManager

__all__ = ["MCP_SERVER_SCRIPT", "MCP_TEST_TOOLS", "MCPTestServer"]

MCP_SERVER_SCRIPT: Final = Path(__file__).resolve().with_name("mcp_server.py")
"""The server script; run by path with this interpreter, it needs only the ``mcp`` extra."""

MCP_TEST_TOOLS: Final = frozenset({"add", "echo", "fail", "sleep", "stats", "whoami"})
"""The tools the server offers (an `MCPManager` names them ``NAME__tool``)."""


@attrs.frozen
class MCPTestServer:
    """A real MCP server over stdio: `MCPManager` starts one subprocess per pooled session.

    ``server.manager()`` is an `MCPManager` for it alone; ``server.config(pool_size=2)`` its
    ``[mcp.servers.NAME]`` table; ``server.mcp_config()`` the whole ``[mcp]`` section.
    Its tools: ``add(a, b)``, ``echo(text)``, ``sleep(seconds)``, ``stats()``,
    ``fail(message)`` and ``whoami()``. The subprocesses do real I/O: use the real clock.
    """

    name: str = "test"
    script: Path = MCP_SERVER_SCRIPT
    python: str = sys.executable

    def config(self, **overrides: Any) -> MCPServerConfig:
        """The stdio server table; ``overrides`` are `MCPServerConfig` fields."""
        fields: dict[str, Any] = {"pool_size": 1, "connect_timeout": 20.0, **overrides}
        return MCPServerConfig(command=self.python, args=[str(self.script)], **fields)

    def mcp_config(self, **overrides: Any) -> MCPConfig:
        """An ``[mcp]`` section with just this server."""
        return MCPConfig(servers={self.name: self.config(**overrides)})

    def tool_name(self, tool: str) -> str:
        """What `MCPManager` calls ``tool`` by default (``NAME__tool``)."""
        return f"{self.name}__{tool}"

    def manager(self, **overrides: Any) -> MCPManager:
        """An `MCPManager` for this server (enter it with ``async with``)."""
        from ..mcp import MCPManager

        return MCPManager(self.mcp_config(**overrides))
