"""What a `TraceRecorder` saw, as values: `Trace`, its `Step` log, `Sample` and `Bounds`.

A trace is a log of steps (an event accepted, started, ended, an agent started ...) in the
order they happened, the concurrency sampled at each acceptance and start, the bounds the
runner was configured with and, when a driver noted them, the moments the runner began
closing and finished exiting. Everything is a frozen attrs value: a test may doctor a trace
(``attrs.evolve``) to check that `check_trace` notices.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ..config import Config
from ..events import AgentResult, Event

__all__ = ["Bounds", "EventRecord", "Phase", "PriorityOrder", "Sample", "Step", "Trace"]


class Phase(enum.StrEnum):
    """What a `Step` records."""

    ATTEMPTED = "attempted"  # a driver is about to emit the event
    ACCEPTED = "accepted"  # on_accept: the runner queued it
    REFUSED = "refused"  # the emit raised QueueFull / RunnerClosed to its caller
    ABANDONED = "abandoned"  # the caller gave up before the event was accepted
    STARTED = "started"  # before_event: a worker began running it
    AGENT_STARTED = "agent_started"  # before_agent
    AGENT_ENDED = "agent_ended"  # after_agent (not called for a cancelled agent)
    CANCEL_REQUESTED = "cancel_requested"  # the caller cancelled an accepted event
    ENDED = "ended"  # after_event, with the result
    CLOSING = "closing"  # the driver left the runner's ``async with`` body
    EXITED = "exited"  # the runner's ``__aexit__`` returned


@attrs.frozen
class Step:
    """One observation: ``phase`` of ``event_id`` at virtual time ``at``.

    ``agent`` is set for agent steps, ``result`` for `Phase.ENDED`, ``detail`` holds the
    refusal's error text.
    """

    phase: Phase
    at: float
    event_id: str | None = None
    agent: str | None = None
    result: AgentResult | None = attrs.field(default=None, repr=False)
    detail: str = ""


@attrs.frozen
class Sample:
    """Concurrency seen the moment ``event_id`` reached ``phase`` (accepted or started).

    ``in_flight``: events accepted and not ended; ``running_events``: events started and
    not ended; ``running_agents``: agent executions started and not ended (counted only
    when agents are tracked); ``agent_running``: executions of ``agent`` (this one
    included); ``gauges``: whatever the recorder's probe read (for a `Runner`:
    ``running_agents`` = worker slots borrowed, ``in_flight`` = its own counter).
    """

    phase: Phase
    at: float
    event_id: str
    in_flight: int
    running_events: int
    running_agents: int = 0
    agent: str | None = None
    agent_running: int = 0
    gauges: Mapping[str, float] = attrs.field(factory=dict)


@attrs.frozen
class PriorityOrder:
    """An order rule for a scheduler: no event starts while an event with a smaller ``key``,
    waiting since an earlier moment, goes on waiting after this one started.

    ``key(event)`` is any sortable value (smaller starts first, ties allowed: ``lambda e:
    -e.data["priority"]``). With ``agent`` None an event waits from acceptance until it
    starts; with ``agent`` set it waits from its start until that agent starts for it
    (a routing agent that holds events back). An event that ended stops waiting. Moments
    are instants of virtual time: an event that arrives in the instant a slot is handed
    on, or that gets its own slot in the same instant, is not counted as passed over.
    """

    key: Callable[[Event], Any]
    agent: str | None = None


@attrs.frozen
class Bounds:
    """The limits a trace is checked against; None means "not checked".

    ``max_in_flight`` (``max_concurrent_events``) bounds events accepted and not ended;
    ``max_running`` (``worker_pool_size``) bounds events running at once;
    ``max_agents`` bounds all agent executions at once (workflow parents count too, so it
    is off unless given); ``agent_limits`` bounds executions per agent name;
    ``gauge_limits`` bounds the probe's gauges. ``event_timeout`` is the default run
    timeout (a trace's ``timeouts`` override it per event), ``drain_timeout`` bounds the
    time from closing to exit, ``fifo`` says events must start in acceptance order (one
    worker), ``priority`` adds a `PriorityOrder`. ``tolerance`` (seconds) absorbs float
    rounding of virtual time; raise it for real-clock traces.
    """

    max_in_flight: int | None = None
    max_running: int | None = None
    max_agents: int | None = None
    agent_limits: Mapping[str, int] = attrs.field(factory=dict)
    gauge_limits: Mapping[str, float] = attrs.field(factory=dict)
    event_timeout: float | None = None
    drain_timeout: float | None = None
    fifo: bool = False
    priority: PriorityOrder | None = None
    tolerance: float = 1e-6

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> Bounds:
        """The bounds a `Runner` built from ``config`` promises (its ``[runner]`` section).

        ``overrides`` replace fields (``agent_limits={"work": 2}`` ...).
        """
        rc = config.runner
        values: dict[str, Any] = {
            "max_in_flight": rc.max_concurrent_events,
            "max_running": rc.worker_pool_size,
            "gauge_limits": {
                "running_agents": rc.worker_pool_size,
                "in_flight": rc.max_concurrent_events,
            },
            "event_timeout": rc.event_timeout,
            "drain_timeout": rc.drain_timeout,
            "fifo": rc.worker_pool_size == 1,
        }
        values.update(overrides)
        return cls(**values)


@attrs.frozen
class EventRecord:
    """Everything a trace says about one event (built by `Trace.records`).

    Times are None for what did not happen; ``ends`` counts `Phase.ENDED` steps (exactly
    one for a conserved event); ``accept_index`` is the event's place in acceptance order.
    """

    id: str
    event: Event | None = None
    attempted_at: float | None = None
    accepted_at: float | None = None
    accept_index: int | None = None
    refused_at: float | None = None
    refusal: str = ""
    abandoned_at: float | None = None
    started_at: float | None = None
    cancel_requested_at: float | None = None
    ended_at: float | None = None
    ends: int = 0
    result: AgentResult | None = None
    timeout: float | None = None


@attrs.frozen
class Trace:
    """A recorded run of a runner: the step log, the samples, the bounds and the lifecycle.

    ``events`` maps every id seen to its `Event`; ``timeouts`` holds per-event run
    timeouts where they differ from ``bounds.event_timeout``. ``closed_at``/``exited_at``
    come from the driver (None when not observed); ``complete`` says the runner has exited,
    so every accepted event should have ended. ``pending_at_exit`` lists handles that were
    not done when the runner exited, ``leaked_tasks`` the names of tasks started during the
    run and still alive after it. ``statistics`` is the runner's final snapshot, if any.
    """

    steps: tuple[Step, ...]
    samples: tuple[Sample, ...] = ()
    events: Mapping[str, Event] = attrs.field(factory=dict)
    bounds: Bounds = attrs.field(factory=Bounds)
    timeouts: Mapping[str, float] = attrs.field(factory=dict)
    closed_at: float | None = None
    exited_at: float | None = None
    complete: bool = False
    pending_at_exit: tuple[str, ...] = ()
    leaked_tasks: tuple[str, ...] = ()
    statistics: Any = None

    def records(self) -> dict[str, EventRecord]:
        """One `EventRecord` per event id, in the order ids first appear in the log."""
        fields: dict[str, dict[str, Any]] = {}
        accepted = 0
        for step in self.steps:
            if step.event_id is None:
                continue
            f = fields.setdefault(step.event_id, {"ends": 0})
            _fold(f, step)
            if step.phase is Phase.ACCEPTED and "accept_index" not in f:
                f["accept_index"] = accepted
                accepted += 1
        return {
            event_id: EventRecord(
                event_id,
                self.events.get(event_id),
                timeout=self.timeouts.get(event_id, self.bounds.event_timeout),
                **f,
            )
            for event_id, f in fields.items()
        }

    def ids(self, phase: Phase) -> list[str]:
        """Event ids of every ``phase`` step, in log order (repeats kept)."""
        return [s.event_id for s in self.steps if s.phase is phase and s.event_id is not None]

    def peak(self, field: str) -> int:
        """The largest value of an integer `Sample` field (``"in_flight"``,
        ``"running_events"``, ...) over the trace; 0 without samples."""
        return max((int(getattr(s, field)) for s in self.samples), default=0)

    def peak_gauge(self, name: str) -> float:
        """The largest value the probe read for gauge ``name``; 0 if never read."""
        return max((s.gauges[name] for s in self.samples if name in s.gauges), default=0)


_FIRST_TIME = {
    Phase.ATTEMPTED: "attempted_at",
    Phase.ACCEPTED: "accepted_at",
    Phase.ABANDONED: "abandoned_at",
    Phase.STARTED: "started_at",
    Phase.CANCEL_REQUESTED: "cancel_requested_at",
}


def _fold(f: dict[str, Any], step: Step) -> None:
    name = _FIRST_TIME.get(step.phase)
    if name is not None:
        f.setdefault(name, step.at)
    elif step.phase is Phase.REFUSED:
        f.setdefault("refused_at", step.at)
        f.setdefault("refusal", step.detail)
    elif step.phase is Phase.ENDED:
        f["ends"] += 1
        f.setdefault("ended_at", step.at)
        f.setdefault("result", step.result)
