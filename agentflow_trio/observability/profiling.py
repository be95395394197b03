"""Profiling the live process: CPU (cProfile, or pyinstrument's sampler if installed), heap
(tracemalloc top-N), and a dump of the trio task tree; `profiled` wraps a whole run in
either profile and writes it to a file (what ``agentcli benchmark --profile`` does).

The CPU profilers see every task: trio runs them all on one thread, and the profiler is
per thread. One CPU profile runs at a time in a process (a second raises
`ProfilerBusy`), because Python has one profile hook per thread and a second profiler
would silently replace the first.
"""

from __future__ import annotations

import cProfile
import importlib
import io
import linecache
import marshal
import os
import pstats
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import attrs
import trio

from ._tasks import walk_tasks

__all__ = [
    "PROFILE_KINDS",
    "SORT_KEYS",
    "HeapEntry",
    "ProfileError",
    "ProfilerBusy",
    "check_profile",
    "cpu_profile",
    "ensure_tracing",
    "format_stats",
    "heap_stats",
    "heap_top",
    "profile_cpu",
    "profile_sampling",
    "profiled",
    "sampling_available",
    "stats_bytes",
    "task_tree",
]

SORT_KEYS: Final = frozenset(pstats.Stats.sort_arg_dict_default)
_TRIO_DIR: Final = os.path.dirname(trio.__file__) + os.sep
_busy = False


class ProfilerBusy(RuntimeError):
    """Another CPU profile is already running in this process."""


@contextmanager
def _exclusive() -> Iterator[None]:
    global _busy
    if _busy:
        raise ProfilerBusy("a CPU profile is already running in this process")
    _busy = True
    try:
        yield
    finally:
        _busy = False


@contextmanager
def profile_cpu(path: str | os.PathLike[str] | None = None) -> Iterator[cProfile.Profile]:
    """Profile this thread (every trio task) with cProfile for the duration of the block.

    With ``path``, the pstats file is written there when the block ends, even if it
    raised (``python -m pstats PATH`` or ``pstats.Stats(PATH)`` reads it). The profiler
    is always disabled on exit, cancellation included.

    Raises:
        ProfilerBusy: another CPU profile is running.
    """
    with _exclusive():
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            yield profiler
        finally:
            profiler.disable()
            if path is not None:
                profiler.dump_stats(os.fspath(path))


async def cpu_profile(seconds: float) -> pstats.Stats:
    """Profile the whole trio run for ``seconds`` (from inside it) and return the stats.

    Cancellation stops the profile early and propagates.

    Raises:
        ValueError: ``seconds`` is negative.
        ProfilerBusy: another CPU profile is running.
    """
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    with profile_cpu() as profiler:
        await trio.sleep(seconds)
    return _stats(profiler)


def _stats(profiler: cProfile.Profile) -> pstats.Stats:
    try:
        return pstats.Stats(profiler)
    except TypeError:  # nothing was recorded
        return pstats.Stats()


def format_stats(stats: pstats.Stats, *, limit: int = 40, sort: str = "cumulative") -> str:
    """The top ``limit`` functions of ``stats`` sorted by ``sort``, as pstats prints them.

    Raises:
        ValueError: ``sort`` is not a pstats sort key (see ``SORT_KEYS``).
    """
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}; use one of {', '.join(sorted(SORT_KEYS))}")
    buffer = io.StringIO()
    previous = stats.stream  # type: ignore[attr-defined]
    stats.stream = buffer  # type: ignore[attr-defined]
    try:
        stats.sort_stats(sort).print_stats(limit)
    finally:
        stats.stream = previous  # type: ignore[attr-defined]
    return buffer.getvalue()


def stats_bytes(stats: pstats.Stats) -> bytes:
    """The pstats file content of ``stats`` (what ``dump_stats`` writes)."""
    return marshal.dumps(stats.stats)  # type: ignore[attr-defined]


def sampling_available() -> bool:
    """True if pyinstrument (the optional sampling profiler) can be imported."""
    try:
        importlib.import_module("pyinstrument")
    except ImportError:
        return False
    return True


