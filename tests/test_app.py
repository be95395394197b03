"""`App`: one object opened the same way wherever it runs, every service wired into ``ctx``.

Rules: real servers only (the scripted mock LLM on 127.0.0.1 port 0, the testing kit's MCP
server as stdio subprocesses, redis-server on a free port stopped by PID); the real clock
with an absolute ``trio.fail_after`` around every body; waiting for a state polls it,
nothing asserts a duration.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx2
import pytest
import trio
from _cli import alive
from _redis import RedisServer, redis_server
from prometheus_client.parser import text_string_to_metric_families

import agentflow_trio as af
from agentflow_trio.app import App, RunningApp
from agentflow_trio.config import Config, MCPServerConfig, MemoryConfig, MonitoringConfig
from agentflow_trio.errors import ConfigError
from agentflow_trio.mockllm import MockLLM, MockReply
from agentflow_trio.server.service import open_hosted_app, serve_runner
from agentflow_trio.state import SessionStore
from agentflow_trio.testing import MCPTestServer, mock_llm_config
from agentflow_trio.tools import ToolRegistry, tool

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

TIMEOUT = 30
MCP = MCPTestServer(name="demo")
QUIET = MonitoringConfig(enable_metrics=True, metrics_port=0)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """An App opened with monitoring configures the ``agentflow_trio`` logger (level,
    handler) for the process: put it back for the tests that follow."""
    logger = logging.getLogger("agentflow_trio")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


@tool
async def double(x: int) -> dict[str, int]:
    """Double a number."""
    return {"doubled": 2 * x}


@attrs.define
class Journal:
    """What the lifespan saw, in order."""

    steps: list[str] = attrs.field(factory=list)
    mcp_pids: list[int] = attrs.field(factory=list)


def journaled(journal: Journal) -> Any:
    @asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[Journal]:
        journal.steps.append("lifespan opened")
        yield journal
        # Closed last: the MCP servers opened after the lifespan have exited by now.
        journal.steps.append(f"lifespan closed, mcp alive: {any(map(alive, journal.mcp_pids))}")

    return lifespan


@af.agent
async def everything(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    """Uses every service: ctx.tools (a Python tool and an MCP tool), ctx.mcp, ctx.llm,
    ctx.metrics, the session state and the lifespan's value."""
    local, remote, who = await ctx.tools.call_many(
        [("double", {"x": 21}), ("demo__add", {"a": 2, "b": 3}), ("demo__whoami", {})]
    )
    journal = App.state_of(ctx)
    journal.mcp_pids.append(who.output["pid"])
    reply = await ctx.llm.complete([af.user(str(event.data.get("query", "hi")))])
    seen = ctx.state.get("seen", 0) + 1
    ctx.state.set("seen", seen)
    return {
        "double": local.output,
        "add": remote.output,
        "answer": reply.text,
        "mcp_is_manager": ctx.mcp is RunningApp.of(ctx).services.mcp,
        "metrics": ctx.metrics is not None,
        "seen": seen,
    }


def config_on(mock: MockLLM, **sections: Any) -> Config:
    return Config(**{"llm": mock_llm_config(mock), "monitoring": QUIET, **sections})


async def test_open_wires_every_service_into_ctx_and_closes_in_reverse(mock_llm: MockLLM) -> None:
    journal = Journal()
    app = App(
        {"all": everything},
        tools=[double],
        mcp={"demo": MCP.config()},
        lifespan=journaled(journal),
        config=config_on(mock_llm),
    )
    mock_llm.script(MockReply(text="from the model"), MockReply(text="again"))
    with trio.fail_after(TIMEOUT):
        async with app.open(monitoring=False) as runner:
            assert journal.steps == ["lifespan opened"]
            first = await runner.call(af.Event("all", {"query": "q"}, {"session_id": "s"}))
            second = await runner.call(af.Event("all", {}, {"session_id": "s"}))
            pids = list(journal.mcp_pids)
            assert all(map(alive, pids))
    out = first.unwrap()
    assert out["double"] == {"doubled": 42} and out["add"] == {"result": 5}
    assert out["answer"] == "from the model" and out["mcp_is_manager"] and out["metrics"]
    assert (out["seen"], second.unwrap()["seen"]) == (1, 2)  # the session's state kept
    assert mock_llm.stats().requests == 2
    assert journal.steps[-1] == "lifespan closed, mcp alive: False"
    assert not any(map(alive, pids))
    assert app.tools is not None and app.tools.names() == ["double"]  # never changed


async def test_an_app_without_tools_gives_agents_a_registry_not_none() -> None:
    @af.agent
    async def asks(ctx: af.Context, event: af.Event) -> Any:
        (result,) = await ctx.tools.call_many([("nothing_here", {})])
        return result.error

    with trio.fail_after(TIMEOUT):
        async with open_hosted_app({"asks": asks}) as hosted, hosted.running.runner() as runner:
            error = (await runner.call(af.Event("asks", {}))).unwrap()
    assert (error["type"], error["tool"], error["known"]) == ("unknown_tool", "nothing_here", [])


