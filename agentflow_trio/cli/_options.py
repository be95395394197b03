"""The options and parameter types ``agentcli`` commands share, declared once.

Each decorator adds one option (or one family of options) with the same flag, default and
help everywhere: ``--config``, ``--app``, ``--json``, ``--host``/``--port``/
``--allow-remote``, the built-in mock's ``--latency-ms`` and ``--mock-fault``, the report
options of the load commands, ``--model`` (a model group), ``--threshold`` and
``--stream``.
`Duration` reads ``"30s"``/``"500ms"``/``"5m"``. Importing this module costs only click.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = [
    "DURATION",
    "THINK_TIME",
    "Duration",
    "app_option",
    "config_option",
    "host_options",
    "json_option",
    "mock_fault_option",
    "mock_latency_option",
    "model_option",
    "report_options",
    "stream_option",
    "threshold_option",
]

F = TypeVar("F", bound=Callable[..., Any])


class Duration(click.ParamType[float]):
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


DURATION = Duration()
THINK_TIME = Duration(zero_ok=True)


class ThresholdType(click.ParamType[Any]):
    """A k6-style threshold such as ``"p99<200ms"`` (`agentflow_trio.loadgen.thresholds`)."""

    name = "threshold"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from agentflow_trio.loadgen.thresholds import Threshold, ThresholdError, parse_threshold

        if isinstance(value, Threshold):
            return value
        try:
            return parse_threshold(value)
        except ThresholdError as exc:
            self.fail(str(exc), param, ctx)


def threshold_option(function: F) -> F:
    """``--threshold`` (repeatable; ``thresholds``): pass/fail checks of a load run."""
    return click.option(
        "--threshold",
        "thresholds",
        type=ThresholdType(),
        multiple=True,
        help="Pass/fail check of the run's total, k6-style, repeatable: 'p99<200ms', "
        "'errors<0.1%', 'rps>=50', 'ttft_p95<300ms' (p50 p90 p95 p99 max mean errors rps; "
        "ttft_* and itl_* for streamed tokens; < <= > >=). "
        "A crossed threshold makes the exit code 99.",
    )(function)


def stream_option(function: F) -> F:
    """``--stream`` (``stream``): stream each event's progress and time its tokens."""
    return click.option(
        "--stream",
        "stream",
        is_flag=True,
        help="Stream each event's progress to the caller (runner.stream; over HTTP, "
        "server-sent events) and report time to first token and inter-token latency "
        "(p50/p95/p99).",
    )(function)


def config_option(function: F) -> F:
    """``--config FILE`` (``config_path``): the agentflow.toml to use (default: none)."""
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), help="agentflow.toml"
    )(function)


def app_option(function: F) -> F:
    """``--app MODULE:ATTR`` (``app_ref``): the App to host."""
    return click.option(
        "--app",
        "app_ref",
        metavar="MODULE:ATTR",
        help="The App to host: MODULE:ATTR naming an agentflow_trio.App, a function "
        "(sync or async) returning one, or a dict of agents (default: the built-in chat, "
        "stream and noop).",
    )(function)


def json_option(function: F) -> F:
    """``--json`` (``as_json``): one JSON line instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON line instead of a table."
    )(function)


def host_options(port: int, *, what: str) -> Callable[[F], F]:
    """``--host`` (loopback by default), ``--port`` (default ``port``) and
    ``--allow-remote``, which binding a non-loopback ``--host`` needs (``what`` names
    what would be exposed, in its help)."""

    def decorate(function: F) -> F:
        function = click.option(
            "--allow-remote",
            is_flag=True,
            help=f"Allow binding a non-loopback address (exposes {what}).",
        )(function)
        function = click.option(
            "--port", type=click.IntRange(0, 65535), default=port, show_default=True
        )(function)
        return click.option(
            "--host", default="127.0.0.1", show_default=True, help="Address to bind."
        )(function)

    return decorate


def mock_latency_option(*, when_used: bool) -> Callable[[F], F]:
    """``--latency-ms`` (``latency_ms``): the built-in mock LLM's latency; ``when_used``
    adds that the mock may not be used (serve, worker)."""
    note = " (when it is used)" if when_used else ""
    return click.option(
        "--latency-ms",
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        help=f"Latency of the built-in mock LLM{note}.",
    )


class MockFaultType(click.ParamType[Any]):
    """``MODEL=KIND[:NAME=VALUE,...]``: a fault rule of the built-in mock LLM for requests
    naming MODEL; a ``(model, Fault)`` pair."""

    name = "MODEL=KIND[:ARGS]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        from agentflow_trio.mockllm import Fault

        model, equals, spec = str(value).partition("=")
        if not equals or not model.strip():
            self.fail(f"want MODEL=KIND[:NAME=VALUE,...], got {value!r}", param, ctx)
        try:
            return model.strip(), Fault.parse(spec)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def mock_fault_option(function: F) -> F:
    """``--mock-fault`` (repeatable; ``mock_faults``): faults the built-in mock injects."""
    return click.option(
        "--mock-fault",
        "mock_faults",
        type=MockFaultType(),
        multiple=True,
        help="Make the built-in mock LLM inject a fault into requests naming MODEL (a "
        "deployment's model; * for any), repeatable, as agentcli mock-llm --fault: "
        "'gpt-b=server_error:status=503', 'gpt-b=no_response', "
        "'gpt-b=rate_limit:retry_after=2,window=10'.",
    )(function)


def model_option(function: F) -> F:
    """``--model GROUP`` (``model``): the model group the built-in agents ask for."""
    return click.option(
        "--model",
        "model",
        metavar="GROUP",
        help="Model group the built-in agents' requests ask for (with [llm.deployments], "
        "a group of the router; default: its default group).",
    )(function)


def report_options(function: F) -> F:
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
