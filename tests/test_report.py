"""``--report out.html`` and ``--compare previous.json``: the HTML report, checked in Chromium.

Two real runs (subprocesses, as a user types them): a benchmark whose ``--json`` line is
the baseline, and a staged load test whose scenario fails one request in five, with
``--report`` and ``--compare``. The report is opened from disk in headless Chromium: no
console error, no request other than the file itself (and data: URLs), and every
plotly trace holds exactly the points of the run's JSON that its ``meta`` names. Bad
``--report`` / ``--compare`` values fail with exit 2 before the run starts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from _browser import Browser, require_chromium
from test_cli import agentcli, assert_clean_failure, one_json_line

SCENARIO = """
async def request(client):
    if client.index % 5 == 0:
        raise RuntimeError("every fifth request fails")
    await client.call("chat", {"query": "hi"})

think_time = 0.01
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("report")
    baseline = one_json_line(agentcli("benchmark", "--duration", "2s", "-c", "4", "--json"))
    (where / "baseline.json").write_text(json.dumps(baseline) + "\n")
    script = where / "scenario.py"
    script.write_text(SCENARIO)
    out = where / "out.html"
    proc = agentcli(
        "loadtest",
        "--script",
        str(script),
        "--stages",
        "1s:3,1s:6",
        "--json",
        "--report",
        str(out),
        "--compare",
        str(where / "baseline.json"),
    )
    run = one_json_line(proc)
    assert f"report written to {out}" in proc.stderr
    return {"dir": where, "baseline": baseline, "run": run, "html": out}


def _embedded(page: str, ident: str) -> Any:
    match = re.search(rf'<script type="application/json" id="{ident}">(.*?)</script>', page, re.S)
    assert match, ident
    return json.loads(match.group(1))


def test_report_file_is_one_self_contained_page(runs: dict[str, Any]) -> None:
    page = runs["html"].read_text()
    assert "<script src" not in page  # plotly.js is inline, no CDN
    markup = re.sub(r"<script.*?</script>", "", page, flags=re.S)  # the page's own tags
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup)
    assert "plotly.js v" in page or "plotly.js" in page
    embedded = _embedded(page, "run-data")
    run = runs["run"]
    for key, value in run.items():
        if key != "timeline":
            assert embedded[key] == value, key
    assert {k: v for k, v in embedded["timeline"].items() if k != "error_total"} == run["timeline"]
    assert _embedded(page, "baseline-data") == runs["baseline"]
    for label in ("Summary", "Charts", "Comparison with the baseline run", "Configuration"):
        assert label in page


def test_timeline_adds_up_to_the_totals(runs: dict[str, Any]) -> None:
    run = runs["run"]
    timeline = run["timeline"]
    assert sum(timeline["requests"]) == run["requests"]
    errors = timeline["errors"]
    assert set(errors) == {k for k in run["outcomes"] if k != "succeeded"} == {"error"}
    assert sum(errors["error"]) == run["outcomes"]["error"] > 0
    assert [s["label"] for s in timeline["stages"]] == [s["stage"] for s in run["stages"]]
    assert timeline["target"][:2] == [1.5, 4.5]  # the ramps, mid-second
    assert 0 < max(timeline["in_flight"]) <= 6
    assert len(run["latency_curve"]["latency_ms"]) > 3
    assert run["latency_curve"]["latency_ms"][-1] == run["max_ms"]


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


CHARTS = """
Array.from(document.querySelectorAll('.plotly-graph-div')).map(gd => ({
  id: gd.id,
  xaxis: gd.layout.xaxis.type,
  traces: gd.data.map(t => ({name: t.name, meta: t.meta, x: Array.from(t.x), y: Array.from(t.y)})),
}))
"""


def test_report_renders_in_chromium(runs: dict[str, Any], tmp_path: Path) -> None:
    require_chromium()
    with Browser() as browser:
        browser.open(runs["html"].as_uri())
        browser.wait_until("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 5")
        charts = browser.evaluate(CHARTS)
        data = browser.evaluate("JSON.parse(document.getElementById('run-data').textContent)")
        rows = browser.evaluate(
            "Array.from(document.querySelectorAll('#comparison-table tbody tr'))"
            ".map(r => [r.dataset.metric, r.className])"
        )
        shot = browser.screenshot(tmp_path / "report.png")
        assert browser.errors == []
        assert browser.requests and all(
            url.startswith(("file:", "data:")) for url in browser.requests
        ), browser.requests
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["requests"] == runs["run"]["requests"]
    ids = {chart["id"] for chart in charts}
    expected = {"chart-throughput", "chart-latency", "chart-users", "chart-distribution"}
    assert ids == expected | {"chart-errors"}
    for chart in charts:
        assert chart["traces"], chart["id"]
        for trace in chart["traces"]:
            x, y = _lookup(data, trace["meta"]["x"]), _lookup(data, trace["meta"]["y"])
            assert trace["x"] == x and trace["y"] == y, (chart["id"], trace["name"])
            assert len(x) == len(y) > 0, (chart["id"], trace["name"])
    by_id = {chart["id"]: chart for chart in charts}
    assert by_id["chart-distribution"]["xaxis"] == "log"
    assert [t["meta"]["y"] for t in by_id["chart-errors"]["traces"]] == ["timeline.errors.error"]
    assert [t["meta"]["y"] for t in by_id["chart-latency"]["traces"]] == [
        "timeline.p50_ms",
        "timeline.p95_ms",
        "timeline.p99_ms",
    ]
    # The comparison colours each delta by its direction: error rate went up from 0.
    colours = dict(rows)
    assert colours["error_rate"] == "worse"
    run, base = runs["run"], runs["baseline"]
    expect = "better" if run["requests_per_s"] > base["requests_per_s"] else "worse"
    if abs(run["requests_per_s"] / base["requests_per_s"] - 1) >= 0.01:
        assert colours["requests_per_s"] == expect


