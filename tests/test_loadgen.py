"""The load generator's engine: load shapes, the closed and open models, scenario scripts.

Everything time-dependent runs under ``MockClock(autojump_threshold=0)`` (the
``autojump_clock`` fixture) against in-memory fake targets, so counts are exact.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.loadgen._generators import RunSummary, Target, run_closed, run_open
from agentflow_trio.loadgen._stop import drive_until
from agentflow_trio.loadgen.loadtest import ScriptError, load_scenario
from agentflow_trio.loadgen.stages import Plan, StageError, parse_rate, parse_stages
from agentflow_trio.loadgen.thresholds import (
    ThresholdError,
    all_passed,
    evaluate,
    parse_threshold,
    parse_thresholds,
)
from agentflow_trio.observability.stats import PerformanceMetrics

ROOT = Path(__file__).resolve().parents[1]


@attrs.frozen
class Row:
    stage: int
    intended: float
    started: float
    ended: float
    outcome: str


class ListRecorder:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def record(
        self, stage: int, intended: float, started: float, ended: float, outcome: str
    ) -> None:
        self.rows.append(Row(stage, intended, started, ended, outcome))

    def latencies(self) -> list[float]:
        return sorted(r.ended - r.intended for r in self.rows)

    def service_times(self) -> list[float]:
        return sorted(r.ended - r.started for r in self.rows)


def p99(values: list[float]) -> float:
    return values[math.ceil(0.99 * len(values)) - 1]


# -- stages -----------------------------------------------------------------------------


def test_stages_ramp_from_the_previous_target() -> None:
    plan = parse_stages("5m:100,10m:500,5m:100")
    assert [(s.duration, s.start, s.target) for s in plan.stages] == [
        (300.0, 0.0, 100.0),
        (600.0, 100.0, 500.0),
        (300.0, 500.0, 100.0),
    ]
    assert plan.total == 1200.0 and plan.peak == 500.0 and not plan.is_rate
    assert plan.users_at(0) == 0
    assert plan.users_at(150) == 50  # halfway up the first ramp
    assert plan.users_at(300 + 300) == 300
    assert plan.users_at(1200) == 100  # past the end: the last target
    assert plan.locate(300.0) == (1, 0.0)  # a boundary belongs to the later stage


def test_rates_make_an_open_plan() -> None:
    plan = parse_stages("10s:200/s,1m:600/m")
    assert plan.is_rate
    assert [s.target for s in plan.stages] == [200.0, 10.0]
    assert parse_stages("5s:50", rates=True).stages[0].target == 50.0
    assert parse_rate("36000/h") == 10.0 and parse_rate("7") == 7.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5m", "stage '5m' must be DURATION:TARGET"),
        ("5x:10", "'5x' is not a duration"),
        ("5m:lots", "target 'lots' must be a whole number of virtual users"),
        ("5m:10,", "must be a comma-separated list"),
        ("", "must be a comma-separated list"),
        ("0s:10", "last 0s"),
        ("5s:10/s,5s:x", "target 'x' is not a rate"),
    ],
)
def test_bad_stages_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(StageError, match=message.replace("(", r"\(")):
        parse_stages(text)


@pytest.mark.parametrize("text", ["0/s", "fast", "-3/s", "5/d"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(StageError, match="must be a number > 0"):
        parse_rate(text)


@settings(max_examples=60, deadline=None)
@given(
    stages=st.lists(
        st.tuples(st.integers(0, 20), st.integers(0, 50)), min_size=1, max_size=4
    ).filter(lambda s: sum(d for d, _ in s) > 0)
)
def test_arrivals_follow_the_integrated_rate(stages: list[tuple[int, int]]) -> None:
    plan = parse_stages(",".join(f"{d}s:{r}/s" for d, r in stages))
    times = list(plan.arrivals())
    expected = sum(s.arrivals() for s in plan.stages)
    assert times == sorted(times)
    assert all(0 <= t <= plan.total for t in times)
    # the k-th arrival comes when the integral reaches k + 1/2: count = round(integral)
    assert len(times) == math.floor(expected + 0.5)


@settings(max_examples=60, deadline=None)
@given(stages=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 40)), min_size=1, max_size=4))
def test_users_change_only_at_next_change(stages: list[tuple[int, int]]) -> None:
    plan = parse_stages(",".join(f"{d}s:{u}" for d, u in stages))
    t = 0.0
    while t < plan.total:
        nxt = plan.next_change(t)
        assert nxt > t
        mid = t + (nxt - t) / 2
        assert plan.users_at(mid) == plan.users_at(t) or mid >= plan.total
        t = nxt


# -- closed model -----------------------------------------------------------------------


async def test_closed_users_loop_back_to_back(autojump_clock: trio.testing.MockClock) -> None:
    recorder = ListRecorder()

    async def target(index: int) -> str:
        await trio.sleep(0.125)
        return "succeeded"

    summary = await run_closed(target, Plan.constant(1.0, 3), recorder)
    assert summary.issued == summary.completed == len(recorder.rows) == 24
    assert summary.elapsed == pytest.approx(1.0)
    assert all(r.started == r.intended for r in recorder.rows)  # nobody was late


async def test_closed_think_time_and_cap(autojump_clock: trio.testing.MockClock) -> None:
    recorder = ListRecorder()

    async def target(index: int) -> str:
        await trio.sleep(0.05)
        return "failed" if index == 0 else "succeeded"

    summary = await run_closed(
        target, Plan.constant(100.0, 4), recorder, think_time=0.2, max_requests=50
    )
    assert summary.issued == summary.completed == len(recorder.rows) == 50
    assert summary.elapsed < 100.0  # the cap ended the run, not the plan
    per_user = [r for r in recorder.rows if r.outcome == "failed"]
    gaps = [b.intended - a.ended for a, b in itertools.pairwise(per_user)]
    assert gaps and all(g == pytest.approx(0.2) for g in gaps)


async def test_closed_back_to_back_users_take_turns_even_with_a_target_that_never_yields(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With no think time a user checkpoints between requests (no timer, no scope), so a
    target that never yields cannot starve the other users."""
    recorder = ListRecorder()
    order: list[int] = []

    async def target(index: int) -> str:
        order.append(index)
        return "succeeded"

    summary = await run_closed(target, Plan.constant(10.0, 3), recorder, max_requests=30)
    assert summary.issued == summary.completed == 30
    assert sorted(set(order)) == [0, 1, 2]
    assert all(order.count(user) == 10 for user in range(3))
    assert all(r.intended == r.started for r in recorder.rows)  # back to back: never late


