"""MCP: the ``[mcp]`` config, and session pools against real MCP servers.

Rules of this module (as trio-websocket's tests): the servers are real (written with the
official SDK, ``agentflow_trio/testing/mcp_server.py``), run as stdio subprocesses (one per
pooled session) or as a streamable-HTTP server on 127.0.0.1, port 0, in a subprocess
stopped by PID. Real clock, every trio test body under an absolute ``trio.fail_after``;
waiting for a state is polling of ``statistics()``, never a timed assertion.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from _cli import alive

import agentflow_trio as af
from agentflow_trio.config import Config, MCPConfig, MCPServerConfig, load_config
from agentflow_trio.errors import ConfigError, MCPError, UnknownTool

pytest.importorskip("mcp")

from agentflow_trio.mcp import MCPManager, MCPTool, SessionPool

DEMO = Path(__file__).resolve().parent.parent / "agentflow_trio" / "testing" / "mcp_server.py"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agentflow.toml"
TIMEOUT = 20
DEMO_TOOLS = {"add", "echo", "fail", "sleep", "stats", "whoami"}


def stdio(**overrides: Any) -> MCPServerConfig:
    return MCPServerConfig(command=sys.executable, args=[str(DEMO)], **overrides)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a state outside this task's control (statistics, a process) until it holds.

    No trio.Event stands for these states; the test's ``fail_after`` bounds the wait.
    """
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.02)


async def server_stats_until(
    mcp: MCPManager, done: Callable[[dict[str, int]], bool]
) -> dict[str, int]:
    """Poll the demo server's own counters (through the pool) until ``done``."""
    while not done(stats := await mcp.call_tool("demo__stats")):  # noqa: ASYNC110
        await trio.sleep(0.02)
    return stats


async def who(mcp: MCPManager, name: str = "demo__whoami") -> dict[str, Any]:
    return await mcp.call_tool(name)


def task_count() -> int:
    """Every task of this trio run, counted from the root."""

    def count(task: trio.lowlevel.Task) -> int:
        children = (c for n in task.child_nurseries for c in n.child_tasks)
        return 1 + sum(count(child) for child in children)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


