"""CPU profiles that pstats loads, tracemalloc's top sites, `profiled` (a whole run into a
file, as ``agentcli --profile`` writes it), and the live task tree."""

from __future__ import annotations

import pstats
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from agentflow_trio.observability import profiling


def _spin_the_wheel(n: int) -> int:
    return sum(i * i for i in range(n))


def _names(stats: pstats.Stats) -> set[str]:
    return {func[2] for func in stats.stats}  # type: ignore[attr-defined]


def test_profile_cpu_writes_a_pstats_file(tmp_path: Path) -> None:
    path = tmp_path / "cpu.pstats"
    with profiling.profile_cpu(path):
        _spin_the_wheel(20_000)
    stats = pstats.Stats(str(path))
    assert "_spin_the_wheel" in _names(stats)


def test_the_file_is_written_even_when_the_block_fails(tmp_path: Path) -> None:
    path = tmp_path / "cpu.pstats"
    with pytest.raises(ZeroDivisionError), profiling.profile_cpu(path):
        _spin_the_wheel(1000)
        1 / 0  # noqa: B018
    assert "_spin_the_wheel" in _names(pstats.Stats(str(path)))


def test_one_cpu_profile_at_a_time() -> None:
    with profiling.profile_cpu(), pytest.raises(profiling.ProfilerBusy):
        with profiling.profile_cpu():
            pass
    with profiling.profile_cpu():  # the first one released its claim
        pass


async def test_cpu_profile_sees_every_task_of_the_run(tmp_path: Path) -> None:
    async def busy() -> None:
        while True:
            _spin_the_wheel(2000)
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy)
            stats = await profiling.cpu_profile(0.1)
            nursery.cancel_scope.cancel()
    assert "_spin_the_wheel" in _names(stats)
    text = profiling.format_stats(stats, limit=50, sort="tottime")
    assert "_spin_the_wheel" in text and "tottime" in text
    path = tmp_path / "live.pstats"
    path.write_bytes(profiling.stats_bytes(stats))
    assert "_spin_the_wheel" in _names(pstats.Stats(str(path)))


async def test_a_cancelled_cpu_profile_stops_the_profiler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.move_on_after(1):
        await profiling.cpu_profile(10)
    with profiling.profile_cpu():  # not busy: the cancelled one let go
        pass


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sort key"):
        profiling.format_stats(pstats.Stats(), sort="bogus")
    with pytest.raises(ValueError):
        trio.run(profiling.cpu_profile, -1.0)


@pytest.mark.skipif(profiling.sampling_available(), reason="pyinstrument is installed")
def test_sampling_mode_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="pip install pyinstrument"):
        with profiling.profile_sampling(tmp_path / "x.txt"):
            pass


@pytest.fixture
def tracing() -> Iterator[None]:
    started = profiling.ensure_tracing()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


def test_heap_top_names_the_line_that_holds_the_memory(tracing: None) -> None:
    hoard = [bytearray(1024) for _ in range(2000)]  # ~2 MiB from this line
    entries = profiling.heap_stats(5)
    assert entries and entries[0].filename == __file__
    assert entries[0].size_bytes >= 2000 * 1024 and entries[0].count >= 2000
    text = profiling.heap_top(5)
    lines = text.splitlines()
    assert lines[0].startswith("top ") and lines[-1].startswith("traced now")
    assert f"{__file__}:{entries[0].lineno}" in lines[1]
    assert "bytearray(1024)" in lines[2]  # the source line
    del hoard


def test_heap_top_needs_tracing() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in this process")
    with pytest.raises(RuntimeError, match="tracemalloc"):
        profiling.heap_top()


def test_profiled_without_a_kind_does_nothing(tmp_path: Path) -> None:
    notes: list[str] = []
    with profiling.profiled(None, None, on_written=notes.append):
        _spin_the_wheel(100)
    assert notes == [] and list(tmp_path.iterdir()) == []
    with profiling.profile_cpu():  # no CPU profile was left running
        pass


def test_profiled_cpu_writes_pstats_and_says_where(tmp_path: Path) -> None:
    path = tmp_path / "run.pstats"
    notes: list[str] = []
    with profiling.profiled("cpu", path, on_written=notes.append):
        _spin_the_wheel(20_000)
    assert "_spin_the_wheel" in _names(pstats.Stats(str(path)))
    assert notes == [f"CPU profile written to {path} (python -m pstats {path})"]