async def test_closed_ramp_adds_and_retires_users(autojump_clock: trio.testing.MockClock) -> None:
    recorder = ListRecorder()
    seen: dict[int, list[float]] = {}

    async def target(index: int) -> str:
        seen.setdefault(index, []).append(trio.current_time())
        await trio.sleep(0.01)
        return "succeeded"

    start = trio.current_time()
    await run_closed(target, parse_stages("1s:4,1s:4,1s:1"), recorder)
    assert sorted(seen) == [0, 1, 2, 3]
    # user 3 only once the ramp passed 3.5 users (0.875 s), and gone in the ramp down
    assert min(seen[3]) - start == pytest.approx(0.875, abs=0.011)
    assert max(seen[3]) - start < 2.0 + 1 / 6 + 0.011
    assert max(seen[0]) - start > 2.9  # the last user stays to the end
    assert {r.stage for r in recorder.rows} == {0, 1, 2}


async def test_closed_grace_cancels_stragglers(autojump_clock: trio.testing.MockClock) -> None:
    recorder = ListRecorder()

    async def target(index: int) -> str:
        await trio.sleep(10)
        return "succeeded"

    summary = await run_closed(target, Plan.constant(1.0, 2), recorder, grace=0.5)
    assert summary.issued == 2 and summary.completed == 0 and summary.unfinished == 2
    assert summary.elapsed == pytest.approx(1.5)


# -- open model -------------------------------------------------------------------------


async def test_open_model_starts_on_schedule(autojump_clock: trio.testing.MockClock) -> None:
    recorder = ListRecorder()

    async def target(index: int) -> str:
        await trio.sleep(0.3)  # slower than the gap between arrivals: they overlap
        return "succeeded"

    summary = await run_open(target, Plan.constant(2.0, 50, is_rate=True), recorder)
    assert summary.issued == summary.completed == 100 and summary.dropped == 0
    assert all(r.started == r.intended for r in recorder.rows)
    assert recorder.latencies()[-1] == pytest.approx(0.3)


