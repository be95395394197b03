"""The runner's five invariants (ARCHITECTURE.md), as hypothesis properties.

Each example is a generated workload (``agentflow_trio.testing.strategies.workloads``)
replayed by the testing kit inside one trio run under ``MockClock(autojump_threshold=0)``:
virtual time, so timeouts and drains are exact and the whole file runs in seconds. Events
arrive at generated times from their own producer tasks (emit, emit_nowait or call, some
callers giving up, some with their own timeout), agents sleep, raise or overrun, and the
runner is shut down at a generated moment that races with the producers. Each property
runs the kit's checker for its invariant and then states the invariant again directly on
the trace, so a broken checker cannot hide a broken runner.
"""

from __future__ import annotations

from collections import Counter

import attrs
from hypothesis import HealthCheck, given, settings

import agentflow_trio as af
from agentflow_trio.testing import Invariant, Phase, Trace, Workload, check_trace, replay
from agentflow_trio.testing.strategies import workloads

_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _after_exit(trace: Trace, event_id: str) -> bool:
    return trace.events[event_id].type == "__after_exit__"


@_settings
@given(workloads())
def test_conservation(w: Workload) -> None:
    """Every accepted event ends exactly once; every attempt is accepted or refused."""
    trace = replay(w)
    check_trace(trace, invariants=[Invariant.CONSERVATION])
    accepted = trace.ids(Phase.ACCEPTED)
    assert len(set(accepted)) == len(accepted), "an event was accepted twice"
    ended = Counter(trace.ids(Phase.ENDED))
    assert set(ended) == set(accepted), "accepted events and ended events differ"
    assert all(n == 1 for n in ended.values()), "an event ended more than once"
    # Nothing vanishes: each attempt was accepted, or refused to its caller, or its caller
    # was cancelled while still waiting for room.
    stats = trace.statistics
    assert stats.accepted == len(accepted)
    assert stats.completed == len(accepted)
    assert stats.in_flight == 0
    records = trace.records()
    by_outcome = Counter(r.result.outcome for r in records.values() if r.result is not None)
    assert by_outcome[af.Outcome.SUCCEEDED] == stats.succeeded
    assert by_outcome[af.Outcome.FAILED] == stats.failed
    assert by_outcome[af.Outcome.TIMED_OUT] == stats.timed_out
    assert by_outcome[af.Outcome.CANCELLED] == stats.cancelled
    refused = [e for e in trace.ids(Phase.REFUSED) if not _after_exit(trace, e)]
    assert len(refused) == stats.refused
    assert len(accepted) + len(refused) <= len(w.events)
    # And each outcome is the one the workload calls for.
    assert trace.closed_at is not None and trace.exited_at is not None
    drained_out = trace.exited_at - trace.closed_at >= w.drain_timeout
    for event_id, record in records.items():
        result = record.result
        if result is None:
            continue
        assert result.event_id == event_id
        assert record.event is not None
        index = record.event.data["index"]
        spec = w.events[index]
        if result.outcome is af.Outcome.CANCELLED:
            assert drained_out or record.cancel_requested_at is not None, result
            continue
        timeout = spec.timeout if spec.timeout is not None else w.event_timeout
        if spec.duration >= timeout:
            assert result.outcome is af.Outcome.TIMED_OUT, result
        elif spec.fails:
            assert result.outcome is af.Outcome.FAILED, result
            assert result.error is not None and "WorkloadFailure" in result.error.traceback
        else:
            assert result.outcome is af.Outcome.SUCCEEDED, result
            assert result.output == {"index": index, "duration": spec.duration}


@_settings
@given(workloads())
def test_bounds(w: Workload) -> None:
    """Running agents never exceed worker_pool_size; in flight never max_concurrent_events."""
    trace = replay(w)
    check_trace(trace, invariants=[Invariant.BOUNDS])
    # Each event runs between its before_event and after_event hooks, so this window
    # count is an upper bound on the agents actually running.
    assert trace.peak("running_events") <= w.workers
    assert trace.peak_gauge("running_agents") <= w.workers
    assert trace.peak("in_flight") <= w.max_in_flight
    assert trace.statistics.peak_in_flight <= w.max_in_flight


@_settings
@given(workloads())
def test_timeouts(w: Workload) -> None:
    """An event ends no later than its timeout after it started running."""
    trace = replay(w)
    check_trace(trace, invariants=[Invariant.TIMEOUTS])
    for record in trace.records().values():
        if record.started_at is None:
            continue
        assert record.event is not None and record.ended_at is not None
        spec = w.events[record.event.data["index"]]
        timeout = spec.timeout if spec.timeout is not None else w.event_timeout
        assert record.ended_at - record.started_at <= timeout


@_settings
@given(workloads().map(lambda w: attrs.evolve(w, workers=1)))
def test_order_with_one_worker(w: Workload) -> None:
    """With one worker, events start in the order they were accepted."""
    trace = replay(w)
    check_trace(trace, invariants=[Invariant.ORDER])
    start_order = trace.ids(Phase.STARTED)
    started = set(start_order)
    assert start_order == [e for e in trace.ids(Phase.ACCEPTED) if e in started]


@_settings
@given(workloads())
def test_shutdown(w: Workload) -> None:
    """After the async with: no runner task alive, every handle done, emit refused."""
    trace = replay(w)
    check_trace(trace, invariants=[Invariant.SHUTDOWN])
    assert trace.leaked_tasks == ()
    assert trace.pending_at_exit == ()
    assert trace.statistics.closed
    # The drain is bounded: leaving the block takes at most drain_timeout.
    assert trace.closed_at is not None and trace.exited_at is not None
    assert trace.exited_at - trace.closed_at <= w.drain_timeout
    # And after it, emit and emit_nowait are refused at once.
    records = trace.records()
    late = [r for r in records.values() if r.event is not None and _after_exit(trace, r.id)]
    assert sorted(r.event.data["mode"] for r in late if r.event) == ["emit", "emit_nowait"]
    assert all(r.refusal.startswith("RunnerClosed") and r.accepted_at is None for r in late)
