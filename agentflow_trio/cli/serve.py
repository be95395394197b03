"""``agentcli serve`` and ``agentcli worker``: run an App's agents for others, until stopped.

Both share one preamble (`prepare`: config, ``--app`` App, model-target check) and host
the App the same way (`agentflow_trio.server.open_hosted_app`: model client, lifespan, MCP
servers and their tools, session store, metrics), then hand over to the library: ``serve``
to `agentflow_trio.server.serve_runner`, ``worker`` to `agentflow_trio.distributed.Worker`
with the App's typed `Services` value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._guard import as_click_error
from ._options import app_option, config_option, host_options, mock_latency_option
from ._plumbing import (
    load_config,
    ms,
    prepare,
    run_trio,
    run_until_signalled,
    start_server,
    usage_errors,
)

if TYPE_CHECKING:
    import trio

    from agentflow_trio.app import App
    from agentflow_trio.config import Config
    from agentflow_trio.runner import Runner

__all__ = ["serve", "worker"]


@click.command()
@config_option
@host_options(8080, what="the runner: anyone who reaches it can run agents")
@app_option
@click.option(
    "--max-body",
    default="1MiB",
    show_default=True,
    help="Largest request body accepted (bigger: 413).",
)
@click.option(
    "--backlog",
    type=click.IntRange(1, 65535),
    default=1024,
    show_default=True,
    help="Connections the kernel holds before accepting (a burst beyond it waits or fails).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A Host name (NAME or NAME:PORT) accepted besides loopback ones; repeatable "
    "('*': any). Others get 421 (DNS rebinding).",
)
@mock_latency_option(when_used=True)
@click.option(
    "--dashboard",
    is_flag=True,
    help="Serve a live dashboard on 127.0.0.1 (a free port; its URL is printed).",
)
@click.option(
    "--api-key",
    envvar="AGENTFLOW_API_KEY",
    show_envvar=True,
    help="Require 'Authorization: Bearer KEY' on every endpoint but /healthz (what an "
    "OpenAI SDK sends as its api_key). Prefer the environment variable: a flag shows in ps.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Serving processes on the one port, each with its own App and runner (1: this "
    "process). A crashed one is restarted; /metrics and [monitoring] metrics_port "
    "(+ the worker's index) are per process.",
)
@click.option("--worker-index", type=click.IntRange(0), hidden=True)
@click.option("--worker-fd", type=click.IntRange(0), hidden=True)
def serve(
    config_path: str | None,
    host: str,
    port: int,
    allow_remote: bool,
    app_ref: str | None,
    max_body: str,
    backlog: int,
    allowed_hosts: tuple[str, ...],
    latency_ms: float,
    dashboard: bool,
    api_key: str | None,
    workers: int,
    worker_index: int | None,
    worker_fd: int | None,
) -> None:
    """Serve an App's agents over HTTP (httptools on trio) until Ctrl-C.

    POST /v1/events runs an event and returns its result (?async=1: 202 with an id);
    GET /v1/events/ID, /metrics (Prometheus) and /healthz. --app names the App (its
    tools, MCP servers, sessions and lifespan run here too). Model calls go to the
    built-in mock LLM unless the config sets llm.base_url or llm.provider = "fake".
    Binding an address other than loopback needs --allow-remote. --workers N runs N
    processes on the port (see agentflow_trio.server._workers).
    """
    import functools

    from agentflow_trio.config import parse_size
    from agentflow_trio.server import check_host, exit_with_parent, serve_runner

    try:
        max_body_bytes = parse_size(max_body)
    except ValueError:
        raise click.BadParameter(
            f"{max_body!r} is not a size (such as '1MiB' or 65536)", param_hint="'--max-body'"
        ) from None
    with usage_errors({"host": "--host"}):
        check_host(host, allow_remote)
    if api_key is not None and not api_key:
        raise click.BadParameter("is empty", param_hint="'--api-key' / AGENTFLOW_API_KEY")
    config, app = prepare(config_path, app_ref)
    if workers > 1:
        if dashboard:
            raise click.BadParameter(
                "watches one process: not with --workers", param_hint="'--dashboard'"
            )
        return _supervise(config, app, workers, port, api_key)
    fd = None
    if worker_index is not None:
        config, fd = _as_worker(config, app, worker_index, worker_fd, host, port)
    run = functools.partial(
        serve_runner,
        config,
        app,
        host=host,
        port=port,
        allow_remote=allow_remote,
        max_body_bytes=max_body_bytes,
        backlog=backlog,
        allowed_hosts=allowed_hosts,
        source=config_path,
        mock_latency=ms(latency_ms),
        companions=(_serve_dashboard,) if dashboard else (),
        api_key=api_key,
        monitoring=True,
        fd=fd,
    )

    async def start(nursery: trio.Nursery) -> None:
        served = await nursery.start(run)
        if worker_index is None:
            click.echo(f"agentcli serve listening on {served.url}")
        else:
            nursery.start_soon(exit_with_parent, nursery.cancel_scope)
        click.echo(f"agents: {', '.join(sorted(app.agents))}; model calls: {served.target}")
        if served.metrics_port is not None:
            click.echo(f"metrics: {_metrics_url(served.runner.config, served.metrics_port)}")
        if api_key:
            click.echo("requests need Authorization: Bearer <the API key>")
        if dashboard:
            click.echo(f"dashboard: {served.companions[0]}")
        if worker_index is not None:  # last: the parent reads the lines up to it
            click.echo(f"agentcli serve listening on {served.url}")

    run_until_signalled(start)


def _supervise(
    config: Config | None, app: App, workers: int, port: int, api_key: str | None
) -> None:
    """``serve --workers N`` (N > 1): the supervising parent (`server._workers`): the
    children get this command's options but ``--workers`` and ``--port`` (the parent
    passes the bound one), and the API key in their environment, never on a command line."""
    import os

    from agentflow_trio.config import Config
    from agentflow_trio.observability.logs import configure_logging
    from agentflow_trio.server import WorkerPlan, supervise_workers

    context = click.get_current_context()
    args: list[str] = []
    for param in context.command.params:
        name = param.name
        value = context.params.get(name or "")
        if name in ("workers", "port", "worker_index", "worker_fd", "api_key"):
            continue
        if not isinstance(param, click.Option) or value is None or value is False:
            continue
        flag = param.opts[0]
        for item in value if param.multiple else (value,):
            args += [flag] if param.is_flag else [flag, str(item)]
    env = dict(os.environ)
    if api_key:
        env["AGENTFLOW_API_KEY"] = api_key
    effective = config if config is not None else (app.config or Config())
    configure_logging(effective.monitoring)
    host = context.params["host"]
    plan = WorkerPlan(
        workers=workers,
        args=args,
        host=host,
        port=port,
        backlog=context.params["backlog"],
        drain_timeout=effective.runner.drain_timeout,
        echo=click.echo,
        env=env,
    )
    try:
        supervise_workers(plan)
    except BaseException as exc:
        raise as_click_error(exc) from None


def _as_worker(
    config: Config | None, app: App, index: int, fd: int | None, host: str, port: int
) -> tuple[Config, int]:
    """A child of ``serve --workers``: its config (the Prometheus port of its own and the
    debug server's moved by ``index`` unless 0) and the descriptor of its listening
    socket (``fd``, inherited; else one bound here with ``SO_REUSEPORT``)."""
    import attrs

    from agentflow_trio.config import Config
    from agentflow_trio.server import bind_worker_socket, listen_error

    effective = config if config is not None else (app.config or Config())
    m = effective.monitoring
    moved = attrs.evolve(
        m,
        # type(...) keeps an unset port unset (a taken default only warns)
        metrics_port=m.metrics_port and type(m.metrics_port)(m.metrics_port + index),
        profile_port=m.profile_port and m.profile_port + index,
    )
    if fd is None:
        try:
            fd = bind_worker_socket(host, port, reuse_port=True).detach()
        except OSError as exc:
            raise as_click_error(listen_error(exc, "agentcli serve", host, port)) from None
    return attrs.evolve(effective, monitoring=moved), fd


async def _serve_dashboard(runner: Runner, *, task_status: trio.TaskStatus[str]) -> None:
    """``serve --dashboard``: the live dashboard, watching ``runner``; reports its URL."""
    import trio

    from agentflow_trio.loadgen.dashboard import Dashboard, ServeWatch

    watch = ServeWatch(runner, runner.llm)
    board = Dashboard(title="agentcli serve live dashboard")
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.run)
        url = await start_server(
            nursery, board.serve, what="the dashboard", host=board.host, port=board.port
        )
        board.start(watch, 0.0, None)
        task_status.started(url)


@click.command()
@click.option(
    "--redis",
    "redis_url",
    help="Redis URL, such as redis://127.0.0.1:6379/0 (default: [distributed] redis_url).",
)
@click.option("--stream", help="Stream of events to read (default: [distributed] stream).")
@click.option("--group", help="Consumer group to read in (default: [distributed] group).")
@click.option("--consumer", help="This worker's name in the group (default: host-pid-random).")
@config_option
@app_option
@mock_latency_option(when_used=True)
def worker(
    redis_url: str | None,
    stream: str | None,
    group: str | None,
    consumer: str | None,
    config_path: str | None,
    app_ref: str | None,
    latency_ms: float,
) -> None:
    """Run an App's agents on events read from a Redis stream, in a consumer group, until Ctrl-C.

    Start as many workers as you like, on any machine that reaches Redis; producers send
    events with RemoteRunner. Each result is stored before its entry is acknowledged;
    entries of a dead worker are reclaimed after [distributed] claim_idle. The first
    SIGINT or SIGTERM stops gracefully (running events finish, unstarted ones are handed
    back); a second stops at once. Model calls go to the built-in mock LLM unless
    --config sets llm.base_url or llm.provider = "fake".
    """
    import functools
    import importlib.util

    if importlib.util.find_spec("coredis") is None:
        raise click.ClickException(
            "agentcli worker needs coredis: pip install 'agentflow_trio[redis]'"
        )
    import trio

    from agentflow_trio.distributed import Worker, redact
    from agentflow_trio.server.service import open_hosted_app

    given, app = prepare(config_path, app_ref)
    config = _with_redis(given if given is not None else app.config, redis_url)

    async def run() -> None:
        async with open_hosted_app(
            app, config, source=config_path, mock_latency=ms(latency_ms), monitoring=True
        ) as hosted:
            # Built outside any nursery: a bad --redis URL is a lone ConfigError (exit 2).
            running = Worker(
                hosted.config,
                hosted.agents,
                stream=stream,
                group=group,
                consumer=consumer,
                services=hosted.services,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(running.serve, handle_signals=True))
                s = running.settings
                click.echo(
                    f"agentcli worker {running.consumer} reading {s.stream} "
                    f"(group {s.group}) at {redact(s.redis_url)}"
                )
                click.echo(f"agents: {', '.join(sorted(app.agents))}; model calls: {hosted.target}")
                if hosted.running.metrics_port is not None:
                    port = hosted.running.metrics_port
                    click.echo(f"metrics: {_metrics_url(hosted.config, port)}")
            stats = running.statistics()
            click.echo(
                f"stopped: {stats.stored} results stored, {stats.duplicates} duplicates, "
                f"{stats.retried} retried, {stats.dead_lettered} dead-lettered, "
                f"{stats.released} handed back"
            )

    monitoring = (config if config is not None else load_config(None)).monitoring
    run_trio(run, debug_port=monitoring.profile_port if monitoring.enable_profiling else None)


def _with_redis(config: Config | None, redis_url: str | None) -> Config | None:
    """``config`` with ``--redis`` as its ``[distributed] redis_url``: the worker's bus and
    the App's Redis session store (``[memory] backend = "redis"``) use the same Redis."""
    if not redis_url:
        return config
    import attrs

    from agentflow_trio.config import Config

    base = config if config is not None else Config()
    return attrs.evolve(base, distributed=attrs.evolve(base.distributed, redis_url=redis_url))


def _metrics_url(config: Config, port: int) -> str:
    """Where the Prometheus endpoint of its own answers."""
    host = config.monitoring.metrics_host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
