"""`TraceRecorder`: hooks that write down what a runner does, for `check_trace`.

Any runner can be recorded, including one whose agents are a user's own orchestrator:
the recorder only uses the runner's public `Hooks` (``on_accept``, ``before_event``,
``after_event`` and, when agents are tracked, ``before_agent``/``after_agent``). What hooks
cannot see (refusals, callers giving up, closing and exiting) a driver notes with the
``note_*`` methods; `drive` and `replay` do that for you.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, final

import trio

from ..agents import Agent, Hooks
from ..events import AgentResult, Event
from .trace import Bounds, Phase, Sample, Step, Trace

if TYPE_CHECKING:
    from ..runner import Runner

__all__ = ["TraceRecorder"]

_Probe = Callable[[], Mapping[str, float]]


@final
class TraceRecorder:
    """Records a runner's steps and samples its concurrency at each acceptance and start.

    ``runner = Runner(config, agents, hooks=recorder.hooks())``, or
    ``recorder.attach(runner)`` for a runner built elsewhere (it adds to ``runner.hooks``);
    ``recorder.trace()`` returns the `Trace` so far. The hook methods are synchronous, take
    no checkpoint and never raise, so recording changes neither timing nor outcomes.

    With ``track_agents`` the recorder also uses the agent hooks: each agent execution is
    counted from ``before_agent`` until ``after_agent`` or, for one that was cancelled
    (no ``after_agent``), until its event ends; samples are then taken at every agent start
    too, which per-agent limits need. Off by default because agent hooks move the runner
    off its hook-free fast path. ``probe`` is read at every sample (`attach` reads the
    runner's own statistics). ``bounds`` default to the attached runner's config.
    """

    __slots__ = (
        "_accepted",
        "_agents_running",
        "_by_agent",
        "_complete",
        "_events",
        "_exit",
        "_in_flight",
        "_installed",
        "_open",
        "_runner",
        "_running",
        "_samples",
        "_steps",
        "_timeouts",
        "bounds",
        "probe",
        "track_agents",
    )

    def __init__(
        self,
        bounds: Bounds | None = None,
        *,
        track_agents: bool = False,
        probe: _Probe | None = None,
    ) -> None:
        self.bounds = bounds
        self.track_agents = track_agents
        self.probe = probe
        self._steps: list[Step] = []
        self._samples: list[Sample] = []
        self._events: dict[str, Event] = {}
        self._timeouts: dict[str, float] = {}
        self._accepted: set[str] = set()
        self._in_flight: set[str] = set()
        self._running: set[str] = set()
        self._open: dict[str, list[str]] = {}
        self._by_agent: Counter[str] = Counter()
        self._agents_running = 0
        self._installed: list[Hooks] = []
        self._runner: Runner | None = None
        self._exit: dict[str, Any] = {}
        self._complete = False

    # ------------------------------------------------------------------ wiring
    def hooks(self) -> Hooks:
        """A new `Hooks` holding this recorder's callables (add your own to its lists)."""
        return self.install(Hooks())

    def install(self, hooks: Hooks) -> Hooks:
        """Append this recorder's callables to ``hooks`` and return it.

        Raises:
            RuntimeError: already installed into this ``hooks`` (steps would be doubled).
        """
        if any(h is hooks for h in self._installed):
            raise RuntimeError("this TraceRecorder is already installed into these hooks")
        self._installed.append(hooks)
        hooks.on_accept.append(self.on_accept)
        hooks.before_event.append(self.before_event)
        hooks.after_event.append(self.after_event)
        if self.track_agents:
            hooks.before_agent.append(self.before_agent)
            hooks.after_agent.append(self.after_agent)
        return hooks

    def attach(self, runner: Runner) -> TraceRecorder:
        """Record ``runner``: install into ``runner.hooks``, take the bounds from its config
        (unless given), sample its statistics and learn agents' own timeouts. Returns self.
        """
        self.install(runner.hooks)
        self._runner = runner
        if self.bounds is None:
            self.bounds = Bounds.from_config(runner.config)
        if self.probe is None:
            self.probe = _runner_probe(runner)
        return self

    # ------------------------------------------------------------------ hooks
    def on_accept(self, event: Event) -> None:
        """``on_accept`` hook: the event is queued and counts as in flight."""
        self._events[event.id] = event
        self._accepted.add(event.id)
        self._in_flight.add(event.id)
        self._step(Phase.ACCEPTED, event.id)
        self._sample(Phase.ACCEPTED, event.id)

    def before_event(self, event: Event) -> None:
        """``before_event`` hook: a worker starts the event (its timeout starts now)."""
        self._events.setdefault(event.id, event)
        self._running.add(event.id)
        if event.id not in self._timeouts:
            own = self._agent_timeout(event)
            if own is not None:
                self._timeouts[event.id] = own
        self._step(Phase.STARTED, event.id)
        self._sample(Phase.STARTED, event.id)

    def after_event(self, event: Event, result: AgentResult) -> None:
        """``after_event`` hook: the event ended with ``result``."""
        for name in self._open.pop(event.id, ()):
            self._by_agent[name] -= 1
            self._agents_running -= 1
        self._in_flight.discard(event.id)
        self._running.discard(event.id)
        self._step(Phase.ENDED, event.id, result=result)

    def before_agent(self, name: str, event: Event) -> None:
        """``before_agent`` hook (with ``track_agents``): agent ``name`` starts on the event."""
        self._open.setdefault(event.id, []).append(name)
        self._by_agent[name] += 1
        self._agents_running += 1
        self._step(Phase.AGENT_STARTED, event.id, agent=name)
        self._sample(Phase.AGENT_STARTED, event.id, agent=name)

    def after_agent(self, name: str, event: Event, result: AgentResult) -> None:
        """``after_agent`` hook (with ``track_agents``): agent ``name`` returned."""
        names = self._open.get(event.id)
        if names and name in names:
            del names[len(names) - 1 - names[::-1].index(name)]
            self._by_agent[name] -= 1
            self._agents_running -= 1
        self._step(Phase.AGENT_ENDED, event.id, agent=name, result=result)

    # ------------------------------------------------------------------ notes
    def note_attempt(self, event: Event) -> None:
        """A caller is about to emit ``event`` (so it must be accepted or refused)."""
        self._events.setdefault(event.id, event)
        self._step(Phase.ATTEMPTED, event.id)

    def note_refused(self, event: Event, error: BaseException) -> None:
        """The emit of ``event`` raised ``error`` (`QueueFull`, `RunnerClosed`)."""
        self._events.setdefault(event.id, event)
        self._step(Phase.REFUSED, event.id, detail=f"{type(error).__name__}: {error}")

    def note_abandoned(self, event: Event) -> None:
        """The caller gave up on ``event`` (cancelled) before it was accepted."""
        self._step(Phase.ABANDONED, event.id)

    def note_cancel(self, event: Event) -> None:
        """The caller cancelled ``event`` after it was accepted."""
        self._step(Phase.CANCEL_REQUESTED, event.id)

    def note_timeout(self, event_id: str, seconds: float) -> None:
        """``event_id`` runs under ``seconds`` (``emit(..., timeout=)``), not the default."""
        self._timeouts[event_id] = seconds

    def note_closing(self) -> None:
        """The runner's ``async with`` body is over: it stops accepting from now on.

        Call it as the body's last statement, with no checkpoint after it.
        """
        self._step(Phase.CLOSING, None)

    def note_exited(
        self,
        *,
        pending: Iterable[str] = (),
        leaked: Iterable[str] = (),
        statistics: Any = None,
    ) -> None:
        """The runner's ``__aexit__`` returned; ``pending`` lists handles not yet done,
        ``leaked`` the tasks of the run still alive, ``statistics`` its final snapshot."""
        self._step(Phase.EXITED, None)
        self.mark_complete(pending=pending, leaked=leaked, statistics=statistics)

    def note_statistics(self, statistics: Any) -> None:
        """Keep ``statistics`` (the runner's snapshot) as the trace's final statistics."""
        self._exit["statistics"] = statistics

    def mark_complete(
        self,
        *,
        pending: Iterable[str] = (),
        leaked: Iterable[str] = (),
        statistics: Any = None,
    ) -> None:
        """The run is over (no virtual time needed): every accepted event should have
        ended. `note_exited` calls this; call it yourself outside trio."""
        self._complete = True
        self._exit["pending_at_exit"] = tuple(pending)
        self._exit["leaked_tasks"] = tuple(leaked)
        if statistics is not None:
            self._exit["statistics"] = statistics

    # ------------------------------------------------------------------ result
    def accepted(self, event_id: str) -> bool:
        """True if ``event_id`` was accepted (whatever happened to it since)."""
        return event_id in self._accepted

    def trace(self) -> Trace:
        """The `Trace` recorded so far (a snapshot; recording goes on)."""
        closed = [s.at for s in self._steps if s.phase is Phase.CLOSING]
        exited = [s.at for s in self._steps if s.phase is Phase.EXITED]
        statistics = self._exit.get("statistics")
        if statistics is None and self._runner is not None:
            statistics = self._runner.statistics()
        return Trace(
            steps=tuple(self._steps),
            samples=tuple(self._samples),
            events=dict(self._events),
            bounds=self.bounds if self.bounds is not None else Bounds(),
            timeouts=dict(self._timeouts),
            closed_at=closed[0] if closed else None,
            exited_at=exited[0] if exited else None,
            complete=self._complete,
            pending_at_exit=self._exit.get("pending_at_exit", ()),
            leaked_tasks=self._exit.get("leaked_tasks", ()),
            statistics=statistics,
        )

    # ------------------------------------------------------------------ internals
    def _step(
        self,
        phase: Phase,
        event_id: str | None,
        *,
        agent: str | None = None,
        result: AgentResult | None = None,
        detail: str = "",
    ) -> None:
        self._steps.append(Step(phase, trio.current_time(), event_id, agent, result, detail))

    def _sample(self, phase: Phase, event_id: str, agent: str | None = None) -> None:
        gauges = dict(self.probe()) if self.probe is not None else {}
        self._samples.append(
            Sample(
                phase,
                trio.current_time(),
                event_id,
                in_flight=len(self._in_flight),
                running_events=len(self._running),
                running_agents=self._agents_running,
                agent=agent,
                agent_running=self._by_agent[agent] if agent is not None else 0,
                gauges=gauges,
            )
        )

    def _agent_timeout(self, event: Event) -> float | None:
        if self._runner is None:
            return None
        agent = self._runner.agents.get(event.type)
        return agent.timeout if isinstance(agent, Agent) else None


def _runner_probe(runner: Runner) -> _Probe:
    def probe() -> Mapping[str, float]:
        stats = runner.statistics()
        return {"running_agents": stats.running_agents, "in_flight": stats.in_flight}

    return probe
