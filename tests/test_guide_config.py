"""The AgentFlow guide's ``agentflow.toml`` blocks: they load verbatim, and each of their
keys does what it says (aliases of ours, or behaviours of their own).

The two blocks of the guide's Performance Tuning page are kept as they are in
``tests/data/guide_performance_*.toml``. Rules of this module: servers bind 127.0.0.1 on
port 0 (the project's mock LLM); timing logic (retry backoff, the report interval) runs
under ``MockClock(autojump_threshold=0)`` with in-process fakes; tests with real sockets
use the real clock under an absolute ``trio.fail_after`` and assert counts, never times.
"""

from __future__ import annotations

import logging
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from click.testing import CliRunner

import agentflow_trio as af
from agentflow_trio.cli import main as agentcli
from agentflow_trio.config import Config, ConfigError, LLMConfig, load_config
from agentflow_trio.errors import ServerError
from agentflow_trio.llm import ChatRequest, EmbeddingRequest, open_provider, open_stack, user
from agentflow_trio.llm.fake import FakeProvider
from agentflow_trio.mockllm import MockLLM, open_mock_llm
from agentflow_trio.observability import PerformanceMetrics, PerformanceReporter, report_performance

DATA = Path(__file__).resolve().parent / "data"
POOLING = DATA / "guide_performance_pooling.toml"
APP = DATA / "guide_performance_app.toml"
TIMEOUT = 20


def mock_table(mock: MockLLM, **keys: Any) -> dict[str, Any]:
    """An ``[llm]`` table (TOML data) for ``mock``'s OpenAI wire, retries off."""
    return {
        "provider": "openai",
        "base_url": mock.url + "/v1",
        "api_key": "sk-test",
        "retry": {"enabled": False},
        **keys,
    }


# --------------------------------------------------------------------------- loading


def test_the_connection_pooling_block_loads_verbatim() -> None:
    config = load_config(POOLING, env={})
    azure, openai = (config.llm.deployment_configs()[n] for n in ("azure", "openai"))
    assert azure.provider == "azure" and openai.provider == "openai"
    assert (azure.max_connections, azure.min_connections) == (50, 5)
    assert (azure.connection_timeout, azure.idle_timeout) == (10.0, 300.0)
    assert azure.max_connection_lifetime == 3600.0
    assert (openai.max_connections, openai.request_timeout) == (30, 30.0)
    assert (openai.retry.max_attempts, openai.retry.base_delay) == (3, 1.0)
    assert azure.retry == config.llm.retry  # the guide's keys of [llm.openai] stay there


def test_the_application_block_loads_verbatim() -> None:
    config = load_config(APP, env={})
    runner = config.runner
    assert (runner.max_concurrent_events, runner.event_buffer_size) == (100, 1000)
    assert (runner.worker_pool_size, runner.event_timeout) == (50, 30.0)
    assert config.memory.enable_state_compression is True
    assert (config.memory.state_cache_size, config.memory.state_cache_ttl) == (10000, 3600.0)
    perf = config.performance
    assert (perf.enable_batching, perf.batch_size, perf.batch_timeout) == (True, 10, 0.1)
    assert (perf.enable_connection_pooling, perf.pool_size) == (True, 50)
    assert (config.llm.max_connections, config.llm.connection_pooling) == (50, True)
    monitoring = config.monitoring
    assert (monitoring.enable_metrics, monitoring.metrics_interval) == (True, 10.0)
    assert (monitoring.enable_profiling, monitoring.profile_port) == (True, 6060)


@pytest.mark.parametrize("path", [POOLING, APP], ids=["pooling", "application"])
def test_config_validate_and_show_take_the_guide_blocks(path: Path) -> None:
    cli = CliRunner()
    validated = cli.invoke(agentcli, ["config", "validate", str(path)])
    assert validated.exit_code == 0, validated.output
    shown = cli.invoke(agentcli, ["config", "show", str(path)])
    assert shown.exit_code == 0, shown.output
    guide_names = ("retry_max_attempts", "retry_initial_interval", "enable_request_batching")
    assert not any(name in shown.output for name in guide_names)
    config = Config.from_mapping(tomllib.loads(shown.output.replace("***", "")))
    assert config == load_config(path, env={})  # what show prints is the same config


def test_show_prints_our_names_for_the_guides() -> None:
    shown = CliRunner().invoke(agentcli, ["config", "show", str(POOLING)]).output
    retry = shown.split("[llm.deployments.openai.retry]")[1].split("[")[0]
    assert "max_attempts = 3" in retry and 'base_delay = "1s"' in retry
    app = CliRunner().invoke(agentcli, ["config", "show", str(APP)]).output
    assert "enable_batching = true" in app and "max_connections = 50" in app


