"""[runtime] tuning: GC settings applied and undone; the memory guard's hysteresis."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.errors import Overloaded
from agentflow_trio.observability.runtime import (
    MemoryGuard,
    apply_gc_settings,
    current_rss,
    peak_rss,
)


@attrs.frozen
class Runtime:
    """The ``[runtime]`` section's fields, as the guard and GC settings read them."""

    gc_thresholds: list[int] = attrs.field(factory=list)
    gc_freeze: bool = False
    memory_limit: int = 0
    memory_check_interval: float = 1.0


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_default_settings_change_nothing() -> None:
    before = gc.get_threshold()
    applied = apply_gc_settings(Runtime())
    assert not applied.changed and applied.thresholds is None and not applied.froze
    assert gc.get_threshold() == before
    applied.undo()
    assert gc.get_threshold() == before


def test_thresholds_are_applied_and_undone() -> None:
    before = gc.get_threshold()
    applied = apply_gc_settings(Runtime(gc_thresholds=[50_000, 20]))
    assert gc.get_threshold() == (50_000, 20, before[2])  # the third keeps its value
    assert applied.previous_thresholds == before
    assert applied.thresholds == (50_000, 20, before[2])
    applied.undo()
    assert gc.get_threshold() == before


def test_freeze_moves_start_up_objects_out_of_the_collectors_reach() -> None:
    assert gc.get_freeze_count() == 0
    applied = apply_gc_settings(Runtime(gc_freeze=True))
    assert applied.froze and applied.frozen_objects > 0 and gc.get_freeze_count() > 0
    applied.undo()
    assert gc.get_freeze_count() == 0


def test_bad_thresholds_are_refused() -> None:
    before = gc.get_threshold()
    for bad in ([1, 2, 3, 4], [-1]):
        with pytest.raises(ValueError, match="gc_thresholds"):
            apply_gc_settings(Runtime(gc_thresholds=bad))
    assert gc.get_threshold() == before


def test_the_real_config_section_is_accepted() -> None:
    from agentflow_trio.config import Config

    cfg = Config.from_mapping({"runtime": {"gc_thresholds": [1000], "memory_limit": "64MiB"}})
    applied = apply_gc_settings(cfg.runtime)
    assert gc.get_threshold()[0] == 1000
    applied.undo()
    guard = MemoryGuard.from_config(cfg.runtime)
    assert guard.limit_bytes == 64 * 2**20 and guard.interval == 1.0


def test_rss_helpers_read_this_process() -> None:
    now = current_rss()
    assert now > 1 << 20  # a Python process holds more than a MiB
    assert peak_rss() >= now * 0.9  # the peak so far is at least (about) what is held now


class FakeRSS:
    def __init__(self, value: int) -> None:
        self.value = value
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.value


async def test_memory_guard_sheds_above_the_limit_with_hysteresis(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rss = FakeRSS(500)
    guard = MemoryGuard(1000, 1.0, rss=rss)
    async with trio.open_nursery() as nursery:
        await nursery.start(guard.run)
        assert rss.reads == 1 and not guard.shedding  # sampled before started()
        rss.value = 1001
        await trio.sleep(0.5)
        assert not guard.shedding  # not sampled yet: half an interval
        await trio.sleep(0.6)
        assert guard.shedding
        rss.value = 960  # below the limit but above 95 %: keep shedding
        await trio.sleep(1)
        assert guard.shedding
        rss.value = 949
        await trio.sleep(1)
        assert not guard.shedding
        rss.value = 990  # under the limit: stays off
        await trio.sleep(1)
        assert not guard.shedding
        rss.value = 2000
        await trio.sleep(1)
        assert guard.shedding
        stats = guard.statistics()
        nursery.cancel_scope.cancel()
    assert stats.episodes == 2 and stats.peak_rss_bytes == 2000 and stats.rss_bytes == 2000
    assert stats.checks == rss.reads == 6
    assert stats.resume_below_bytes == 950 and stats.limit_bytes == 1000
    error = guard.overloaded()
    assert isinstance(error, Overloaded)
    assert "memory limit" in str(error) and "refused" in str(error)


async def test_a_zero_limit_turns_the_guard_off(autojump_clock: trio.testing.MockClock) -> None:
    rss = FakeRSS(10**12)
    guard = MemoryGuard.from_config(Runtime(memory_limit=0), rss=rss)
    async with trio.open_nursery() as nursery:
        await nursery.start(guard.run)  # returns at once: nothing to watch
    assert not guard.check() and not guard.shedding and rss.reads == 0


def test_bad_guard_arguments() -> None:
    with pytest.raises(ValueError):
        MemoryGuard(-1)
    with pytest.raises(ValueError):
        MemoryGuard(100, 0)
    with pytest.raises(ValueError):
        MemoryGuard(100, resume_ratio=1.5)


@settings(deadline=None, max_examples=80)
@given(
    st.integers(min_value=1, max_value=10_000),
    st.floats(min_value=0.5, max_value=1.0),
    st.lists(st.integers(min_value=0, max_value=20_000), max_size=50),
)
def test_guard_follows_the_hysteresis_model(limit: int, ratio: float, samples: list[int]) -> None:
    rss = FakeRSS(0)
    guard = MemoryGuard(limit, rss=rss, resume_ratio=ratio)
    model, episodes = False, 0
    for sample in samples:
        rss.value = sample
        if not model and sample > limit:
            model, episodes = True, episodes + 1
        elif model and sample < int(limit * ratio):
            model = False
        assert guard.check() is model is guard.shedding
    assert guard.statistics().episodes == episodes
