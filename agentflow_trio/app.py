"""`App`: the one object a deployment is made of, opened the same way wherever it runs.

An App names what a deployment needs: agents, tools, MCP servers, hooks, a session store,
an optional async lifespan and a config. ``async with app.open() as runner`` opens, in
this order and in one visible owner (`RunningApp`): logging as ``[monitoring]`` asks,
tracing as ``[tracing]`` asks, the lifespan, the model client (``[llm]``), the MCP servers
(``[mcp]`` and those given in code; their tools join the App's), the session store
(``[memory]``), the metrics and the monitoring services, then the `Runner` with the
typed `Services` value; leaving closes them in reverse order and leaves no task behind.
Every event's context sees them: ``ctx.llm``, ``ctx.tools``, ``ctx.mcp``,
``ctx.metrics``, its session's state, and the lifespan's value through
``App.state_of(ctx)``.

``agentcli serve|worker|benchmark|loadtest --app MODULE:ATTR`` and the testing kit's
``app_runner`` fixture host an App through `App.open_services` (with the built-in mock LLM
standing in where the config names no endpoint: `agentflow_trio.server.open_hosted_app`).

Floor 5, beside ``runner.py``: it assembles the rooms below it. Optional dependencies (the
HTTP stack, ``mcp``, ``prometheus_client``) are imported when an App opens, never when
this module is imported.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, final

import trio

from ._owner import NurseryOwner
from .agents import Agent, AgentFunction, Context, Hooks, as_agent
from .config import Config, MCPConfig, MCPServerConfig
from .errors import ConfigError
from .runner import Runner
from .services import Services
from .state import SessionBackend, SessionStore

if TYPE_CHECKING:
    from .llm import LLMClient, Provider
    from .mcp import MCPManager
    from .observability.metrics import RunnerMetrics
    from .observability.report import PerformanceReporter
    from .tools import FunctionTool, ToolRegistry

__all__ = ["App", "Lifespan", "RunningApp"]

_log = logging.getLogger("agentflow_trio.app")

Lifespan = Callable[["App"], AbstractAsyncContextManager[Any]]
"""``lifespan(app)``: an async context manager (``@asynccontextmanager``) entered first when
the App opens and left last when it closes; what it yields is the App's state (open a
database pool, warm a cache), reachable from an agent as ``App.state_of(ctx)``."""


def _agents(agents: object) -> Mapping[str, Any]:
    """``agents`` checked (a non-empty mapping of event type -> agent), each made an agent.

    Raises:
        TypeError: not a mapping, a key that is not a string, or a value that is not
            callable.
        ValueError: no agents.
    """
    if not isinstance(agents, Mapping):
        raise TypeError(f"agents must be a dict of event type -> agent, got {agents!r}")
    if not agents:
        raise ValueError("an App needs at least one agent")
    made: dict[str, Any] = {}
    for key, value in agents.items():
        if not isinstance(key, str):
            raise TypeError(f"agents: event types are strings, got {key!r}")
        if not callable(value):
            raise TypeError(f"agents[{key!r}] is not an agent (an async function): {value!r}")
        made[key] = as_agent(value)
    return MappingProxyType(made)


def _registry(tools: object) -> ToolRegistry | None:
    """``tools`` as a `ToolRegistry`: one as is, an iterable of tools made into one."""
    if tools is None:
        return None
    from .tools import ToolRegistry

    if isinstance(tools, ToolRegistry):
        return tools
    if isinstance(tools, Iterable) and not isinstance(tools, str | bytes | Mapping):
        return ToolRegistry(tools)
    raise TypeError(f"tools must be a ToolRegistry or a list of tools, got {tools!r}")


def _servers(mcp: object) -> Mapping[str, MCPServerConfig]:
    """The MCP servers given in code, by name."""
    if mcp is None:
        return MappingProxyType({})
    servers = mcp.servers if isinstance(mcp, MCPConfig) else mcp
    if not isinstance(servers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, MCPServerConfig) for k, v in servers.items()
    ):
        raise TypeError(f"mcp must be an MCPConfig or a dict of name -> MCPServerConfig: {mcp!r}")
    return MappingProxyType(dict(servers))


@final
class App:
    """What a deployment is made of; ``async with app.open() as runner`` runs it.

    ``agents``: event type -> agent (an `Agent` or a plain ``async def (ctx, event)``).
    ``tools``: a `ToolRegistry` (or a list of tools) every event sees as ``ctx.tools``;
    an App without tools still gives agents an empty registry, so an unknown tool is a
    `ToolResult` naming it, never ``None.call_many``. ``mcp``: MCP servers given in code
    (an `MCPConfig` or name -> `MCPServerConfig`), connected beside the config's
    ``[mcp]`` ones (a name in both is a `ConfigError` when the App opens); their tools
    are registered beside the App's (in a copy: the App's registry is never changed).
    ``hooks``: run around every event (copied per opening: the metrics add theirs to the
    copy). ``sessions``: the session store, a `SessionBackend` (default: the one
    ``[memory] backend`` names, per opening: an in-process `SessionStore`, or the Redis
    store on ``[distributed] redis_url`` that every process and worker shares).
    ``lifespan``: see `Lifespan`. ``config``: used when `open` is given none
    (``agentcli --config FILE`` replaces it; the MCP servers given in code stay).

    An App is a description, not a resource: it opens any number of times, one after the
    other or at once (each opening has its own client, MCP sessions, store and runner).

    Raises:
        TypeError: a field of the wrong type (the message names it).
        ValueError: no agents.
    """

    __slots__ = ("_agents", "_mcp", "config", "hooks", "lifespan", "sessions", "tools")

    def __init__(
        self,
        agents: Mapping[str, Agent | AgentFunction | Any],
        *,
        tools: ToolRegistry | Iterable[FunctionTool | Callable[..., Any]] | None = None,
        mcp: MCPConfig | Mapping[str, MCPServerConfig] | None = None,
        hooks: Hooks | None = None,
        sessions: SessionBackend | None = None,
        lifespan: Lifespan | None = None,
        config: Config | None = None,
    ) -> None:
        self._agents = _agents(agents)
        self.tools = _registry(tools)
        self._mcp = _servers(mcp)
        if hooks is not None and not isinstance(hooks, Hooks):
            raise TypeError(f"hooks must be a Hooks, got {hooks!r}")
        self.hooks = hooks if hooks is not None else Hooks()
        self.sessions = sessions
        if lifespan is not None and not callable(lifespan):
            raise TypeError(
                f"lifespan must be a function returning an async context manager: {lifespan!r}"
            )
        self.lifespan = lifespan
        if config is not None and not isinstance(config, Config):
            raise TypeError(f"config must be a Config (af.load_config(path)), got {config!r}")
        self.config = config

    def __repr__(self) -> str:
        return f"App(agents={sorted(self._agents)!r})"

    @property
    def agents(self) -> Mapping[str, Any]:
        """The agents by event type (read-only)."""
        return self._agents

    @property
    def mcp(self) -> Mapping[str, MCPServerConfig]:
        """The MCP servers given in code, by name (read-only)."""
        return self._mcp

    @classmethod
    def coerce(cls, value: App | Mapping[str, Any]) -> App:
        """``value`` if it is an App, else an App of the agents ``value`` maps (what
        ``--app`` accepts besides an App: a dict of event type -> agent)."""
        return value if isinstance(value, App) else cls(value)

    def open_services(
        self,
        config: Config | None = None,
        *,
        llm: LLMClient | Provider | None = None,
        monitoring: bool = True,
        metrics_required: bool = True,
    ) -> RunningApp:
        """The App's services, opened by ``async with`` (see `RunningApp`), without a
        runner: for a host that builds its runner itself (``agentcli worker``).

        ``config`` (default: the App's, else every default) sets every service; ``llm``
        is a model client the caller owns (the App then opens none and closes none).
        ``monitoring``: configure logging and start the Prometheus endpoint and the
        performance report as ``[monitoring]`` asks (False: none of the three; the
        metrics are still kept and served by whoever asks, ``agentcli serve``'s
        ``/metrics`` say). A ``metrics_port`` the config sets (not the default 9090,
        where a local Prometheus server often listens) must bind, or the opening fails;
        the default port, when taken, is a warning naming the key and the App opens
        without the endpoint. ``metrics_required=False``: any port that cannot be bound
        is such a warning (what the load commands do, often run beside a deployment
        that holds the port).
        """
        chosen = config if config is not None else self.config
        return RunningApp(
            self,
            chosen if chosen is not None else Config(),
            llm,
            monitoring=monitoring,
            metrics_required=metrics_required,
        )

    @asynccontextmanager
    async def open(
        self,
        config: Config | None = None,
        *,
        llm: LLMClient | Provider | None = None,
        monitoring: bool = True,
    ) -> AsyncIterator[Runner]:
        """``async with app.open() as runner``: every service (`open_services`), then the
        runner; leaving drains the runner first, then closes the services in reverse
        order of opening.

        Raises:
            ConfigError: a bad ``[llm]`` or ``[memory]`` setting, or an MCP server named
                both in code and in ``[mcp]``.
            MCPError: an MCP server cannot be started.
            OSError: the metrics endpoint cannot bind ``[monitoring] metrics_port``.
        """
        running = self.open_services(config, llm=llm, monitoring=monitoring)
        async with running, running.runner() as runner:
            yield runner

    @staticmethod
    def state_of(ctx: Context) -> Any:
        """What the lifespan of the App running ``ctx``'s event yielded (None without a
        lifespan). `RunningApp.of` gives the rest of that opening.

        Raises:
            LookupError: the event does not run on an opened App.
        """
        return RunningApp.of(ctx).state


"""The default ``[monitoring] metrics_port``: taken, it is a warning, not an error."""

_OPEN: dict[int, tuple[Services, RunningApp]] = {}
"""The open `RunningApp` of each `Services` value its runners use (by identity, the value
kept alive with it): how an agent's context, whose runner holds them, finds its App."""


