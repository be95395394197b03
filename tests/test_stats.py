"""LatencyRecorder against known distributions, coordinated omission, PerformanceMetrics,
StatsCollector and the GC monitor."""

from __future__ import annotations

import gc
import json
import math
import random

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.observability.stats import (
    GCMonitor,
    LatencyRecorder,
    PerformanceMetrics,
    StatsCollector,
)

PRECISION = 1e-3  # 3 significant digits


def exact_percentile(values: list[float], percentile: float) -> float:
    """The HDR definition: the value at rank round(p * n / 100) (1-based, at least 1)."""
    ordered = sorted(values)
    rank = max(int(percentile * len(ordered) / 100 + 0.5), 1)
    return ordered[rank - 1]


def assert_within_precision(reported_ms: float | None, exact_s: float) -> None:
    assert reported_ms is not None
    exact_ms = exact_s * 1000
    # HDR reports the top of the value's bucket: never below, at most 0.1 % above (+1 µs
    # for the truncation to whole microseconds).
    assert exact_ms - 0.001 <= reported_ms <= exact_ms * (1 + PRECISION) + 0.001


def record_all(values: list[float], **kwargs: object) -> LatencyRecorder:
    recorder = LatencyRecorder(**kwargs)  # type: ignore[arg-type]
    for i, v in enumerate(values):
        recorder.record(v, at=i * 0.001)
    return recorder


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng: rng.uniform(0.001, 1.0),  # uniform 1..1000 ms
        lambda rng: rng.expovariate(1 / 0.05),  # exponential, mean 50 ms
        lambda rng: rng.lognormvariate(math.log(0.02), 1.0),  # long tail
    ],
    ids=["uniform", "exponential", "lognormal"],
)
def test_percentiles_match_a_known_distribution_within_hdr_precision(draw: object) -> None:
    rng = random.Random(1234)
    values = [draw(rng) for _ in range(50_000)]  # type: ignore[operator]
    summary = record_all(values).summary()
    assert summary.count == len(values)
    for field, p in [("p50_ms", 50), ("p90_ms", 90), ("p95_ms", 95), ("p99_ms", 99),
                     ("p999_ms", 99.9)]:  # fmt: skip
        assert_within_precision(getattr(summary, field), exact_percentile(values, p))
    assert_within_precision(summary.max_ms, max(values))
    assert summary.mean_ms == pytest.approx(sum(values) / len(values) * 1000, rel=PRECISION)


@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=300),
    st.lists(st.floats(min_value=0.0, max_value=100.0), max_size=300),
    st.sampled_from([0.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0]),
)
def test_merge_equals_recording_everything_in_one(
    first: list[float], second: list[float], percentile: float
) -> None:
    a, b, both = record_all(first), LatencyRecorder(), record_all(first + second)
    for i, v in enumerate(second):
        b.record(v, at=(len(first) + i) * 0.001)
    a.merge(b)
    assert a.summary() == both.summary()
    assert a.series() == both.series()
    exact = exact_percentile(first + second, percentile) if percentile else min(first + second)
    reported = a.percentile(percentile)
    assert reported is not None
    assert exact * 1000 - 0.001 <= reported <= exact * 1000 * (1 + PRECISION) + 0.001


@settings(max_examples=200, deadline=None)
@given(
    digits=st.sampled_from([2, 3]),
    values=st.lists(st.one_of(st.integers(0, 5_000), st.integers(0, 3_600_000_000)), max_size=200),
)
def test_the_inlined_record_equals_hdrh_record_value(digits: int, values: list[int]) -> None:
    """`_Put` (the recorder's hot path) fills the same buckets, count, min and max as
    ``HdrHistogram.record_value``."""
    from hdrh.histogram import HdrHistogram

    from agentflow_trio.observability._latency import _Put

    fast, slow = HdrHistogram(1, 3_600_000_000, digits), HdrHistogram(1, 3_600_000_000, digits)
    put = _Put(fast)
    for value in values:
        put(value)
        slow.record_value(value)
    assert list(fast.counts) == list(slow.counts)
    assert fast.get_total_count() == slow.get_total_count() == len(values)
    assert (fast.min_value, fast.max_value) == (slow.min_value, slow.max_value)
    fast.reset()
    put(7)  # still writes the histogram's own counts after a reset
    assert fast.get_total_count() == 1 and fast.get_value_at_percentile(50) == 7


def test_values_are_clamped_to_the_histogram_range() -> None:
    recorder = LatencyRecorder(series=False)
    recorder.record(-1.0)  # a clock step backwards: counted as 0, not dropped
    recorder.record(7200.0)  # two hours: counted as the one-hour ceiling
    summary = recorder.summary()
    assert summary.count == 2
    assert summary.min_ms == 0
    assert summary.max_ms == 3_600_000