async def test_open_hosted_app_answers_with_the_built_in_mock_and_opens_an_app_twice() -> None:
    @af.agent
    async def chat(ctx: af.Context, event: af.Event) -> str:
        return (await ctx.llm.complete([af.user("hi")])).text

    app = App({"chat": chat}, tools=ToolRegistry([double]))
    with trio.fail_after(TIMEOUT):
        async with open_hosted_app(app) as one, open_hosted_app(app) as two:
            assert one.mock is not None and two.mock is not None and one.mock is not two.mock
            async with one.running.runner() as r1, two.running.runner() as r2:
                results = [await r.call(af.Event("chat", {})) for r in (r1, r2, r1)]
            assert [r.outcome for r in results] == [af.Outcome.SUCCEEDED] * 3
            assert (one.mock.stats().requests, two.mock.stats().requests) == (2, 1)
            assert one.services.tools is app.tools  # no MCP tools: the App's own registry
            assert one.services.sessions is not two.services.sessions


async def test_a_lifespan_that_fails_opens_nothing_else_and_its_error_comes_out_bare() -> None:
    opened: list[str] = []

    @asynccontextmanager
    async def broken(app: App) -> AsyncIterator[None]:
        opened.append("lifespan")
        raise RuntimeError("no database")
        yield

    app = App({"a": everything}, mcp={"demo": MCP.config()}, lifespan=broken)
    with trio.fail_after(TIMEOUT), pytest.raises(RuntimeError, match="no database"):
        async with app.open(monitoring=False):
            opened.append("body")
    assert opened == ["lifespan"]


async def test_an_mcp_server_in_code_and_in_the_config_under_one_name_is_refused() -> None:
    config = Config(mcp=MCP.mcp_config())
    app = App({"a": everything}, mcp={MCP.name: MCP.config()}, config=config)
    with trio.fail_after(TIMEOUT), pytest.raises(ConfigError, match="both in code"):
        async with app.open(monitoring=False):
            pass


async def test_state_of_outside_an_app_is_a_lookup_error() -> None:
    @af.agent
    async def peek(ctx: af.Context, event: af.Event) -> Any:
        return App.state_of(ctx)

    async with af.Runner(agents={"peek": peek}) as runner:
        result = await runner.call(af.Event("peek", {}))
    assert result.error is not None and result.error.type == "LookupError"


