"""Running a load command (``benchmark``, ``loadtest``) once its options are parsed.

`check_profile` and `check_report` refuse bad ``--profile``/``--report`` combinations
before anything runs; `run_load` runs the load under trio (profiled if asked, with the live
dashboard if asked, stopped early by Ctrl-C), prints the result (one JSON line or a table),
writes the HTML report and exits 130 (interrupted) or 99 (a threshold crossed);
`run_suite` hands ``benchmark --suite`` to ``bench/suite.py`` in a child process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import click

from ._guard import EXIT_INTERRUPTED, EXIT_THRESHOLDS
from ._plumbing import BadInput, run_trio, start_server

__all__ = ["check_profile", "check_report", "run_load", "run_suite"]


def check_profile(profile: str | None, output: str | None) -> None:
    """``--profile`` and ``--output`` come together (exit 2 otherwise)."""
    if profile is not None and output is None:
        raise click.BadParameter(
            "needs --output FILE to write the profile to", param_hint="'--profile'"
        )
    if output is not None and profile is None:
        raise click.BadParameter(
            "names the profile file: add --profile cpu|memory", param_hint="'--output'"
        )


def check_report(report_path: str | None, compare_path: str | None) -> Any:
    """Check ``--report`` and ``--compare`` before the run: `BadInput` (exit 2) if bad.
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
        raise BadInput(str(exc)) from None


def run_load(
    start: Callable[[Any, Any], Awaitable[Any]],
    *,
    as_json: bool,
    profile: str | None = None,
    output: str | None = None,
    report_path: str | None = None,
    baseline: Any = None,
    dashboard: bool = False,
    title: str = "",
    debug_port: int | None = None,
) -> None:
    """Run ``await start(progress, stop)`` under trio (profiled if asked), print its
    report (one JSON line with ``as_json``, else a table; progress only on a terminal)
    and exit with the run's code.

    Ctrl-C sets ``stop``: the run ends at once and its partial report is printed (and
    written) as usual, then the exit code is 130; a second Ctrl-C quits without a
    report. A crossed threshold exits 99 after the report. With ``dashboard`` a live
    dashboard serves on 127.0.0.1 during the run (its URL goes to stderr); with
    ``report_path`` the HTML report is written afterwards. ``debug_port``: see `run_trio`.
    """
    import sys

    from agentflow_trio.loadgen.console import RichProgress, print_report
    from agentflow_trio.observability import profiled

    progress = RichProgress() if not as_json and sys.stderr.isatty() else None

    async def run() -> Any:
        import trio

        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_ctrl_c, stop)
            if dashboard:
                report = await _with_dashboard(start, progress, stop, title)
            else:
                report = await start(progress, stop)
            nursery.cancel_scope.cancel()
        return report

    with profiled(
        profile,
        output,
        preimport=("agentflow_trio.llm", "agentflow_trio.mockllm.server"),
        heap_limit=25,
        on_written=lambda note: click.echo(note, err=True),
    ):
        report = run_trio(run, debug_port=debug_port)
    if as_json:
        click.echo(report.to_json())
    else:
        print_report(report)
    if report_path is not None:
        _write_report(report_path, report, baseline)
    _exit_for(report)


async def _stop_on_ctrl_c(stop: Any) -> None:
    """First SIGINT: set ``stop`` (the run ends, its partial report follows); second:
    quit at once (KeyboardInterrupt: one line, exit 130)."""
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()
            click.echo("stopping: Ctrl-C again to quit without the report", err=True)


def _exit_for(report: Any) -> None:
    """Exit 130 after an interrupted run, 99 when a threshold was crossed, else return."""
    if report.interrupted:
        click.get_current_context().exit(EXIT_INTERRUPTED)
    failed = [result for result in report.thresholds if not result.passed]
    if failed:
        crossed = "; ".join(f"{r.threshold.text} ({r.observed})" for r in failed)
        click.echo(f"threshold crossed: {crossed}", err=True)
        click.get_current_context().exit(EXIT_THRESHOLDS)


async def _with_dashboard(
    start: Callable[[Any, Any], Awaitable[Any]], progress: Any, stop: Any, title: str
) -> Any:
    """``await start(...)`` with a live dashboard beside it, for as long as it runs."""
    import trio

    from agentflow_trio.loadgen.dashboard import Dashboard, TeeProgress

    board = Dashboard(title=f"agentcli {title} live dashboard")
    async with trio.open_nursery() as nursery:
        url = await start_server(
            nursery, board.serve, what="the dashboard", host=board.host, port=board.port
        )
        click.echo(f"dashboard: {url}", err=True)
        try:
            result = await start(TeeProgress(progress, board), stop)
        finally:
            board.stop()
        await board.linger()
        nursery.cancel_scope.cancel()
    return result


def _write_report(report_path: str, report: Any, baseline: Any) -> None:
    from agentflow_trio.loadgen.report import ReportError, write_report

    try:
        written = write_report(report_path, report.to_dict(), baseline)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"report written to {written} (open it in a browser; works offline)", err=True)


_SUITE_ONLY: Final = frozenset({"duration", "users", "latency_ms", "suite"})


def run_suite(ctx: click.Context, duration: float, users: int, latency_ms: float) -> None:
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
    script = Path(__file__).resolve().parents[2] / "bench" / "suite.py"
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