def test_an_empty_recorder_reports_nothing() -> None:
    recorder = LatencyRecorder()
    assert recorder.count == 0
    assert recorder.summary().p99_ms is None
    assert recorder.percentile(50) is None
    assert recorder.series() == ()
    assert recorder.percentile_curve() == ()


async def _closed_loop(stall_at: int, requests: int) -> tuple[LatencyRecorder, LatencyRecorder]:
    """A closed-loop generator: request i is intended at i * 10 ms and sent when the
    previous one has returned; the server answers in 1 ms, except once in 1 s."""
    from_intended, from_sent = LatencyRecorder(), LatencyRecorder()
    start = trio.current_time()

    async def server(i: int) -> None:
        await trio.sleep(1.0 if i == stall_at else 0.001)

    for i in range(requests):
        intended = start + i * 0.010
        await trio.sleep_until(intended)  # returns at once when running late
        sent = trio.current_time()
        await server(i)
        end = trio.current_time()
        from_intended.record_from(intended, end)
        from_sent.record_from(sent, end)
    return from_intended, from_sent


async def test_a_stalled_server_shows_in_p99_only_when_measured_from_the_intended_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from_intended, from_sent = await _closed_loop(stall_at=500, requests=1000)
    assert from_intended.count == from_sent.count == 1000
    # Both saw the one slow request itself...
    assert from_sent.summary().max_ms == pytest.approx(1000, rel=PRECISION)
    assert from_intended.summary().max_ms == pytest.approx(1000, rel=PRECISION)
    # ...but measured from the send, the ~100 requests queued behind the stall look fast:
    sent_p99 = from_sent.percentile(99)
    assert sent_p99 is not None and sent_p99 <= 1.01
    # Measured from when they should have been sent, they carry the stall:
    intended_p99 = from_intended.percentile(99)
    assert intended_p99 is not None and intended_p99 >= 500
    p90 = from_intended.percentile(90)
    assert p90 is not None and p90 > 10  # over 10 % of requests were delayed


async def test_series_buckets_throughput_and_percentiles_per_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = LatencyRecorder(origin=trio.current_time())
    for latency in (0.010, 0.020, 0.030):
        recorder.record(latency)  # second 0 (on trio's clock)
    await trio.sleep(2.5)
    for _ in range(5):
        recorder.record(0.100)  # second 2
    series = recorder.series()
    assert [s.second for s in series] == [0, 1, 2]
    assert [s.count for s in series] == [3, 0, 5]
    assert series[0].p50_ms == pytest.approx(20, rel=0.01)
    assert series[0].max_ms == pytest.approx(30, rel=0.01)
    assert series[1].p99_ms is None
    assert series[2].p95_ms == pytest.approx(100, rel=0.01)


def test_a_late_record_counts_in_the_second_being_collected() -> None:
    recorder = LatencyRecorder()
    recorder.record(0.001, at=5.2)
    recorder.record(0.001, at=3.9)  # earlier than second 5: kept in it
    assert [(s.second, s.count) for s in recorder.series()] == [(5, 2)]


def test_merging_overlapping_series_is_exact() -> None:
    a, b = LatencyRecorder(), LatencyRecorder()
    for i in range(100):
        a.record(0.010, at=i * 0.03)  # seconds 0..2
        b.record(0.500, at=1 + i * 0.03)  # seconds 1..3
    expected = LatencyRecorder()
    timeline = sorted([(i * 0.03, 0.010) for i in range(100)] + [(1 + i * 0.03, 0.500)
                       for i in range(100)])  # fmt: skip
    for at, latency in timeline:
        expected.record(latency, at=at)
    a.merge(b)
    assert a.series() == expected.series()
    assert sum(s.count for s in a.series()) == 200
    a.record(0.010, at=1.5)  # late again: counts in a's current second, not lost
    assert sum(s.count for s in a.series()) == 201


def test_percentile_curve_is_monotonic_and_ends_at_the_maximum() -> None:
    rng = random.Random(7)
    recorder = record_all([rng.expovariate(20) for _ in range(5000)])
    curve = recorder.percentile_curve()
    assert len(curve) > 10
    percentiles = [p.percentile for p in curve]
    latencies = [p.latency_ms for p in curve]
    assert percentiles == sorted(percentiles) and latencies == sorted(latencies)
    assert curve[-1].percentile == 100.0
    assert curve[-1].count == 5000
    assert curve[-1].latency_ms == recorder.summary().max_ms