@contextmanager
def profile_sampling(path: str | os.PathLike[str], *, interval: float = 0.001) -> Iterator[Any]:
    """Profile the block with pyinstrument's sampler (low overhead, wall-clock stacks).

    Writes pyinstrument's HTML report to ``path`` if it ends in ``.html``, else its text
    report. Yields the ``pyinstrument.Profiler``.

    Raises:
        RuntimeError: pyinstrument is not installed (``pip install pyinstrument``).
        ProfilerBusy: another CPU profile is running.
    """
    try:
        profiler_class = importlib.import_module("pyinstrument").Profiler
    except ImportError:
        raise RuntimeError(
            "sampling profiles need pyinstrument: pip install pyinstrument"
        ) from None
    with _exclusive():
        profiler = profiler_class(interval=interval, async_mode="disabled")
        profiler.start()
        try:
            yield profiler
        finally:
            profiler.stop()
            html = os.fspath(path).endswith(".html")
            text = profiler.output_html() if html else profiler.output_text()
            with open(path, "w", encoding="utf-8") as out:
                out.write(text)


# --------------------------------------------------------------------------- heap

_HEAP_FILTERS: Final = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


@attrs.frozen
class HeapEntry:
    """One allocation site: ``size_bytes`` in ``count`` live blocks made at file:line."""

    filename: str
    lineno: int
    size_bytes: int
    count: int


def ensure_tracing(frames: int = 1) -> bool:
    """Start tracemalloc (keeping ``frames`` frames) unless it runs; True if started now."""
    if tracemalloc.is_tracing():
        return False
    tracemalloc.start(frames)
    return True


def heap_stats(limit: int = 25) -> tuple[HeapEntry, ...]:
    """The ``limit`` allocation sites holding the most memory now (tracemalloc must trace).

    Raises:
        RuntimeError: tracemalloc is not tracing (see `ensure_tracing`).
    """
    if not tracemalloc.is_tracing():
        raise RuntimeError("tracemalloc is not tracing: call tracemalloc.start() first")
    snapshot = tracemalloc.take_snapshot().filter_traces(_HEAP_FILTERS)
    entries = []
    for stat in snapshot.statistics("lineno")[:limit]:
        frame = stat.traceback[0]
        entries.append(HeapEntry(frame.filename, frame.lineno, stat.size, stat.count))
    return tuple(entries)


def heap_top(limit: int = 25) -> str:
    """`heap_stats` as text: one line per site with its source line, then the total.

    Raises:
        RuntimeError: tracemalloc is not tracing (see `ensure_tracing`).
    """
    entries = heap_stats(limit)
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"top {len(entries)} allocation sites (tracemalloc, live blocks)"]
    for rank, e in enumerate(entries, 1):
        lines.append(
            f"{rank:>3}. {e.filename}:{e.lineno}: {_kib(e.size_bytes)} in {e.count} blocks"
        )
        source = linecache.getline(e.filename, e.lineno).strip()
        if source:
            lines.append(f"       {source}")
    lines.append(f"traced now {_kib(current)}, traced peak {_kib(peak)}")
    return "\n".join(lines) + "\n"


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


# --------------------------------------------------------------------------- a whole run

PROFILE_KINDS: Final = ("cpu", "memory")


