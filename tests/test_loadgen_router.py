"""``agentcli benchmark|loadtest`` against a model router: ``--model GROUP``, the built-in
mock failing one deployment, and the report's per-deployment traffic and fail-overs.

Rules of this module: loopback only, port 0, the real clock (real sockets), an absolute
``trio.fail_after`` around every run; deployment ``a`` (model ``gpt-a``) is healthy and
``b`` (model ``gpt-b``) answers 503 to everything, both in model group ``gpt``. The
mock's own per-model count (``by_model``) is the independent check of the router's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import trio
from rich.console import Console

from agentflow_trio.config import Config, DeploymentConfig, LLMConfig, RouterConfig
from agentflow_trio.errors import ConfigError
from agentflow_trio.llm import open_llm_client
from agentflow_trio.loadgen import (
    EXAMPLE_AGENTS,
    BenchmarkOptions,
    LoadReport,
    LoadTestOptions,
    Plan,
    example_agents,
    example_event,
    run_benchmark,
    run_loadtest,
)
from agentflow_trio.loadgen.console import render_report
from agentflow_trio.loadgen.dashboard import runner_gauges
from agentflow_trio.loadgen.report import render_html
from agentflow_trio.mockllm import Fault, check_llm_target, open_mock_llm, uses_mock

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60
DOWN = {"gpt-b": (Fault("server_error", status=503),)}


def two_deployments(base_url: str = "", **router: Any) -> Config:
    """Deployments ``a`` (gpt-a) and ``b`` (gpt-b) in group ``gpt``; ``base_url`` empty:
    the built-in mock stands in for both."""

    def one(model: str) -> DeploymentConfig:
        return DeploymentConfig(
            provider="openai",
            model=model,
            group="gpt",
            base_url=base_url,
            api_key="sk-test",
            request_timeout=5.0,
        )

    llm = LLMConfig(
        deployments={"a": one("gpt-a"), "b": one("gpt-b")}, router=RouterConfig(**router)
    )
    return attrs.evolve(Config(), llm=llm)


def deployments(report: LoadReport) -> dict[str, dict[str, Any]]:
    assert report.router is not None
    return {d["name"]: d for d in report.router["deployments"]}


def console_text(report: LoadReport) -> str:
    console = Console(record=True, width=200)
    console.print(render_report(report))
    return console.export_text()


# --------------------------------------------------------------------------- benchmark


async def test_benchmark_shows_each_deployments_traffic_and_the_failovers() -> None:
    users, requests = 8, 150
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(faults=DOWN) as mock:
            options = BenchmarkOptions(
                duration=30.0,
                users=users,
                requests=requests,
                config=two_deployments(mock.url + "/v1"),
                model="gpt",
            )
            report = await run_benchmark(options)
            by_model = dict(mock.stats().by_model)
    assert report.total.outcomes == {"succeeded": requests}
    deps = deployments(report)
    a, b = deps["a"], deps["b"]
    assert a["successes"] == a["attempts"] == requests
    assert b["successes"] == 0 and b["failures"]["server_error"] >= 1
    # what reached the mock is what the router sent (an open breaker sends nothing)
    assert by_model == {"gpt-a": a["attempts"], "gpt-b": b["failures"]["server_error"]}
    # the requests in flight when b failed, then nothing: it is cooling down (30 s)
    assert b["failures"]["server_error"] <= users + 3
    router = report.router
    assert router is not None
    assert b["failovers"] == router["failovers"] >= 1
    assert b["cooldowns"] >= 1 and b["cooling"] is True
    assert router["requests"] == requests and router["errors"] == 0
    assert a["share"] + b["share"] == pytest.approx(1.0, abs=1e-3)
    assert report.parameters["model_group"] == "gpt"

    data = json.loads(report.to_json())
    assert data["router"] == json.loads(json.dumps(router))
    assert data["model_group"] == "gpt"

    text = console_text(report)
    assert "deployments (model router)" in text
    assert "server_error" in text and "gpt-b" in text
    assert f"{router['failovers']} fail-overs" in text

    page = render_html(report.to_dict())
    assert '<table id="deployments">' in page
    assert page.index('id="deployments"') < page.index('id="chart-throughput"')
    assert ">server_error " in page


async def test_without_a_router_the_model_goes_to_the_one_deployment() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            llm = LLMConfig(provider="openai", base_url=mock.url + "/v1", api_key="sk-test")
            options = BenchmarkOptions(
                users=2, requests=6, config=attrs.evolve(Config(), llm=llm), model="other-model"
            )
            report = await run_benchmark(options)
            by_model = dict(mock.stats().by_model)
    assert by_model == {"other-model": 6}
    assert report.router is None and "router" not in report.to_dict()
    assert "deployments (model router)" not in console_text(report)
    assert 'id="deployments"' not in render_html(report.to_dict())


async def test_a_model_no_deployment_serves_is_refused_before_the_load() -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(ConfigError) as info:
            await run_benchmark(
                BenchmarkOptions(requests=1, config=two_deployments(), model="gpt-5")
            )
    message = str(info.value)
    assert "'gpt-5'" in message and "gpt (a, b)" in message


# --------------------------------------------------------------------------- loadtest


async def test_loadtest_with_the_built_in_mock_failing_one_deployment() -> None:
    options = LoadTestOptions(
        plan=Plan.constant(1.0, 6),
        config=two_deployments(),  # no base_url: the built-in mock stands in for both
        model="gpt",
        mock_faults=DOWN,
    )
    with trio.fail_after(TIMEOUT):
        report = await run_loadtest(options)
    assert report.total.requests > 0
    assert report.total.outcomes == {"succeeded": report.total.requests}
    a, b = deployments(report)["a"], deployments(report)["b"]
    assert a["successes"] == report.total.requests
    assert report.mock_requests == a["attempts"] + b["failures"]["server_error"]
    assert b["failovers"] >= 1
    assert "router over 2 deployments" in report.target and "built-in mock" in report.target
    assert report.parameters["mock_faults"] == "gpt-b=server_error:status=503"
    assert report.parameters["model_group"] == "gpt"


# --------------------------------------------------------------------------- pieces


def test_example_events_and_agents_name_a_model_group() -> None:
    assert example_event("chat", model="gpt").data["model"] == "gpt"
    assert "model" not in example_event("chat").data
    assert example_agents(None) is EXAMPLE_AGENTS and example_agents("") is EXAMPLE_AGENTS
    bound = example_agents("gpt")
    assert set(bound) == set(EXAMPLE_AGENTS) and bound["chat"] is not EXAMPLE_AGENTS["chat"]


def test_the_mock_stands_in_for_each_deployment_without_a_base_url() -> None:
    assert uses_mock(two_deployments())
    remote = two_deployments("https://llm.example/v1")
    assert not uses_mock(remote)
    check_llm_target(remote)  # keys given
    a, b = remote.llm.deployments["a"], remote.llm.deployments["b"]
    mixed = attrs.evolve(
        remote,
        llm=attrs.evolve(
            remote.llm,
            deployments={"a": attrs.evolve(a, base_url=""), "b": attrs.evolve(b, api_key="")},
        ),
    )
    assert uses_mock(mixed)
    with pytest.raises(ConfigError) as info:
        check_llm_target(mixed, "a.toml")
    assert info.value.key == "llm.deployments.b.api_key"
    assert "llm.deployments.b.base_url" in str(info.value)


async def test_the_dashboard_counts_the_deployments_breakers() -> None:
    fake_runner = SimpleNamespace(
        statistics=lambda: SimpleNamespace(queued=0, in_flight=0, running_agents=0)
    )
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(faults=DOWN) as mock:
            config = two_deployments(mock.url + "/v1", cooldown=0.0)
            async with open_llm_client(config) as llm:
                before = runner_gauges(fake_runner, llm)()
                for _ in range(40):  # b fails each time it is picked (no cooldown), a answers
                    await llm.complete("hi", model="gpt")
                after = runner_gauges(fake_runner, llm)()
    assert before["breaker"] == "closed 2"
    assert after["breaker"] == "closed 1, open 1"  # b's breaker: 5 failures in a row


# --------------------------------------------------------------------------- the CLI


def agentcli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow_trio.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=TIMEOUT,
    )


CONFIG = """
[llm]
api_key = "sk-test"