@attrs.define
class HTTPServer:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def http_server() -> Iterator[HTTPServer]:
    """The demo server over streamable HTTP on 127.0.0.1:0, in a subprocess."""
    process = subprocess.Popen(
        [sys.executable, str(DEMO), "--http"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    server = HTTPServer(process, f"http://127.0.0.1:{int(process.stdout.readline())}/mcp")
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- config

SERVERS_TOML = """
[mcp.servers.files]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
env = { TOKEN = "${FILES_TOKEN:-none}" }
cwd = "/tmp"
pool_size = 4
health_interval = "5s"
call_timeout = "1m"
connect_timeout = "2.5s"

[mcp.servers.search]
url = "https://search.example/mcp"
enabled = false
"""


def test_config_default_has_no_servers() -> None:
    assert Config().mcp == MCPConfig()
    assert Config().mcp.servers == {}
    assert Config().to_dict()["mcp"] == {"servers": {}}


def test_config_servers_load_and_round_trip() -> None:
    config = Config.from_mapping(tomllib.loads(SERVERS_TOML), env={"FILES_TOKEN": "t0k"})
    files = config.mcp.servers["files"]
    assert files.command == "npx" and files.args[-1] == "/tmp"
    assert (files.env, files.cwd, files.url) == ({"TOKEN": "t0k"}, "/tmp", "")
    assert files.pool_size == 4 and files.enabled
    assert (files.health_interval, files.call_timeout, files.connect_timeout) == (5, 60, 2.5)
    search = config.mcp.servers["search"]
    assert search == MCPServerConfig(url="https://search.example/mcp", enabled=False)
    assert (search.pool_size, search.health_interval, search.call_timeout) == (2, 10, 30)
    assert search.connect_timeout == 10
    plain = config.to_dict(mask_secrets=False)
    assert plain["mcp"]["servers"]["files"]["call_timeout"] == "1m"
    assert Config.from_mapping(plain, env={}) == config
    masked = config.to_dict()["mcp"]["servers"]["files"]
    assert masked["env"] == {"TOKEN": "***"} and masked["command"] == "npx"


@pytest.mark.parametrize(
    ("server", "key", "fragment"),
    [
        ({}, "mcp.servers.s.command", "got neither"),
        ({"command": "x", "url": "http://h/mcp"}, "mcp.servers.s.url", "not both"),
        ({"url": "ftp://h/mcp"}, "mcp.servers.s.url", "http:// or https://"),
        ({"command": "x", "pool_size": 0}, "mcp.servers.s.pool_size", "integer >= 1"),
        ({"command": "x", "call_timeout": "0s"}, "mcp.servers.s.call_timeout", "> 0"),
        ({"command": "x", "health_interval": "soon"}, "mcp.servers.s.health_interval", "dur"),
        ({"command": "x", "args": "-v"}, "mcp.servers.s.args", "an array of strings"),
        ({"command": "x", "pool": 3}, "mcp.servers.s.pool", "'pool_size'?"),
        ({"command": "x", "env": {"K": "${UNSET}"}}, "mcp.servers.s.env.K", "'UNSET'"),
    ],
)
def test_config_errors_name_the_key(server: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"mcp": {"servers": {"s": server}}}, source="agentflow.toml", env={})
    assert info.value.key == key
    assert str(info.value).startswith(f"agentflow.toml: {key}: ")
    assert fragment in str(info.value)


def test_config_server_name_must_be_a_plain_word() -> None:
    with pytest.raises(ConfigError, match=r"mcp\.servers\.a\.b: expected a server name"):
        Config.from_mapping({"mcp": {"servers": {"a.b": {"command": "x"}}}})
    with pytest.raises(ConfigError, match="expected a server name"):
        MCPManager({"has space": stdio()})


def test_config_checks_direct_construction() -> None:
    with pytest.raises(ConfigError, match="got neither"):
        MCPServerConfig()
    with pytest.raises(ConfigError, match="integer >= 1"):
        MCPServerConfig(command="x", pool_size=0)


def test_example_file_still_loads_to_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == Config()


def test_example_file_commented_server_is_valid() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    section = text[text.index("\n[mcp]\n") :].splitlines()
    start = section.index("# [mcp.servers.files]")
    body = [line[2:] for line in section[start:] if not line.startswith("# #") and line[2:]]
    files = Config.from_mapping(tomllib.loads("\n".join(body)), env={}).mcp.servers["files"]
    assert files == MCPServerConfig(
        command="npx",
        args=["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"],
        env={"LOG_LEVEL": "warn"},
    )


def test_importing_the_package_does_not_import_the_sdk() -> None:
    code = (
        "import sys, agentflow_trio, agentflow_trio.mcp; "
        "sys.exit(any(m.split('.')[0] in ('mcp', 'mcp_types') for m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(DEMO.parents[2])}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0


# --------------------------------------------------------------------------- stdio


async def test_stdio_discovery_calls_round_robin_and_clean_exit() -> None:
    with trio.fail_after(TIMEOUT):
        tasks_before = task_count()
        async with MCPManager(MCPConfig(servers={"demo": stdio()})) as mcp:
            tools = {tool.name: tool for tool in mcp.tools()}
            assert set(tools) == {f"demo__{name}" for name in DEMO_TOOLS}
            add = tools["demo__add"]
            assert (add.server, add.remote_name) == ("demo", "add")
            assert add.description == "Add two integers."
            assert add.parameters["properties"].keys() == {"a", "b"}
            assert add.parameters["required"] == ["a", "b"]

            assert await add.call(None, {"a": 2, "b": 40}) == {"result": 42}
            assert await mcp.call_tool("demo__echo", {"text": "héllo"}) == {"result": "héllo"}
            failed = await mcp.call_tool("demo__fail", {"message": "disk on fire"})
            assert failed["error"]["type"] == "mcp_tool_error"
            assert "disk on fire" in failed["error"]["message"]
            assert (failed["error"]["server"], failed["error"]["tool"]) == ("demo", "fail")

            pids = [(await who(mcp))["pid"] for _ in range(6)]
            assert len(set(pids)) == 2  # two sessions = two server processes
            assert pids[0::2] == [pids[0]] * 3 and pids[1::2] == [pids[1]] * 3
            stats = mcp.statistics()["demo"]
            assert (stats.healthy_sessions, stats.total_sessions, stats.calls) == (2, 2, 9)
            assert [s.calls for s in stats.sessions] in ([5, 4], [4, 5])
            assert stats.failovers == stats.reconnects == 0

            with pytest.raises(UnknownTool, match=r"demo__add"):
                await mcp.call_tool("demo__nope")
        assert not any(alive(pid) for pid in pids)
        # Closing is not a failure: no session counts one.
        assert [s.failures for s in mcp.statistics()["demo"].sessions] == [0, 0]
        assert task_count() == tasks_before
        with pytest.raises(MCPError, match=r"'demo'.*closed"):
            await add.call(None, {"a": 1, "b": 1})


async def test_tools_are_function_tools_and_reach_agents_through_the_runner() -> None:
    registered: list[Any] = []

    class Registry:
        def register(self, tool: Any) -> None:
            registered.append(tool)

    @af.agent
    async def adder(ctx: af.Context, event: af.Event) -> dict[str, Any]:
        return await ctx.mcp.call_tool("demo__add", event.data)  # type: ignore[no-any-return]

    with trio.fail_after(TIMEOUT):
        async with MCPManager({"demo": stdio(pool_size=1)}) as mcp:
            assert mcp.register_into(Registry()) == registered == mcp.tools()
            for tool in registered:
                assert isinstance(tool, MCPTool)
                assert isinstance(tool.name, str) and isinstance(tool.description, str)
                assert tool.parameters["type"] == "object"
            async with af.Runner(agents={"add": adder}, mcp=mcp) as runner:
                result = await runner.call(af.Event("add", {"a": 20, "b": 22}))
            assert result.unwrap() == {"result": 42}


async def test_tools_work_in_the_tool_registry() -> None:
    tools = pytest.importorskip("agentflow_trio.tools")
    with trio.fail_after(TIMEOUT):
        async with MCPManager({"demo": stdio(pool_size=1)}) as mcp:
            registry = tools.ToolRegistry()
            mcp.register_into(registry)
            assert set(registry.names()) == {f"demo__{name}" for name in DEMO_TOOLS}
            ok = await registry.call(None, "demo__add", {"a": 1, "b": 2})
            assert (ok.outcome, ok.output) == ("ok", {"result": 3})
            # The registry checks arguments against the MCP tool's inputSchema.
            bad = await registry.call(None, "demo__add", {"a": "one", "b": 2})
            assert (bad.outcome, bad.error["type"], bad.error["field"]) == (
                "error",
                "invalid_arguments",
                "a",
            )
            refused = await registry.call(None, "demo__fail", {"message": "quota"})
            assert refused.output["error"]["type"] == "mcp_tool_error"


async def test_plain_names_keep_their_own_name_unless_shared() -> None:
    servers = {
        "a": stdio(pool_size=1, env={"DEMO_EXTRA_TOOL": "alpha"}),
        "b": stdio(pool_size=1, env={"DEMO_EXTRA_TOOL": "beta.v2"}),
    }
    with trio.fail_after(TIMEOUT):
        async with MCPManager(servers, prefix=False) as mcp:
            names = {tool.name for tool in mcp.tools()}
            shared = {f"{server}__{name}" for server in "ab" for name in DEMO_TOOLS}
            # A dot is not allowed in a model's function name: it becomes "_".
            assert names == shared | {"alpha", "beta_v2"}
            assert await mcp.call_tool("alpha") == {"text": "alpha"}  # unstructured: text
            assert mcp.tool("beta_v2").server == "b"
            assert mcp.tool("beta_v2").remote_name == "beta.v2"
            assert await mcp.call_tool("beta_v2") == {"text": "beta.v2"}
            assert (await who(mcp, "a__whoami"))["pid"] != (await who(mcp, "b__whoami"))["pid"]


async def test_disabled_servers_are_not_started() -> None:
    servers = {"off": stdio(enabled=False)}
    with trio.fail_after(TIMEOUT):
        async with MCPManager(servers) as mcp:
            assert mcp.servers == () and mcp.tools() == []


async def test_a_server_that_cannot_start_is_named() -> None:
    ghost = MCPServerConfig(command="/nonexistent/mcp-server")
    with trio.fail_after(TIMEOUT):
        tasks_before = task_count()
        with pytest.raises(MCPError, match=r"'ghost'.*no healthy session \(0 of 2 up.*nonexistent"):
            async with MCPManager({"ghost": ghost}):
                pass  # pragma: no cover
        assert task_count() == tasks_before


async def test_a_server_that_never_answers_hits_the_connect_timeout() -> None:
    mute = MCPServerConfig(
        command=sys.executable,
        args=["-c", "import sys; sys.stdin.read()"],  # reads, never answers, exits on EOF
        pool_size=1,
        connect_timeout=0.5,
    )
    with trio.fail_after(TIMEOUT):
        with pytest.raises(MCPError, match=r"'mute'.*no connection within 500ms"):
            async with MCPManager({"mute": mute}):
                pass  # pragma: no cover


async def test_cancelled_or_timed_out_call_cancels_the_mcp_request() -> None:
    with trio.fail_after(TIMEOUT):
        async with MCPManager({"demo": stdio(pool_size=1)}) as mcp:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mcp.call_tool, "demo__sleep", {"seconds": 60})
                await server_stats_until(mcp, lambda s: s["active"] == 1)
                nursery.cancel_scope.cancel()
            stats = await server_stats_until(mcp, lambda s: s["cancelled"] == 1)
            assert (stats["active"], stats["finished"]) == (0, 0)

            pool = mcp.pool("demo")
            with pytest.raises(MCPError, match=r"'demo'.*'sleep' timed out after 300ms"):
                await pool.call_tool("sleep", {"seconds": 60}, timeout=0.3)
            stats = await server_stats_until(mcp, lambda s: s["cancelled"] == 2)
            assert (stats["active"], stats["finished"]) == (0, 0)
            # Neither cancellation took the session out of rotation.
            assert pool.statistics().healthy_sessions == 1
            assert pool.statistics().sessions[0].failures == 0


async def test_health_check_takes_a_silent_session_out_and_reconnects_it() -> None:
    config = stdio(health_interval=0.5, call_timeout=5)
    with trio.fail_after(TIMEOUT):
        async with MCPManager({"demo": config}) as mcp:
            pool = mcp.pool("demo")
            first, second = [(await who(mcp))["pid"] for _ in range(2)]
            os.kill(first, signal.SIGSTOP)  # alive, but silent: only a ping can tell
            try:
                await wait_until(lambda: pool.statistics().healthy_sessions == 1)
                stats = pool.statistics()
                assert stats.pings_failed == 1
                down = next(s for s in stats.sessions if not s.healthy)
                assert "no answer to ping within 500ms" in down.last_error
                assert [s.failures for s in stats.sessions] in ([1, 0], [0, 1])
                # Calls go to the survivor only.
                assert {(await who(mcp))["pid"] for _ in range(4)} == {second}
            finally:
                os.kill(first, signal.SIGCONT)
            await wait_until(lambda: pool.statistics().healthy_sessions == 2)
            assert pool.statistics().reconnects == 1
            pids = {(await who(mcp))["pid"] for _ in range(2)}
            assert second in pids and first not in pids and len(pids) == 2
            await wait_until(lambda: not alive(first))  # the owner reaped it
        assert not any(alive(pid) for pid in pids)


async def test_failover_when_a_server_process_is_killed_mid_load() -> None:
    config = stdio(health_interval=30, call_timeout=5)  # the transport, not pings, notices
    outcomes: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with MCPManager({"demo": config}) as mcp:
            pool = mcp.pool("demo")
            victim, survivor = [(await who(mcp))["pid"] for _ in range(2)]
            stop = trio.Event()

            async def caller() -> None:
                while not stop.is_set():
                    result = await mcp.call_tool("demo__sleep", {"seconds": 0.05})
                    outcomes.append(result["result"])

            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(caller)
                await wait_until(lambda: len(outcomes) >= 30)
                before_kill = len(outcomes)
                os.kill(victim, signal.SIGKILL)
                await wait_until(lambda: pool.statistics().healthy_sessions == 1)
                after_kill = len(outcomes)
                await wait_until(lambda: len(outcomes) >= after_kill + 30)
                stop.set()
            # No call failed (a failure would have ended the nursery with MCPError).
            assert set(outcomes) == {"slept 0.05s"} and len(outcomes) > before_kill + 30
            stats = pool.statistics()
            assert stats.failovers >= 1  # calls in flight on the victim moved over
            victim_stats = next(s for s in stats.sessions if s.failures)
            assert victim_stats.last_error == "the transport closed"
            assert sum(s.failures for s in stats.sessions) == 1
            await wait_until(lambda: pool.statistics().healthy_sessions == 2)
            assert pool.statistics().reconnects == 1
            pids = {(await who(mcp))["pid"] for _ in range(2)}
            assert survivor in pids and victim not in pids and len(pids) == 2
            assert not alive(victim)
        assert not any(alive(pid) for pid in pids)


async def test_no_healthy_session_fails_fast_naming_the_server() -> None:
    # SessionPool on its own, in a nursery the test owns; a long backoff keeps it down.
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            pool = SessionPool("solo", stdio(pool_size=1), backoff=(60, 60))
            assert await nursery.start(pool.serve) is pool
            assert {tool.name for tool in pool.tools} == DEMO_TOOLS
            result = await pool.call_tool("whoami")
            assert result.structured_content is not None
            pid = result.structured_content["pid"]
            os.kill(pid, signal.SIGKILL)
            await wait_until(lambda: pool.statistics().healthy_sessions == 0)
            with pytest.raises(MCPError, match=r"'solo'.*no healthy session \(0 of 1 up"):
                await pool.call_tool("whoami")
            await pool.aclose()
            await pool.aclose()  # idempotent
            with pytest.raises(MCPError, match=r"'solo'.*closed"):
                await pool.call_tool("whoami")
        assert not alive(pid)


# --------------------------------------------------------------------------- HTTP


async def test_http_discovery_calls_and_round_robin(http_server: HTTPServer) -> None:
    with trio.fail_after(TIMEOUT):
        tasks_before = task_count()
        async with MCPManager({"web": MCPServerConfig(url=http_server.url)}) as mcp:
            assert {tool.name for tool in mcp.tools()} == {f"web__{n}" for n in DEMO_TOOLS}
            assert await mcp.call_tool("web__add", {"a": 1, "b": 2}) == {"result": 3}
            replies = [await who(mcp, "web__whoami") for _ in range(6)]
            assert {r["pid"] for r in replies} == {http_server.process.pid}
            peers = [r["peer"] for r in replies]  # one client connection per session
            assert peers[0] != peers[1]
            assert peers[0::2] == [peers[0]] * 3 and peers[1::2] == [peers[1]] * 3
            failed = await mcp.call_tool("web__fail", {"message": "nope"})
            assert "nope" in failed["error"]["message"]
        assert task_count() == tasks_before


async def test_http_server_gone_calls_fail_fast(http_server: HTTPServer) -> None:
    config = MCPServerConfig(url=http_server.url, health_interval=0.3, call_timeout=10)
    with trio.fail_after(TIMEOUT):
        async with MCPManager({"web": config}) as mcp:
            assert await mcp.call_tool("web__add", {"a": 1, "b": 1}) == {"result": 2}
            http_server.stop()
            # The first call may be the one that finds out; none waits for call_timeout.
            with pytest.raises(MCPError, match="'web'"):
                for _ in range(3):
                    await mcp.call_tool("web__add", {"a": 1, "b": 1})
            await wait_until(lambda: mcp.statistics()["web"].healthy_sessions == 0)
            with pytest.raises(MCPError, match=r"'web'.*no healthy session \(0 of 2 up"):
                await mcp.call_tool("web__add", {"a": 1, "b": 1})


def test_exported_names() -> None:
    import agentflow_trio.mcp as package
    from agentflow_trio.mcp import manager, pool

    for module in (manager, pool):
        assert set(module.__all__) <= set(vars(module))
    assert set(package.__all__) == set(manager.__all__) | set(pool.__all__)
    for name in package.__all__:
        source = manager if name in manager.__all__ else pool
        assert getattr(package, name) is getattr(source, name)
