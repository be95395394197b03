"""``agentcli benchmark`` and ``agentcli loadtest``: the load commands' flags.

Each command parses and checks its flags, builds the load generator's options
(`BenchmarkOptions`, `LoadTestOptions`) and hands them to `run_load`; the load itself,
its report and its statistics are the job of `agentflow_trio.loadgen`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ._loadrun import check_profile, check_report, run_load, run_suite
from ._options import (
    DURATION,
    THINK_TIME,
    app_option,
    config_option,
    json_option,
    mock_fault_option,
    mock_latency_option,
    model_option,
    report_options,
    stream_option,
    threshold_option,
)
from ._plumbing import BadInput, load_app, load_config, ms

if TYPE_CHECKING:
    from agentflow_trio.app import App
    from agentflow_trio.config import Config
    from agentflow_trio.loadgen.stages import Plan
    from agentflow_trio.loadgen.thresholds import Threshold
    from agentflow_trio.mockllm import Fault

__all__ = ["benchmark", "loadtest"]


@click.command()
@click.option(
    "--duration", type=DURATION, default="60s", show_default=True, help="How long to run."
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
    default="chat",
    show_default=True,
    help="The agent to measure: one of --app's, or a built-in one: chat (one LLM call), "
    "stream (streamed; with --stream its tokens are timed), noop (no LLM).",
)
@app_option
@click.option(
    "--data",
    "data_json",
    metavar="JSON",
    help='The data of every event, a JSON object (default: a varying {"query": ...}, '
    "which the built-in agents and tool_agent read).",
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
@model_option
@config_option
@mock_latency_option(when_used=False)
@mock_fault_option
@json_option
@click.option(
    "--suite",
    is_flag=True,
    help="Run the whole bench suite instead (python -m bench: the performance table); "
    "--duration, -c and --latency-ms, when given, narrow it. Needs a source checkout.",
)
@threshold_option
@stream_option
@report_options
def benchmark(
    duration: float,
    users: int,
    agent: str,
    app_ref: str | None,
    data_json: str | None,
    requests: int | None,
    profile: str | None,
    output: str | None,
    model: str | None,
    config_path: str | None,
    latency_ms: float,
    mock_faults: tuple[tuple[str, Fault], ...],
    as_json: bool,
    suite: bool,
    thresholds: tuple[Threshold, ...],
    stream: bool,
    report_path: str | None,
    compare_path: str | None,
    dashboard: bool,
) -> None:
    """Run an agent under closed-loop load and report throughput and latency.

    The agent is one of --app's (your App, hosted as serve hosts it: tools, MCP servers,
    sessions, lifespan) or a built-in one. Works offline with no API key. Model calls go
    to the built-in mock LLM (started in this process) unless the config sets llm.base_url
    or llm.provider = "fake". The report
    includes the mock's own request count, to check the figures against. With
    [llm.deployments] the model router serves the calls: --model picks the group, and
    the report shows each deployment's traffic and fail-overs (--mock-fault makes the
    built-in mock fail one of them). With --stream each call streams its event
    (runner.stream) and the report adds time to first token and inter-token latency
    (try --agent stream --stream).

    With --suite, runs the bench suite (bench/suite.py) instead and exits with its status.
    Exit codes: 99 when a --threshold is crossed, 130 after Ctrl-C (the partial results
    are printed first).
    """
    from agentflow_trio.loadgen.benchmark import BenchmarkOptions, check_agent, run_benchmark

    if suite:
        run_suite(click.get_current_context(), duration, users, latency_ms)

    check_profile(profile, output)
    baseline = check_report(report_path, compare_path)
    app = load_app(app_ref) if app_ref is not None else None
    try:
        check_agent(agent, app)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--agent'") from None
    given = load_config(config_path) if config_path is not None else None
    config = _applying(given, app)
    options = BenchmarkOptions(
        duration=duration,
        users=users,
        agent=agent,
        app=app,
        data=_data(data_json),
        monitoring=True,
        requests=requests,
        config=given,
        source=config_path,
        mock_latency=ms(latency_ms),
        thresholds=thresholds,
        model=model,
        mock_faults=_faults(mock_faults, config),
        stream=stream,
    )
    run_load(
        lambda progress, stop: run_benchmark(options, progress=progress, stop=stop),
        as_json=as_json,
        profile=profile,
        output=output,
        report_path=report_path,
        baseline=baseline,
        dashboard=dashboard,
        title="benchmark",
        debug_port=_debug_port(config),
    )


@click.command()
@click.option(
    "--script",
    type=click.Path(dir_okay=False),
    help="Scenario file defining async def request(client) (default: one chat event).",
)
@click.option("--duration", type=DURATION, help="How long to run (default 30s).")
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
    "--think-time", type=THINK_TIME, help="Pause between a user's requests (overrides the script)."
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Open model: at most this many requests at once.",
)
@click.option("--target", help="Base URL of an agentcli serve instance (or any HTTP service).")
@app_option
@model_option
@config_option
@mock_latency_option(when_used=False)
@mock_fault_option
@json_option
@threshold_option
@stream_option
@report_options
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
    app_ref: str | None,
    model: str | None,
    config_path: str | None,
    latency_ms: float,
    mock_faults: tuple[tuple[str, Fault], ...],
    as_json: bool,
    thresholds: tuple[Threshold, ...],
    stream: bool,
    report_path: str | None,
    compare_path: str | None,
    dashboard: bool,
) -> None:
    """Drive a scenario script with a load shape; report per stage and in total.

    Closed model: --vus N --duration D, or --stages of user counts (each stage ramps
    linearly from the previous target). Open model: --rate R --duration D, or --stages of
    rates. Latency counts from each request's intended start. Without --target the events
    run on a local runner whose model calls go to the built-in mock LLM unless --config
    sets llm.base_url. --model names the model group the built-in agents ask for (and,
    with --target, the default scenario's events); with a model router the report shows
    each deployment's traffic and fail-overs. --stream makes every client.call stream its
    event (with --target: POST /v1/events?stream=true, server-sent events; the default
    scenario then runs the stream agent) and the report adds time to first token and
    inter-token latency.

    Thresholds come from --threshold and from the script's `thresholds` list. Exit codes:
    99 when one is crossed, 130 after Ctrl-C (the partial results are printed first).
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
    baseline = check_report(report_path, compare_path)
    try:
        scenario = load_scenario(script) if script is not None else DEFAULT_SCENARIO
    except ScriptError as exc:
        raise BadInput(str(exc)) from None
    app = _loadtest_app(app_ref, scenario, target is not None)
    own = scenario.agents is not None or app is not None
    _check_model(model, own, script is not None, target is not None)
    if mock_faults and target is not None:
        raise click.UsageError("--mock-fault is for the built-in mock LLM, not a --target")
    given = load_config(config_path) if config_path is not None else None
    config = _applying(given, app if app is not None else scenario.agents)
    options = LoadTestOptions(
        plan=plan,
        scenario=scenario,
        think_time=think_time,
        target_url=target,
        config=given,
        source=config_path,
        mock_latency=ms(latency_ms),
        max_in_flight=max_in_flight,
        thresholds=thresholds,
        model=model,
        mock_faults=_faults(mock_faults, config) if target is None else {},
        stream=stream,
        app=app,
        monitoring=True,
    )
    run_load(
        lambda progress, stop: run_loadtest(options, progress=progress, stop=stop),
        as_json=as_json,
        report_path=report_path,
        baseline=baseline,
        dashboard=dashboard,
        title="loadtest",
        debug_port=None if target is not None else _debug_port(config),
    )


def _applying(given: Config | None, app: object) -> Config:
    """The config that applies: ``--config``'s, else the App's own, else every default."""
    from agentflow_trio.app import App

    if given is not None:
        return given
    own = app.config if isinstance(app, App) else None
    return own if own is not None else load_config(None)


def _data(text: str | None) -> dict[str, object] | None:
    """``--data``: a JSON object (exit 2 otherwise)."""
    if text is None:
        return None
    import json

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="'--data'") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object ({...})", param_hint="'--data'")
    return data


