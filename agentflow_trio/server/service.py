"""Hosting an `App` with the built-in mock LLM where it is needed, and `serve_runner`.

`open_hosted_app` is how every host of an App opens it (``agentcli serve``, ``worker``,
``benchmark``, ``loadtest`` and the testing kit's ``app_runner``): the model client by the
rule of `open_llm_services` (the built-in mock LLM where the config names no endpoint),
then the App's services (`App.open_services`: lifespan, MCP servers and their tools,
session store, metrics, monitoring), all owned by one ``async with``.

`serve_runner` is a whole served App in one call, what ``agentcli serve`` runs: the hosted
App, its `Runner`, the companions the caller asks for (``agentcli serve --dashboard``
passes its live dashboard this way, so this room does not depend on the load generator's),
and the HTTP face (`make_app` served by `serve`). With ``nursery.start`` it reports a
`ServedRunner` (the bound port, the URL, the runner) once it accepts connections, so tests
bind port 0 and read the port back; no click, no signals, no printing here.

Binding beyond loopback needs ``allow_remote`` (`check_host`), as for every server of the
project. A busy address is an `OSError` whose message names the server, address and port.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, final

import attrs
import trio

from .._owner import reraise_single
from ..app import App, RunningApp
from ..config import Config
from ..errors import ConfigError
from ..mockllm import Fault, LLMServices, MockLLM, open_llm_services
from ..runner import Runner
from ..services import Services
from .app import DEFAULT_BACKLOG, DEFAULT_MAX_BODY_BYTES, make_app, serve

if TYPE_CHECKING:
    from ..observability.metrics import RunnerMetrics

__all__ = [
    "Companion",
    "HostedApp",
    "ServedRunner",
    "check_host",
    "listen_error",
    "only_os_error",
    "open_hosted_app",
    "serve_runner",
]


@final
@attrs.frozen(slots=True)
class HostedApp:
    """What `open_hosted_app` yields: the open App and where its model calls go.

    ``running`` is the open `App` (its effective ``config``, typed ``services``, lifespan
    ``state``; ``running.runner()`` builds a runner on them); ``llm`` the model client's
    side (the effective config, the client, the built-in mock if it answers, and
    ``target``: where calls go, in words).
    """

    running: RunningApp
    llm: LLMServices

    @property
    def config(self) -> Config:
        """The effective config (with the built-in mock's URL where it stands in)."""
        return self.running.config

    @property
    def services(self) -> Services:
        """What every event's context sees."""
        return self.running.services

    @property
    def agents(self) -> Mapping[str, Any]:
        """The App's agents by event type."""
        return self.running.agents

    @property
    def target(self) -> str:
        """Where model calls go, in words (for reports and start-up lines)."""
        return self.llm.target

    @property
    def mock(self) -> MockLLM | None:
        """The built-in mock LLM, when it answers the model calls."""
        return self.llm.mock


@asynccontextmanager
async def open_hosted_app(
    app: App | Mapping[str, Any],
    config: Config | None = None,
    *,
    source: str | None = None,
    mock_latency: float = 0.0,
    mock_faults: Mapping[str, Sequence[Fault]] | None = None,
    monitoring: bool = False,
    metrics_required: bool = True,
) -> AsyncIterator[HostedApp]:
    """Host ``app`` (an `App`, or a dict of agents made one): its model client, by the
    rule of `open_llm_services` (the built-in mock LLM, with ``mock_latency`` and
    ``mock_faults``, where the config names no endpoint), then its services
    (`App.open_services`). Leaving closes them in reverse order.

    ``config`` (``--config FILE``) replaces the App's own; neither: every default.
    ``source`` names the config's file in messages. ``monitoring`` (what ``agentcli``
    passes; off by default, so that a test hosting an App binds no fixed port):
    logging, the Prometheus endpoint and the performance report as ``[monitoring]`` asks.
    ``metrics_required=False`` is a host that runs beside deployments (the load commands):
    a busy metrics port is a warning, not an error, and a ``metrics_port`` the config
    leaves unset is a free port instead of 9090, which stays the long-running hosts'
    (``serve``, ``worker``: see `MonitoringConfig`).

    Raises:
        ConfigError: see `check_llm_target` and `App.open`.
    """
    hosted = App.coerce(app)
    chosen = config if config is not None else hosted.config
    if not metrics_required:
        chosen = _free_metrics_port(chosen)
    async with (
        open_llm_services(
            chosen, source=source, mock_latency=mock_latency, mock_faults=mock_faults
        ) as llm,
        hosted.open_services(
            llm.config, llm=llm.llm, monitoring=monitoring, metrics_required=metrics_required
        ) as running,
    ):
        yield HostedApp(running, llm)


def _free_metrics_port(config: Config | None) -> Config:
    """``config`` (None: every default) with an unset ``[monitoring] metrics_port`` made
    0 (a free port): a load command never takes the long-running hosts' 9090."""
    chosen = config if config is not None else Config()
    monitoring = chosen.monitoring
    if monitoring.metrics_port_set:
        return chosen
    return attrs.evolve(chosen, monitoring=attrs.evolve(monitoring, metrics_port=0))


class Companion(Protocol):
    """A service started beside the served runner, in the same nursery, before the HTTP
    face: ``await nursery.start(companion, runner)``. What it passes to
    ``task_status.started`` (a URL, say) is reported in `ServedRunner.companions`."""

    def __call__(self, runner: Runner, *, task_status: trio.TaskStatus[Any]) -> Awaitable[None]: ...


@final
@attrs.frozen(slots=True)
class ServedRunner:
    """What `serve_runner` reports once it accepts connections.

    ``port`` is the bound TCP port (the real one for ``port=0``), ``url`` the base URL to
    send requests to, ``target`` says in words where model calls go, ``companions`` holds
    what each companion reported, in the order given; ``metrics_port`` is the port of
    the Prometheus endpoint of its own (None when it does not listen).
    """

    url: str
    port: int
    target: str
    runner: Runner
    companions: tuple[Any, ...] = ()
    metrics_port: int | None = None


def _is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback IP literals (``[::1]`` included)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback ``host`` unless ``allow_remote``: a served runner starts
    agents (and spends model calls) for whoever reaches it.

    Raises:
        ConfigError: key ``host``, naming the address and ``allow_remote``.
    """
    if not allow_remote and not _is_loopback(host):
        raise ConfigError(
            f"refusing to bind non-loopback host {host!r}: anyone who reaches it can run "
            "agents; set allow_remote (agentcli: --allow-remote) to expose the runner",
            key="host",
        )


def listen_error(exc: OSError, what: str, host: str, port: int) -> OSError:
    """``exc`` (from binding ``host:port``) as an `OSError` whose message names ``what``
    (the server), the address and the port; ``errno`` is kept."""
    where = f"[{host}]" if ":" in host else host
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        reason = "the address is already in use (is another server running there?)"
    error = OSError(exc.errno, f"{what} cannot listen on {where}:{port}: {reason}")
    error.__cause__ = exc
    return error


def only_os_error(exc: BaseException) -> OSError | None:
    """The lone `OSError` inside ``exc`` (nested exception groups unwrapped), else None."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, OSError) else None


@asynccontextmanager
async def _listening(what: str, host: str, port: int) -> AsyncIterator[None]:
    """An `OSError` (alone, even inside exception groups) raised in the block becomes
    `listen_error`; anything else passes unchanged."""
    try:
        yield
    except (OSError, BaseExceptionGroup) as exc:
        error = only_os_error(exc)
        if error is None:
            raise
        raise listen_error(error, what, host, port) from None


async def serve_runner(
    config: Config | None,
    agents: App | Mapping[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    allow_remote: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    backlog: int = DEFAULT_BACKLOG,
    allowed_hosts: Collection[str] = (),
    services: Services | None = None,
    source: str | None = None,
    mock_latency: float = 0.0,
    companions: Sequence[Companion] = (),
    api_key: str | None = None,
    monitoring: bool = False,
    fd: int | None = None,
    task_status: trio.TaskStatus[ServedRunner] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``agents`` (an `App`, or a dict of agents made one) over HTTP on
    ``host:port`` until cancelled.

    The App is hosted by `open_hosted_app` (``config``: None for the App's own; ``source``
    names its file in messages; ``mock_latency``, in seconds, is the built-in mock LLM's
    latency when the mock answers). ``services``: its fields that are not None replace
    the App's (its hooks are added to the App's). The metrics (``[monitoring]
    enable_metrics``) are also served on ``/metrics``; ``monitoring`` (what ``agentcli
    serve`` passes) also starts logging, the Prometheus endpoint of its own and the
    performance report as ``[monitoring]`` asks (see `open_hosted_app`). ``api_key``:
    every endpoint but ``/healthz`` needs ``Authorization: Bearer <api_key>`` (see
    `make_app`). ``backlog`` and ``allowed_hosts`` go to `serve` and `make_app`; ``fd``
    (a bound socket's descriptor, ``host:port`` its address) to `serve`.
    Everything started here ends when the call does.

    Raises (before ``task_status.started``):
        ConfigError: ``host`` is not loopback and ``allow_remote`` is false; or the
            config would call a remote provider without a key (see `check_llm_target`).
        OSError: an address cannot be bound; the message names it (`listen_error`).
    """
    check_host(host, allow_remote)
    async with AsyncExitStack() as stack:
        hosted = await stack.enter_async_context(
            open_hosted_app(
                agents, config, source=source, mock_latency=mock_latency, monitoring=monitoring
            )
        )
        made = _runner(hosted.running, services)
        debug_port = hosted.config.monitoring.profile_port
        async with _listening(
            "the debug server ([monitoring] profile_port)", "127.0.0.1", debug_port
        ):
            runner = await stack.enter_async_context(made)
        metrics = runner.metrics
        if metrics is None:  # [monitoring] enable_metrics = false: /metrics still answers
            metrics = _new_metrics(runner.llm)
            metrics.attach(runner)
        keywords: dict[str, Any] = {} if api_key is None else {"api_key": api_key}
        app = make_app(
            runner,
            metrics=metrics,
            max_body_bytes=max_body_bytes,
            allowed_hosts=allowed_hosts,
            **keywords,
        )
        try:
            async with trio.open_nursery() as nursery:
                reported = tuple([await nursery.start(c, runner) for c in companions])
                async with _listening("agentcli serve", host, port):
                    bound = await nursery.start(
                        functools.partial(serve, app, host=host, port=port, backlog=backlog, fd=fd)
                    )
                where = f"[{host}]" if ":" in host else host
                url = f"http://{where}:{bound}"
                metrics_port = hosted.running.metrics_port
                task_status.started(
                    ServedRunner(url, bound, hosted.target, runner, reported, metrics_port)
                )
        except BaseExceptionGroup as group:
            reraise_single(group)  # a lone error (a busy port) comes out bare


def _runner(running: RunningApp, given: Services | None) -> Runner:
    """The hosted App's runner; with ``given``, on the App's services with ``given``'s
    fields that are not None in their place (``given``'s hooks added to the App's)."""
    if given is None:
        return running.runner()
    base = running.services
    fields = {k: v for k, v in attrs.asdict(given, recurse=False).items() if v is not None}
    hooks = fields.pop("hooks")
    for kind in ("before_event", "after_event", "before_agent", "after_agent", "on_error"):
        getattr(base.hooks, kind).extend(getattr(hooks, kind))
    base.hooks.on_accept.extend(hooks.on_accept)
    return running.runner(attrs.evolve(base, **fields))


def _new_metrics(llm: Any) -> RunnerMetrics:
    """A `RunnerMetrics` that also watches the model stack (breaker, cache, pool)."""
    from ..observability.metrics import RunnerMetrics

    metrics = RunnerMetrics()
    stack_statistics = getattr(getattr(llm, "provider", None), "statistics", None)
    if stack_statistics is not None:
        metrics.watch_llm("llm", stack_statistics)
    return metrics
