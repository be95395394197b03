"""CPU per invocation with tracing off and on, against a build without tracing, in one run.

An invocation is ``runner.call`` of an agent that makes one model call to the mock LLM
(the lean client, a separate process pinned to core 1) and one tool call: the path every
span of ``observability.tracing`` sits on (event, agent, chat, execute_tool, the
``traceparent`` header). Three builds, each in a child process pinned to core 0:

* ``baseline``: a copy of the working tree with the tracing instrumentation taken out
  (the commit that added it, ``--tracing-commit``, default: the one that added
  ``observability/tracing.py``, reverse-applied file by file with ``patch``; a leftover
  ``X if _tracing.active is None else ...`` becomes ``X``, ``_tracing.active is None and
  X`` and ``X and _tracing.active is None`` too, an ``if _tracing.active is not None:``
  block goes, and its ``else:`` block, if any, stays one level out): today's behaviour without
  any tracing code, whatever else changed since.
* ``off``: this tree, ``[tracing] enabled = false`` (the issue's target: within 2%).
* ``on``: this tree, tracing on, sampling 1.0, batch export (a background thread) to an
  exporter that reads each span's ids and attributes and drops it (the target: within
  25%).

The windows are paired: one child per build is started and warmed up, then they take
turns, one window of ``--calls`` invocations each per round (the order reversed every
other round), a fraction of a second apart, while the others sleep; ``--repeat`` fresh
sets of children (a new process's memory layout can move its figures) of ``--rounds``
rounds each. A build's ratio is the median over the rounds of its window
over the baseline's window of the same round, with the quartiles beside it: a
disturbance of the shared host then spoils one round, not a whole build's figure (the
ratio of the least-disturbed windows, ``timeit``'s estimate, is printed too). On this
project's shared 2-core host a run's ratios still move by several percent; the
quartiles show how much.

``--instructions`` adds a deterministic figure: each build's child under valgrind's
callgrind (both threads), at two invocation counts, the difference divided by the extra
invocations: instructions per invocation, and their ratios (needs ``valgrind`` on PATH,
about three minutes). ``--cache`` adds the memory traffic instructions do not show: each
child under cachegrind with this host's level-2 cache as its last level (from sysfs),
level-2 data misses per invocation and their ratios (about five minutes; the threads'
timing under valgrind moves them by up to a quarter from run to run: compare large
differences only). A miss costs tens of instructions' time, so a build can be within its
bound by instructions and not timed.

    python bench/tracing_overhead.py                 # 3 sets x 8 rounds of 1000 calls
    python bench/tracing_overhead.py --quick         # 1 set x 4 rounds of 600
    python bench/tracing_overhead.py --instructions  # and the callgrind counts
    python bench/tracing_overhead.py --cache         # and simulated L2 misses

Prints one JSON line per scenario and per ratio on stdout, a table on stderr. A child is
``--child MODE URL CALLS ROUNDS`` (internal; ``ROUNDS`` 0: windows on request, read from
its standard input, as `ServedChild` drives it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 50
TARGETS = {"off": 1.02, "on": 1.25}
INSTRUMENTED = (  # the hot-path files the tracing commit instrumented
    "agentflow_trio/agents.py",
    "agentflow_trio/app.py",
    "agentflow_trio/distributed/_codec.py",
    "agentflow_trio/llm/_attempts.py",
    "agentflow_trio/llm/_lean/session.py",
    "agentflow_trio/llm/_metering.py",
    "agentflow_trio/llm/http.py",
    "agentflow_trio/mcp/pool.py",
    "agentflow_trio/runner.py",
    "agentflow_trio/server/app.py",
    "agentflow_trio/tools/base.py",
)
_LEFTOVER = re.compile(r"(\S[^\n]*?) if _tracing\.active is None else [^\n]+")
_LEFTOVER_AND = re.compile(r"_tracing\.active is None and ")  # "off and X" is X without tracing
_LEFTOVER_AND_END = re.compile(r" and _tracing\.active is None")  # "X and off" is X too
_LEFTOVER_IF_ELSE = re.compile(  # "if on: A else: B" is B, one level out, without tracing
    r"^( *)if _tracing\.active is not None:[^\n]*\n(?:\1 {4}[^\n]*\n)+"
    r"\1else:[^\n]*\n((?:\1 {4}[^\n]*\n)+)",
    re.M,
)
_LEFTOVER_BLOCK = re.compile(  # "if on:" and the lines under it: nothing without tracing
    r"^( *)if _tracing\.active is not None:[^\n]*\n(?:\1 {4}[^\n]*\n|[ \t]*\n)+", re.M
)


def _else_only(found: re.Match[str]) -> str:
    """The ``else`` branch of a leftover ``if _tracing.active is not None:``, dedented."""
    indent = found.group(1)
    return "".join(indent + line[len(indent) + 4 :] for line in found.group(2).splitlines(True))


# --------------------------------------------------------------------------- the child
def child(mode: str, url: str, calls: int, rounds: int) -> None:
    """Run ``rounds`` windows of ``calls`` invocations at c=50 (after a warm-up) and print
    their figures; ``rounds`` 0: one window per ``go`` line read from standard input, its
    figures printed at once (after a ``ready`` line), until end of input."""
    import trio

    sys.path.insert(0, str(ROOT / "bench"))
    from _common import drive, pin_to_core

    import agentflow_trio as af
    from agentflow_trio.config import LLMConfig, RetryConfig
    from agentflow_trio.llm import open_llm_client
    from agentflow_trio.tools import ToolRegistry, tool

    pin_to_core(0)

    @tool
    def lookup(key: str) -> dict[str, Any]:
        """A quick synchronous lookup."""
        return {"key": key, "value": len(key)}

    async def ask(ctx: af.Context, event: af.Event) -> str:
        await ctx.tools.call("lookup", {"key": event.data["q"]})
        return str((await ctx.llm.complete(event.data["q"])).text)

    def say(figures: dict[str, Any]) -> None:
        print(json.dumps({**figures, "module": af.__file__}), flush=True)

    async def run() -> dict[str, Any]:
        llm_config = LLMConfig(
            base_url=url + "/v1",
            api_key="sk-bench",
            max_connections=100,
            retry=RetryConfig(enabled=False),
        )
        config = af.Config(llm=llm_config)
        figures: dict[str, Any] = {}
        async with open_llm_client(llm_config) as llm:
            runner = af.Runner(config, agents={"ask": ask}, llm=llm, tools=ToolRegistry([lookup]))
            async with runner:

                async def call(i: int) -> None:
                    result = await runner.call(af.Event("ask", {"q": f"question {i}"}))
                    assert result.succeeded, result.error

                await drive(call, min(calls, 300), CONCURRENCY)  # warm-up
                if rounds == 0:  # windows on request, each reported at once
                    say({"ready": True})
                    while (await trio.to_thread.run_sync(sys.stdin.readline)).strip() == "go":
                        say(await drive(call, calls, CONCURRENCY))
                else:
                    windows = [await drive(call, calls, CONCURRENCY) for _ in range(rounds)]
                    figures = {key: [w[key] for w in windows] for key in windows[0]}
        return figures

    figures = trio.run(_traced, run) if mode == "on" else trio.run(run)
    if rounds:
        say(figures)


async def _traced(run: Any) -> dict[str, Any]:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from agentflow_trio.config.sections import TracingConfig
    from agentflow_trio.observability.tracing import open_tracing

    class Dropped(SpanExporter):
        """Reads each span as an exporter would (ids, parent, attributes), then drops it."""

        def export(self, spans: Any) -> SpanExportResult:
            for span in spans:
                span.context, span.parent, span.attributes  # noqa: B018
            return SpanExportResult.SUCCESS

    async with open_tracing(TracingConfig(enabled=True, sample_ratio=1.0), exporter=Dropped()):
        figures: dict[str, Any] = await run()
    return figures


# --------------------------------------------------------------------------- the parent
def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout


def default_tracing_commit() -> str:
    """The commit that added ``observability/tracing.py`` (and the instrumentation)."""
    added = _git(
        "log", "--diff-filter=A", "--format=%H", "--", "agentflow_trio/observability/tracing.py"
    )
    return added.split()[-1]


def baseline_tree(commit: str, into: Path) -> Path:
    """A copy of this working tree's package with ``commit``'s instrumentation taken out.

    Raises:
        RuntimeError: a file still mentions ``_tracing`` afterwards (the patch did not fit).
    """
    shutil.copytree(ROOT / "agentflow_trio", into / "agentflow_trio")
    for path in INSTRUMENTED:
        diff = _git("diff", f"{commit}^", commit, "--", path)
        command = ["patch", "-R", "-p1", "--fuzz=3", "--no-backup-if-mismatch", "-s", "-f"]
        subprocess.run(command, cwd=into, input=diff, text=True, capture_output=True, check=False)
        target = into / path
        text = _LEFTOVER_IF_ELSE.sub(_else_only, target.read_text())
        text = _LEFTOVER.sub(r"\1", _LEFTOVER_BLOCK.sub("", text))
        text = _LEFTOVER_AND_END.sub("", _LEFTOVER_AND.sub("", text))
        text = "\n".join(
            line for line in text.split("\n") if "import tracing as _tracing" not in line
        )
        target.write_text(text)
        if "_tracing" in text or "_traced" in text:
            raise RuntimeError(f"{path}: the instrumentation could not be taken out")
    for leftover in into.rglob("*.rej"):
        leftover.unlink()
    return into


def _command(
    mode: str, url: str, calls: int, rounds: int, pythonpath: Path
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a child of build ``mode`` (its package on
    ``pythonpath``; ``rounds`` 0: windows on request)."""
    here = str(Path(__file__).resolve())
    command = [sys.executable, here, "--child", mode, url, str(calls), str(rounds)]
    return command, dict(os.environ, PYTHONPATH=str(pythonpath))


