"""``agentcli loadtest --dashboard``: the live dashboard, watched in headless Chromium.

A real subprocess runs a staged load test whose scenario starts failing half its
requests 3.5 s in, and prints the dashboard's URL; Chromium opens it while the run goes
on. Checked: the request
counter rises while the run goes on and ends at the run's total; the gauges show the
stage, breaker and queue; no console error; every request stays on the dashboard's
127.0.0.1 address; and, once the run has finished, every chart holds exactly the
per-second points of the run's ``--json`` output (the live series and the final report
are the same data). A screenshot goes to the test's tmp dir.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _browser import Browser, require_chromium
from test_cli import _env
from test_report import CHARTS

# Errors start 3.5 s in (after the page has connected): the errors chart must grow a trace
# for a kind first seen mid-run, zero in the seconds before.
SCENARIO = """
import time

_start = None

def setup():
    global _start
    _start = time.monotonic()

async def request(client):
    if time.monotonic() - _start > 3.5 and client.index % 2 == 0:
        raise RuntimeError("half the users fail after 3.5 s")
    await client.call("chat", {"query": "hi"})

think_time = 0.01
"""

COUNTER = "(+(document.getElementById('requests') || {}).textContent || 0)"


def _lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _printed(lines: queue.Queue[str], proc: subprocess.Popen[str], prefix: str) -> str:
    """What follows ``prefix`` on the first line that starts with it (bounded wait)."""
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert proc.poll() is None, f"agentcli exited {proc.returncode}: {seen}"
            continue
        seen.append(line)
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"nothing printed starting {prefix!r}: {seen}")


def _dashboard_url(lines: queue.Queue[str], proc: subprocess.Popen[str]) -> str:
    url = _printed(lines, proc, "dashboard: ")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/"), url
    return url


def test_live_dashboard_follows_a_load_test(tmp_path: Path) -> None:
    require_chromium()
    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO)
    command = [sys.executable, "-m", "agentflow_trio.cli", "loadtest", "--script", str(script)]
    # 10 s of load: a browser started on a loaded host still sees the counter move
    command += ["--stages", "2s:2,8s:4", "--latency-ms", "2", "--json", "--dashboard"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        errors: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stderr, errors), daemon=True).start()
        url = _dashboard_url(errors, proc)
        assert url.startswith("http://127.0.0.1:")
        with Browser() as browser:
            browser.open(url)
            first = browser.wait_until(f"{COUNTER} > 0 && {COUNTER}")
            later = browser.wait_until(f"{COUNTER} > {first} && {COUNTER}")
            gauges = browser.evaluate(
                "Object.fromEntries(Array.from(document.querySelectorAll('.gauge .v'))"
                ".map(e => [e.id, e.textContent]))"
            )
            browser.wait_until("window.lastFrame && window.lastFrame.finished", timeout=30)
            final = browser.evaluate(COUNTER)
            charts = browser.evaluate(CHARTS)
            browser.screenshot(tmp_path / "dashboard.png")
            page_errors, requests = list(browser.errors), list(browser.requests)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    run = json.loads(out)
    assert page_errors == []
    assert requests and all(u.startswith(url) for u in requests), requests
    assert 0 < first < later <= final == run["requests"]
    # A slow browser may read the gauges after the last stage: "finished" is a stage too.
    stages = {s["stage"] for s in run["stages"]} | {"finishing (grace period)", "finished"}
    assert gauges["stage"] in stages
    assert gauges["g-breaker"] in ("closed", "half_open", "open", "off")
    assert gauges["g-queue_depth"].isdigit()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000

    timeline = dict(run["timeline"])
    timeline["error_total"] = [sum(v) for v in zip(*timeline["errors"].values(), strict=True)]
    data = {"timeline": timeline, "latency_curve": run["latency_curve"]}
    by_id = {chart["id"]: chart for chart in charts}
    assert set(by_id) == {
        "chart-throughput",
        "chart-latency",
        "chart-users",
        "chart-distribution",
        "chart-errors",
    }
    kinds = [t["meta"]["y"] for t in by_id["chart-errors"]["traces"]]
    assert kinds == ["timeline.errors.error"]  # added live, replacing the "no errors" trace
    assert timeline["errors"]["error"][0] == 0 < sum(timeline["errors"]["error"])
    for chart in charts:
        for trace in chart["traces"]:
            x, y = data, data
            for part in trace["meta"]["x"].split("."):
                x = x[part]
            for part in trace["meta"]["y"].split("."):
                y = y[part]
            assert (trace["x"], trace["y"]) == (x, y), (chart["id"], trace["name"])
            assert len(trace["x"]) > 0, (chart["id"], trace["name"])


def test_serve_dashboard_counts_served_events(tmp_path: Path) -> None:
    require_chromium()
    import signal

    import httpx2

    command = [sys.executable, "-m", "agentflow_trio.cli", "serve", "--port", "0", "--dashboard"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
        served = _printed(lines, proc, "agentcli serve listening on ")
        url = _dashboard_url(lines, proc)
        with Browser() as browser, httpx2.Client(base_url=served, timeout=10) as client:
            browser.open(url)
            browser.wait_until("window.lastFrame !== undefined")
            assert browser.evaluate(COUNTER) == 0
            assert browser.evaluate("document.getElementById('stage').textContent") == "serving"
            for _ in range(5):
                reply = client.post("/v1/events", json={"type": "noop", "data": {}})
                assert reply.status_code == 200, reply.text
            first = browser.wait_until(f"{COUNTER} >= 5 && {COUNTER}")
            for _ in range(3):
                client.post("/v1/events", json={"type": "noop", "data": {}})
            later = browser.wait_until(f"{COUNTER} > {first} && {COUNTER}")
            browser.wait_until(  # the per-second chart catches up once the seconds close
                "document.getElementById('chart-throughput').data[0].y"
                ".reduce((a, b) => a + b, 0) === 8"
            )
            browser.screenshot(tmp_path / "serve-dashboard.png")
            page_errors, requests = list(browser.errors), list(browser.requests)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    assert page_errors == []
    assert requests and all(u.startswith(url) for u in requests), requests
    assert (first, later) == (5, 8)
