"""The runner's invariants, checked on a recorded `Trace`: `check_trace`, `find_violations`.

The five invariants of ARCHITECTURE.md, each a set of rules over the step log and the
samples:

1. ``conservation``: every accepted event ends exactly once, with a result carrying its
   id; nothing ends or starts without being accepted; every attempt is accepted, refused
   or abandoned by its caller, and a refusal comes at once (at the attempt, or at close).
2. ``bounds``: no sample exceeds ``max_in_flight``, ``max_running``, ``max_agents``, an
   agent's limit or a gauge's limit.
3. ``timeouts``: an event ends no later than its timeout after it started.
4. ``order``: with ``fifo``, no event starts while an event accepted before it still
   waits; with a `PriorityOrder`, no event starts while one with a smaller key, waiting
   since an earlier moment, goes on waiting after it.
5. ``shutdown``: nothing is accepted once closing began; leaving takes at most
   ``drain_timeout``; no event ends after the exit; no handle is pending and no task of
   the run is alive after it.

Each broken rule is a `Violation` naming the invariant, the rule and the event id.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import attrs

from .trace import Bounds, EventRecord, Phase, PriorityOrder, Step, Trace

__all__ = [
    "ALL_INVARIANTS",
    "Invariant",
    "InvariantViolation",
    "Violation",
    "check_trace",
    "find_violations",
]


class Invariant(enum.StrEnum):
    """The five invariants a trace is checked for."""

    CONSERVATION = "conservation"
    BOUNDS = "bounds"
    TIMEOUTS = "timeouts"
    ORDER = "order"
    SHUTDOWN = "shutdown"


ALL_INVARIANTS: frozenset[Invariant] = frozenset(Invariant)


@attrs.frozen
class Violation:
    """One broken rule: which ``invariant``, which ``rule`` of it, for which event.

    ``event_id`` is None for a rule about the whole run (the runner did not exit ...);
    ``at`` is the virtual time of the offending step, when there is one.
    """

    invariant: Invariant
    rule: str
    event_id: str | None
    message: str
    at: float | None = None

    def __str__(self) -> str:
        who = f"event {self.event_id}" if self.event_id is not None else "the run"
        when = f" at t={self.at:g}" if self.at is not None else ""
        return f"{self.invariant.value} ({self.rule}) violated for {who}{when}: {self.message}"


class InvariantViolation(AssertionError):
    """A trace broke an invariant. ``violation`` is the first one found, ``violations``
    all of them; ``invariant`` and ``event_id`` repeat the first one's for quick checks.

    An ``AssertionError``, so pytest and hypothesis report (and shrink) it as a failure.
    """

    def __init__(self, violations: Sequence[Violation]) -> None:
        if not violations:
            raise ValueError("InvariantViolation needs at least one violation")
        self.violations = tuple(violations)
        self.violation = self.violations[0]
        self.invariant = self.violation.invariant
        self.event_id = self.violation.event_id
        lines = [str(self.violation)]
        more = self.violations[1:6]
        if more:
            lines.append(f"and {len(self.violations) - 1} more:")
            lines.extend(f"  {v}" for v in more)
        super().__init__("\n".join(lines))


def check_trace(
    trace: Trace,
    bounds: Bounds | None = None,
    *,
    invariants: Collection[Invariant | str] = ALL_INVARIANTS,
) -> None:
    """Check ``trace`` against ``bounds`` (default: ``trace.bounds``).

    ``invariants`` picks which of the five to check (all by default).

    Raises:
        InvariantViolation: a rule was broken; the message says which invariant, which
            rule and which event, then lists up to five more violations.
    """
    found = find_violations(trace, bounds, invariants=invariants)
    if found:
        raise InvariantViolation(found)


def find_violations(
    trace: Trace,
    bounds: Bounds | None = None,
    *,
    invariants: Collection[Invariant | str] = ALL_INVARIANTS,
) -> list[Violation]:
    """Every violation in ``trace``, invariant by invariant, in log order within each."""
    b = bounds if bounds is not None else trace.bounds
    wanted = {Invariant(i) for i in invariants}
    records = trace.records()
    found: list[Violation] = []
    for invariant, rules in _CHECKS:
        if invariant in wanted:
            found.extend(rules(trace, b, records))
    return found


_Records = dict[str, EventRecord]


# ---------------------------------------------------------------------- conservation
def _conservation(trace: Trace, b: Bounds, records: _Records) -> Iterator[Violation]:
    def bad(rule: str, event_id: str, message: str, at: float | None = None) -> Violation:
        return Violation(Invariant.CONSERVATION, rule, event_id, message, at)

    accepted: set[str] = set()
    started: set[str] = set()
    ended: set[str] = set()
    for step in trace.steps:
        eid = step.event_id
        if eid is None:
            continue
        if step.phase is Phase.ACCEPTED:
            if eid in accepted:
                yield bad("accepted twice", eid, "the event was accepted a second time", step.at)
            accepted.add(eid)
        elif step.phase is Phase.STARTED:
            if eid not in accepted:
                yield bad("started unaccepted", eid, "started but never accepted", step.at)
            elif eid in started:
                yield bad("started twice", eid, "the event was started a second time", step.at)
            started.add(eid)
        elif step.phase is Phase.ENDED:
            if eid not in accepted:
                yield bad("ended unaccepted", eid, "ended but was never accepted", step.at)
            elif eid in ended:
                yield bad("ended twice", eid, "ended more than once", step.at)
            else:
                yield from _result_names(step, bad)
            ended.add(eid)
    for eid, r in records.items():
        yield from _answered(trace, eid, r, bad)
    if trace.complete:
        for eid in sorted(accepted - ended, key=lambda e: records[e].accept_index or 0):
            at = records[eid].accepted_at
            yield bad("dropped", eid, "accepted but never ended (dropped)", at)


def _result_names(step: Step, bad: Callable[..., Violation]) -> Iterator[Violation]:
    result = step.result
    if result is None:
        yield bad("no result", step.event_id, "ended without a result", step.at)
    elif result.event_id != step.event_id:
        message = f"its result carries event id {result.event_id!r}"
        yield bad("result id", step.event_id, message, step.at)


def _answered(
    trace: Trace, eid: str, r: EventRecord, bad: Callable[..., Violation]
) -> Iterator[Violation]:
    if r.accepted_at is not None and r.refused_at is not None:
        yield bad("accepted and refused", eid, f"accepted, yet refused ({r.refusal})", r.refused_at)
    if r.attempted_at is None:
        return
    answered = r.accepted_at is not None or r.refused_at is not None
    if not answered and r.abandoned_at is None:
        yield bad("unanswered", eid, "emitted but neither accepted nor refused", r.attempted_at)
    if r.refused_at is not None:
        latest = max(
            r.attempted_at, trace.closed_at if trace.closed_at is not None else r.attempted_at
        )
        if r.refused_at > latest:
            message = (
                f"refused {r.refused_at - r.attempted_at:g}s after it was emitted ({r.refusal})"
            )
            yield bad("refused late", eid, message, r.refused_at)


# ---------------------------------------------------------------------- bounds
def _bounds(trace: Trace, b: Bounds, records: _Records) -> Iterator[Violation]:
    def over(
        rule: str, sample_eid: str, at: float, what: str, value: float, limit: float
    ) -> Violation:
        message = f"{value:g} {what} when it was {rule}, the limit is {limit:g}"
        return Violation(Invariant.BOUNDS, rule, sample_eid, message, at)

    for s in trace.samples:
        rule = s.phase.value.replace("_", " ")
        if b.max_in_flight is not None and s.in_flight > b.max_in_flight:
            yield over(rule, s.event_id, s.at, "events in flight", s.in_flight, b.max_in_flight)
        if b.max_running is not None and s.running_events > b.max_running:
            yield over(rule, s.event_id, s.at, "events running", s.running_events, b.max_running)
        if b.max_agents is not None and s.running_agents > b.max_agents:
            yield over(rule, s.event_id, s.at, "agents running", s.running_agents, b.max_agents)
        limit = b.agent_limits.get(s.agent) if s.agent is not None else None
        if limit is not None and s.agent_running > limit:
            what = f"{s.agent!r} agents running"
            yield over(rule, s.event_id, s.at, what, s.agent_running, limit)
        for name, gauge_limit in b.gauge_limits.items():
            value = s.gauges.get(name)
            if value is not None and value > gauge_limit:
                yield over(rule, s.event_id, s.at, f"{name} (runner gauge)", value, gauge_limit)


# ---------------------------------------------------------------------- timeouts
def _timeouts(trace: Trace, b: Bounds, records: _Records) -> Iterator[Violation]:
    for eid, r in records.items():
        timeout = trace.timeouts.get(eid, b.event_timeout)
        if r.started_at is None or r.ended_at is None or timeout is None:
            continue
        ran = r.ended_at - r.started_at
        if ran > timeout + b.tolerance:
            message = f"ran {ran:g}s after it started, past its timeout of {timeout:g}s"
            yield Violation(Invariant.TIMEOUTS, "late", eid, message, r.ended_at)


# ---------------------------------------------------------------------- order
def _order(trace: Trace, b: Bounds, records: _Records) -> Iterator[Violation]:
    if b.fifo:
        yield from _fifo(trace)
    if b.priority is not None:
        yield from _priority(trace, b.priority, records)


def _fifo(trace: Trace) -> Iterator[Violation]:
    waiting: dict[str, None] = {}  # accepted, not started, not ended; in acceptance order
    for step in trace.steps:
        eid = step.event_id
        if eid is None:
            continue
        if step.phase is Phase.ACCEPTED:
            waiting.setdefault(eid, None)
        elif step.phase is Phase.STARTED:
            first = next(iter(waiting), None)
            if first is not None and first != eid:
                message = f"started before {first}, which was accepted earlier and still waited"
                yield Violation(Invariant.ORDER, "fifo", eid, message, step.at)
            waiting.pop(eid, None)
        elif step.phase is Phase.ENDED:
            waiting.pop(eid, None)


def _priority(trace: Trace, rule: PriorityOrder, records: _Records) -> Iterator[Violation]:
    if rule.agent is None:
        begin, start = Phase.ACCEPTED, Phase.STARTED
    else:
        begin, start = Phase.STARTED, Phase.AGENT_STARTED

    def starts(step: Step) -> bool:
        return step.phase is start and (rule.agent is None or step.agent == rule.agent)

    stopped: dict[str, float] = {}  # event id -> when it stopped waiting (started or ended)
    for step in trace.steps:
        if step.event_id is not None and (starts(step) or step.phase is Phase.ENDED):
            stopped.setdefault(step.event_id, step.at)
    waiting: dict[str, float] = {}  # event id -> when it began waiting
    began: set[str] = set()
    for step in trace.steps:
        eid = step.event_id
        if eid is None:
            continue
        if step.phase is begin and eid not in began:
            began.add(eid)
            waiting[eid] = step.at
        elif starts(step) and eid in waiting:
            del waiting[eid]
            yield from _passed_over(step, waiting, stopped, rule, trace)
        elif step.phase is Phase.ENDED:
            waiting.pop(eid, None)


def _passed_over(
    step: Step,
    waiting: dict[str, float],
    stopped: dict[str, float],
    rule: PriorityOrder,
    trace: Trace,
) -> Iterator[Violation]:
    """A waiting event was passed over if it had waited since before this start and went
    on waiting after this instant (two slots freed in one instant may start in any order).
    """
    eid = step.event_id
    assert eid is not None
    mine = _key(rule, trace, eid)
    for other, since in waiting.items():
        if since >= step.at or stopped.get(other, math.inf) <= step.at:
            continue
        theirs = _key(rule, trace, other)
        if theirs < mine:
            message = (
                f"started with key {mine!r} while {other} (key {theirs!r}) had waited since "
                f"t={since:g} and still waited"
            )
            yield Violation(Invariant.ORDER, "priority", eid, message, step.at)
            return


def _key(rule: PriorityOrder, trace: Trace, event_id: str) -> Any:
    return rule.key(trace.events[event_id])


# ---------------------------------------------------------------------- shutdown
def _shutdown(trace: Trace, b: Bounds, records: _Records) -> Iterator[Violation]:
    def bad(rule: str, event_id: str | None, message: str, at: float | None = None) -> Violation:
        return Violation(Invariant.SHUTDOWN, rule, event_id, message, at)

    closing = exited = False
    for step in trace.steps:
        if step.phase is Phase.CLOSING:
            closing = True
        elif step.phase is Phase.EXITED:
            exited = True
        elif step.phase is Phase.ACCEPTED and closing and step.event_id is not None:
            yield bad(
                "accepted after close", step.event_id, "accepted after closing began", step.at
            )
        elif step.phase is Phase.ENDED and exited and step.event_id is not None:
            yield bad("ended after exit", step.event_id, "ended after the runner exited", step.at)
    if trace.closed_at is not None and trace.exited_at is None and not trace.complete:
        yield bad("no exit", None, "the runner began closing but never exited", trace.closed_at)
    if (
        trace.closed_at is not None
        and trace.exited_at is not None
        and b.drain_timeout is not None
        and trace.exited_at - trace.closed_at > b.drain_timeout + b.tolerance
    ):
        took = trace.exited_at - trace.closed_at
        message = f"leaving took {took:g}s, the drain timeout is {b.drain_timeout:g}s"
        yield bad("slow exit", None, message, trace.exited_at)
    for eid in trace.pending_at_exit:
        yield bad("pending handle", eid, "its handle was not done after the exit", trace.exited_at)
    if trace.leaked_tasks:
        names = ", ".join(trace.leaked_tasks)
        yield bad("leaked tasks", None, f"tasks still alive after the exit: {names}")


_CHECKS: tuple[tuple[Invariant, Callable[[Trace, Bounds, _Records], Iterator[Violation]]], ...] = (
    (Invariant.CONSERVATION, _conservation),
    (Invariant.BOUNDS, _bounds),
    (Invariant.TIMEOUTS, _timeouts),
    (Invariant.ORDER, _order),
    (Invariant.SHUTDOWN, _shutdown),
)
