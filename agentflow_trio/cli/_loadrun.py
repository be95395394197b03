"""Running a load command (``benchmark``, ``loadtest``) once its options are parsed.

`check_profile` and `check_report` refuse bad ``--profile``/``--report`` combinations
before anything runs; `run_load` runs the load under trio (profiled if asked, with the live
dashboard if asked), prints the result (one JSON line or a table) and writes the HTML
report; `run_suite` hands ``benchmark --suite`` to ``bench/suite.py`` in a child process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import click

from ._plumbing import BadInput, run_trio

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
    from agentflow_trio.observability import profiled

    progress = RichProgress() if not as_json and sys.stderr.isatty() else None

    async def run() -> Any:
        if not dashboard:
            return await start(progress)
        return await _with_dashboard(start, progress, title)

    with profiled(
        profile,
        output,
        preimport=("agentflow_trio.llm", "agentflow_trio.mockllm.server"),
        heap_limit=25,
        on_written=lambda note: click.echo(note, err=True),
    ):
        report = run_trio(run)
    if as_json:
        click.echo(report.to_json())
    else:
        print_report(report)
    if report_path is not None:
        _write_report(report_path, report, baseline)


async def _with_dashboard(start: Callable[[Any], Awaitable[Any]], progress: Any, title: str) -> Any:
    """``await start(...)`` with a live dashboard beside it, for as long as it runs."""
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