@final
class RunningApp(NurseryOwner):
    """An `App` while it is open: the effective config, the typed `Services`, the state.

    ``async with app.open_services(config) as running`` opens, in this order: logging
    (``[monitoring] log_level``, ``log_format``), the App's lifespan (``state`` is what it
    yields), the model client (unless one is given), the MCP servers (an `MCPManager`,
    None when there are none; their tools are registered into a copy of the App's
    registry), the session store (``[memory] backend``), the metrics (a `RunnerMetrics`
    when ``[monitoring] enable_metrics``, watching the model stack), then in this
    object's nursery the Prometheus endpoint (``metrics_port``: the bound port) and the
    performance report (``[monitoring] metrics_interval``: ``performance`` is its
    `PerformanceReporter`). Leaving closes them in reverse order; when it returns, every
    MCP subprocess has exited and no task is left. Entered once.

    ``services`` is what every runner of this opening gets (`runner` builds one);
    ``agents`` the App's agents.
    """

    def __init__(
        self,
        app: App,
        config: Config,
        llm: LLMClient | Provider | None,
        *,
        monitoring: bool = True,
        metrics_required: bool = True,
    ) -> None:
        self.app = app
        self.config = config
        self._given_llm = llm
        self._monitoring = monitoring
        self._metrics_required = metrics_required
        self.state: Any = None
        self.metrics_port: int | None = None
        self.performance: PerformanceReporter | None = None
        self._services: Services | None = None
        self._registered: list[int] = []

    @property
    def agents(self) -> Mapping[str, Any]:
        """The App's agents by event type."""
        return self.app.agents

    @property
    def services(self) -> Services:
        """The typed services every event's context sees.

        Raises:
            RuntimeError: the App is not open.
        """
        if self._services is None:
            raise RuntimeError("the App is not open: use `async with app.open_services()`")
        return self._services

    @classmethod
    def of(cls, ctx: Context) -> RunningApp:
        """The open App whose runner runs ``ctx``'s event.

        Raises:
            LookupError: the event does not run on an opened App.
        """
        services = getattr(ctx.runner, "services", None)
        found = _OPEN.get(id(services))
        if found is None or found[0] is not services:
            raise LookupError("this event does not run on an opened App (App.open)")
        return found[1]

    def runner(self, services: Services | None = None) -> Runner:
        """A `Runner` of the App's agents (enter it to run events) on these services, or
        on ``services`` (derived from them by a host, say with another metrics); the
        metrics, if any, watch it, and ``App.state_of`` finds this App from its events.

        Raises:
            RuntimeError: the App is not open.
        """
        chosen = services if services is not None else self.services
        runner = Runner(self.config, agents=self.agents, services=chosen)
        if chosen.metrics is not None:
            chosen.metrics.attach(runner)
        self._register(chosen)
        return runner

    def _register(self, services: Services) -> None:
        """Let the contexts of runners on ``services`` find this App (`of`)."""
        if id(services) not in _OPEN:
            _OPEN[id(services)] = (services, self)
            self._registered.append(id(services))

    async def _open(self) -> None:
        config, app = self.config, self.app
        if self._monitoring:
            from .observability.logs import configure_logging

            configure_logging(config.monitoring)
        if config.tracing.enabled:  # spans for this process while the App is open
            from .observability.tracing import open_tracing

            await self._enter(open_tracing(config))
        if app.lifespan is not None:
            self.state = await self._enter(app.lifespan(app))
        llm = self._given_llm
        if llm is None:
            from .llm import open_llm_client

            llm = await self._enter(open_llm_client(config))
        mcp = await self._open_mcp()
        tools = _joined_tools(app.tools, mcp)
        sessions = app.sessions
        if sessions is None:
            sessions = await self._open_sessions()
        metrics = _new_metrics(llm) if config.monitoring.enable_metrics else None
        hooks = _copied(app.hooks)
        if metrics is not None:
            metrics.install(hooks)
        services = Services(
            hooks=hooks, llm=llm, tools=tools, mcp=mcp, metrics=metrics, sessions=sessions
        )
        nursery = await self._open_nursery()
        if self._monitoring:
            await self._start_monitoring(nursery, hooks, metrics)
        self._services = services
        self._register(services)

    async def _open_sessions(self) -> SessionBackend:
        """The store ``[memory] backend`` names (the Redis one owned until closing)."""
        memory = self.config.memory
        if memory.backend != "redis":
            return SessionStore.from_config(memory)
        from .distributed.sessions import open_session_store

        return await self._enter(open_session_store(self.config))

    async def _start_monitoring(
        self, nursery: trio.Nursery, hooks: Hooks, metrics: RunnerMetrics | None
    ) -> None:
        """The Prometheus endpoint and the performance report, as ``[monitoring]`` asks."""
        monitoring = self.config.monitoring
        if metrics is not None:
            from .observability.metrics_server import serve_metrics

            serve = functools.partial(serve_metrics, monitoring, metrics)
            try:
                self.metrics_port = await nursery.start(serve)
            except OSError as exc:
                if self._metrics_required and monitoring.metrics_port_set:
                    raise
                _log.warning(
                    "no Prometheus endpoint: %s; set [monitoring] metrics_port (0: a free "
                    "port) or enable_metrics = false",
                    exc,
                )
        if monitoring.metrics_interval > 0:
            from .observability.report import PerformanceReporter, report_performance

            reporter = self.performance = PerformanceReporter()
            reporter.install(hooks)
            if metrics is not None:
                reporter.publish_to(metrics)
            await nursery.start(functools.partial(report_performance, monitoring, reporter))

    def _closed(self) -> None:
        self._services = None
        for key in self._registered:
            del _OPEN[key]
        self._registered.clear()

    async def _open_mcp(self) -> MCPManager | None:
        """The MCP servers of ``[mcp]`` and of the App, connected; None if there are none."""
        configured = self.config.mcp.servers
        clash = sorted(configured.keys() & self.app.mcp.keys())
        if clash:
            raise ConfigError(
                f"MCP server {clash[0]!r} is given both in code (App(mcp=...)) and in the "
                "config; rename one",
                key=f"mcp.servers.{clash[0]}",
            )
        servers = {**configured, **self.app.mcp}
        if not any(server.enabled for server in servers.values()):
            return None
        from .mcp import MCPManager

        return await self._enter(MCPManager(servers))


