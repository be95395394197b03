"""``agentcli`` as a user runs it: each command a real subprocess (``python -m
agentflow_trio.cli``), short durations, exit codes and output checked, ``--json`` parsed.

Every subprocess wait is bounded (``TIMEOUT``); the built-in mock LLM each command starts
binds 127.0.0.1 port 0 inside that subprocess.
"""

from __future__ import annotations

import errno
import json
import os
import pstats
import selectors
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import click
import httpx2
import pytest
from _cli import ROOT, TIMEOUT, agentcli, cli_env, one_json_line, popen

import agentflow_trio as af

SCRIPT = str(ROOT / "examples" / "loadtest_script.py")
_env = cli_env  # the old name, still imported by tests/test_dashboard_browser.py


def assert_clean_failure(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


# -- benchmark --------------------------------------------------------------------------


def test_benchmark_json_matches_the_mock_count() -> None:
    data = one_json_line(agentcli("benchmark", "--duration", "1s", "-c", "4", "--json"))
    assert data["command"] == "benchmark" and data["agent"] == "chat"
    assert data["requests"] > 0
    assert data["requests"] == data["mock_requests"]  # the mock's own /stats count
    assert data["outcomes"] == {"succeeded": data["requests"]}
    assert data["error_rate"] == 0
    assert data["concurrent_users"] == 4
    assert data["p50_ms"] <= data["p99_ms"] <= data["max_ms"]
    assert data["requests_per_s"] > 0 and data["peak_rss_bytes"] > 0


def test_benchmark_stops_at_exactly_n_requests() -> None:
    data = one_json_line(
        agentcli("benchmark", "--duration", "30s", "--requests", "50", "-c", "7", "--json")
    )
    assert data["requests"] == 50 == data["mock_requests"] == data["issued"]


def test_benchmark_noop_agent_makes_no_model_calls() -> None:
    data = one_json_line(agentcli("benchmark", "--agent", "noop", "--requests", "20", "--json"))
    assert data["requests"] == 20 and data["mock_requests"] == 0


def test_benchmark_suite_runs_the_bench_suite_narrowed_by_the_options(tmp_path: Path) -> None:
    proc = agentcli(
        "benchmark", "--suite", "--duration", "0.2s", "-c", "1", "--latency-ms", "0", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = [row for row in lines if row["scenario"] != "target"]
    assert {row["scenario"] for row in rows} == {
        "bare_httpx2",
        "single_agent",
        "multi_agent",
        "streaming",
    }
    assert all(row["concurrency"] == 1 and row["failures"] == 0 for row in rows)
    assert any(row["scenario"] == "target" and "met" in row for row in lines)
    table = (tmp_path / "bench-results.md").read_text()
    assert "| single_agent | 0 | 1 |" in table


def test_benchmark_suite_refuses_the_single_run_options() -> None:
    proc = agentcli("benchmark", "--suite", "--json", "--agent", "noop")
    assert_clean_failure(proc, "--suite takes only", "--json", "--agent")


def test_benchmark_table() -> None:
    proc = agentcli("benchmark", "--duration", "1s", "-c", "2", "--agent", "stream")
    assert proc.returncode == 0, proc.stderr
    for heading in ("requests", "RPS", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"):
        assert heading in proc.stdout
    assert "peak RSS" in proc.stdout and "CPU/request" in proc.stdout
    assert "mock LLM requests" in proc.stdout
    assert "\x1b[" not in proc.stdout  # not a terminal: no colour codes, no progress bar


def test_benchmark_cpu_profile_loads_with_pstats(tmp_path: Path) -> None:
    out = tmp_path / "bench.pstats"
    proc = agentcli(
        "benchmark", "--requests", "30", "--profile", "cpu", "--output", str(out), "--json"
    )
    one_json_line(proc)
    stats = pstats.Stats(str(out))
    assert stats.total_calls > 0  # type: ignore[attr-defined]
    assert any("runner.py" in key[0] for key in stats.stats)  # type: ignore[attr-defined]


def test_benchmark_memory_profile(tmp_path: Path) -> None:
    out = tmp_path / "heap.txt"
    one_json_line(
        agentcli(
            "benchmark", "--requests", "30", "--profile", "memory", "--output", str(out), "--json"
        )
    )
    assert out.read_text().strip()


def test_benchmark_with_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "agentflow.toml"
    config.write_text('[runner]\nworker_pool_size = 3\n[llm]\nmodel = "my-model"\n')
    data = one_json_line(
        agentcli("benchmark", "--config", str(config), "--requests", "10", "--json")
    )
    assert data["requests"] == 10 == data["mock_requests"]
    assert "built-in mock LLM" in data["target"]


# -- loadtest ---------------------------------------------------------------------------


def test_loadtest_closed_model() -> None:
    data = one_json_line(
        agentcli("loadtest", "--script", SCRIPT, "--vus", "5", "--duration", "1s", "--json")
    )
    assert data["command"] == "loadtest" and data["model"] == "closed"
    assert data["requests"] > 0 and len(data["stages"]) == 1
    assert data["stages"][0]["requests"] == data["requests"]
    assert data["mock_requests"] == data["requests"]  # one model call per request
    assert data["peak_target"] == 5


def test_loadtest_stages_report_each_stage() -> None:
    proc = agentcli("loadtest", "--script", SCRIPT, "--stages", "1s:2,1s:4", "--json")
    data = one_json_line(proc)
    assert [s["stage"] for s in data["stages"]] == ["1s 0->2 users", "1s 2->4 users"]
    assert all(s["requests"] > 0 for s in data["stages"])
    assert sum(s["requests"] for s in data["stages"]) == data["requests"]


def test_loadtest_stages_table() -> None:
    proc = agentcli("loadtest", "--script", SCRIPT, "--stages", "1s:2,1s:4")
    assert proc.returncode == 0, proc.stderr
    for label in ("1s 0->2 users", "1s 2->4 users", "total"):
        assert label in proc.stdout


def test_loadtest_open_model() -> None:
    data = one_json_line(
        agentcli("loadtest", "--script", SCRIPT, "--rate", "50/s", "--duration", "1s", "--json")
    )
    assert data["model"] == "open"
    assert data["issued"] == 50  # arrivals on schedule, whatever the latency
    assert data["requests"] + data["unfinished"] == 50
    assert data["stages"][0]["stage"] == "1s 50/s"


# -- serve ------------------------------------------------------------------------------


def test_serve_subprocess_until_sigterm(tmp_path: Path) -> None:
    (tmp_path / "myagents.py").write_text(
        "async def shout(ctx, event):\n"
        "    return event.data['text'].upper()\n"
        "def make():\n"
        "    return {'shout': shout}\n"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentflow_trio.cli",
            "serve",
            "--port",
            "0",
            "--app",
            "myagents:make",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(TIMEOUT), "agentcli serve printed nothing"
        line = proc.stdout.readline()
        prefix = "agentcli serve listening on "
        assert line.startswith(prefix), line
        url = line[len(prefix) :].strip()
        with httpx2.Client(base_url=url, timeout=TIMEOUT) as client:
            reply = client.post("/v1/events", json={"type": "shout", "data": {"text": "hi"}})
            assert reply.json()["output"] == "HI"
            assert client.get("/healthz").json()["status"] == "ok"

        script = tmp_path / "shouting.py"
        script.write_text(
            "async def request(client):\n"
            "    result = await client.call('shout', {'text': 'load'})\n"
            "    assert result.output == 'LOAD'\n"
        )
        load = one_json_line(
            agentcli(
                "loadtest",
                "--script",
                str(script),
                "--target",
                url,
                "--vus",
                "3",
                "--duration",
                "1s",
                "--json",
            )
        )
        assert load["requests"] > 0 and load["outcomes"] == {"succeeded": load["requests"]}
        assert load["mock_requests"] is None and load["target"] == f"HTTP target {url}"
        with httpx2.Client(base_url=url, timeout=TIMEOUT) as client:
            served = client.get("/healthz").json()["completed"]
        assert served == load["requests"] + 1  # every request reached the server
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


# -- config -----------------------------------------------------------------------------

GOOD = """
[runner]
worker_pool_size = 8
event_timeout = "5s"
[llm]
api_key = "sk-very-secret"
[llm.headers]
X-Api-Token = "also-secret"
"""


def test_config_validate_and_show_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text(GOOD)
    ok = agentcli("config", "validate", str(path))
    assert ok.returncode == 0 and ok.stdout.strip() == f"OK: {path}"

    shown = agentcli("config", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "sk-very-secret" not in shown.stdout and "also-secret" not in shown.stdout
    effective = tomllib.loads(shown.stdout)
    assert effective["runner"]["worker_pool_size"] == 8
    assert effective["runner"]["event_timeout"] == "5s"
    assert effective["llm"]["api_key"] == "***"
    assert effective["llm"]["headers"] == {"X-Api-Token": "***"}


def test_config_show_defaults() -> None:
    shown = agentcli("config", "show")
    assert shown.returncode == 0
    assert tomllib.loads(shown.stdout)["runner"]["max_concurrent_events"] == 1000


def test_config_validate_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[runner]\nworker_pool_size = "many"\n')
    proc = agentcli("config", "validate", str(path))
    assert proc.returncode == 1
    assert str(path) in proc.stderr and "runner.worker_pool_size" in proc.stderr
    assert "Traceback" not in proc.stderr

    typo = tmp_path / "typo.toml"
    typo.write_text("[runner]\nworker_pool = 3\n")
    proc = agentcli("config", "validate", str(typo))
    assert proc.returncode == 1 and "did you mean 'worker_pool_size'" in proc.stderr


# -- bad input: exit 2, one clear message, no traceback ---------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["benchmark", "--duration", "5x"], ["'5x' is not a duration"]),
        (["benchmark", "--duration", "0s"], ["must be longer than 0s"]),
        (["benchmark", "-c", "0"], ["--concurrent-users"]),
        (["benchmark", "--agent", "nobody"], ["--agent"]),
        (["benchmark", "--profile", "cpu"], ["--profile", "needs --output"]),
        (["loadtest", "--stages", "5m"], ["stage '5m' must be DURATION:TARGET"]),
        (["loadtest", "--stages", "5m:10", "--duration", "1s"], ["--stages replaces"]),
        (["loadtest", "--vus", "0"], ["--vus"]),
        (["loadtest", "--rate", "fast"], ["rate 'fast' must be a number > 0"]),
        (["loadtest", "--rate", "5/s", "--vus", "3"], ["pick one"]),
        (["loadtest", "--open"], ["--open needs --rate or --stages"]),
        (["loadtest", "--target", "ftp://x"], ["not an http:// or https:// URL"]),
        (["loadtest", "--script", "no/such/script.py"], ["no/such/script.py: no such file"]),
        (["serve", "--max-body", "huge"], ["--max-body"]),
        (["serve", "--app", "nomodule"], ["--app must be MODULE:ATTR"]),
        (["serve", "--app", "no_such_module_x:agents"], ["cannot import 'no_such_module_x'"]),
        (["serve", "--host", "0.0.0.0"], ["--host", "non-loopback", "--allow-remote"]),
        (["serve", "--backlog", "0"], ["--backlog"]),
        (["benchmark", "--threshold", "p99<soon"], ["--threshold", "'soon' is not a duration"]),
        (["loadtest", "--threshold", "errors<0.1"], ["errors takes a percentage, like 0.1%"]),
        (["benchmark", "--threshold", "ttft_p42<1s"], ["unknown metric 'ttft_p42'"]),
        (["benchmark", "--suite", "--stream"], ["--suite takes only", "--stream"]),
    ],
)
def test_bad_flags(args: list[str], needles: list[str]) -> None:
    assert_clean_failure(agentcli(*args), *needles)


def test_broken_scripts(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("async def request(client)\n    pass\n")
    assert_clean_failure(
        agentcli("loadtest", "--script", str(broken), "--duration", "1s"),
        f"script {broken}:1: syntax error",
    )
    failing_setup = tmp_path / "setup.py"
    failing_setup.write_text("def setup():\n    1 / 0\nasync def request(client):\n    pass\n")
    assert_clean_failure(
        agentcli("loadtest", "--script", str(failing_setup), "--duration", "1s"),
        "setup() raised ZeroDivisionError",
    )
    empty = tmp_path / "empty.py"
    empty.write_text("think_time = 1\n")
    assert_clean_failure(
        agentcli("loadtest", "--script", str(empty), "--duration", "1s"),
        "defines no `async def request(client)`",
    )


def test_broken_config_for_every_command(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[llm]\nmax_connections = 0\n")
    for command in (["benchmark"], ["loadtest"], ["serve"], ["config", "show"]):
        proc = (
            agentcli(*command, "--config", str(path))
            if command[0] != "config"
            else (agentcli(*command, str(path)))
        )
        assert_clean_failure(proc, str(path), "llm.max_connections")
    missing = agentcli("benchmark", "--config", str(tmp_path / "absent.toml"))
    assert_clean_failure(missing, "config file not found")


def test_remote_provider_without_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "remote.toml"
    path.write_text('[llm]\nprovider = "openai"\nbase_url = "https://api.openai.com/v1"\n')
    env_key = os.environ.pop("OPENAI_API_KEY", None)
    try:
        for command in ("benchmark", "serve"):
            proc = agentcli(command, "--config", str(path))
            assert_clean_failure(proc, f"{path}: llm.api_key: is empty")
    finally:
        if env_key is not None:
            os.environ["OPENAI_API_KEY"] = env_key


def test_help_is_fast_to_import() -> None:
    code = (
        "import sys, agentflow_trio.cli;"
        "heavy = {'httpx2', 'rich', 'hypercorn', 'prometheus_client', 'hdrh'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=TIMEOUT
    )
    assert out.stdout.strip() == "[]", out.stderr
    helped = agentcli("--help")
    assert helped.returncode == 0
    for command in ("benchmark", "loadtest", "serve", "mock-llm", "config"):
        assert command in helped.stdout


# -- issue 17: thresholds, Ctrl-C, busy ports, remote binds, the global guard -----------

FAILING_SCRIPT = """
async def request(client):
    raise RuntimeError("the scenario always fails")
"""


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def test_a_crossed_threshold_exits_99_so_a_load_test_at_100_percent_errors_fails_ci(
    tmp_path: Path,
) -> None:
    script = tmp_path / "failing.py"
    script.write_text(FAILING_SCRIPT)
    base = ["loadtest", "--script", str(script), "--vus", "2", "--duration", "0.5s"]
    table = agentcli(*base, "--threshold", "errors<1%", "--threshold", "p99<10s")
    assert table.returncode == 99, table.stderr
    assert "threshold errors<1%: FAIL (errors = 100.00%)" in table.stdout
    assert "threshold p99<10s: pass" in table.stdout
    assert table.stderr.strip().splitlines()[-1] == (
        "threshold crossed: errors<1% (errors = 100.00%)"
    )
    _no_traceback(table)

    as_json = agentcli(*base, "--threshold", "errors<1%", "--json")
    assert as_json.returncode == 99
    (line,) = as_json.stdout.splitlines()
    data = json.loads(line)
    assert data["error_rate"] == 1.0 and data["interrupted"] is False
    assert data["thresholds"] == [
        {"threshold": "errors<1%", "actual": 100.0, "unit": "%", "passed": False}
    ]

    without = agentcli(*base, "--json")  # no threshold: the run itself succeeded
    assert without.returncode == 0


def test_script_thresholds_and_passing_thresholds(tmp_path: Path) -> None:
    script = tmp_path / "gated.py"
    script.write_text(
        "from agentflow_trio.loadgen import example_event\n"
        "thresholds = ['errors<=0%', 'p99<30s']\n"
        "async def request(client):\n"
        "    await client.call(example_event('noop'))\n"
    )
    proc = agentcli(
        "loadtest", "--script", str(script), "--vus", "2", "--duration", "0.5s",
        "--threshold", "rps>0", "--json",
    )  # fmt: skip
    data = one_json_line(proc)
    assert [t["threshold"] for t in data["thresholds"]] == ["errors<=0%", "p99<30s", "rps>0"]
    assert all(t["passed"] for t in data["thresholds"])

    bench = agentcli(
        "benchmark", "--agent", "noop", "--requests", "20", "--threshold", "max<0.000001ms"
    )
    assert bench.returncode == 99 and "threshold max<0.000001ms: FAIL" in bench.stdout


# -- --stream: time to first token and inter-token latency -------------------------------


def test_benchmark_stream_times_tokens_and_gates_on_them() -> None:
    from agentflow_trio.mockllm import MockLLMConfig

    chunks = MockLLMConfig().stream_chunks  # the built-in mock's default
    proc = agentcli(
        "benchmark", "--agent", "stream", "--stream", "--requests", "30", "-c", "3", "--json",
        "--threshold", "ttft_p99<60s", "--threshold", "itl_p50<0ms",
    )  # fmt: skip
    assert proc.returncode == 99, proc.stderr  # no gap is shorter than 0 ms
    (line,) = proc.stdout.splitlines()
    data = json.loads(line)
    assert data["requests"] == 30 == data["mock_requests"] and data["stream"] is True
    streaming = data["streaming"]
    assert (streaming["events"], streaming["without_tokens"]) == (30, 0)
    assert streaming["ttft"]["count"] == 30
    assert streaming["itl"]["count"] == 30 * (chunks - 1)
    assert [(t["threshold"], t["passed"]) for t in data["thresholds"]] == [
        ("ttft_p99<60s", True),
        ("itl_p50<0ms", False),
    ]
    assert data["thresholds"][1]["actual"] == streaming["itl"]["p50_ms"]
    assert "threshold crossed: itl_p50<0ms" in proc.stderr


def test_benchmark_stream_table_and_loadtest_stream() -> None:
    table = agentcli("benchmark", "--agent", "stream", "--stream", "--requests", "10")
    assert table.returncode == 0, table.stderr
    assert "streamed events: 10 (0 without tokens)" in table.stdout
    assert "time to first token" in table.stdout and "inter-token" in table.stdout
    plain = agentcli("benchmark", "--agent", "stream", "--requests", "10")
    assert "time to first token" not in plain.stdout

    data = one_json_line(
        agentcli("loadtest", "--stream", "--vus", "2", "--duration", "0.5s", "--json")
    )  # the default scenario streams the stream agent
    assert data["stream"] is True and data["requests"] > 0
    assert data["streaming"]["events"] == data["requests"] == data["mock_requests"]
    assert data["streaming"]["without_tokens"] == 0


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _interrupt(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C ``proc`` and collect its output: it must exit 130 with no traceback."""
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    return stdout, stderr


def _reap(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if a failed test left it running."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("as_json", [True, False])
def test_ctrl_c_ends_a_load_test_with_its_partial_results_and_exit_130(
    tmp_path: Path, as_json: bool
) -> None:
    started = tmp_path / "started"
    script = tmp_path / "marking.py"
    script.write_text(
        "from pathlib import Path\n"
        "from agentflow_trio.loadgen import example_event\n"
        f"STARTED = Path({str(started)!r})\n"
        "async def request(client):\n"
        "    STARTED.touch()\n"
        "    await client.call(example_event('noop'))\n"
    )
    report = tmp_path / "partial.html"
    args = ["loadtest", "--script", str(script), "--vus", "2", "--duration", "60s"]
    proc = popen(*args, "--report", str(report), *(["--json"] if as_json else []))
    try:
        _wait_for(started)
        time.sleep(0.3)
        stdout, stderr = _interrupt(proc)
    finally:
        _reap(proc)
    assert report.is_file() and "report written to" in stderr
    if as_json:
        data = json.loads(stdout)
        assert data["interrupted"] is True and data["requests"] > 0
        assert data["duration_s"] < 30
    else:
        assert "interrupted (Ctrl-C) after" in stdout and "total" in stdout


def test_ctrl_c_ends_a_benchmark_too() -> None:
    proc = popen("benchmark", "--duration", "60s", "-c", "2", "--dashboard", "--json")
    try:
        assert proc.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stderr, selectors.EVENT_READ)
            assert selector.select(TIMEOUT), "no dashboard line"
        assert proc.stderr.readline().startswith("dashboard: http://127.0.0.1:")
        time.sleep(0.5)
        stdout, _ = _interrupt(proc)
    finally:
        _reap(proc)
    data = json.loads(stdout)
    assert data["interrupted"] is True and data["command"] == "benchmark"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_busy_port_is_one_line_naming_it(tmp_path: Path, busy_port: int) -> None:
    where = f"127.0.0.1:{busy_port}"
    debug = tmp_path / "debug.toml"
    debug.write_text(f"[monitoring]\nenable_profiling = true\nprofile_port = {busy_port}\n")
    cases = [
        (["serve", "--port", str(busy_port)], "agentcli serve"),
        (["mock-llm", "--port", str(busy_port)], "agentcli mock-llm"),
        (["serve", "--port", "0", "--config", str(debug)], "the debug server"),
        (["benchmark", "--requests", "5", "--config", str(debug)], "the debug server"),
    ]
    for args, what in cases:
        proc = agentcli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        _no_traceback(proc)
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"Error: {what}") and f"cannot listen on {where}" in line, line
        assert "already in use" in line


def test_ctrl_c_on_a_worker_that_cannot_reach_redis_is_one_line() -> None:
    proc = popen("worker", "--redis", "redis://127.0.0.1:1/0")
    try:
        assert proc.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stderr, selectors.EVENT_READ)
            assert selector.select(TIMEOUT), "the worker said nothing"
        assert "unreachable" in proc.stderr.readline()
        _, stderr = _interrupt(proc)
    finally:
        _reap(proc)
    assert stderr.strip().splitlines()[-1] == "agentcli: interrupted (Ctrl-C)"


def test_an_unexpected_error_is_one_line_and_agentcli_debug_shows_the_traceback(
    tmp_path: Path,
) -> None:
    script = tmp_path / "thinking.py"
    script.write_text(
        "from agentflow_trio.loadgen import example_event\n"
        "def think_time():\n"
        "    raise LookupError('the think time broke')\n"
        "async def request(client):\n"
        "    await client.call(example_event('noop'))\n"
    )
    args = ["loadtest", "--script", str(script), "--vus", "1", "--duration", "5s"]
    proc = agentcli(*args)
    assert proc.returncode == 1
    _no_traceback(proc)
    assert proc.stderr.strip() == (
        "Error: unexpected LookupError: the think time broke "
        "(rerun with AGENTCLI_DEBUG=1 for the traceback)"
    )
    env = dict(cli_env(), AGENTCLI_DEBUG="1")
    debug = subprocess.run(
        [sys.executable, "-m", "agentflow_trio.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=TIMEOUT,
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "LookupError: the think time broke" in debug.stderr


def test_the_guard_turns_every_exception_into_one_line_and_an_exit_code() -> None:
    from click.testing import CliRunner

    from agentflow_trio.cli._guard import GuardedGroup

    @click.group(cls=GuardedGroup)
    def cli() -> None:
        pass

    errors: dict[str, BaseException] = {
        "ctrl-c": KeyboardInterrupt(),
        "grouped-ctrl-c": BaseExceptionGroup("nursery", [KeyboardInterrupt()]),
        "busy": ExceptionGroup("nursery", [OSError(errno.EADDRINUSE, "Address already in use")]),
        "config": ExceptionGroup("nursery", [af.ConfigError("must be > 0", key="runner.x")]),
        "bug": RuntimeError("a\nbug"),
    }
    for name, error in errors.items():

        def raising(error: BaseException = error) -> None:
            raise error

        cli.command(name)(raising)
    runner = CliRunner()
    outcomes = {name: runner.invoke(cli, [name]) for name in errors}
    assert {name: r.exit_code for name, r in outcomes.items()} == {
        "ctrl-c": 130,
        "grouped-ctrl-c": 130,
        "busy": 1,
        "config": 2,
        "bug": 1,
    }
    assert outcomes["ctrl-c"].output.strip() == "agentcli: interrupted (Ctrl-C)"
    assert "already in use (another server holds the port)" in outcomes["busy"].output
    assert "runner.x: must be > 0" in outcomes["config"].output
    assert outcomes["bug"].output.strip() == (
        "Error: unexpected RuntimeError: a bug (rerun with AGENTCLI_DEBUG=1 for the traceback)"
    )


def test_serve_passes_allowed_hosts_and_backlog() -> None:
    proc = popen("serve", "--port", "0", "--backlog", "16", "--allowed-host", "agents.example")
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(TIMEOUT), "agentcli serve printed nothing"
        url = proc.stdout.readline().split(" on ", 1)[1].strip()
        event = {"type": "noop", "data": {"query": "hi"}}
        with httpx2.Client(base_url=url, timeout=TIMEOUT) as client:
            named = client.post("/v1/events", json=event, headers={"host": "agents.example"})
            assert named.status_code == 200, named.text
            other = client.post("/v1/events", json=event, headers={"host": "evil.example"})
            assert other.status_code == 421
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0 and "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