def _loadtest_app(app_ref: str | None, scenario: Any, target: bool) -> App | None:
    """``--app`` for a load test: not with ``--target`` (the server hosts its App) nor
    with a script that names its own agents; without ``--script`` the App must have the
    default scenario's ``chat`` agent."""
    if app_ref is None:
        return None
    if target:
        raise click.UsageError("--app hosts an App here; with --target the server hosts it")
    if scenario.agents is not None:
        raise click.UsageError(
            f"the script {scenario.path} names its own agents; drop them or --app"
        )
    app = load_app(app_ref)
    if scenario.path == "<built-in>" and "chat" not in app.agents:
        raise click.UsageError(
            "without --script each request sends a 'chat' event, and the App has no 'chat' "
            f"agent (its agents: {', '.join(sorted(app.agents))}): give a --script"
        )
    return app


def _faults(pairs: tuple[tuple[str, Fault], ...], config: Config) -> dict[str, tuple[Fault, ...]]:
    """``--mock-fault`` pairs as the mock's rules by model (exit 2 if no mock runs)."""
    from agentflow_trio.mockllm import uses_mock

    if pairs and not uses_mock(config):
        raise click.BadParameter(
            "the built-in mock LLM is not used: the config sets base_url for every deployment",
            param_hint="'--mock-fault'",
        )
    rules: dict[str, tuple[Fault, ...]] = {}
    for model, fault in pairs:
        rules[model] = (*rules.get(model, ()), fault)
    return rules


def _check_model(model: str | None, own_agents: bool, script: bool, target: bool) -> None:
    """--model sets the built-in agents' group: refuse it where they do not serve."""
    if model is None:
        return
    if target and script:
        raise click.UsageError(
            "with --target and --script, --model does not reach the events: put "
            '"model" in the data of the events the script sends'
        )
    if own_agents and not target:
        raise click.UsageError(
            "--model sets the group of the built-in agents, and the script serves its own"
        )


def _debug_port(config: Config) -> int | None:
    """The port the runner's debug server binds, if ``[monitoring]`` enables it."""
    monitoring = config.monitoring
    return monitoring.profile_port if monitoring.enable_profiling else None


def _plan(
    duration: float | None, vus: int | None, stages: str | None, rate: str | None, open_model: bool
) -> Plan:
    """The load shape the flags describe (exit 2 if they contradict each other)."""
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