def run_child(mode: str, url: str, calls: int, rounds: int, pythonpath: Path) -> dict[str, Any]:
    """One child's figures: ``rounds`` windows of ``calls`` invocations of build ``mode``
    (the one-shot child `instructions` runs under callgrind)."""
    command, env = _command(mode, url, calls, rounds, pythonpath)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


class ServedChild:
    """A build's child serving windows on request (``--child MODE URL CALLS 0``): started
    and warmed up once, then `window` runs one measured window while the other builds'
    children sleep, so that windows of all builds can alternate a fraction of a second
    apart (a disturbance then hits one window of a round, not a whole build)."""

    def __init__(self, mode: str, url: str, calls: int, pythonpath: Path) -> None:
        self.mode = mode
        command, env = _command(mode, url, calls, 0, pythonpath)
        self._process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._read()  # its ``ready`` line, once warmed up

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            raise RuntimeError(f"{self.mode} child ended (exit status {code}): see its stderr")
        figures: dict[str, Any] = json.loads(line)
        return figures

    def window(self) -> dict[str, Any]:
        """Run one window; its figures (``calls_per_s``, ``cpu_us_per_call``)."""
        assert self._process.stdin is not None
        self._process.stdin.write("go\n")
        self._process.stdin.flush()
        return self._read()

    def close(self) -> None:
        """End the child (end of its input) and wait for it."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        if self._process.wait(timeout=60) != 0:
            raise RuntimeError(f"{self.mode} child failed: see its stderr")

    def kill(self) -> None:
        """End the child now (the run failed)."""
        self._process.kill()
        self._process.wait()


def interleaved(
    trees: dict[str, Path], url: str, calls: int, rounds: int, repeat: int
) -> list[dict[str, dict[str, Any]]]:
    """``repeat`` sets of one served child per build, each set running ``rounds`` rounds
    of one window per build, the order reversed every other round: a list of rounds, each
    the figures of every build's window."""
    done: list[dict[str, dict[str, Any]]] = []
    for _ in range(repeat):
        children: list[ServedChild] = []
        try:
            children += [ServedChild(mode, url, calls, tree) for mode, tree in trees.items()]
            for turn in range(rounds):
                order = children if turn % 2 == 0 else children[::-1]
                done.append({child.mode: child.window() for child in order})
        except BaseException:
            for child in children:
                child.kill()
            raise
        for child in children:
            child.close()
    return done


