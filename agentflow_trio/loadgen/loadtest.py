"""``agentcli loadtest``: a scenario script driven by a load shape, closed or open model.

The scenario script
-------------------
A plain Python file (see ``examples/loadtest_script.py``). It must define::

    async def request(client) -> None:
        '''One measured request: send whatever events this user sends.'''
        result = await client.call("chat", {"query": "capital of France?"})

and may define::

    think_time = 0.5            # seconds between a user's requests (closed model), or
    def think_time() -> float:  # a function returning them (e.g. random.expovariate)
        ...
    agents = {"chat": my_agent} # what the local runner serves: a dict of agents or an
                                # App (default: --app, else the built-in example agents
                                # chat, stream and noop)
    def setup() -> None: ...    # run once before the load starts (may be async)
    thresholds = ["p99<200ms", "errors<0.1%"]  # pass/fail checks of the run (see
                                # `loadgen.thresholds`); --threshold adds more

The script's folder is on ``sys.path`` while it loads and runs, so it can import a module
next to it (``from my_agents import app``). Scripts are Python, not k6 JavaScript: a k6
scenario maps onto one as ``export default function () {...}`` -> ``async def
request(client)``, ``options.vus`` / ``options.duration`` / ``options.stages`` ->
``--vus`` / ``--duration`` / ``--stages``, ``check(...)`` and ``options.thresholds`` ->
``thresholds = [...]`` (or ``--threshold``), ``sleep(s)`` -> ``think_time``.

Each call of ``request(client)`` is one measured request. Its latency runs from its
*intended* start to its return (coordinated omission is corrected: see `_generators`),
and its outcome is the first outcome of the calls it made that was not ``succeeded``
(``succeeded`` if all were; ``error`` if ``request`` raised). ``client`` is a `LoadClient`:

* ``await client.call(event)`` or ``client.call("type", data)`` runs an event and returns
  its `AgentResult`: on a local `Runner` built from ``agents`` (and ``--config``), or,
  with ``--target URL``, by ``POST URL/v1/events`` on an ``agentcli serve`` instance;
* ``await client.stream(event)`` (or ``client.stream("type", data)``) runs an event with
  its progress streamed (``runner.stream``; with ``--target``, ``POST
  /v1/events?stream=true`` read as server-sent events) and times its tokens: time to
  first token and inter-token latency go to the report's ``streaming`` figures. With
  ``--stream`` (``LoadTestOptions.stream``) every ``client.call`` streams the same way;
* ``await client.post(path, json)`` / ``client.get(path)`` reach any path of the
  ``--target`` (for example an OpenAI-compatible ``/v1/chat/completions``);
* ``client.index`` is the virtual user's number (closed) or the arrival's (open).

Load models
-----------
Closed (``--vus N --duration D`` or ``--stages "5m:100,10m:500"``): N virtual users each
loop ``request`` then ``think_time``. Open (``--rate 200/s --duration D`` or ``--stages``
of rates with ``--open``): requests start on schedule whether or not earlier ones ended,
at most ``--max-in-flight`` at once. Results come per stage (a request belongs to the stage
its intended start falls in) and in total.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from ..app import App
from ..config import Config
from ..mockllm import Fault
from ..server.service import open_hosted_app
from ._client import LoadClient, SSEConnector
from ._deployments import check_group, fault_specs, router_of, traffic
from ._example import example_agents, example_event
from ._generators import RunSummary, Target, ThinkTime, run_closed, run_open
from ._stop import drive_until
from ._tally import LoadStats, measure
from .console import LoadReport, ProgressSink
from .dashboard import runner_gauges
from .stages import Plan
from .thresholds import Threshold, ThresholdError, evaluate, parse_thresholds

__all__ = [
    "DEFAULT_SCENARIO",
    "LoadTestOptions",
    "Scenario",
    "ScriptError",
    "load_scenario",
    "run_loadtest",
]


class ScriptError(ValueError):
    """A scenario script is missing, does not import, or breaks the contract above."""


@attrs.frozen(slots=True)
class Scenario:
    """A loaded scenario script (see the module docstring)."""

    request: Callable[[LoadClient], Awaitable[object]]
    think_time: ThinkTime = 0.0
    agents: App | Mapping[str, Any] | None = None
    setup: Callable[[], object] | None = None
    path: str = "<built-in>"
    thresholds: tuple[Threshold, ...] = ()

    async def run_setup(self) -> None:
        """Call ``setup()`` (awaiting it if it is async).

        Raises:
            ScriptError: ``setup`` raised (the message names the script and the error).
        """
        if self.setup is None:
            return
        try:
            value = self.setup()
            if inspect.isawaitable(value):
                await value
        except Exception as exc:
            message = f"script {self.path}: setup() raised {type(exc).__name__}: {exc}"
            raise ScriptError(message) from None


def load_scenario(path: str | Path) -> Scenario:
    """Import the script at ``path`` and check it against the contract.

    Raises:
        ScriptError: the file is missing, has a syntax error, raises while importing,
            lacks ``async def request(client)``, or has a bad ``think_time``, ``agents``
            or ``setup``. The message names the file (and line, for a syntax error).
    """
    where = str(path)
    file = Path(path)
    if not file.is_file():
        raise ScriptError(f"script {where}: no such file")
    if file.suffix.lower() in (".js", ".mjs", ".ts"):
        raise ScriptError(f"script {where}: {_NOT_K6}")
    module = _import(file, where)
    request = getattr(module, "request", None)
    if not inspect.iscoroutinefunction(request):
        raise ScriptError(
            f"script {where}: defines no `async def request(client)` "
            "(see examples/loadtest_script.py)"
        )
    return Scenario(
        request=request,
        think_time=_think_time(getattr(module, "think_time", 0.0), where),
        agents=_agents(getattr(module, "agents", None), where),
        setup=_setup(getattr(module, "setup", None), where),
        path=where,
        thresholds=_thresholds(getattr(module, "thresholds", ()), where),
    )


_NOT_K6: Final = (
    "scenario scripts are Python, not k6 JavaScript: write `async def request(client)` for "
    "k6's default function (client.call(...) / client.post(...) for http.*), --vus/--duration/"
    "--stages for options.vus/duration/stages, thresholds = ['p95<500ms'] for check() and "
    "options.thresholds (see examples/loadtest_script.py)"
)


def _import(file: Path, where: str) -> Any:
    """Import ``file`` as a module, its folder first on ``sys.path`` (kept there: the
    script's functions may import more from it while the load runs)."""
    name = f"_agentcli_scenario_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ScriptError(f"script {where}: cannot be imported as Python; {_NOT_K6}")
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise ScriptError(f"script {where}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        del sys.modules[name]
        raise ScriptError(
            f"script {where}: importing it raised {type(exc).__name__}: {exc}"
        ) from None
    return module


def _think_time(value: object, where: str) -> ThinkTime:
    if callable(value):
        return value
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return float(value)
    raise ScriptError(
        f"script {where}: think_time must be seconds >= 0 or a function returning them, "
        f"got {value!r}"
    )


def _agents(value: object, where: str) -> App | Mapping[str, Any] | None:
    if value is None or isinstance(value, App):
        return value
    if not isinstance(value, Mapping) or not value or not all(isinstance(k, str) for k in value):
        raise ScriptError(
            f"script {where}: agents must be a non-empty dict of event type -> agent, or an App"
        )
    return value


def _setup(value: object, where: str) -> Callable[[], object] | None:
    if value is None or callable(value):
        return value
    raise ScriptError(f"script {where}: setup must be a function, got {value!r}")


def _thresholds(value: object, where: str) -> tuple[Threshold, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ScriptError(
            f"script {where}: thresholds must be a list of strings such as 'p99<200ms', "
            f"got {value!r}"
        )
    try:
        return parse_thresholds(value)
    except ThresholdError as exc:
        raise ScriptError(f"script {where}: {exc}") from None


def _default_agent(client: LoadClient) -> str:
    return "stream" if client.streamed else "chat"


async def _default_request(client: LoadClient) -> None:
    await client.call(example_event(_default_agent(client)))


DEFAULT_SCENARIO = Scenario(request=_default_request)
"""Used without ``--script``: each request runs the built-in ``chat`` agent once (the
``stream`` agent, streamed, with ``--stream``)."""


def _asking_for(scenario: Scenario, model: str | None) -> Scenario:
    """The default scenario with its events naming model group ``model`` (so that an
    ``agentcli serve`` target's built-in agents ask for it too); others unchanged."""
    if not model or scenario is not DEFAULT_SCENARIO:
        return scenario

    async def request(client: LoadClient) -> None:
        await client.call(example_event(_default_agent(client), model=model))

    return attrs.evolve(scenario, request=request)


@attrs.frozen(slots=True, kw_only=True)
class LoadTestOptions:
    """What `run_loadtest` runs.

    ``plan`` is the load shape (users for the closed model, rates for the open one);
    ``think_time`` overrides the script's; ``target_url`` sends the scenario's calls over
    HTTP instead of to a local runner (the App hosted by `open_hosted_app`: ``app``, else
    the scenario's ``agents``, else the built-in example agents; ``config``, None for the
    App's own; the built-in mock LLM where the config names no endpoint). ``thresholds`` are
    checked against the run's total after the scenario's own. ``model`` is the model
    group the built-in agents ask for (and the default scenario's events name);
    ``mock_faults`` the built-in mock's fault rules by model name, if the mock is used.
    ``stream`` makes every ``client.call`` stream its event and time its tokens (and the
    default scenario run the ``stream`` agent). ``monitoring`` starts what
    ``[monitoring]`` asks for beside a local App (logging, the Prometheus endpoint, the
    performance report: what ``agentcli`` does; a metrics port that is taken, say by the
    deployment being measured, is a warning).
    """

    plan: Plan
    scenario: Scenario = DEFAULT_SCENARIO
    think_time: ThinkTime | None = None
    target_url: str | None = None
    config: Config | None = None
    source: str | None = None
    mock_latency: float = 0.0
    max_in_flight: int = 10_000
    grace: float = 30.0
    http_timeout: float = 60.0
    thresholds: tuple[Threshold, ...] = ()
    model: str | None = None
    mock_faults: Mapping[str, tuple[Fault, ...]] = attrs.field(factory=dict)
    stream: bool = False
    app: App | None = None
    monitoring: bool = False


async def run_loadtest(
    options: LoadTestOptions,
    *,
    progress: ProgressSink | None = None,
    stop: trio.Event | None = None,
) -> LoadReport:
    """Run ``options.scenario`` under ``options.plan``; every task it starts ends with it.

    Setting ``stop`` ends the run early: requests in flight are cancelled and the report
    covers what finished, with ``interrupted`` true (``agentcli``'s Ctrl-C).

    Raises:
        ConfigError: the config would call a remote provider without a key, or it has a
            router and ``model`` names no group of it.
    """
    scenario, plan = _asking_for(options.scenario, options.model), options.plan
    await scenario.run_setup()
    routed: list[Mapping[str, Any]] = []
    stats = LoadStats(plan)
    streamed, tokens = options.stream, stats.tokens
    async with AsyncExitStack() as stack:
        mock = None
        gauges: Callable[[], Mapping[str, Any]] | None = None
        if options.target_url is not None:
            from ..llm import LeanHTTPClient

            limit = max(int(plan.peak if not plan.is_rate else options.max_in_flight), 1)
            http = await stack.enter_async_context(
                LeanHTTPClient(
                    options.target_url, timeout=options.http_timeout, max_connections=limit
                )
            )
            sse = SSEConnector(
                options.target_url, timeout=options.http_timeout, max_connections=limit
            )
            stack.push_async_callback(sse.aclose)
            where = f"HTTP target {options.target_url}"

            def client_for(index: int) -> LoadClient:
                return LoadClient(index, http=http, streamed=streamed, tokens=tokens, sse=sse)
        else:
            agents = options.app or scenario.agents or example_agents(options.model)
            hosted = await stack.enter_async_context(
                open_hosted_app(
                    agents,
                    options.config,
                    source=options.source,
                    mock_latency=options.mock_latency,
                    mock_faults=options.mock_faults,
                    monitoring=options.monitoring,
                    metrics_required=False,
                )
            )
            llm = hosted.services.llm
            check_group(llm, options.model, options.source)
            router = router_of(llm)
            if router is not None:  # read once the runner has drained, before closing
                stack.callback(lambda: routed.append(traffic(router.statistics())))
            runner = await stack.enter_async_context(hosted.running.runner())
            mock, where = hosted.mock, f"local runner; model calls: {hosted.target}"
            gauges = runner_gauges(runner, llm)

            def client_for(index: int) -> LoadClient:
                return LoadClient(index, runner=runner, streamed=streamed, tokens=tokens)

        stats.gauges = gauges
        request = scenario.request

        async def target(index: int) -> str:
            client = client_for(index)
            try:
                await request(client)
            except Exception as exc:
                stats.note_error(f"{type(exc).__name__}: {exc}")
                return "error"
            if client.error is not None:
                stats.note_error(client.error)
            return client.outcome

        summary, interrupted = await _drive(options, stats.track(target), stats, progress, stop)
        await stack.aclose()  # the runner drains before the mock is asked for its count
        report = stats.report(
            "loadtest",
            summary,
            target=where,
            mock_requests=mock.stats().requests if mock is not None else None,
            parameters=_parameters(options),
        )
        thresholds = (*scenario.thresholds, *options.thresholds)
        return attrs.evolve(
            report,
            thresholds=evaluate(thresholds, report.total, report.streaming),
            interrupted=interrupted,
            router=routed[0] if routed else None,
        )


async def _drive(
    options: LoadTestOptions,
    target: Target,
    stats: LoadStats,
    progress: ProgressSink | None,
    stop: trio.Event | None,
) -> tuple[RunSummary, bool]:
    plan = options.plan

    def drive(requests: Target) -> Awaitable[RunSummary]:
        if plan.is_rate:
            return run_open(
                requests, plan, stats, max_in_flight=options.max_in_flight, grace=options.grace
            )
        think = options.think_time
        return run_closed(
            requests,
            plan,
            stats,
            think_time=think if think is not None else options.scenario.think_time,
            grace=options.grace,
        )

    if progress is not None:
        progress.start(stats, plan.total, None)
    try:
        async with measure(stats):
            return await drive_until(stop, drive, target)
    finally:
        if progress is not None:
            progress.stop()


def _parameters(options: LoadTestOptions) -> dict[str, Any]:
    plan = options.plan
    think = options.think_time if options.think_time is not None else options.scenario.think_time
    return {
        "script": options.scenario.path,
        "duration_limit_s": plan.total,
        "peak_target": int(plan.peak) if float(plan.peak).is_integer() else plan.peak,
        "think_time_s": None if plan.is_rate or callable(think) else think,
        "max_in_flight": options.max_in_flight if plan.is_rate else None,
        "mock_latency_ms": None if options.target_url else options.mock_latency * 1000,
        "model_group": options.model,
        "mock_faults": None if options.target_url else fault_specs(options.mock_faults),
        "stream": options.stream,
    }
