"""The ``agentcli`` command line: one click group, one command per job.

Importing this module costs only click: each command imports what it needs (trio, the
server, the load generator) inside its function, so ``agentcli --help`` stays fast. Bad
input never shows a traceback: a bad flag value is a click usage error, and a broken
config file or scenario script is a one-line ``Error: ...`` (both exit 2). A command that
runs until told to stop (``mock-llm``, ``serve``) ends on SIGINT or SIGTERM with exit 0.

Commands: ``benchmark``, ``loadtest``, ``serve``, ``worker``, ``mock-llm``,
``config validate|show``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import trio

__all__ = ["main"]

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(name="agentcli", context_settings=_CONTEXT)
def main() -> None:
    """agentflow_trio: run, benchmark and serve LLM agent systems on trio."""


# -- shared plumbing for the commands ---------------------------------------------------


@contextmanager
def _usage_errors(flags: Mapping[str, str]) -> Iterator[None]:
    """Turn a ``ConfigError`` (a ValueError) raised while building a config into a usage
    error (exit 2) that names the flag: ``flags`` maps config keys to flag names."""
    try:
        yield
    except ValueError as exc:
        key, reason = getattr(exc, "key", None), getattr(exc, "reason", str(exc))
        if isinstance(key, str) and key in flags:
            raise click.BadParameter(reason, param_hint=f"'{flags[key]}'") from None
        raise click.UsageError(str(exc)) from None


def _run_until_signalled(
    serve: Callable[[trio.Nursery], Awaitable[Any]], clock: trio.abc.Clock | None = None
) -> None:
    """Run ``await serve(nursery)`` (which starts services in the nursery and returns) under
    trio (with ``clock``, if given), then wait for SIGINT or SIGTERM and cancel everything:
    a clean exit 0.

    ``OSError`` while starting (address in use, ...) becomes a click error (exit 1).
    """
    import signal

    import trio

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await serve(nursery)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(run, clock=clock)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


def _ms(value: float) -> float:
    return value / 1000.0


class _BadInput(click.ClickException):
    """A broken config file, scenario script or app string: ``Error: ...``, exit 2."""

    exit_code = 2


class _Duration(click.ParamType[float]):
    """``"30s"``, ``"500ms"``, ``"5m"``, ``"1h30m"`` or plain seconds; > 0 unless ``zero_ok``."""

    name = "duration"

    def __init__(self, *, zero_ok: bool = False) -> None:
        self.zero_ok = zero_ok

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        from agentflow_trio.config import parse_duration

        try:
            seconds = parse_duration(value)
        except ValueError:
            self.fail(f"{value!r} is not a duration (such as '30s', '500ms' or '5m')", param, ctx)
        if seconds <= 0 and not self.zero_ok:
            self.fail(f"{value!r} must be longer than 0s", param, ctx)
        return seconds


_DURATION = _Duration()
_THINK_TIME = _Duration(zero_ok=True)


def _load_config(path: str | None) -> Any:
    """The config at ``path`` (None: every default); a `ConfigError` becomes `_BadInput`."""
    from agentflow_trio.config import Config, load_config

    if path is None:
        return Config()
    try:
        return load_config(path)
    except ValueError as exc:
        raise _BadInput(str(exc)) from None


def _run_trio(main_fn: Callable[[], Awaitable[Any]]) -> Any:
    """``trio.run(main_fn)``. A config or script problem found while starting becomes
    `_BadInput` (exit 2), ``OSError`` a one-line error (exit 1), Ctrl-C click's Abort."""
    import trio

    from agentflow_trio.errors import ConfigError
    from agentflow_trio.loadgen.loadtest import ScriptError

    try:
        return trio.run(main_fn)
    except (ConfigError, ScriptError) as exc:
        raise _BadInput(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None


def _report_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--report``, ``--compare`` and ``--dashboard``, shared by benchmark and loadtest."""
    function = click.option(
        "--dashboard",
        is_flag=True,
        help="Serve a live dashboard on 127.0.0.1 while the run goes on (prints its URL).",
    )(function)
    function = click.option(
        "--compare",
        "compare_path",
        type=click.Path(dir_okay=False),
        help="The --json output of an earlier run: the report shows the deltas.",
    )(function)
    return click.option(
        "--report",
        "report_path",
        type=click.Path(dir_okay=False),
        help="Write a self-contained HTML report with charts (opens offline).",
    )(function)


def _check_report(report_path: str | None, compare_path: str | None) -> Any:
    """Check ``--report`` and ``--compare`` before the run: `_BadInput` (exit 2) if bad.
    Returns the baseline run's JSON (None without ``--compare``)."""
    if report_path is None and compare_path is None:
        return None
    from agentflow_trio.loadgen.report import ReportError, check_report_path, load_baseline

    if compare_path is not None and report_path is None:
        raise click.BadParameter(
            "needs --report FILE to show the comparison in", param_hint="'--compare'"
        )
    try:
        if report_path is not None:
            check_report_path(report_path)
        return load_baseline(compare_path) if compare_path is not None else None
    except ReportError as exc:
        raise _BadInput(str(exc)) from None


def _run_load(
    start: Callable[[Any], Awaitable[Any]],
    *,
    as_json: bool,
    profile: str | None = None,
    output: str | None = None,
    report_path: str | None = None,
    baseline: Any = None,
    dashboard: bool = False,
    title: str = "",
) -> None:
    """Run ``await start(progress)`` under trio (profiled if asked) and print its report:
    one JSON line with ``as_json``, else a table. Progress shows only on a terminal.

    With ``dashboard`` a live dashboard serves on 127.0.0.1 during the run (its URL goes
    to stderr); with ``report_path`` the HTML report is written afterwards."""
    import sys

    from agentflow_trio.loadgen.console import RichProgress, print_report

    progress = RichProgress() if not as_json and sys.stderr.isatty() else None

    async def run() -> Any:
        if not dashboard:
            return await start(progress)
        import trio

        from agentflow_trio.loadgen.dashboard import Dashboard, TeeProgress

        board = Dashboard(title=f"agentcli {title} live dashboard")
        async with trio.open_nursery() as nursery:
            url = await nursery.start(board.serve)
            click.echo(f"dashboard: {url}", err=True)
            try:
                result = await start(TeeProgress(progress, board))
            finally:
                board.stop()
            await board.linger()
            nursery.cancel_scope.cancel()
        return result

    with _profiling(profile, output):
        report = _run_trio(run)
    if as_json:
        click.echo(report.to_json())
    else:
        print_report(report)
    if report_path is not None:
        from agentflow_trio.loadgen.report import ReportError, write_report

        try:
            written = write_report(report_path, report.to_dict(), baseline)
        except ReportError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"report written to {written} (open it in a browser; works offline)", err=True)


