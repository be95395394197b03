"""Issue #23's anchors: agentflow_trio against a hand-written raw trio + httptools floor,
scenario by scenario, in the same run, and (``--before REV``) against an older revision;
the in-flight scenarios also against hand-written asyncio + aiohttp.

The mock model (``bench/_anchor_mock.py``: answers depend on the conversation, so tool
loops can run at once) runs in its own process, pinned to core 1 when there are two;
every measurement runs in a child process of this script pinned to core 0, importing
agentflow_trio from ``--root`` (this tree by default), so that the client's ``getrusage``
CPU is its own and an older tree can be measured beside this one. Scenarios:

* ``chat``: one chat call at c=50. Raw: orjson body, one keep-alive round trip, orjson
  decode. Target: agentflow CPU per call <= 2x raw's.
* ``stream``: one streamed answer of K=64 chunks at c=50, every chunk read; and time to
  first chunk at c=1 (median of sequential streams). Raw: bulk SSE parse (one split per
  received piece, orjson per event). Targets: <= 6 us CPU per chunk; first chunk within
  0.1 ms of raw's.
* ``tool_loop``: a `tool_agent` run through ``runner.call`` at c=50: 3 model calls, the
  first two asking for 2 tool calls each, run in parallel (4 tool runs), with 4 tool
  schemas sent every call. Raw: the same bodies built from dicts, tools in one nursery.
  Target: <= 600 us CPU per invocation.
* ``history_loop``: the same with 40 earlier messages before the question. Target: <= 1.5x
  ``tool_loop``'s CPU (nothing quadratic in history length).
* ``in_flight_2000`` / ``in_flight_10000``: N callers each running one event (one chat call)
  at a time, the mock answering after 1 s; CPU per invocation and RSS per in-flight event
  (peak RSS while N wait, less RSS once the side is set up, imports and client, before
  its first call; over N). A third side,
  ``aiohttp`` (``bench/_anchor_aiohttp.py``): the raw chat call on asyncio + aiohttp (one
  shared ``ClientSession``, ``TCPConnector(limit=0)``, orjson both ways), the baseline the
  issue names. Each side in its own child, so one side's freed memory does not hide
  another's. Targets: <= 20 KB per event; CPU per invocation <= aiohttp's (``cpu_met``;
  ``af_over_aiohttp_cpu``; raw's again if aiohttp is not installed: the side is then
  skipped with a note).

Each scenario runs ``--repeat`` times (children alternating sides and revisions); the
medians are kept. One JSON line per scenario on stdout (``cpu_ratio`` = agentflow over raw
in the same child), a table on stderr. With ``--before REV`` (default a82c255, the tree
before issues #21-#23), a ``git worktree`` of REV is made once (under /tmp) and every child
also runs against it; ``slower_pct`` compares the two revisions' ``cpu_ratio`` (each
against its own raw floor, measured in the same child: robust to a loaded machine).

    python -m bench.anchors                   # about 3 minutes
    python -m bench.anchors --quick           # about 1 minute (no 10,000 in flight)
    python -m bench.anchors --before a82c255  # also the tree before #21-#23
    python -m bench.anchors --at HEAD         # a worktree of HEAD, not the files being edited
    python -m bench.anchors --only chat --profile   # cProfile one scenario's agentflow side
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import emit, mock_process, table  # noqa: E402

BEFORE = "a82c255"
CHUNKS = 64
SCENARIOS: dict[str, dict[str, Any]] = {
    "chat": {"concurrency": 50, "calls": 4000, "quick": 1500},
    "stream": {"concurrency": 50, "calls": 800, "quick": 300},
    "tool_loop": {"concurrency": 50, "calls": 800, "quick": 300},
    "history_loop": {"concurrency": 50, "calls": 800, "quick": 300},
    "in_flight_2000": {"concurrency": 2000, "rounds": 2, "latency": True},
    "in_flight_10000": {"concurrency": 10000, "rounds": 1, "latency": True, "full_only": True},
}
TARGETS = {
    "chat": ("cpu_ratio", 2.0),
    "stream": ("af_cpu_us_per_chunk", 6.0),
    "tool_loop": ("af_cpu_us", 600.0),
    "history_loop": ("vs_tool_loop", 1.5),
    "in_flight_2000": ("af_rss_kb_per_event", 20.0),
    "in_flight_10000": ("af_rss_kb_per_event", 20.0),
}


# ------------------------------------------------------------------------------ parent
def _worktree(rev: str) -> Path:
    """A detached ``git worktree`` of ``rev`` under /tmp (made once, then reused)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", rev],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = Path("/tmp") / f"agentflow_trio_{sha}"
    if not (path / "agentflow_trio").is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), sha],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return path