def test_performance_metrics_from_a_recorder_and_outcomes() -> None:
    recorder = record_all([0.010] * 90 + [0.200] * 10)
    outcomes = {"succeeded": 95, "failed": 3, "timed_out": 2}
    m = PerformanceMetrics.from_latency(recorder, outcomes, 4.0, cpu_seconds=0.5)
    assert m.requests == 100 and m.errors == 5
    assert m.error_rate == pytest.approx(0.05)
    assert m.requests_per_s == pytest.approx(25.0)
    assert m.cpu_seconds_per_request == pytest.approx(0.005)
    assert m.p50_ms == pytest.approx(10, rel=PRECISION)
    assert m.p95_ms == pytest.approx(200, rel=PRECISION)
    assert m.p50_ms <= m.p95_ms <= m.p99_ms <= m.max_ms  # type: ignore[operator]
    data = json.loads(m.to_json())
    assert data == m.to_dict()
    assert data["outcomes"] == {"failed": 3, "succeeded": 95, "timed_out": 2}
    assert data["rss_bytes"] is None  # a slice of a run: no process figures
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        m.requests = 1  # type: ignore[misc]


def test_performance_metrics_of_nothing() -> None:
    m = PerformanceMetrics.from_latency(LatencyRecorder(), {}, 0.0, cpu_seconds=0.1)
    assert m.requests == 0 and m.requests_per_s == 0 and m.error_rate == 0
    assert m.p99_ms is None and m.cpu_seconds_per_request is None


def test_gc_monitor_times_collections_and_is_removed() -> None:
    before = list(gc.callbacks)
    with GCMonitor() as monitor:
        assert monitor.installed
        gc.collect(0)
        gc.collect(2)
        stats = monitor.statistics()
    assert gc.callbacks == before
    assert not monitor.installed
    assert stats.collections >= 2
    assert stats.by_generation[0] >= 1 and stats.by_generation[2] >= 1
    assert 0 < stats.max_pause_s <= stats.total_pause_s
    gc.collect()
    assert monitor.statistics() == stats  # removed: no longer counting


async def test_stats_collector_samples_a_run(autojump_clock: trio.testing.MockClock) -> None:
    rss = iter(range(1000, 10**6, 1000))
    collector = StatsCollector(rss=lambda: next(rss), sample_interval=0.5, clock=trio.current_time)
    callbacks = len(gc.callbacks)
    async with collector.sampling():
        assert len(gc.callbacks) == callbacks + 1
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(trio.sleep, 1.2)
            await trio.sleep(1.0)  # two samples while the 20 sleepers are alive
        gc.collect()
        for outcome in ["succeeded"] * 8 + ["failed"] * 2:
            collector.record(outcome, 0.05)
        await trio.sleep(0.8)
    assert len(gc.callbacks) == callbacks
    m = collector.metrics()
    assert m.duration_s == pytest.approx(2.0)
    assert m.requests == 10 and m.errors == 2 and m.requests_per_s == pytest.approx(5.0)
    assert m.peak_tasks is not None and m.peak_tasks >= 20 + 2
    assert m.active_tasks is not None and m.active_tasks < 20
    assert m.rss_bytes == m.peak_rss_bytes and m.peak_rss_bytes is not None
    assert m.peak_rss_bytes >= 1000 * 5  # start + 4 interval samples + stop, increasing
    assert m.gc_pauses is not None and m.gc_pauses >= 1
    assert m.cpu_seconds is not None and m.cpu_seconds >= 0
    assert m.cpu_seconds_per_request == pytest.approx(m.cpu_seconds / 10)
    stage = collector.metrics(collector.latency, {"succeeded": 4}, 1.0, process=False)
    assert stage.requests == 4 and stage.peak_rss_bytes is None and stage.cpu_seconds is None


def test_stats_collector_refuses_a_second_start_and_stops_cleanly() -> None:
    collector = StatsCollector()
    callbacks = len(gc.callbacks)
    collector.start()
    with pytest.raises(RuntimeError):
        collector.start()
    collector.stop()
    collector.stop()
    assert len(gc.callbacks) == callbacks
    m = collector.metrics()
    assert m.requests == 0 and m.peak_rss_bytes is not None and m.peak_rss_bytes > 0
    assert m.active_tasks is None  # sampled outside trio: no task count


async def test_an_error_in_the_sampled_block_comes_out_unwrapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    collector = StatsCollector()
    callbacks = len(gc.callbacks)
    with pytest.raises(KeyError):
        async with collector.sampling():
            await trio.sleep(1)
            raise KeyError("mine")
    assert not collector.running and len(gc.callbacks) == callbacks