@contextmanager
def _profiling(profile: str | None, output: str | None) -> Iterator[None]:
    """``cpu``: cProfile into ``output`` (a pstats file); ``memory``: tracemalloc's top
    allocations into ``output`` (text). Says where the file went on stderr."""
    if profile is None or output is None:
        yield
        return
    from agentflow_trio.observability import profiling

    if profile == "cpu":
        with profiling.profile_cpu(output):
            yield
        click.echo(f"CPU profile written to {output} (python -m pstats {output})", err=True)
        return
    import tracemalloc

    import agentflow_trio.llm
    import agentflow_trio.mockllm.server  # noqa: F401  (imported now: not counted as heap)

    tracemalloc.start(1)
    try:
        yield
        top = profiling.heap_top(_HEAP_TOP)
    finally:
        tracemalloc.stop()
    with open(output, "w", encoding="utf-8") as file:
        file.write(top)
    click.echo(f"memory profile (top {_HEAP_TOP} allocation sites) written to {output}", err=True)


_HEAP_TOP = 25


def _check_profile(profile: str | None, output: str | None) -> None:
    if profile is not None and output is None:
        raise click.BadParameter(
            "needs --output FILE to write the profile to", param_hint="'--profile'"
        )
    if output is not None and profile is None:
        raise click.BadParameter(
            "names the profile file: add --profile cpu|memory", param_hint="'--output'"
        )