def _child(
    scenario: str, url: str, root: Path, sides: str, quick: bool, profile: bool = False
) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__)), "--child", scenario, "--url", url]
    command += ["--root", str(root), "--sides", sides]
    command += ["--quick"] if quick else []
    command += ["--profile"] if profile else []
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(command, capture_output=not profile, text=True, env=env)
    if profile:
        return {}
    if out.returncode != 0:  # one failed measurement is reported, the others still run
        lines = (out.stderr or "").strip().splitlines() or ["no output"]
        print(
            f"{scenario} ({root.name}, {sides}) failed:", *lines[-12:], sep="\n  ", file=sys.stderr
        )
        return {"error": lines[-1][:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _median(runs: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in runs if r.get(key) is not None]
    if values and not all(isinstance(v, int | float) for v in values):
        return values[-1]  # an error message
    return round(statistics.median(values), 3) if values else None


def _row(scenario: str, runs: list[dict[str, Any]], revision: str) -> dict[str, Any]:
    spec = SCENARIOS[scenario]
    row: dict[str, Any] = {"scenario": f"anchor/{scenario}", "revision": revision}
    row["concurrency"] = spec["concurrency"]
    keys = sorted({k for r in runs for k in r if k not in ("scenario",)})
    for key in keys:
        row[key] = _median(runs, key)
    ratios = [
        r["af_cpu_us"] / r["raw_cpu_us"] for r in runs if r.get("raw_cpu_us") and r.get("af_cpu_us")
    ]
    if ratios:
        row["cpu_ratio"] = round(statistics.median(ratios), 3)
    over = [
        r["af_cpu_us"] / r["aiohttp_cpu_us"]
        for r in runs
        if r.get("aiohttp_cpu_us") and r.get("af_cpu_us")
    ]
    if over:
        row["af_over_aiohttp_cpu"] = round(statistics.median(over), 3)
    if scenario == "stream" and row.get("af_ttfc_ms") is not None:
        row["ttfc_diff_ms"] = round(row["af_ttfc_ms"] - row["raw_ttfc_ms"], 3)
    row["repeats"] = len(runs)
    return row


def _merge(side_runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """In-flight scenarios run each side in its own child: merge them by repeat."""
    merged = []
    for runs in zip(*(r for r in side_runs.values() if r), strict=True):
        errors = " | ".join(e for run in runs if (e := run.get("error")))
        merged.append({k: v for run in runs for k, v in run.items() if k != "error"})
        merged[-1].update({"error": errors} if errors else {})
    return merged


def _judge(rows: dict[str, dict[str, Any]]) -> None:
    loop = rows.get("tool_loop")
    hist = rows.get("history_loop")
    if loop and hist and loop.get("af_cpu_us"):
        hist["vs_tool_loop"] = round(hist["af_cpu_us"] / loop["af_cpu_us"], 3)
    for scenario, row in rows.items():
        key, limit = TARGETS[scenario]
        value = row.get(key)
        row["target"] = f"{key} <= {limit:g}"
        row["met"] = value is not None and value <= limit
        if scenario == "stream" and row.get("ttfc_diff_ms") is not None:
            row["ttfc_met"] = row["ttfc_diff_ms"] <= 0.1
        if scenario.startswith("in_flight"):
            af, baseline = row.get("af_cpu_us"), row.get("aiohttp_cpu_us")
            if af is not None and baseline is not None:
                row["cpu_target"] = "af_cpu_us <= aiohttp_cpu_us"
                row["cpu_met"] = af <= baseline
            else:  # aiohttp not installed (or its side failed): raw's CPU instead
                row["cpu_target"] = "cpu_ratio <= 1"
                row["cpu_met"] = (row.get("cpu_ratio") or 9) <= 1.0


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    names = [n for n in SCENARIOS if (not args.only or n in args.only)]
    if args.quick and not args.only:
        names = [n for n in names if not SCENARIOS[n].get("full_only")]
    roots = {"current": _worktree(args.at) if args.at else Path(args.root or ROOT)}
    if args.before:
        roots["before"] = _worktree(args.before)
    repeat = args.repeat or (1 if args.quick else 3)
    in_flight_sides = ["raw", "af"]
    if importlib.util.find_spec("aiohttp") is not None:
        in_flight_sides.append("aiohttp")
    elif any(SCENARIOS[n].get("latency") for n in names) and not args.profile:
        print("anchors: aiohttp is not installed: its in-flight side is skipped", file=sys.stderr)
    mock = [sys.executable, str(ROOT / "bench" / "_anchor_mock.py"), "--chunks", str(CHUNKS)]
    results: dict[str, dict[str, dict[str, Any]]] = {rev: {} for rev in roots}
    for latency in (False, True):
        todo = [n for n in names if bool(SCENARIOS[n].get("latency")) == latency]
        if not todo:
            continue
        with mock_process(command=[*mock, "--latency-ms", "1000" if latency else "0"]) as url:
            for name in todo:
                if args.profile:
                    _child(name, url, roots["current"], "af", args.quick, profile=True)
                    continue
                runs: dict[str, list[dict[str, Any]]] = {rev: [] for rev in roots}
                split: dict[str, dict[str, list[dict[str, Any]]]] = {
                    rev: {side: [] for side in in_flight_sides} for rev in roots
                }
                for k in range(repeat):
                    order = list(roots) if k % 2 == 0 else list(reversed(roots))
                    for rev in order:
                        if latency:  # one side per child: RSS of its own
                            sides = in_flight_sides[::-1] if k % 2 else in_flight_sides
                            for side in sides:
                                got = _child(name, url, roots[rev], side, args.quick)
                                split[rev][side].append(got)
                        else:
                            runs[rev].append(_child(name, url, roots[rev], "raw,af", args.quick))
                for rev in roots:
                    measured = _merge(split[rev]) if latency else runs[rev]
                    results[rev][name] = _row(name, measured, rev)
    rows: list[dict[str, Any]] = []
    for by_name in results.values():
        _judge(by_name)
        rows += by_name.values()
    if "before" in results:
        for name, row in results["current"].items():
            old = results["before"].get(name, {})
            if row.get("cpu_ratio") and old.get("cpu_ratio"):
                row["before_cpu_ratio"] = old["cpu_ratio"]
                row["slower_pct"] = round((row["cpu_ratio"] / old["cpu_ratio"] - 1) * 100, 1)
                row["within_3pct"] = row["slower_pct"] <= 3.0
    for row in rows:
        emit(row)
    return rows


COLUMNS = [
    "scenario",
    "revision",
    "raw_cpu_us",
    "af_cpu_us",
    "aiohttp_cpu_us",
    "cpu_ratio",
    "af_over_aiohttp_cpu",
    "af_cpu_us_per_chunk",
    "raw_ttfc_ms",
    "af_ttfc_ms",
    "vs_tool_loop",
    "raw_rss_kb_per_event",
    "af_rss_kb_per_event",
    "aiohttp_rss_kb_per_event",
    "met",
    "cpu_met",
    "slower_pct",
]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, 1 repeat")
    parser.add_argument("--repeat", type=int, default=None, help="children per scenario")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="scenario")
    parser.add_argument(
        "--before", nargs="?", const=BEFORE, default=None, help=f"older revision ({BEFORE})"
    )
    parser.add_argument("--root", default=None, help="agentflow_trio tree to measure")
    parser.add_argument(
        "--at", default=None, help="measure this revision (a worktree) instead of the tree"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the agentflow side")
    parser.add_argument("--child", choices=list(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--sides", default="raw,af", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        from bench._anchor_child import child_main

        child_main(args, SCENARIOS[args.child], CHUNKS)
        return []
    rows = run(args)
    if rows:
        table(rows, COLUMNS)
    return rows


if __name__ == "__main__":
    main()