async def test_open_model_measures_a_stall_from_the_intended_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A target that serves one request at a time stalls for 0.5 s once. Measured from
    the send time only the stalled request is slow; measured from each arrival's
    scheduled time (as the generator does) the whole backlog behind it shows in p99."""
    recorder = ListRecorder()
    lock = trio.Lock()

    async def target(index: int) -> str:
        async with lock:
            await trio.sleep(0.5 if index == 50 else 0.001)
        return "succeeded"

    summary = await run_open(
        target, Plan.constant(2.0, 100, is_rate=True), recorder, max_in_flight=1
    )
    assert summary.completed == 200 and summary.dropped == 0
    assert p99(recorder.service_times()) < 0.01  # what a naive load tool would report
    assert p99(recorder.latencies()) > 0.4  # the stall, as the users saw it
    late = [r for r in recorder.rows if r.started - r.intended > 0.1]
    assert len(late) >= 40  # the backlog: arrivals due while the target was stuck


async def test_open_model_behind_schedule_starts_the_backlog_fairly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When many arrivals are due at once (the generator fell behind), each starts without a
    timer but after a checkpoint, so other tasks keep running while the backlog starts."""
    recorder = ListRecorder()
    entered: list[int] = []
    seen: set[int] = set()

    async def target(index: int) -> str:
        entered.append(index)
        await trio.sleep(10)
        return "succeeded"

    async def fall_behind_and_watch() -> None:
        await trio.sleep(0.001)  # the generator now waits for its first arrival (5 ms)
        autojump_clock.jump(0.5)  # fifty arrivals are due at once
        for _ in range(500):
            seen.add(len(entered))
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fall_behind_and_watch)
        summary = await run_open(target, Plan.constant(1.0, 100, is_rate=True), recorder, grace=20)
    assert summary.issued == summary.completed == 100
    assert len(seen) >= 20  # the backlog started one by one, not in one burst
    assert all(r.started >= r.intended for r in recorder.rows)


async def test_open_model_drops_what_never_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = ListRecorder()

    async def target(index: int) -> str:
        await trio.sleep(5)
        return "succeeded"

    plan = Plan.constant(1.0, 10, is_rate=True)
    summary = await run_open(target, plan, recorder, max_in_flight=2, grace=10)
    assert summary.issued == 2 and summary.completed == 2
    assert summary.dropped == 8


def test_models_refuse_the_wrong_plan() -> None:
    async def target(index: int) -> str:
        return "succeeded"

    with pytest.raises(ValueError, match="closed-model plan counts users"):
        trio.run(run_closed, target, parse_stages("1s:5/s"), ListRecorder())
    with pytest.raises(ValueError, match="needs rates"):
        trio.run(run_open, target, parse_stages("1s:5"), ListRecorder())


# -- scenario scripts -------------------------------------------------------------------


def test_example_script_loads() -> None:
    scenario = load_scenario(ROOT / "examples" / "loadtest_script.py")
    assert callable(scenario.think_time) or scenario.think_time >= 0
    assert scenario.agents is None or "chat" in scenario.agents


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def request(:\n", r"\.py:1: syntax error"),
        ("x = 1\n", "defines no `async def request\\(client\\)`"),
        ("def request(client):\n    pass\n", "defines no `async def request"),
        ("raise RuntimeError('boom')\n", "importing it raised RuntimeError: boom"),
        ("async def request(c): pass\nthink_time = -1\n", "think_time must be seconds >= 0"),
        ("async def request(c): pass\nagents = {}\n", "agents must be a non-empty dict"),
        ("async def request(c): pass\nsetup = 3\n", "setup must be a function"),
    ],
)
def test_broken_scripts_are_refused(tmp_path: Path, source: str, message: str) -> None:
    script = tmp_path / "scenario.py"
    script.write_text(source)
    with pytest.raises(ScriptError, match=message):
        load_scenario(script)


def test_missing_script(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="no such file"):
        load_scenario(tmp_path / "absent.py")


# -- thresholds -------------------------------------------------------------------------


def _metrics(**figures: Any) -> PerformanceMetrics:
    base: dict[str, Any] = {
        "requests": 100,
        "duration_s": 2.0,
        "requests_per_s": 50.0,
        "mean_ms": 20.0,
        "p50_ms": 10.0,
        "p90_ms": 30.0,
        "p95_ms": 40.0,
        "p99_ms": 150.0,
        "p999_ms": 190.0,
        "max_ms": 200.0,
        "errors": 1,
        "error_rate": 0.01,
        "outcomes": {"succeeded": 99, "failed": 1},
    }
    return PerformanceMetrics(**{**base, **figures})