[llm.deployments.a]
model = "gpt-a"
group = "gpt"

[llm.deployments.b]
model = "gpt-b"
group = "gpt"
"""


def test_cli_benchmark_model_and_mock_fault(tmp_path: Path) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text(CONFIG, encoding="utf-8")
    proc = agentcli(
        "benchmark",
        "--config",
        str(path),
        "--model",
        "gpt",
        "--mock-fault",
        "gpt-b=server_error:status=503",
        "--requests",
        "40",
        "-c",
        "4",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["outcomes"] == {"succeeded": 40}
    assert data["model_group"] == "gpt"
    assert data["mock_faults"] == "gpt-b=server_error:status=503"
    deps = {d["name"]: d for d in data["router"]["deployments"]}
    assert deps["a"]["successes"] == 40 and deps["b"]["failovers"] >= 1

    bad = agentcli("benchmark", "--config", str(path), "--model", "nope", "-n", "1", "--json")
    assert bad.returncode == 2 and "no deployment serves" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_refuses_a_model_where_it_cannot_reach(tmp_path: Path) -> None:
    script = tmp_path / "scenario.py"
    script.write_text(
        "from agentflow_trio.loadgen import EXAMPLE_AGENTS\n"
        "agents = dict(EXAMPLE_AGENTS)\n"
        "async def request(client):\n"
        "    await client.call('noop', {})\n",
        encoding="utf-8",
    )
    own = agentcli("loadtest", "--script", str(script), "--model", "gpt", "--vus", "1")
    assert own.returncode == 2 and "the script serves its own" in own.stderr, own.stderr
    remote = agentcli(
        "loadtest", "--script", str(script), "--target", "http://127.0.0.1:9", "--model", "gpt"
    )
    assert remote.returncode == 2 and "--model does not reach" in remote.stderr, remote.stderr


def test_cli_refuses_a_malformed_fault_and_a_fault_for_a_target() -> None:
    proc = agentcli("benchmark", "--mock-fault", "gpt-b", "-n", "1")
    assert proc.returncode == 2 and "MODEL=KIND" in proc.stderr, proc.stderr
    proc = agentcli("benchmark", "--mock-fault", "gpt-b=melt", "-n", "1")
    assert proc.returncode == 2 and "unknown fault kind" in proc.stderr, proc.stderr
    proc = agentcli(
        "loadtest", "--target", "http://127.0.0.1:9", "--mock-fault", "x=reset", "--vus", "1"
    )
    assert proc.returncode == 2 and "--mock-fault" in proc.stderr, proc.stderr
