"""CPU per invocation with tracing off and on, against a build without tracing, in one run.

An invocation is ``runner.call`` of an agent that makes one model call to the mock LLM
(the lean client, a separate process pinned to core 1) and one tool call: the path every
span of ``observability.tracing`` sits on (event, agent, chat, execute_tool, the
``traceparent`` header). Three builds, each in a child process pinned to core 0, the
children interleaved (``--repeat`` rounds of one child per build):

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

Each child measures ``--rounds`` windows of ``--calls`` invocations after a warm-up. A
build's figure is its least-disturbed window, the minimum over all its windows (other
processes on the machine only ever add CPU time, so the minimum is the estimate closest
to the code's own cost, as ``timeit``'s documentation argues); the median is printed
beside it. On a shared host the medians of two identical builds differ by up to 20%
from one run to the next; the minima by up to 12%.

``--instructions`` adds a deterministic figure: each build's child under valgrind's
callgrind (both threads), at two invocation counts, the difference divided by the extra
invocations: instructions per invocation, and their ratios (needs ``valgrind`` on PATH,
about three minutes).

    python bench/tracing_overhead.py                 # 3 x 4 windows of 1000 per build
    python bench/tracing_overhead.py --quick         # 1 x 2 windows of 600
    python bench/tracing_overhead.py --instructions  # and the callgrind counts

Prints one JSON line per scenario and per ratio on stdout, a table on stderr. A child is
``--child MODE URL CALLS ROUNDS`` (internal).
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
    each window's figures."""
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

    async def run() -> dict[str, Any]:
        llm_config = LLMConfig(
            base_url=url + "/v1",
            api_key="sk-bench",
            max_connections=100,
            retry=RetryConfig(enabled=False),
        )
        config = af.Config(llm=llm_config)
        async with open_llm_client(llm_config) as llm:
            runner = af.Runner(config, agents={"ask": ask}, llm=llm, tools=ToolRegistry([lookup]))
            async with runner:

                async def call(i: int) -> None:
                    result = await runner.call(af.Event("ask", {"q": f"question {i}"}))
                    assert result.succeeded, result.error

                await drive(call, min(calls, 300), CONCURRENCY)  # warm-up
                windows = [await drive(call, calls, CONCURRENCY) for _ in range(rounds)]
                return {key: [w[key] for w in windows] for key in windows[0]}

    figures = trio.run(_traced, run) if mode == "on" else trio.run(run)
    figures["module"] = af.__file__
    print(json.dumps(figures), flush=True)


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


def run_child(mode: str, url: str, calls: int, rounds: int, pythonpath: Path) -> dict[str, Any]:
    """One child's figures: ``rounds`` windows of ``calls`` invocations of build ``mode``."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    here = str(Path(__file__).resolve())
    command = [sys.executable, here, "--child", mode, url, str(calls), str(rounds)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


_COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(mode: str, url: str, pythonpath: Path, extra: int = 2000) -> float:
    """Instructions per invocation of build ``mode`` (both threads), by callgrind: the
    child at 400 and at ``400 + extra`` invocations, the difference over ``extra``."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    here = str(Path(__file__).resolve())
    counts = []
    for calls in (400, 400 + extra):
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        command += [sys.executable, here, "--child", mode, url, str(calls), "1"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        found = _COLLECTED.search(done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"{mode} child under callgrind failed:\n{done.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=1000, help="invocations per window")
    parser.add_argument("--rounds", type=int, default=4, help="windows per child")
    parser.add_argument("--repeat", type=int, default=3, help="children per build")
    parser.add_argument("--quick", action="store_true", help="one child of 2 x 600 per build")
    parser.add_argument("--instructions", action="store_true", help="callgrind counts too")
    parser.add_argument("--tracing-commit", default=None)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "URL", "CALLS", "ROUNDS"))
    args = parser.parse_args()
    if args.child:
        mode, url, calls, rounds = args.child
        child(mode, url, int(calls), int(rounds))
        return
    calls, rounds, repeat = (600, 2, 1) if args.quick else (args.calls, args.rounds, args.repeat)
    if args.instructions and shutil.which("valgrind") is None:
        print("--instructions: valgrind is not on PATH; timed figures only", file=sys.stderr)
        args.instructions = False
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import emit, mock_process, table

    ref = args.tracing_commit or default_tracing_commit()
    windows: dict[str, list[float]] = {"baseline": [], "off": [], "on": []}
    rates: dict[str, list[float]] = {mode: [] for mode in windows}
    counted: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, mock_process() as url:
        base = baseline_tree(ref, Path(tmp))
        trees = {"baseline": base, "off": ROOT, "on": ROOT}
        for turn in range(repeat):  # every other round in reverse order: drift cancels out
            for mode in windows if turn % 2 == 0 else reversed(windows):
                figures = run_child(mode, url, calls, rounds, trees[mode])
                windows[mode] += figures["cpu_us_per_call"]
                rates[mode] += figures["calls_per_s"]
        if args.instructions:
            counted = {mode: instructions(mode, url, trees[mode]) for mode in windows}
    rows: list[dict[str, Any]] = []
    least = {mode: min(done) for mode, done in windows.items()}
    middle = {mode: statistics.median(done) for mode, done in windows.items()}
    for mode in windows:
        row: dict[str, Any] = {
            "scenario": f"tracing_{mode}",
            "concurrency": CONCURRENCY,
            "calls": calls,
            "windows": len(windows[mode]),
            "calls_per_s": round(statistics.median(rates[mode]), 1),
            "cpu_us_per_call": round(least[mode], 2),
            "cpu_us_per_call_median": round(middle[mode], 2),
            "build": f"working tree without {ref[:10]}" if mode == "baseline" else "working tree",
        }
        if counted:
            row["instructions_per_call"] = round(counted[mode])
        rows.append(row)
        emit(row)
    for mode, target in TARGETS.items():
        ratio = least[mode] / least["baseline"]
        row = {
            "scenario": f"ratio_{mode}_over_baseline",
            "concurrency": CONCURRENCY,
            "cpu_ratio": round(ratio, 3),
            "cpu_ratio_median": round(middle[mode] / middle["baseline"], 3),
            "target": target,
            "within_target": ratio <= target,
        }
        if counted:
            instr = counted[mode] / counted["baseline"]
            row["instructions_ratio"] = round(instr, 3)
            row["instructions_within_target"] = instr <= target
        rows.append(row)
        emit(row)
    columns = ["scenario", "calls_per_s", "cpu_us_per_call", "cpu_us_per_call_median"]
    columns += ["cpu_ratio", "cpu_ratio_median", "target"]
    if counted:
        columns[4:4] = ["instructions_per_call"]
        columns += ["instructions_ratio"]
    table(rows, columns)


if __name__ == "__main__":
    main()