def test_profiled_cpu_writes_the_file_but_says_nothing_when_the_run_fails(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.pstats"
    notes: list[str] = []
    with pytest.raises(ZeroDivisionError):
        with profiling.profiled("cpu", path, on_written=notes.append):
            _spin_the_wheel(1000)
            1 / 0  # noqa: B018
    assert "_spin_the_wheel" in _names(pstats.Stats(str(path)))
    assert notes == []


def test_profiled_memory_writes_the_top_sites_and_stops_tracing(tmp_path: Path) -> None:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in this process")
    path = tmp_path / "heap.txt"
    notes: list[str] = []
    with profiling.profiled("memory", path, heap_limit=3, on_written=notes.append):
        assert tracemalloc.is_tracing()
        hoard = [bytearray(1024) for _ in range(2000)]  # ~2 MiB from this line
    assert not tracemalloc.is_tracing()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("top ") and lines[-1].startswith("traced now")
    assert __file__ in lines[1] and "bytearray(1024)" in lines[2]
    assert notes == [f"memory profile (top 3 allocation sites) written to {path}"]
    del hoard


def test_profiled_memory_writes_nothing_when_the_run_fails(tmp_path: Path) -> None:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in this process")
    path = tmp_path / "heap.txt"
    notes: list[str] = []
    with pytest.raises(ZeroDivisionError):
        with profiling.profiled("memory", path, on_written=notes.append):
            1 / 0  # noqa: B018
    assert not tracemalloc.is_tracing()
    assert not path.exists() and notes == []


def _hoarding_module(where: Path, name: str) -> Path:
    """A module that holds ~4 MiB, allocated when it is imported."""
    source = where / f"{name}.py"
    source.write_text("HOARD = [bytearray(1024) for _ in range(4000)]\n")
    return source


@pytest.mark.parametrize("preimported", [True, False])
def test_preimported_modules_are_not_counted_as_the_runs_heap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preimported: bool
) -> None:
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc is already tracing in this process")
    name = f"_hoard_{'pre' if preimported else 'late'}"
    source = _hoarding_module(tmp_path, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    path = tmp_path / "heap.txt"
    with profiling.profiled("memory", path, preimport=[name] if preimported else []):
        __import__(name)  # the run imports it (again, if it was preimported)
    assert (str(source) in path.read_text(encoding="utf-8")) is not preimported
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("kind", "output", "key", "reason"),
    [
        ("cpu", None, "kind", "needs an output file"),
        (None, "out.txt", "output", "no profile kind"),
        ("wall", "out.txt", "kind", "unknown profile kind 'wall'"),
    ],
)
def test_profiled_refuses_arguments_that_do_not_fit(
    kind: str | None, output: str | None, key: str, reason: str
) -> None:
    with pytest.raises(profiling.ProfileError, match=reason) as caught:
        profiling.check_profile(kind, output)
    assert caught.value.key == key and reason in caught.value.reason
    assert isinstance(caught.value, ValueError)
    ran = False
    with pytest.raises(profiling.ProfileError):
        with profiling.profiled(kind, output):
            ran = True
    assert not ran  # refused before the block, so a long run never starts
    profiling.check_profile(None, None)  # no profile: fine


async def _parked(event: trio.Event) -> None:
    await event.wait()


async def test_task_tree_nests_tasks_by_nursery(autojump_clock: trio.testing.MockClock) -> None:
    done = trio.Event()
    async with trio.open_nursery() as outer:
        outer.start_soon(_parked, done, name="outer-worker")
        async with trio.open_nursery() as inner:
            inner.start_soon(_parked, done, name="inner-worker-1")
            inner.start_soon(_parked, done, name="inner-worker-2")
            await trio.testing.wait_all_tasks_blocked()
            tree = profiling.task_tree()
            done.set()
    lines = tree.splitlines()
    count = int(lines[0].split()[0])
    assert count == sum(_tasks_on(line) for line in lines)

    def line_of(name: str) -> str:
        return next(line for line in lines if f"- {name}" in line)

    def depth(line: str) -> int:
        return len(line) - len(line.lstrip())

    me = next(line for line in lines if "(running: this dump)" in line)
    assert depth(line_of("outer-worker")) == depth(line_of("inner-worker-1")) > depth(me)
    # each worker shows where it waits (the first frame outside trio)
    assert "test_profiling.py" in line_of("inner-worker-2") and "_parked" in line_of(
        "inner-worker-2"
    )
    assert "+ nursery (2 tasks)" in tree
    names_only = tree.replace("[", "")
    assert "inner-worker-1" in names_only


def _tasks_on(line: str) -> int:
    if not line.lstrip().startswith("- "):
        return 0
    _, sep, n = line.rpartition("  x ")
    return int(n) if sep else 1


async def test_identical_idle_siblings_fold_into_one_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(_parked, done, name="same-worker")
        nursery.start_soon(_parked, done, name="other-worker")
        await trio.testing.wait_all_tasks_blocked()
        tree = profiling.task_tree()
        done.set()
    lines = tree.splitlines()
    same = [line for line in lines if "- same-worker" in line]
    assert len(same) == 1 and same[0].endswith("  x 5")
    assert int(lines[0].split()[0]) == sum(_tasks_on(line) for line in lines)
    assert "+ nursery (6 tasks)" in tree


async def test_task_tree_without_frames(autojump_clock: trio.testing.MockClock) -> None:
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_parked, done, name="quiet")
        await trio.testing.wait_all_tasks_blocked()
        tree = profiling.task_tree(frames=False)
        done.set()
    assert any(line.strip() == "- quiet" for line in tree.splitlines())