def _load_agents(ref: str | None) -> Mapping[str, Any]:
    """The agents ``--app MODULE:ATTR`` names (a dict, or a function returning one)."""
    from agentflow_trio.loadgen import EXAMPLE_AGENTS

    if ref is None:
        return EXAMPLE_AGENTS
    import importlib
    import os
    import sys

    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise _BadInput(f"--app must be MODULE:ATTR (such as 'myapp:agents'), got {ref!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise _BadInput(
            f"--app {ref}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    agents = getattr(module, attr, None)
    if agents is None:
        raise _BadInput(f"--app {ref}: module {module_name!r} has no attribute {attr!r}")
    if callable(agents) and not isinstance(agents, Mapping):
        try:
            agents = agents()
        except Exception as exc:
            raise _BadInput(f"--app {ref}: calling it raised {type(exc).__name__}: {exc}") from None
    if not isinstance(agents, Mapping) or not agents or not all(isinstance(k, str) for k in agents):
        raise _BadInput(f"--app {ref}: expected a non-empty dict of event type -> agent")
    return agents


def _toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A small TOML writer for `Config.to_dict` output: scalars, string lists, tables."""
    import json
    import re

    def key(name: str) -> str:
        return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int | float):
            return repr(item)
        if isinstance(item, str):
            return json.dumps(item, ensure_ascii=False)
        if isinstance(item, list | tuple):
            return "[" + ", ".join(value(v) for v in item) + "]"
        raise TypeError(f"cannot write {item!r} as TOML")

    lines = [f"{key(k)} = {value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, table in data.items():
        if isinstance(table, Mapping):
            path = f"{prefix}.{key(name)}" if prefix else key(name)
            out += f"\n[{path}]\n" + _toml(table, path)
    return out


# -- commands ---------------------------------------------------------------------------


@main.command()
@click.option(
    "--duration", type=_DURATION, default="60s", show_default=True, help="How long to run."
)
@click.option(
    "--concurrent-users",
    "-c",
    "users",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Closed-loop users, each calling the runner back to back.",
)
@click.option(
    "--agent",
    type=click.Choice(["chat", "stream", "noop"]),
    default="chat",
    show_default=True,
    help="Built-in agent: chat (one LLM call), stream (streamed), noop (no LLM).",
)
@click.option(
    "--requests",
    "-n",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after exactly N requests (or at --duration, whichever comes first).",
)
@click.option("--profile", type=click.Choice(["cpu", "memory"]), help="Profile the run.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Profile file.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="agentflow.toml")
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Latency of the built-in mock LLM.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of a table.")
@click.option(
    "--suite",
    is_flag=True,
    help="Run the whole bench suite instead (python -m bench: the performance table); "
    "--duration, -c and --latency-ms, when given, narrow it. Needs a source checkout.",
)
@_report_options
def benchmark(
    duration: float,
    users: int,
    agent: str,
    requests: int | None,
    profile: str | None,
    output: str | None,
    config_path: str | None,
    latency_ms: float,
    as_json: bool,
    suite: bool,
    report_path: str | None,
    compare_path: str | None,
    dashboard: bool,
) -> None:
    """Run an example agent under closed-loop load and report throughput and latency.

    Works offline with no API key. Model calls go to the built-in mock LLM (started in
    this process) unless --config sets llm.base_url or llm.provider = "fake". The report
    includes the mock's own request count, to check the figures against.

    With --suite, runs the bench suite (bench/suite.py) instead and exits with its status.
    """
    from agentflow_trio.loadgen.benchmark import BenchmarkOptions, run_benchmark

    if suite:
        _run_suite(click.get_current_context(), duration, users, latency_ms)

    _check_profile(profile, output)
    baseline = _check_report(report_path, compare_path)
    options = BenchmarkOptions(
        duration=duration,
        users=users,
        agent=agent,
        requests=requests,
        config=_load_config(config_path),
        source=config_path,
        mock_latency=_ms(latency_ms),
    )
    _run_load(
        lambda progress: run_benchmark(options, progress=progress),
        as_json=as_json,
        profile=profile,
        output=output,
        report_path=report_path,
        baseline=baseline,
        dashboard=dashboard,
        title="benchmark",
    )


_SUITE_ONLY = frozenset({"duration", "users", "latency_ms", "suite"})


def _run_suite(ctx: click.Context, duration: float, users: int, latency_ms: float) -> None:
    """``agentcli benchmark --suite``: ``python bench/suite.py`` in a child process (the
    suite pins itself and its mock to cores), narrowed by the options given explicitly."""
    import subprocess
    import sys
    from pathlib import Path

    from click.core import ParameterSource

    given = {
        name for name in ctx.params if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }
    extra = sorted(given - _SUITE_ONLY)
    if extra:
        flags = {param.name: param.opts[-1] for param in ctx.command.params}
        names = ", ".join(flags.get(name) or name for name in extra)
        raise click.UsageError(f"--suite takes only --duration, -c and --latency-ms, not {names}")
    script = Path(__file__).resolve().parents[1] / "bench" / "suite.py"
    if not script.is_file():
        raise click.UsageError(
            f"--suite runs bench/suite.py from a source checkout of agentflow_trio; "
            f"there is none at {script}"
        )
    command = [sys.executable, str(script)]
    if "duration" in given:
        command += ["--seconds", str(duration)]
    if "users" in given:
        command += ["--concurrency", str(users)]
    if "latency_ms" in given:
        command += ["--latency", str(latency_ms)]
    code = subprocess.call(command)
    ctx.exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as shells say


@main.command()
@click.option(
    "--script",
    type=click.Path(dir_okay=False),
    help="Scenario file defining async def request(client) (default: one chat event).",
)
@click.option("--duration", type=_DURATION, help="How long to run (default 30s).")
@click.option("--vus", type=click.IntRange(min=1), help="Virtual users (closed model; default 10).")
@click.option(
    "--stages",
    help="Ramps such as '30s:10,1m:100,30s:0' (users), or rates '30s:50/s,1m:200/s' (open).",
)
@click.option("--rate", help="Open model: arrivals such as '200/s' or '600/m'.")
@click.option(
    "--open", "open_model", is_flag=True, help="Open model: --stages targets are rates per second."
)
@click.option(
    "--think-time", type=_THINK_TIME, help="Pause between a user's requests (overrides the script)."
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Open model: at most this many requests at once.",
)
@click.option("--target", help="Base URL of an agentcli serve instance (or any HTTP service).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="agentflow.toml")
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Latency of the built-in mock LLM.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of a table.")
@_report_options
def loadtest(
    script: str | None,
    duration: float | None,
    vus: int | None,
    stages: str | None,
    rate: str | None,
    open_model: bool,
    think_time: float | None,
    max_in_flight: int,
    target: str | None,
    config_path: str | None,
    latency_ms: float,
    as_json: bool,
    report_path: str | None,
    compare_path: str | None,
    dashboard: bool,
) -> None:
    """Drive a scenario script with a load shape; report per stage and in total.

    Closed model: --vus N --duration D, or --stages of user counts (each stage ramps
    linearly from the previous target). Open model: --rate R --duration D, or --stages of
    rates. Latency counts from each request's intended start. Without --target the events
    run on a local runner whose model calls go to the built-in mock LLM unless --config
    sets llm.base_url.
    """
    from agentflow_trio.loadgen.loadtest import (
        DEFAULT_SCENARIO,
        LoadTestOptions,
        ScriptError,
        load_scenario,
        run_loadtest,
    )

    plan = _plan(duration, vus, stages, rate, open_model)
    if think_time is not None and plan.is_rate:
        raise click.BadParameter("applies to the closed model only", param_hint="'--think-time'")
    if target is not None and not target.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"{target!r} is not an http:// or https:// URL", param_hint="'--target'"
        )
    baseline = _check_report(report_path, compare_path)
    try:
        scenario = load_scenario(script) if script is not None else DEFAULT_SCENARIO
    except ScriptError as exc:
        raise _BadInput(str(exc)) from None
    options = LoadTestOptions(
        plan=plan,
        scenario=scenario,
        think_time=think_time,
        target_url=target,
        config=_load_config(config_path),
        source=config_path,
        mock_latency=_ms(latency_ms),
        max_in_flight=max_in_flight,
    )
    _run_load(
        lambda progress: run_loadtest(options, progress=progress),
        as_json=as_json,
        report_path=report_path,
        baseline=baseline,
        dashboard=dashboard,
        title="loadtest",
    )


def _plan(
    duration: float | None, vus: int | None, stages: str | None, rate: str | None, open_model: bool
) -> Any:
    from agentflow_trio.loadgen.stages import Plan, StageError, parse_rate, parse_stages

    if stages is not None:
        if duration is not None or vus is not None or rate is not None:
            raise click.UsageError(
                "--stages replaces --duration, --vus and --rate: give one or the other"
            )
        try:
            return parse_stages(stages, rates=open_model)
        except StageError as exc:
            raise click.BadParameter(str(exc), param_hint="'--stages'") from None
    seconds = duration if duration is not None else 30.0
    if rate is not None:
        if vus is not None:
            raise click.UsageError("--vus is the closed model and --rate the open one: pick one")
        try:
            return Plan.constant(seconds, parse_rate(rate), is_rate=True)
        except StageError as exc:
            raise click.BadParameter(str(exc), param_hint="'--rate'") from None
    if open_model:
        raise click.UsageError("--open needs --rate or --stages")
    return Plan.constant(seconds, vus if vus is not None else 10)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="agentflow.toml")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--app",
    "app_ref",
    help="MODULE:ATTR naming a dict of agents, or a function returning one "
    "(default: the built-in chat, stream and noop).",
)
@click.option(
    "--max-body",
    default="1MiB",
    show_default=True,
    help="Largest request body accepted (bigger: 413).",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Latency of the built-in mock LLM (when it is used).",
)
@click.option(
    "--dashboard",
    is_flag=True,
    help="Serve a live dashboard on 127.0.0.1 (a free port; its URL is printed).",
)
def serve(
    config_path: str | None,
    host: str,
    port: int,
    app_ref: str | None,
    max_body: str,
    latency_ms: float,
    dashboard: bool,
) -> None:
    """Serve a runner over HTTP (hypercorn, trio) until Ctrl-C.

    POST /v1/events runs an event and returns its result (?async=1: 202 with an id);
    GET /v1/events/ID, /metrics (Prometheus) and /healthz. Model calls go to the built-in
    mock LLM unless --config sets llm.base_url or llm.provider = "fake".
    """
    import functools

    import trio

    from agentflow_trio.config import parse_size
    from agentflow_trio.mockllm import check_llm_target, open_llm_services
    from agentflow_trio.runner import Runner
    from agentflow_trio.server.app import make_app
    from agentflow_trio.server.app import serve as serve_app

    try:
        max_body_bytes = parse_size(max_body)
    except ValueError:
        raise click.BadParameter(
            f"{max_body!r} is not a size (such as '1MiB' or 65536)", param_hint="'--max-body'"
        ) from None
    config = _load_config(config_path)
    try:
        check_llm_target(config, config_path)
    except ValueError as exc:
        raise _BadInput(str(exc)) from None
    agents = _load_agents(app_ref)

    async def run(
        task_status: trio.TaskStatus[tuple[int, str, str | None]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        from agentflow_trio.observability.metrics import RunnerMetrics

        async with open_llm_services(
            config, source=config_path, mock_latency=_ms(latency_ms)
        ) as services:
            metrics = RunnerMetrics()
            async with Runner(services.config, agents=agents, llm=services.llm) as runner:
                metrics.attach(runner)
                stack_statistics = getattr(services.llm.provider, "statistics", None)
                if stack_statistics is not None:  # breaker state, cache, pool on /metrics
                    metrics.watch_llm("llm", stack_statistics)
                app = make_app(runner, metrics=metrics, max_body_bytes=max_body_bytes)
                async with trio.open_nursery() as nursery:
                    board_url = None
                    if dashboard:
                        from agentflow_trio.loadgen.dashboard import Dashboard, ServeWatch

                        watch = ServeWatch(runner, services.llm)
                        await nursery.start(watch.run)
                        board = Dashboard(title="agentcli serve live dashboard")
                        board_url = await nursery.start(board.serve)
                        board.start(watch, 0.0, None)
                    bound = await nursery.start(
                        functools.partial(serve_app, app, host=host, port=port)
                    )
                    task_status.started((bound, services.target, board_url))

    async def start(nursery: trio.Nursery) -> None:
        bound, target, board_url = await nursery.start(run)
        where = f"[{host}]" if ":" in host else host
        click.echo(f"agentcli serve listening on http://{where}:{bound}")
        click.echo(f"agents: {', '.join(sorted(agents))}; model calls: {target}")
        if board_url is not None:
            click.echo(f"dashboard: {board_url}")

    _run_until_signalled(start)


_MOCK_LLM_FLAGS = {
    "host": "--host",
    "port": "--port",
    "latency": "--latency-ms",
    "jitter": "--jitter-ms",
    "error_rate": "--error-rate",
    "rate_limit_rate": "--rate-limit-rate",
    "retry_after": "--retry-after-ms",
    "stream_chunks": "--stream-chunks",
    "stream_delay": "--stream-delay-ms",
}


@main.command()
@click.option(
    "--redis",
    "redis_url",
    help="Redis URL, such as redis://127.0.0.1:6379/0 (default: [distributed] redis_url).",
)
@click.option("--stream", help="Stream of events to read (default: [distributed] stream).")
@click.option("--group", help="Consumer group to read in (default: [distributed] group).")
@click.option("--consumer", help="This worker's name in the group (default: host-pid-random).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="agentflow.toml")
@click.option(
    "--app",
    "app_ref",
    help="MODULE:ATTR naming a dict of agents, or a function returning one "
    "(default: the built-in chat, stream and noop).",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Latency of the built-in mock LLM (when it is used).",
)
def worker(
    redis_url: str | None,
    stream: str | None,
    group: str | None,
    consumer: str | None,
    config_path: str | None,
    app_ref: str | None,
    latency_ms: float,
) -> None:
    """Run agents on events read from a Redis stream, in a consumer group, until Ctrl-C.

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

    from agentflow_trio.distributed import Worker
    from agentflow_trio.distributed._redis import redact
    from agentflow_trio.mockllm import check_llm_target, open_llm_services

    config = _load_config(config_path)
    try:
        check_llm_target(config, config_path)
    except ValueError as exc:
        raise _BadInput(str(exc)) from None
    agents = _load_agents(app_ref)

    async def run() -> None:
        async with open_llm_services(
            config, source=config_path, mock_latency=_ms(latency_ms)
        ) as services:
            # Built outside any nursery: a bad --redis URL is a plain ConfigError (exit 2).
            running = Worker(
                services.config,
                agents,
                redis_url=redis_url,
                stream=stream,
                group=group,
                consumer=consumer,
                llm=services.llm,
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(running.serve, handle_signals=True))
                s = running.settings
                click.echo(
                    f"agentcli worker {running.consumer} reading {s.stream} "
                    f"(group {s.group}) at {redact(s.redis_url)}"
                )
                click.echo(f"agents: {', '.join(sorted(agents))}; model calls: {services.target}")
            stats = running.statistics()
            click.echo(
                f"stopped: {stats.stored} results stored, {stats.duplicates} duplicates, "
                f"{stats.retried} retried, {stats.dead_lettered} dead-lettered, "
                f"{stats.released} handed back"
            )

    _run_trio(run)


@main.command("mock-llm")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Added before each model response.",
)
@click.option(
    "--jitter-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Latency varies by +- this much (uniform).",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of model requests answered 500.",
)
@click.option(
    "--rate-limit-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of model requests answered 429 with Retry-After.",
)
@click.option(
    "--retry-after-ms",
    type=click.FloatRange(min=0),
    default=1000.0,
    show_default=True,
    help="Retry-After advertised by 429 answers.",
)
@click.option("--stream-chunks", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--stream-delay-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Pause between streamed chunks.",
)
@click.option("--model", default="mock-gpt", show_default=True, help="Model name reported.")
@click.option("--seed", type=int, default=None, help="Seed for faults and jitter.")
@click.option(
    "--allow-remote", is_flag=True, help="Allow binding a non-loopback address (exposes the mock)."
)
@click.option(
    "--precise-timers/--coarse-timers",
    default=True,
    show_default=True,
    help="Latencies end within about 0.1 ms (the last millisecond is polled, costing CPU) "
    "or up to 1 ms late (plain trio sleeps).",
)
def mock_llm(
    host: str,
    port: int,
    latency_ms: float,
    jitter_ms: float,
    error_rate: float,
    rate_limit_rate: float,
    retry_after_ms: float,
    stream_chunks: int,
    stream_delay_ms: float,
    model: str,
    seed: int | None,
    allow_remote: bool,
    precise_timers: bool,
) -> None:
    """Serve an OpenAI-compatible mock LLM (also Azure and Ollama paths) until Ctrl-C.

    Prints ``mock LLM listening on http://HOST:PORT`` once it accepts connections; point
    an OpenAI client at that URL + /v1. GET /stats shows what it served.
    """
    from agentflow_trio.mockllm import MockLLM, MockLLMConfig

    with _usage_errors(_MOCK_LLM_FLAGS):
        config = MockLLMConfig(
            host=host,
            port=port,
            latency=_ms(latency_ms),
            jitter=_ms(jitter_ms),
            error_rate=error_rate,
            rate_limit_rate=rate_limit_rate,
            retry_after=_ms(retry_after_ms),
            stream_chunks=stream_chunks,
            stream_delay=_ms(stream_delay_ms),
            model=model,
            seed=seed,
            allow_remote=allow_remote,
        )
    mock = MockLLM(config)

    async def serve(nursery: trio.Nursery) -> None:
        await nursery.start(mock.serve)
        click.echo(f"mock LLM listening on {mock.url}")  # click.echo flushes

    from agentflow_trio.mockllm import PreciseClock

    _run_until_signalled(serve, PreciseClock() if precise_timers else None)


@main.group("config")
def config_group() -> None:
    """Check a config file, or print the effective configuration."""


@config_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def config_validate(file: str) -> None:
    """Check FILE; print ``OK: FILE`` (exit 0) or the problem naming the key (exit 1)."""
    from agentflow_trio.config import load_config

    try:
        load_config(file)
    except ValueError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(f"OK: {file}")


@config_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
def config_show(file: str | None) -> None:
    """Print the effective config of FILE (or the defaults) as TOML, secrets masked."""
    config = _load_config(file)
    click.echo(_toml(config.to_dict(mask_secrets=True)).lstrip("\n"), nl=False)


if __name__ == "__main__":
    main(prog_name="agentcli")