def test_a_streamed_run_shows_ttft_and_itl_in_chromium(tmp_path: Path) -> None:
    require_chromium()
    out = tmp_path / "streamed.html"
    run = one_json_line(
        agentcli(
            "benchmark", "--agent", "stream", "--stream", "--requests", "40", "-c", "4",
            "--json", "--report", str(out),
        )
    )  # fmt: skip
    streaming = run["streaming"]
    assert streaming["events"] == 40 and streaming["ttft"]["count"] == 40
    with Browser() as browser:
        browser.open(out.as_uri())
        browser.wait_until("document.querySelectorAll('.plotly-graph-div .main-svg').length >= 6")
        charts = browser.evaluate(CHARTS)
        rows = browser.evaluate(
            "Array.from(document.querySelectorAll('#streaming tbody tr'))"
            ".map(r => [r.dataset.kind, Array.from(r.cells).map(c => c.textContent)])"
        )
        assert browser.errors == []
    (chart,) = [chart for chart in charts if chart["id"] == "chart-streaming"]
    assert chart["xaxis"] == "log"
    assert [t["meta"]["y"] for t in chart["traces"]] == [
        "streaming.ttft_curve.latency_ms",
        "streaming.itl_curve.latency_ms",
    ]
    for trace in chart["traces"]:
        x, y = _lookup(run, trace["meta"]["x"]), _lookup(run, trace["meta"]["y"])
        assert trace["x"] == x and trace["y"] == y and len(x) > 0
    table = dict(rows)
    for kind in ("ttft", "itl"):
        figures = streaming[kind]
        assert table[kind][1] == f"{figures['count']:,}"
        assert table[kind][3:6] == [f"{figures[k]:,.2f}" for k in ("p50_ms", "p95_ms", "p99_ms")]


# -- bad input: exit 2 before the run (a 1 h run would hit the subprocess timeout) ---------


def test_unwritable_report_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "out.html"
    proc = agentcli("benchmark", "--duration", "1h", "--report", str(missing))
    assert_clean_failure(proc, "--report", str(missing), "cannot write there")
    assert not missing.parent.exists()
    proc = agentcli("loadtest", "--duration", "1h", "--report", str(tmp_path))
    assert_clean_failure(proc, "--report", "is a directory")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"command": "benchmark", "requests": ', "not valid JSON"),
        ("[1, 2, 3]", "expected a JSON object"),
        ('{"hello": 1}', "not the JSON of an agentcli run"),
    ],
)
def test_malformed_compare(tmp_path: Path, content: str, needle: str) -> None:
    previous = tmp_path / "previous.json"
    previous.write_text(content)
    out = tmp_path / "out.html"
    for command in ("benchmark", "loadtest"):
        proc = agentcli(
            command, "--duration", "1h", "--report", str(out), "--compare", str(previous)
        )
        assert_clean_failure(proc, "--compare", str(previous), needle)
    assert not out.exists()


def test_compare_needs_a_report_and_an_existing_file(tmp_path: Path) -> None:
    proc = agentcli("benchmark", "--duration", "1h", "--compare", str(tmp_path / "x.json"))
    assert_clean_failure(proc, "--report")
    proc = agentcli(
        "benchmark",
        "--duration",
        "1h",
        "--report",
        str(tmp_path / "out.html"),
        "--compare",
        str(tmp_path / "missing.json"),
    )
    assert_clean_failure(proc, "--compare", "missing.json")


# -- the timeline, exactly, under the autojump clock ---------------------------------------


async def test_timeline_counts_each_second_exactly(autojump_clock: Any) -> None:
    import trio

    from agentflow_trio.loadgen import Plan, run_closed
    from agentflow_trio.loadgen._tally import LoadStats, measure

    plan = Plan.constant(3.0, 2)
    stats = LoadStats(plan)

    async def target(index: int) -> str:
        await trio.sleep(0.25)
        return "failed" if index == 1 else "succeeded"

    async with measure(stats):
        await run_closed(stats.track(target), plan, stats)
    timeline = stats.timeline.to_dict()
    # Each user completes at 0.25 s, 0.5 s, ... 3.0 s: 3 in second 0, 4 in seconds 1 and 2,
    # and the one that ends exactly at 3.0 s in second 3.
    assert timeline["seconds"] == [0, 1, 2, 3]
    assert timeline["requests"] == [6, 8, 8, 2]
    assert timeline["errors"] == {"failed": [3, 4, 4, 1]}
    assert timeline["target"] == [2, 2, 2, 0]
    assert timeline["in_flight"][:3] == [2, 2, 2]
    assert all(abs(p - 250.0) <= 2.5 for p in timeline["p99_ms"])
    assert timeline["stages"] == [{"label": "3s 2 users", "start_s": 0, "end_s": 3.0}]
    assert stats.timeline.in_flight == 0