class ProfileError(ValueError):
    """`profiled` was asked for a profile it cannot write: ``key`` (``"kind"`` or
    ``"output"``) names the argument at fault and ``reason`` says why, the same two
    attributes a ``ConfigError`` carries."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def check_profile(kind: str | None, output: str | os.PathLike[str] | None) -> None:
    """Check `profiled`'s arguments before a long run starts: a kind needs an output file,
    an output file needs a kind, and the kind is one of ``PROFILE_KINDS``. Both None is
    fine (no profile).

    Raises:
        ProfileError: the arguments do not fit; ``key`` names the one at fault.
    """
    if kind is not None and kind not in PROFILE_KINDS:
        raise ProfileError("kind", f"unknown profile kind {kind!r}; use one of {PROFILE_KINDS}")
    if kind is not None and output is None:
        raise ProfileError("kind", "needs an output file to write the profile to")
    if output is not None and kind is None:
        raise ProfileError("output", "names the profile file, but no profile kind was given")


@contextmanager
def profiled(
    kind: str | None,
    output: str | os.PathLike[str] | None,
    *,
    preimport: Iterable[str] = (),
    heap_limit: int = 25,
    on_written: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Profile the block and write the profile to ``output``; with ``kind`` None, do nothing.

    - ``"cpu"``: cProfile over this thread (every trio task), written as a pstats file even
      if the block raised (`profile_cpu`).
    - ``"memory"``: tracemalloc (one frame) runs for the block; when it ends without an
      error, the ``heap_limit`` sites holding the most memory (`heap_top`) are written as
      text. Tracing stops either way. The modules named in ``preimport`` are imported
      first, so what they allocate at import is not counted as the run's heap.

    When the file is written and the block ended without an error, ``on_written`` gets one
    line saying where it went and how to read it (``agentcli`` prints it on stderr).

    Raises:
        ProfileError: the arguments do not fit (see `check_profile`), before the block runs.
        ProfilerBusy: ``"cpu"`` while another CPU profile is running.
    """
    check_profile(kind, output)
    if kind is None or output is None:
        yield
        return
    if kind == "cpu":
        with profile_cpu(output):
            yield
        note = f"CPU profile written to {output} (python -m pstats {output})"
    else:
        with _heap_profile(output, preimport, heap_limit):
            yield
        note = f"memory profile (top {heap_limit} allocation sites) written to {output}"
    if on_written is not None:
        on_written(note)


@contextmanager
def _heap_profile(
    output: str | os.PathLike[str], preimport: Iterable[str], limit: int
) -> Iterator[None]:
    """Trace allocations during the block, then write `heap_top` to ``output``."""
    for name in preimport:
        importlib.import_module(name)
    tracemalloc.start(1)
    try:
        yield
        top = heap_top(limit)
    finally:
        tracemalloc.stop()
    with open(output, "w", encoding="utf-8") as file:
        file.write(top)


# --------------------------------------------------------------------------- tasks


def task_tree(*, frames: bool = True) -> str:
    """The live trio task tree, one task per line, nested by nursery (like ``ps f``).

    Each task shows its name and, with ``frames``, where it waits (its innermost frame
    outside trio, and the trio call it waits in). Sibling tasks that read the same and
    have no nursery of their own are folded into one line ending in ``x N`` (fifty idle
    workers take one line). Must be called from inside ``trio.run``; the calling task is
    marked. The first line counts every task.
    """
    current = trio.lowlevel.current_task()
    lines: list[str] = []
    folded: list[int] = []  # how many tasks each line stands for (0: a nursery line)
    tasks = 0
    for depth, node in walk_tasks():
        indent = "  " * depth
        if isinstance(node, trio.Nursery):
            n = len(node.child_tasks)
            lines.append(f"{indent}+ nursery ({n} task{'' if n == 1 else 's'})")
            folded.append(0)
            continue
        tasks += 1
        where = ""
        if node is current:
            where = "  (running: this dump)"
        elif frames:
            where = _waiting_at(node)
        line = f"{indent}- {node.name}{where}"
        if lines and folded[-1] and lines[-1] == line and not node.child_nurseries:
            folded[-1] += 1
            continue
        lines.append(line)
        folded.append(1 if not node.child_nurseries else 0)
    out = [f"{line}  x {n}" if n > 1 else line for line, n in zip(lines, folded, strict=True)]
    return f"{tasks} task{'' if tasks == 1 else 's'}\n" + "\n".join(out) + "\n"


def _waiting_at(task: trio.lowlevel.Task) -> str:
    """Where ``task`` waits: its innermost frame outside trio, and the trio call it is in.

    A task that is trio's own all the way down shows its outermost frame instead (the
    innermost is always the same scheduler trap).
    """
    frames = [(frame.f_code, lineno) for frame, lineno in task.iter_await_frames()]
    if not frames:
        return ""
    mine = [i for i, (code, _) in enumerate(frames) if not code.co_filename.startswith(_TRIO_DIR)]
    at = mine[-1] if mine else 0
    code, lineno = frames[at]
    where = f"{os.path.basename(code.co_filename)}:{lineno} in {code.co_name}"
    if mine and at + 1 < len(frames):
        where += f" -> {frames[at + 1][0].co_qualname}"
    return f"  [{where}]"