# --------------------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    ("data", "key", "names"),
    [
        (
            {"llm": {"retry_max_attempts": 3, "retry": {"max_attempts": 4}}},
            "llm.retry_max_attempts",
            ("retry_max_attempts", "retry.max_attempts"),
        ),
        (
            {"llm": {"openai": {"retry_initial_interval": "1s", "retry": {"base_delay": "2s"}}}},
            "llm.openai.retry_initial_interval",
            ("retry_initial_interval", "retry.base_delay"),
        ),
        (
            {
                "llm": {
                    "deployments": {"eu": {"retry_max_attempts": 2, "retry": {"max_attempts": 2}}}
                }
            },
            "llm.deployments.eu.retry_max_attempts",
            ("retry_max_attempts", "retry.max_attempts"),
        ),
        (
            {"performance": {"enable_request_batching": True, "enable_batching": False}},
            "performance.enable_request_batching",
            ("enable_request_batching", "enable_batching"),
        ),
    ],
    ids=["llm", "provider-table", "deployment", "performance"],
)
def test_an_alias_and_its_own_name_together_are_refused(
    data: dict[str, Any], key: str, names: tuple[str, str]
) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(data, source="af.toml")
    assert info.value.key == key
    assert str(info.value).startswith(f"af.toml: {key}: ")
    assert all(repr(name) in str(info.value) for name in names)


def test_a_guide_name_in_a_deployment_overrides_what_it_inherits() -> None:
    llm = Config.from_mapping(
        {
            "llm": {
                "retry_max_attempts": 5,
                "retry": {"max_delay": "9s"},
                "openai": {"retry_max_attempts": 2},
                "azure": {"base_url": "https://a.example", "api_key": "k"},
            }
        }
    ).llm
    openai, azure = (llm.deployment_configs()[n] for n in ("openai", "azure"))
    assert (openai.retry.max_attempts, openai.retry.max_delay) == (2, 9.0)
    assert (azure.retry.max_attempts, azure.retry.max_delay) == (5, 9.0)


def test_guide_names_merge_with_our_keys_of_the_same_table() -> None:
    retry = Config.from_mapping(
        {"llm": {"retry_initial_interval": "250ms", "retry": {"max_attempts": 7}}}
    ).llm.retry
    assert (retry.base_delay, retry.max_attempts) == (0.25, 7)


def test_a_misspelt_guide_name_is_hinted() -> None:
    with pytest.raises(ConfigError, match="did you mean 'retry_max_attempts'"):
        Config.from_mapping({"llm": {"retry_max_attempt": 3}})
    with pytest.raises(ConfigError, match="did you mean 'enable_request_batching'"):
        Config.from_mapping({"performance": {"enable_request_batchin": True}})


def test_a_bad_value_under_a_guide_name_names_our_key() -> None:
    with pytest.raises(ConfigError, match=r"llm\.retry\.max_attempts: expected an integer"):
        Config.from_mapping({"llm": {"retry_max_attempts": "three"}})


def test_pool_size_is_the_default_of_every_deployment() -> None:
    llm = Config.from_mapping(
        {
            "performance": {"pool_size": 7, "enable_connection_pooling": False},
            "llm": {"openai": {}, "azure": {"base_url": "https://a.example", "max_connections": 3}},
        }
    ).llm
    deployments = llm.deployment_configs()
    assert deployments["openai"].max_connections == 7  # inherited through [llm]
    assert deployments["azure"].max_connections == 3  # its own wins
    assert not any(d.connection_pooling for d in deployments.values())
    given = Config.from_mapping({"performance": {"pool_size": 7}, "llm": {"max_connections": 9}})
    assert given.llm.max_connections == 9  # [llm]'s own key wins over the default


def test_a_bad_pool_size_is_reported_under_its_own_name() -> None:
    with pytest.raises(ConfigError, match=r"performance\.pool_size: expected an integer"):
        Config.from_mapping({"llm": {"model": "m"}, "performance": {"pool_size": 0}})


# --------------------------------------------------------------------------- behaviours


