"""``agentcli benchmark``: closed-loop users calling a runner back to back, measured.

`run_benchmark` hosts what `BenchmarkOptions` asks for (an `App`: the user's, or one of
the built-in example agents; the built-in mock LLM unless the config names a real
endpoint, see `open_hosted_app`), opens the App's `Runner`, runs ``users`` closed-loop
users (each ``await runner.call(event)`` back
to back, no think time) for ``duration`` or until ``requests`` calls were issued, and
returns a `LoadReport`. With the mock, the report carries the mock's own count of model
requests (``mock_requests``), so the figures can be checked independently: with the
``chat`` agent and nothing failing it equals ``requests``. ``model`` names the model
group the agent's requests ask for; when the LLM client is a model router, the report
carries each deployment's traffic and fail-overs (``router``). With ``stream`` each call
is ``runner.stream(event)`` read to its final result, and the report adds the tokens'
time to first token and inter-token latency (``streaming``; the ``stream`` agent's
tokens are the model's streamed chunks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Final

import attrs
import trio

from ..app import App
from ..config import Config
from ..events import Event
from ..mockllm import Fault
from ..runner import Runner
from ..server.service import open_hosted_app
from ._deployments import check_group, fault_specs, router_of, traffic
from ._example import EXAMPLE_AGENTS, example_agents, example_event
from ._generators import RunSummary, Target, run_closed
from ._stop import drive_until
from ._streaming import consume_progress
from ._tally import LoadStats, measure
from .console import LoadReport, ProgressSink
from .dashboard import runner_gauges
from .stages import Plan
from .thresholds import Threshold, evaluate

__all__ = ["AGENT_NAMES", "BenchmarkOptions", "check_agent", "run_benchmark"]

AGENT_NAMES: Final = tuple(EXAMPLE_AGENTS)
"""The built-in agents ``--agent`` chooses from when no App is given."""


def check_agent(agent: str, app: App | None) -> None:
    """Refuse an ``agent`` that ``app`` (None: the built-in agents) does not have; the
    message is one line, and without an App it says how to benchmark one's own.

    Raises:
        ValueError: naming the agent and the choices.
    """
    if app is None:
        if agent not in EXAMPLE_AGENTS:
            raise ValueError(
                f"unknown agent {agent!r}: the built-in agents are {', '.join(AGENT_NAMES)}; "
                f"to benchmark your own, name its App: --app MODULE:APP --agent {agent}"
            )
    elif agent not in app.agents:
        raise ValueError(
            f"the App has no agent {agent!r}; its agents: {', '.join(sorted(app.agents))}"
        )


def _check_positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(slots=True, kw_only=True)
class BenchmarkOptions:
    """What to run. ``duration`` and ``grace`` in seconds; ``mock_latency`` too.

    ``app`` is the `App` whose ``agent`` is measured (None: the built-in example agents,
    ``chat``, ``stream`` and ``noop``); every event carries ``data`` (None: a varying
    ``{"query": ...}``, which agents reading ``query``, ``tool_agent`` included, answer).
    ``config`` (None: the App's, else every default) supplies the runner and LLM
    settings; ``source`` names its file in messages. ``requests`` caps the calls issued
    (None: no cap). ``monitoring`` starts what ``[monitoring]`` asks for beside the App
    (logging, the Prometheus endpoint, the performance report: what ``agentcli`` does).
    ``thresholds`` are checked against the run's total (see `loadgen.thresholds`).
    ``model`` is the model group the agent asks for (None: the default group);
    ``mock_faults`` the built-in mock's fault rules by model name, if the mock is used.
    ``stream`` streams each event's progress to the caller and times its tokens.
    """

    duration: float = attrs.field(default=60.0, validator=_check_positive)
    users: int = attrs.field(default=10, validator=_check_positive)
    agent: str = "chat"
    requests: int | None = None
    config: Config | None = None
    source: str | None = None
    mock_latency: float = 0.0
    grace: float = 30.0
    thresholds: tuple[Threshold, ...] = ()
    model: str | None = None
    mock_faults: Mapping[str, tuple[Fault, ...]] = attrs.field(factory=dict)
    stream: bool = False
    app: App | None = None
    data: Mapping[str, Any] | None = None
    monitoring: bool = False

    def __attrs_post_init__(self) -> None:
        check_agent(self.agent, self.app)

    def event(self) -> Event:
        """A fresh event for the measured agent."""
        if self.data is None:
            model = self.model if self.app is not None else None
            return example_event(self.agent, model=model)
        return Event(self.agent, dict(self.data))


def _streamed_target(runner: Runner, options: BenchmarkOptions, stats: LoadStats) -> Target:
    """Each call streams its event (``runner.stream``) and times its tokens."""
    stream, tokens, now, event = runner.stream, stats.tokens, trio.current_time, options.event

    async def target(index: int) -> str:
        sent = now()
        async with stream(event()) as items:
            result = await consume_progress(items, tokens, sent)
        return result.outcome.value if result is not None else "failed"

    return target


async def run_benchmark(
    options: BenchmarkOptions,
    *,
    progress: ProgressSink | None = None,
    stop: trio.Event | None = None,
) -> LoadReport:
    """Run the benchmark described by ``options``; every task it starts ends with it.

    Setting ``stop`` ends the run early: requests in flight are cancelled and the report
    covers what finished, with ``interrupted`` true (``agentcli``'s Ctrl-C).

    Raises:
        ConfigError: the config would call a remote provider without a key, or it has a
            router and ``model`` names no group of it.
    """
    plan = Plan.constant(options.duration, options.users)
    agent = options.agent
    app = options.app if options.app is not None else App(example_agents(options.model))
    async with open_hosted_app(
        app,
        options.config,
        source=options.source,
        mock_latency=options.mock_latency,
        mock_faults=options.mock_faults,
        monitoring=options.monitoring,
        metrics_required=False,
    ) as hosted:
        llm = hosted.services.llm
        check_group(llm, options.model, options.source)
        router = router_of(llm)
        async with hosted.running.runner() as runner:
            call, event = runner.call, options.event

            async def called(index: int) -> str:
                result = await call(event())
                return result.outcome.value

            stats = LoadStats(plan)
            target = _streamed_target(runner, options, stats) if options.stream else called
            stats.gauges = runner_gauges(runner, llm)
            if progress is not None:
                progress.start(stats, plan.total, options.requests)

            def drive(users: Target) -> Awaitable[RunSummary]:
                return run_closed(
                    users, plan, stats, max_requests=options.requests, grace=options.grace
                )

            try:
                async with measure(stats):
                    summary, interrupted = await drive_until(stop, drive, stats.track(target))
            finally:
                if progress is not None:
                    progress.stop()
        mock = hosted.mock
        report = stats.report(
            "benchmark",
            summary,
            target=hosted.target,
            mock_requests=mock.stats().requests if mock is not None else None,
            parameters={
                "agent": agent,
                "concurrent_users": options.users,
                "duration_limit_s": options.duration,
                "requests_limit": options.requests,
                "mock_latency_ms": options.mock_latency * 1000,
                "model_group": options.model,
                "mock_faults": fault_specs(options.mock_faults),
                "stream": options.stream,
            },
        )
        return attrs.evolve(
            report,
            thresholds=evaluate(options.thresholds, report.total, report.streaming),
            interrupted=interrupted,
            router=traffic(router.statistics()) if router is not None else None,
        )
