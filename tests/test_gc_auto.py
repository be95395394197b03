"""``[runtime] gc_auto``: a runner admitting thousands of events tunes the collector while
it is open and gives it back when it closes, however runners nest or overlap."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import attrs
import pytest
import trio

import agentflow_trio as af
from agentflow_trio.config import Config, RunnerConfig, RuntimeConfig
from agentflow_trio.observability.runtime import AUTO_GC_EVENTS, auto_gc_settings


def still_frozen_as(frozen: int) -> bool:
    """Whether the collector's frozen set is as it was when it held ``frozen`` objects:
    empty if it was empty, else not unfrozen. A frozen object that is freed leaves the
    set, so the count may only shrink; an exact count would fail at random."""
    now = gc.get_freeze_count()
    return now == 0 if frozen == 0 else 0 < now <= frozen


@pytest.fixture(autouse=True)
def collector() -> Iterator[tuple[int, int, int]]:
    """The collector as the test found it, checked to be back after it."""
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    yield before
    assert gc.get_threshold() == before
    assert still_frozen_as(frozen)


def config(events: int, *, auto: bool = True, thresholds: list[int] | None = None) -> Config:
    runner = RunnerConfig(max_concurrent_events=events, event_buffer_size=events)
    runtime = RuntimeConfig(gc_auto=auto, gc_thresholds=thresholds or [])
    return attrs.evolve(Config(), runner=runner, runtime=runtime)


async def test_a_runner_for_thousands_of_events_tunes_while_open(
    collector: tuple[int, int, int],
) -> None:
    nothing_frozen = gc.get_freeze_count() == 0
    async with af.Runner(config(4000)):
        assert gc.get_threshold()[0] == max(collector[0], 40_000)
        assert gc.get_threshold()[1] >= 20
        if nothing_frozen:
            assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == collector


@pytest.mark.parametrize(
    ("events", "auto", "thresholds"),
    [(AUTO_GC_EVENTS - 1, True, None), (AUTO_GC_EVENTS, False, None)],
)
async def test_small_runners_and_gc_auto_false_leave_the_collector_alone(
    collector: tuple[int, int, int], events: int, auto: bool, thresholds: list[int] | None
) -> None:
    frozen = gc.get_freeze_count()
    async with af.Runner(config(events, auto=auto, thresholds=thresholds)):
        assert gc.get_threshold() == collector
        assert still_frozen_as(frozen)


async def test_set_thresholds_win_over_auto(collector: tuple[int, int, int]) -> None:
    async with af.Runner(config(AUTO_GC_EVENTS, thresholds=[1234])):
        assert gc.get_threshold() == (1234, *collector[1:])


async def test_overlapping_runners_give_it_back_once_the_last_closes(
    collector: tuple[int, int, int],
) -> None:
    seen: list[tuple[int, int, int]] = []
    first_open, second_open, first_closed = trio.Event(), trio.Event(), trio.Event()

    async def first() -> None:
        async with af.Runner(config(AUTO_GC_EVENTS)):
            first_open.set()
            await second_open.wait()
        first_closed.set()

    async def second() -> None:
        await first_open.wait()
        seen.append(gc.get_threshold())
        async with af.Runner(config(3 * AUTO_GC_EVENTS)):
            seen.append(gc.get_threshold())  # one tuning, however many runners
            second_open.set()
            await first_closed.wait()
            seen.append(gc.get_threshold())  # the second still runs

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        nursery.start_soon(second)
    tuned = (max(collector[0], 10 * AUTO_GC_EVENTS), max(collector[1], 20), max(collector[2], 20))
    assert seen == [tuned, tuned, tuned]
    assert gc.get_threshold() == collector


def test_a_higher_threshold_is_never_lowered_and_giving_back_twice_is_once(
    collector: tuple[int, int, int],
) -> None:
    gc.set_threshold(500_000, *collector[1:])
    try:
        give_back = auto_gc_settings(AUTO_GC_EVENTS)
        assert gc.get_threshold()[0] == 500_000
        other = auto_gc_settings(AUTO_GC_EVENTS)
        frozen = gc.get_freeze_count()
        give_back()
        give_back()  # a second call does nothing: the other user still holds it
        assert still_frozen_as(frozen)
        other()
        assert gc.get_threshold()[0] == 500_000
    finally:
        gc.set_threshold(*collector)