class _Ceiling(random.Random):
    """Full jitter at its ceiling: each backoff is exactly ``base_delay * 2**n``."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_retry_keys_of_the_guide_set_attempts_and_first_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    openai = load_config(POOLING, env={}).llm.deployment_configs()["openai"]
    attempts: list[float] = []

    def down(request: ChatRequest) -> Exception:
        attempts.append(trio.current_time())
        return ServerError("down", status=503)

    start = trio.current_time()
    async with open_stack(FakeProvider(down), openai, rng=_Ceiling()) as stack:
        with pytest.raises(ServerError):
            await stack.complete(ChatRequest((user("x"),)))
    # retry_max_attempts = 3; retry_initial_interval = "1s": sleeps of 1s, then 2s
    assert [t - start for t in attempts] == [0.0, 1.0, 3.0]


async def _complete_at_once(provider: Any, n: int) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(provider.complete, ChatRequest((user("x"),)))


@pytest.mark.parametrize(("pool_size", "opened"), [(2, 2), (None, 6)])
async def test_pool_size_bounds_the_connections_of_a_deployment(
    pool_size: int | None, opened: int
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(latency=0.3) as mock:
            performance = {} if pool_size is None else {"pool_size": pool_size}
            config = Config.from_mapping({"performance": performance, "llm": mock_table(mock)})
            async with open_provider(config) as provider:
                await _complete_at_once(provider, 6)
            assert mock.stats().connections == opened  # 6 requests in flight at once


@pytest.mark.parametrize("transport", ["lean", "httpx2"])
@pytest.mark.parametrize(
    ("pooling", "warmed", "connections", "open_after"), [(False, 0, 4, 0), (True, 2, 2, 2)]
)
async def test_connection_pooling_off_is_a_fresh_connection_per_request(
    transport: str, pooling: bool, warmed: int, connections: int, open_after: int
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            config = Config.from_mapping(
                {
                    "performance": {"enable_connection_pooling": pooling},
                    "llm": mock_table(mock, transport=transport, min_connections=2),
                }
            )
            async with open_provider(config) as provider:
                await trio.testing.wait_all_tasks_blocked()  # the mock accepts what was opened
                assert mock.stats().connections == warmed  # none warmed up without pooling
                for _ in range(3):
                    await provider.complete(ChatRequest((user("x"),)))
                async with provider.stream(ChatRequest((user("x"),))) as chunks:
                    assert [c async for c in chunks]
                assert mock.stats().connections == connections  # 4 requests
                while mock.stats().open_connections != open_after:  # noqa: ASYNC110
                    await trio.sleep(0.01)  # a socket closing: nothing to wait on


@pytest.mark.parametrize(("batching", "posts"), [(True, 1), (False, 10)])
async def test_enable_request_batching_batches_embeddings(batching: bool, posts: int) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            performance = {"enable_request_batching": batching, "batch_size": 10}
            config = Config.from_mapping({"performance": performance, "llm": mock_table(mock)})
            async with open_provider(config) as provider, trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(provider.embed, EmbeddingRequest((f"text {i}",)))
            assert mock.stats().embeddings == posts


@af.agent
async def one_second(ctx: af.Context, event: af.Event) -> str:
    await trio.sleep(1)
    return "ok"


async def test_metrics_interval_is_how_often_performance_is_reported(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    monitoring = load_config(APP, env={}).monitoring  # metrics_interval = "10s"
    reporter = PerformanceReporter()
    reports: list[tuple[float, PerformanceMetrics]] = []
    reporter.listeners.append(lambda m: reports.append((trio.current_time(), m)))
    caplog.set_level(logging.INFO, logger="agentflow_trio.performance")
    async with af.Runner(af.Config(), agents={"slow": one_second}) as runner:
        reporter.attach(runner)
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            await nursery.start(report_performance, monitoring, reporter)
            for _ in range(3):
                await runner.call(af.Event("slow"))
            await trio.sleep(10)  # the first report, at 10s
            await runner.call(af.Event("slow"))
            await trio.sleep(10)  # the second, at 20s
            nursery.cancel_scope.cancel()
    assert [at - start for at, _ in reports] == [10.0, 20.0]
    first, second = (m for _, m in reports)
    assert (first.requests, second.requests) == (3, 1)
    assert (first.duration_s, first.requests_per_s) == (10.0, 0.3)
    assert first.p50_ms is not None and abs(first.p50_ms - 1000.0) <= 10.0  # HDR, 0.1 %
    logged = [r for r in caplog.records if r.name == "agentflow_trio.performance"]
    assert [r.performance["requests"] for r in logged] == [3, 1]  # type: ignore[attr-defined]
    assert "3 events" in logged[0].getMessage()


async def test_metrics_interval_zero_reports_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reporter = PerformanceReporter()
    reporter.listeners.append(lambda m: pytest.fail("reported"))
    async with trio.open_nursery() as nursery:
        await nursery.start(report_performance, Config().monitoring, reporter)
        await trio.sleep(3600)
    assert reporter.latest is None


def test_llm_config_in_code_keeps_pooling_on_by_default() -> None:
    assert LLMConfig().connection_pooling is True
    assert Config().performance.pool_size is None