def test_an_app_checks_what_it_is_given() -> None:
    with pytest.raises(ValueError, match="at least one agent"):
        App({})
    with pytest.raises(TypeError, match="event types are strings"):
        App({1: everything})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="is not an agent"):
        App({"a": 3})
    with pytest.raises(TypeError, match="tools must be"):
        App({"a": everything}, tools="double")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mcp must be"):
        App({"a": everything}, mcp={"x": {"command": "y"}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="hooks must be"):
        App({"a": everything}, hooks=[])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be"):
        App({"a": everything}, config={"runner": {}})  # type: ignore[arg-type]
    assert App.coerce({"a": everything}).agents["a"] is everything
    app = App({"a": everything})
    assert App.coerce(app) is app and repr(app) == "App(agents=['a'])"


async def test_the_hooks_of_an_app_run_and_each_opening_adds_its_own_to_a_copy() -> None:
    seen: list[str] = []
    hooks = af.Hooks(after_event=[lambda event, result: seen.append(result.outcome.value)])

    @af.agent
    async def ok(ctx: af.Context, event: af.Event) -> str:
        return "ok"

    app = App({"ok": ok}, hooks=hooks, config=Config(monitoring=QUIET))
    with trio.fail_after(TIMEOUT):
        for _ in range(2):
            async with app.open(monitoring=False) as runner:
                await runner.call(af.Event("ok", {}))
                assert runner.metrics is not None  # its hooks live in the opening's copy
    assert seen == ["succeeded", "succeeded"]
    assert len(hooks.after_event) == 1


async def test_memory_sessions_follow_the_memory_section(mock_llm: MockLLM) -> None:
    @af.agent
    async def count(ctx: af.Context, event: af.Event) -> int:
        n = ctx.state.get("n", 0) + 1
        ctx.state.set("n", n)
        return n

    memory = MemoryConfig(state_cache_size=1)
    app = App({"count": count}, config=config_on(mock_llm, memory=memory))
    with trio.fail_after(TIMEOUT):
        async with app.open(monitoring=False) as runner:
            assert isinstance(runner.sessions, SessionStore)
            assert runner.sessions.max_entries == 1
            call = functools.partial(runner.call)
            a1 = await call(af.Event("count", {}, {"session_id": "a"}))
            a2 = await call(af.Event("count", {}, {"session_id": "a"}))
            b1 = await call(af.Event("count", {}, {"session_id": "b"}))  # evicts "a"
            a3 = await call(af.Event("count", {}, {"session_id": "a"}))
    assert [r.unwrap() for r in (a1, a2, b1, a3)] == [1, 2, 1, 1]


async def test_two_openings_share_sessions_through_redis(redis_server: RedisServer) -> None:
    pytest.importorskip("coredis")

    @af.agent
    async def note(ctx: af.Context, event: af.Event) -> list[str]:
        kept = [*ctx.state.get("notes", ()), event.data["note"]]
        ctx.state.set("notes", kept)
        return kept

    config = Config.from_mapping(
        {
            "memory": {"backend": "redis"},
            "distributed": {"redis_url": redis_server.url},
            "monitoring": {"metrics_port": 0},
        }
    )
    app = App({"note": note}, config=config)
    session = {"session_id": "shared"}
    with trio.fail_after(TIMEOUT):
        async with open_hosted_app(app) as one, open_hosted_app(app) as two:
            assert one.services.sessions is not two.services.sessions
            async with one.running.runner() as r1, two.running.runner() as r2:
                await r1.call(af.Event("note", {"note": "from one"}, session))
                result = await r2.call(af.Event("note", {"note": "from two"}, session))
    assert result.unwrap() == ["from one", "from two"]


async def test_monitoring_serves_prometheus_on_its_own_port_and_reports_performance(
    mock_llm: MockLLM,
) -> None:
    @af.agent
    async def echo(ctx: af.Context, event: af.Event) -> Any:
        return dict(event.data)

    monitoring = MonitoringConfig(metrics_port=0, metrics_interval=0.1)
    app = App({"echo": echo}, config=config_on(mock_llm, monitoring=monitoring))
    with trio.fail_after(TIMEOUT):
        async with app.open_services() as running, running.runner() as runner:
            for _ in range(3):
                await runner.call(af.Event("echo", {"x": 1}))
            assert running.metrics_port is not None and running.performance is not None
            while running.performance.latest is None:  # noqa: ASYNC110 - polls a report
                await trio.sleep(0.02)
            url = f"http://127.0.0.1:{running.metrics_port}"
            async with httpx2.AsyncClient(base_url=url, timeout=10) as client:
                text = (await client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = ("agent_requests_total", (("agent_name", "echo"), ("status", "succeeded")))
    assert samples[key] == 3
    assert any(name == "agentflow_performance_requests" for name, _ in samples)


async def test_a_busy_metrics_port_fails_the_opening_unless_it_is_the_default_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @af.agent
    async def echo(ctx: af.Context, event: af.Event) -> Any:
        return 1

    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = Config(monitoring=MonitoringConfig(metrics_port=port))
        app = App({"echo": echo}, config=config)
        with trio.fail_after(TIMEOUT):
            with pytest.raises(OSError, match="metrics_port"):
                async with open_hosted_app(app, monitoring=True):
                    pass
            async with open_hosted_app(app, monitoring=True, metrics_required=False) as hosted:
                assert hosted.running.metrics_port is None
            # The default port (9090 outside this test: a port the config did not set),
            # when taken, is a warning.
            unset = type(MonitoringConfig().metrics_port)(port)
            default_app = App(
                {"echo": echo}, config=Config(monitoring=MonitoringConfig(metrics_port=unset))
            )
            assert not default_app.config.monitoring.metrics_port_set
            async with open_hosted_app(default_app, monitoring=True) as hosted:
                assert hosted.running.metrics_port is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "agentflow_trio.app"]
    assert len(warnings) == 2 and all("no Prometheus endpoint" in w for w in warnings)


async def test_serve_runner_hosts_an_app_with_ctx_tools_mcp_and_an_api_key() -> None:
    @af.agent
    async def tools_user(ctx: af.Context, event: af.Event) -> Any:
        (added,) = await ctx.tools.call_many([("demo__add", {"a": 40, "b": 2})])
        return added.output

    app = App({"tools_user": tools_user}, mcp={"demo": MCP.config()})
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            served = await nursery.start(
                functools.partial(serve_runner, None, app, port=0, api_key="k-123")
            )
            async with httpx2.AsyncClient(base_url=served.url, timeout=10) as client:
                event = {"type": "tools_user", "data": {}}
                refused = await client.post("/v1/events", json=event)
                reply = await client.post(
                    "/v1/events", json=event, headers={"authorization": "Bearer k-123"}
                )
            nursery.cancel_scope.cancel()
    assert refused.status_code == 401
    assert reply.status_code == 200 and reply.json()["output"] == {"result": 42}
    assert served.metrics_port is None  # monitoring is the CLI's: nothing on a fixed port


def test_mcp_server_configs_are_values() -> None:
    config = MCP.config()
    assert isinstance(config, MCPServerConfig)
    app = App({"a": everything}, mcp=af.MCPConfig(servers={"demo": config}))
    assert dict(app.mcp) == {"demo": config}