_COLLECTED = re.compile(r"Collected : (\d+)")
_CACHEGRIND = re.compile(r"(I\s+refs|LLd misses):\s+([\d,]+)")


def _per_invocation(
    mode: str,
    url: str,
    pythonpath: Path,
    tool: list[str],
    read: Callable[[str], dict[str, int]],
    extra: int,
) -> dict[str, float]:
    """What valgrind's ``tool`` counts per invocation of build ``mode`` (both threads):
    the child at 400 and at ``400 + extra`` invocations, ``read`` off each run's standard
    error, the difference over ``extra`` (start-up and warm-up cancel out)."""
    counts: list[dict[str, int]] = []
    for calls in (400, 400 + extra):
        child, env = _command(mode, url, calls, 1, pythonpath)
        command = ["valgrind", *tool, *child]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        found = read(done.stderr)
        if done.returncode != 0 or not found:
            raise RuntimeError(f"{mode} child under {tool[0]} failed:\n{done.stderr[-2000:]}")
        counts.append(found)
    return {key: (counts[1][key] - counts[0][key]) / extra for key in counts[0]}


def callgrind_count(summary: str) -> dict[str, int]:
    """``instructions`` (all threads) from callgrind's summary; empty when absent."""
    found = _COLLECTED.search(summary)
    return {} if found is None else {"instructions": int(found.group(1))}


