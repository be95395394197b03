"""`MCPManager`: every configured MCP server's pool and health loop in one visible nursery.

    async with MCPManager(config.mcp) as mcp:
        mcp.register_into(registry)          # each tool as a FunctionTool
        reply = await mcp.call_tool("files.read", {"path": "README.md"})

Leaving the block cancels that nursery: every session is closed, every stdio subprocess
has exited and no task of the manager is left when ``__aexit__`` returns.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, final

import attrs
import trio

from .._owner import NurseryOwner
from ..config import MCPConfig, MCPServerConfig
from ..errors import MCPError, UnknownTool
from ._results import result_to_dict
from .pool import PoolStatistics, SessionPool

if TYPE_CHECKING:
    from mcp.types import Tool

__all__ = ["MCPManager", "MCPTool"]


class _Registry(Protocol):
    def register(self, tool: Any, /) -> Any: ...


@attrs.frozen
class MCPTool:
    """One tool of an MCP server, shaped as a FunctionTool (``name``, ``description``,
    ``parameters``, ``async call(ctx, args) -> dict``).

    ``name`` is what the model calls (``server__tool`` by default); ``remote_name`` is the
    server's own name for it; ``parameters`` is the tool's ``inputSchema``.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    server: str
    remote_name: str
    _pool: SessionPool = attrs.field(alias="pool", repr=False, eq=False)

    async def call(self, ctx: Any, args: Mapping[str, Any]) -> dict[str, Any]:
        """Call the tool through its server's pool; ``ctx`` is not used.

        The result is the tool's structured content, or ``{"text": ...}``; a tool that
        failed (``isError``) returns ``{"error": {"type": "mcp_tool_error", "message", ...}}``
        for the model to read. Cancelling the caller cancels the MCP request.

        Raises:
            MCPError: the server could not run the call (no healthy session, timeout,
                connection lost twice, JSON-RPC error); see `SessionPool.call_tool`.
        """
        result = await self._pool.call_tool(self.remote_name, args)
        return result_to_dict(result, server=self.server, tool=self.remote_name)


@final
class MCPManager(NurseryOwner):
    """The MCP servers of a config, connected for the duration of an ``async with``.

    ``config`` is the ``[mcp]`` section or a mapping of server name to
    `MCPServerConfig`; servers with ``enabled = false`` are skipped. Entering starts
    every server's `SessionPool` (concurrently) and its health loop in the manager's
    nursery and lists the tools; leaving cancels that nursery and waits for every
    session to close and every subprocess to exit.

    Tool names: ``server__tool`` (``separator`` between them), with any character that
    OpenAI-style function names reject (outside ``[A-Za-z0-9_-]``) replaced by ``_`` and
    the whole cut to 64 characters, so the names can be offered to any model as they are.
    With ``prefix=False``
    tools keep their own names, except names offered by more than one server, which get
    the prefix for every server offering them (no silent shadowing).

    Raises (on entering):
        MCPError: a server had no session that could connect, or its tools could not be
            listed (every failing server is named), or two tools end up with one name;
            whatever had started is closed first.
        RuntimeError: the manager was entered before.
    """

    def __init__(
        self,
        config: MCPConfig | Mapping[str, MCPServerConfig],
        *,
        prefix: bool = True,
        separator: str = "__",
    ) -> None:
        servers = config if isinstance(config, MCPConfig) else MCPConfig(servers=dict(config))
        self._pools = {
            name: SessionPool(name, server)
            for name, server in servers.servers.items()
            if server.enabled
        }
        self._prefix = prefix
        self._separator = separator
        self._tools: dict[str, MCPTool] = {}

    # ----------------------------------------------------------------- lifecycle

    async def _open(self) -> None:
        """Enter (see `NurseryOwner`): every pool and its health loop, then the tools."""
        nursery = await self._open_nursery()
        await self._start_pools(nursery)
        self._tools = self._name_tools()

    async def _start_pools(self, nursery: trio.Nursery) -> None:
        failures: list[MCPError] = []

        async def start(pool: SessionPool) -> None:
            try:
                await nursery.start(pool.serve)
            except MCPError as exc:
                failures.append(exc)
                return
            await nursery.start(pool.serve_health_checks)

        async with trio.open_nursery() as starters:
            for pool in self._pools.values():
                starters.start_soon(start, pool)
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise MCPError("; ".join(str(failure) for failure in failures))

    # ----------------------------------------------------------------- tools

    def tools(self) -> list[MCPTool]:
        """Every tool of every connected server, sorted by name (empty before entering)."""
        return [self._tools[name] for name in sorted(self._tools)]

    def tool(self, name: str) -> MCPTool:
        """The tool called ``name``.

        Raises:
            UnknownTool: no connected server offers a tool of that name.
        """
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "(none)"
            raise UnknownTool(f"no MCP tool named {name!r}; known: {known}") from None

    async def call_tool(
        self, name: str, args: Mapping[str, Any] | None = None, ctx: Any = None
    ) -> dict[str, Any]:
        """Call the tool ``name`` (as named by `tools`) and return its dict; see `MCPTool.call`.

        Raises:
            UnknownTool: no such tool.
            MCPError: as `MCPTool.call`.
        """
        return await self.tool(name).call(ctx, args or {})

    def register_into(self, registry: _Registry) -> list[MCPTool]:
        """Register every tool with ``registry.register(tool)``; return the tools registered."""
        tools = self.tools()
        for tool in tools:
            registry.register(tool)
        return tools

    # ----------------------------------------------------------------- introspection

    @property
    def servers(self) -> tuple[str, ...]:
        """The names of the enabled servers."""
        return tuple(self._pools)

    def pool(self, server: str) -> SessionPool:
        """The session pool of ``server``.

        Raises:
            KeyError: no enabled server of that name.
        """
        return self._pools[server]

    def statistics(self) -> dict[str, PoolStatistics]:
        """Each enabled server's `PoolStatistics`, by server name."""
        return {name: pool.statistics() for name, pool in self._pools.items()}

    def _name_tools(self) -> dict[str, MCPTool]:
        offered = Counter(tool.name for pool in self._pools.values() for tool in pool.tools)
        named: dict[str, MCPTool] = {}
        for server, pool in self._pools.items():
            for remote in pool.tools:
                shared = offered[remote.name] > 1
                name = _function_name(
                    f"{server}{self._separator}{remote.name}"
                    if self._prefix or shared
                    else remote.name
                )
                if name in named:
                    other = named[name].server
                    raise MCPError(f"MCP tool name {name!r} is offered by {other!r} and {server!r}")
                named[name] = _tool(name, server, remote, pool)
        return named


_NOT_IN_FUNCTION_NAMES = re.compile(r"[^A-Za-z0-9_-]")


def _function_name(name: str) -> str:
    """A name model APIs accept as a function name (``^[A-Za-z0-9_-]{1,64}$``)."""
    return _NOT_IN_FUNCTION_NAMES.sub("_", name)[:64]


def _tool(name: str, server: str, remote: Tool, pool: SessionPool) -> MCPTool:
    description = remote.description or remote.title or ""
    return MCPTool(
        name=name,
        description=description,
        parameters=dict(remote.input_schema),
        server=server,
        remote_name=remote.name,
        pool=pool,
    )