def _joined_tools(tools: ToolRegistry | None, mcp: MCPManager | None) -> ToolRegistry:
    """The registry events see: the App's, or (with MCP tools) a copy with them added."""
    from .tools import ToolRegistry

    mcp_tools = mcp.tools() if mcp is not None else []
    if not mcp_tools:
        return tools if tools is not None else ToolRegistry()
    base = tools if tools is not None else ToolRegistry()
    joined = ToolRegistry(
        [base.get(name) for name in base.names()],
        default_timeout=base.default_timeout,
        max_parallel=base.max_parallel,
    )
    assert mcp is not None
    mcp.register_into(joined)
    return joined


def _copied(hooks: Hooks) -> Hooks:
    """A fresh `Hooks` with the same hooks: what one opening adds stays in it."""
    return Hooks(
        before_event=hooks.before_event,
        after_event=hooks.after_event,
        before_agent=hooks.before_agent,
        after_agent=hooks.after_agent,
        on_error=hooks.on_error,
        on_accept=hooks.on_accept,
    )


def _new_metrics(llm: object) -> RunnerMetrics:
    """A `RunnerMetrics` that also watches the model stack (breaker, cache, pool)."""
    from .observability.metrics import RunnerMetrics

    metrics = RunnerMetrics()
    stack_statistics = getattr(getattr(llm, "provider", None), "statistics", None)
    if stack_statistics is not None:
        metrics.watch_llm("llm", stack_statistics)
    return metrics