def cachegrind_counts(summary: str) -> dict[str, int]:
    """``instructions`` (I refs) and ``l2_data_misses`` (LLd misses, the last level being
    the L2 here) from cachegrind's summary; empty unless both are there."""
    found = {
        "instructions" if key.startswith("I") else "l2_data_misses": int(value.replace(",", ""))
        for key, value in _CACHEGRIND.findall(summary)
    }
    return found if len(found) == 2 else {}


def instructions(mode: str, url: str, pythonpath: Path, extra: int = 2000) -> float:
    """Instructions per invocation of build ``mode`` (both threads), by callgrind."""
    tool = ["--tool=callgrind", "--callgrind-out-file=/dev/null"]
    return _per_invocation(mode, url, pythonpath, tool, callgrind_count, extra)["instructions"]


def l2_geometry(cpu: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> str:
    """cachegrind's ``--LL`` value for this host's level-2 cache (size,ways,line in
    bytes), read from sysfs; 1 MiB, 8 ways, 64-byte lines when sysfs does not say."""
    for index in sorted(cpu.glob("index*")):
        try:
            if (index / "level").read_text().strip() != "2":
                continue
            size = (index / "size").read_text().strip().upper()
            ways = int((index / "ways_of_associativity").read_text())
            line = int((index / "coherency_line_size").read_text())
        except (OSError, ValueError):
            break
        scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
        return f"{int(size.rstrip('KM')) * scale},{ways},{line}"
    return f"{1 << 20},8,64"


def cache_misses(mode: str, url: str, pythonpath: Path, extra: int = 2000) -> dict[str, float]:
    """Instructions and simulated level-2 data misses per invocation of build ``mode``
    (both threads), by cachegrind with this host's L2 as its last level. Misses are
    memory traffic that instruction counts do not show (an ended span waiting for its
    batch is written, then read and freed by the export thread, cold). The threads'
    timing under valgrind moves them by up to a quarter from run to run."""
    tool = ["--tool=cachegrind", "--cache-sim=yes", f"--LL={l2_geometry()}"]
    tool += ["--cachegrind-out-file=/dev/null"]
    return _per_invocation(mode, url, pythonpath, tool, cachegrind_counts, extra)


def _quartiles(values: list[float]) -> tuple[float, float]:
    """The first and third quartiles of ``values`` (at least one)."""
    if len(values) < 2:
        return values[0], values[0]
    low, _, high = statistics.quantiles(values, n=4)
    return low, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000, help="invocations per window")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per set of children")
    parser.add_argument("--repeat", type=int, default=3, help="sets of children (one per build)")
    parser.add_argument("--quick", action="store_true", help="one set, 4 rounds of 600")
    parser.add_argument("--instructions", action="store_true", help="callgrind counts too")
    parser.add_argument("--cache", action="store_true", help="simulated L2 misses too")
    parser.add_argument("--tracing-commit", default=None)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "URL", "CALLS", "ROUNDS"))
    args = parser.parse_args()
    if args.child:
        mode, url, calls, rounds = args.child
        child(mode, url, int(calls), int(rounds))
        return
    calls, rounds, repeat = (600, 4, 1) if args.quick else (args.calls, args.rounds, args.repeat)
    if (args.instructions or args.cache) and shutil.which("valgrind") is None:
        print("valgrind is not on PATH: timed figures only", file=sys.stderr)
        args.instructions = args.cache = False
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import emit, mock_process, table

    ref = args.tracing_commit or default_tracing_commit()
    modes = ("baseline", "off", "on")
    counted: dict[str, float] = {}
    cached: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, mock_process() as url:
        base = baseline_tree(ref, Path(tmp))
        trees = {"baseline": base, "off": ROOT, "on": ROOT}
        done = interleaved(trees, url, calls, rounds, repeat)
        if args.instructions:
            counted = {mode: instructions(mode, url, trees[mode]) for mode in modes}
        if args.cache:
            cached = {mode: cache_misses(mode, url, trees[mode]) for mode in modes}
    cpu = {mode: [r[mode]["cpu_us_per_call"] for r in done] for mode in modes}
    rows: list[dict[str, Any]] = []
    for mode in modes:
        row: dict[str, Any] = {
            "scenario": f"tracing_{mode}",
            "concurrency": CONCURRENCY,
            "calls": calls,
            "windows": len(cpu[mode]),
            "calls_per_s": round(statistics.median(r[mode]["calls_per_s"] for r in done), 1),
            "cpu_us_per_call": round(statistics.median(cpu[mode]), 2),
            "cpu_us_per_call_min": round(min(cpu[mode]), 2),
            "build": f"working tree without {ref[:10]}" if mode == "baseline" else "working tree",
        }
        if counted:
            row["instructions_per_call"] = round(counted[mode])
        if cached:
            row["l2_data_misses_per_call"] = round(cached[mode]["l2_data_misses"], 1)
        rows.append(row)
        emit(row)
    for mode, target in TARGETS.items():
        paired = [a / b for a, b in zip(cpu[mode], cpu["baseline"], strict=True)]
        ratio = statistics.median(paired)
        row = {
            "scenario": f"ratio_{mode}_over_baseline",
            "concurrency": CONCURRENCY,
            "cpu_ratio": round(ratio, 3),
            "cpu_ratio_quartiles": [round(q, 3) for q in _quartiles(paired)],
            "cpu_ratio_of_minima": round(min(cpu[mode]) / min(cpu["baseline"]), 3),
            "target": target,
            "within_target": ratio <= target,
        }
        if counted:
            instr = counted[mode] / counted["baseline"]
            row["instructions_ratio"] = round(instr, 3)
            row["instructions_within_target"] = instr <= target
        if cached:
            misses = cached[mode]["l2_data_misses"] / cached["baseline"]["l2_data_misses"]
            row["l2_misses_ratio"] = round(misses, 3)
        rows.append(row)
        emit(row)
    columns = ["scenario", "calls_per_s", "cpu_us_per_call", "cpu_us_per_call_min"]
    columns += ["cpu_ratio", "cpu_ratio_of_minima", "target"]
    if counted:
        columns[4:4] = ["instructions_per_call"]
        columns += ["instructions_ratio"]
    if cached:
        columns += ["l2_data_misses_per_call", "l2_misses_ratio"]
    table(rows, columns)


if __name__ == "__main__":
    main()