@pytest.mark.parametrize(
    ("text", "metric", "op", "limit"),
    [
        ("p99<200ms", "p99", "<", 200.0),
        (" p95 <= 1.5s ", "p95", "<=", 1500.0),
        ("max<250", "max", "<", 250.0),  # a plain number is milliseconds, as in k6
        ("mean<500us", "mean", "<", 0.5),
        ("P90<1m", "p90", "<", 60_000.0),
        ("errors<0.1%", "errors", "<", 0.1),
        ("errors<=5 %", "errors", "<=", 5.0),
        ("rps>50", "rps", ">", 50.0),
        ("throughput>=12.5/s", "rps", ">=", 12.5),
    ],
)
def test_thresholds_parse(text: str, metric: str, op: str, limit: float) -> None:
    threshold = parse_threshold(text)
    assert (threshold.metric, threshold.op) == (metric, op)
    assert threshold.limit == pytest.approx(limit)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99", "must be METRIC OP VALUE"),
        ("p99=200ms", "must be METRIC OP VALUE"),
        ("p42<200ms", "unknown metric 'p42'"),
        ("p99<fast", "'fast' is not a duration"),
        ("p99<-5ms", "is not a duration"),
        ("errors<0.1", "errors takes a percentage"),
        ("errors<101%", "at most 100%"),
        ("rps>many", "rps takes requests per second"),
    ],
)
def test_bad_thresholds_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ThresholdError, match=re.escape(message)):
        parse_threshold(text)


def test_thresholds_evaluate_against_the_total() -> None:
    metrics = _metrics()
    results = evaluate(
        parse_thresholds(["p99<200ms", "p99<100ms", "errors<0.1%", "errors<=1%", "rps>=50"]),
        metrics,
    )
    assert [r.passed for r in results] == [True, False, False, True, True]
    assert results[1].actual == 150.0 and results[2].actual == pytest.approx(1.0)
    assert results[1].describe() == "p99<100ms: FAIL (p99 = 150.00 ms)"
    assert results[4].to_dict() == {
        "threshold": "rps>=50",
        "actual": 50.0,
        "unit": "/s",
        "passed": True,
    }
    assert not all_passed(results) and all_passed(results[:1]) and all_passed(())


def test_a_latency_threshold_fails_without_data() -> None:
    empty = _metrics(requests=0, p99_ms=None, error_rate=0.0, requests_per_s=0.0)
    (result,) = evaluate(parse_thresholds(["p99<1s"]), empty)
    assert result.actual is None and not result.passed
    assert result.describe() == "p99<1s: FAIL (p99: no data)"


def test_script_thresholds(tmp_path: Path) -> None:
    script = tmp_path / "scenario.py"
    script.write_text("async def request(c): pass\nthresholds = ['p99<200ms', 'errors<1%']\n")
    assert [t.text for t in load_scenario(script).thresholds] == ["p99<200ms", "errors<1%"]
    script.write_text("async def request(c): pass\nthresholds = 'p99<200ms'\n")
    with pytest.raises(ScriptError, match="thresholds must be a list of strings"):
        load_scenario(script)
    script.write_text("async def request(c): pass\nthresholds = ['p99<soon']\n")
    with pytest.raises(ScriptError, match=r"scenario\.py: threshold 'p99<soon'"):
        load_scenario(script)


# -- stopping early (Ctrl-C) ------------------------------------------------------------


@pytest.mark.parametrize("open_model", [False, True])
async def test_a_stopped_run_keeps_what_finished(
    autojump_clock: trio.testing.MockClock, open_model: bool
) -> None:
    recorder = ListRecorder()
    stop = trio.Event()

    async def target(index: int) -> str:
        await trio.sleep(0.3)
        return "succeeded"

    def drive(requests: Target) -> Awaitable[RunSummary]:
        if open_model:
            return run_open(requests, Plan.constant(100.0, 10, is_rate=True), recorder)
        return run_closed(requests, Plan.constant(100.0, 4), recorder)

    async def stop_later() -> None:
        await trio.sleep(1.0)
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_later)
        start = trio.current_time()
        summary, interrupted = await drive_until(stop, drive, target)
    assert interrupted
    assert trio.current_time() - start == pytest.approx(1.0)
    assert summary.elapsed == pytest.approx(1.0)
    assert summary.completed == len(recorder.rows) > 0
    assert summary.unfinished > 0  # cancelled in flight, not recorded


async def test_an_unstopped_run_is_the_generators_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = ListRecorder()

    async def target(index: int) -> str:
        await trio.sleep(0.125)
        return "succeeded"

    def drive(requests: Target) -> Awaitable[RunSummary]:
        return run_closed(requests, Plan.constant(1.0, 3), recorder)

    summary, interrupted = await drive_until(trio.Event(), drive, target)
    assert not interrupted and summary.issued == summary.completed == 24
    summary, interrupted = await drive_until(None, drive, target)
    assert not interrupted and summary.completed == 24
