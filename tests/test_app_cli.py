"""An App hosted by ``agentcli``: ``serve`` (and ``serve --workers 2``), ``worker``,
``benchmark`` and ``loadtest`` as a user runs them, each a real subprocess (``python -m
agentflow_trio.cli``, through tests/_cli.py) talking to the built-in mock LLM, with the
example App (``examples/app.py``: tools, an MCP server from its config, sessions, a
lifespan) and with small apps written by the test.

Rules: every server binds 127.0.0.1 on port 0 (the example's metrics endpoint too:
``metrics_port = 0``); Redis is a real server on a free port (tests/_redis.py); every
subprocess wait is bounded (``TIMEOUT``); nothing asserts a duration.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
from _cli import TIMEOUT, after, agentcli, alive, one_json_line, started
from _redis import RedisServer, redis_server
from prometheus_client.parser import text_string_to_metric_families

import agentflow_trio as af
from agentflow_trio.app import App
from agentflow_trio.cli._guard import BadInput
from agentflow_trio.cli._plumbing import load_app
from agentflow_trio.config import Config, DistributedConfig
from agentflow_trio.testing import MCP_SERVER_SCRIPT

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

EXAMPLE = "examples.app:app"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx2.get(url, timeout=TIMEOUT).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def chat_count(samples: dict[Any, float]) -> float:
    return samples[("agent_requests_total", (("agent_name", "chat"), ("status", "succeeded")))]


# -- serve ----------------------------------------------------------------------------------


def test_serve_hosts_the_example_app_with_tools_mcp_sessions_and_metrics() -> None:
    with started("serve", "--app", EXAMPLE, "--port", "0", until="metrics:") as serve:
        url = after(serve.lines["agentcli"], " on ")
        assert serve.lines["agents"].startswith("agents: assistant, chat, notes;")
        with httpx2.Client(base_url=url, timeout=TIMEOUT) as client:
            chat = client.post("/v1/events", json={"type": "chat", "data": {"query": "trio?"}})
            out = chat.json()["output"]
            notes = [
                client.post(
                    "/v1/events",
                    json={"type": "notes", "data": {"note": n}, "metadata": {"session_id": "s"}},
                ).json()["output"]
                for n in ("one", "two")
            ]
        # ctx.tools reached the App's Python tool and the MCP server's tool, in its own
        # process started from the App's [mcp] config; ctx.llm the built-in mock.
        assert chat.status_code == 200 and out["words"] == 1
        assert out["fact"].startswith("Trio is a Python library")
        assert out["answer"] and out["mcp_pid"] not in (serve.proc.pid, None)
        assert alive(out["mcp_pid"])
        assert [n["notes"] for n in notes] == [["one"], ["one", "two"]]  # one session
        metrics_url = after(serve.lines["metrics"], "metrics: ")
        assert chat_count(scrape(metrics_url)) == 1  # the endpoint of its own
        serve.stop()
    assert not alive(out["mcp_pid"])  # the App's MCP server ended with serve


def test_serve_starts_the_config_mcp_servers_for_a_dict_of_hand_written_agents(
    tmp_path: Path,
) -> None:
    """The issue's first complaint: under ``serve`` a hand-written agent using ``ctx.tools``
    failed with ``'NoneType' object has no attribute 'call_many'`` and ``[mcp]`` servers
    were never started."""
    (tmp_path / "handwritten.py").write_text(
        textwrap.dedent(
            """
            async def adds(ctx, event):
                (result,) = await ctx.tools.call_many([("demo__add", {"a": 40, "b": 2})])
                return {"sum": result.output["result"], "mcp": ctx.mcp is not None}

            agents = {"adds": adds}
            """
        )
    )
    config = tmp_path / "agentflow.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [monitoring]
            metrics_port = 0
            [mcp.servers.demo]
            command = {sys.executable!r}
            args = [{str(MCP_SERVER_SCRIPT)!r}]
            pool_size = 1
            """
        )
    )
    args = ("serve", "--app", "handwritten:agents", "--config", str(config), "--port", "0")
    with started(*args, until="metrics:", cwd=tmp_path) as serve:
        url = after(serve.lines["agentcli"], " on ")
        reply = httpx2.post(f"{url}/v1/events", json={"type": "adds", "data": {}}, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["output"] == {"sum": 42, "mcp": True}
        serve.stop()


def test_serve_takes_the_api_key_from_the_environment_and_never_echoes_it() -> None:
    key = "sk-app-" + os.urandom(8).hex()
    args = ("serve", "--app", EXAMPLE, "--port", "0")
    with started(*args, until="requests need", AGENTFLOW_API_KEY=key) as serve:
        url = after(serve.lines["agentcli"], " on ")
        event = {"type": "notes", "data": {}}
        refused = httpx2.post(f"{url}/v1/events", json=event, timeout=TIMEOUT)
        bearer = {"authorization": f"Bearer {key}"}
        allowed = httpx2.post(f"{url}/v1/events", json=event, headers=bearer, timeout=TIMEOUT)
        stderr = serve.stop()
    assert refused.status_code == 401 and allowed.status_code == 200
    assert key not in " ".join(serve.lines.values()) and key not in stderr


def test_serve_workers_2_hosts_the_example_app_unchanged_and_ctrl_c_drains_it(
    redis_server: RedisServer,
) -> None:
    """``serve --workers 2``: two processes, each with the example's MCP server and tools,
    share its sessions through Redis; every request (a fresh connection each, so the
    kernel spreads them) is answered right, by both children; Ctrl-C drains them all."""
    env = {"APP_SESSIONS": "redis", "APP_REDIS_URL": redis_server.url}
    args = ("serve", "--app", EXAMPLE, "--port", "0", "--workers", "2")
    with started(*args, until="workers:", **env) as serve:
        url = after(serve.lines["agentcli"], " on ")
        children = {int(p) for p in serve.lines["workers"].split("pids ", 1)[1].split(", ")}
        session = {"session_id": "spread"}
        notes, chats = [], []
        for i in range(24):
            event = {"type": "notes", "data": {"note": str(i)}, "metadata": session}
            notes.append(httpx2.post(f"{url}/v1/events", json=event, timeout=TIMEOUT))
            query = {"type": "chat", "data": {"query": "trio?"}}
            chats.append(httpx2.post(f"{url}/v1/events", json=query, timeout=TIMEOUT))
        outputs = [r.json()["output"] for r in notes + chats if r.status_code == 200]
        assert len(outputs) == 48, [r.text for r in notes + chats if r.status_code != 200]
        note_outputs, chat_outputs = outputs[:24], outputs[24:]
        mcp_pids = {out["mcp_pid"] for out in chat_outputs}
        serve.stop(signal.SIGINT)
    # Each answer saw every note before it, whichever child wrote them (one session).
    assert [out["notes"] for out in note_outputs] == [
        [str(j) for j in range(i + 1)] for i in range(24)
    ]
    assert {out["pid"] for out in note_outputs} == children  # both children answered
    assert all(out["fact"].startswith("Trio is a Python library") for out in chat_outputs)
    assert all(out["words"] == 1 and out["answer"] for out in chat_outputs)
    assert len(mcp_pids) == 2 and not mcp_pids & children  # an MCP server per child
    assert not any(alive(pid) for pid in children | mcp_pids)  # all drained and gone


# -- worker ---------------------------------------------------------------------------------


async def test_two_workers_host_the_example_app_and_share_its_sessions_through_redis(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    remote_config = Config(distributed=DistributedConfig(redis_url=url))
    session = {"session_id": "shared"}
    worker = ("worker", "--app", EXAMPLE, "--redis", url)

    async def note(remote: af.RemoteRunner, text: str) -> dict[str, Any]:
        result = await remote.call(af.Event("notes", {"note": text}, session))
        return dict(result.unwrap())

    with trio.fail_after(TIMEOUT * 2):
        async with af.RemoteRunner(remote_config) as remote:
            with started(*worker, until="metrics:", APP_SESSIONS="redis") as first:
                one = await note(remote, "one")
                with started(*worker, until="metrics:", APP_SESSIONS="redis") as second:
                    first.stop()  # from here on only the second worker reads
                    two = await note(remote, "two")
                    chat = await remote.call(af.Event("chat", {"query": "Why redis?"}))
                    second.stop()
    assert (one["pid"], two["pid"]) == (first.proc.pid, second.proc.pid)
    assert two["notes"] == ["one", "two"]  # the second process read the first's write
    assert chat.unwrap()["fact"].startswith("Redis is")


# -- benchmark ------------------------------------------------------------------------------


def test_benchmark_measures_an_apps_agent_with_the_same_report() -> None:
    data = one_json_line(
        agentcli(
            "benchmark", "--app", EXAMPLE, "--agent", "chat", "--requests", "30",
            "-c", "3", "--threshold", "errors<1%", "--json",
        )
    )  # fmt: skip
    assert data["agent"] == "chat" and data["requests"] == 30
    assert data["outcomes"] == {"succeeded": 30}
    assert data["mock_requests"] == 30  # one model call per chat event, by the mock's count
    assert [t["passed"] for t in data["thresholds"]] == [True]

    table = agentcli("benchmark", "--app", EXAMPLE, "--agent", "notes", "--requests", "10")
    assert table.returncode == 0, table.stderr
    for heading in ("requests", "RPS", "p50 ms", "p99 ms", "errors", "mock LLM requests"):
        assert heading in table.stdout


def test_the_guides_benchmark_line_works_given_an_app_that_has_the_agent(tmp_path: Path) -> None:
    (tmp_path / "guide_app.py").write_text(
        textwrap.dedent(
            """
            import agentflow_trio as af
            from agentflow_trio.app import App

            async def myagent(ctx, event):
                return (await ctx.llm.complete([af.user(event.data["query"])])).text

            async def make():  # an async factory
                return App({"myagent": myagent})
            """
        )
    )
    args = ("benchmark", "--agent", "myagent", "--requests", "1000", "--json")
    data = one_json_line(agentcli(*args, "--app", "guide_app:make", cwd=tmp_path))
    assert data["requests"] == 1000 == data["mock_requests"]
    assert data["outcomes"] == {"succeeded": 1000}

    alone = agentcli(*args, cwd=tmp_path)
    assert alone.returncode == 2 and "Traceback" not in alone.stderr
    hint = [line for line in alone.stderr.splitlines() if "--app" in line]
    assert len(hint) == 1 and "unknown agent 'myagent'" in hint[0]
    assert "--app MODULE:APP --agent myagent" in hint[0]

    missing = agentcli("benchmark", "--app", EXAMPLE, "--agent", "myagent")
    assert missing.returncode == 2 and "its agents: assistant, chat, notes" in missing.stderr


# -- loadtest -------------------------------------------------------------------------------


def test_loadtest_hosts_an_app_and_a_script_imports_a_module_next_to_it(tmp_path: Path) -> None:
    shown = one_json_line(
        agentcli("loadtest", "--script", "examples/app_loadtest.py", "--vus", "2",
                 "--duration", "1s", "--json")
    )  # fmt: skip
    assert shown["requests"] > 0 and shown["outcomes"] == {"succeeded": shown["requests"]}
    assert shown["mock_requests"] == shown["requests"]  # one chat (one model call) each
    assert [t["passed"] for t in shown["thresholds"]] == [True]  # the script's own

    hosted = one_json_line(
        agentcli("loadtest", "--app", EXAMPLE, "--vus", "2", "--duration", "1s", "--json")
    )
    assert hosted["requests"] > 0 and hosted["outcomes"] == {"succeeded": hosted["requests"]}

    folder = tmp_path / "scenario"
    folder.mkdir()
    (folder / "questions.py").write_text("QUESTION = 'asked from a neighbour module'\n")
    (folder / "run.py").write_text(
        "from questions import QUESTION\n"
        "async def request(client):\n"
        "    result = await client.call('chat', {'query': QUESTION})\n"
        "    assert result.succeeded\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    neighbour = agentcli(
        "loadtest", "--script", str(folder / "run.py"), "--vus", "1", "--duration", "0.5s",
        "--json", cwd=elsewhere,
    )  # fmt: skip
    assert one_json_line(neighbour)["errors"] == 0


def test_a_k6_script_gets_one_line_on_how_it_maps_onto_python(tmp_path: Path) -> None:
    script = tmp_path / "load.js"
    script.write_text("export default function () { http.get('http://x'); }\n")
    proc = agentcli("loadtest", "--script", str(script), "--duration", "1s")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    for part in ("scripts are Python", "async def request(client)", "--vus", "thresholds"):
        assert part in errors[0]


def test_loadtest_app_conflicts_are_usage_errors(tmp_path: Path) -> None:
    with_target = agentcli("loadtest", "--app", EXAMPLE, "--target", "http://127.0.0.1:9")
    assert with_target.returncode == 2 and "with --target the server hosts it" in with_target.stderr
    (tmp_path / "own.py").write_text(
        "async def echo(ctx, event):\n    return 1\n"
        "agents = {'echo': echo}\n"
        "async def request(client):\n    await client.call('echo', {})\n"
    )
    both = agentcli("loadtest", "--app", EXAMPLE, "--script", str(tmp_path / "own.py"))
    assert both.returncode == 2 and "names its own agents" in both.stderr
    (tmp_path / "nochat.py").write_text(
        "async def echo(ctx, event):\n    return 1\nagents = {'echo': echo}\n"
    )
    nochat = agentcli("loadtest", "--app", "nochat:agents", "--duration", "1s", cwd=tmp_path)
    assert nochat.returncode == 2 and "has no 'chat'" in nochat.stderr


# -- --app ------------------------------------------------------------------------------------


def test_app_references_accept_an_app_a_factory_or_a_dict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "refs.py").write_text(
        textwrap.dedent(
            """
            from agentflow_trio.app import App

            async def echo(ctx, event):
                return event.data

            app = App({"echo": echo})
            agents = {"echo": echo}
            def make_app():
                return app
            async def make_async():
                return app
            def make_dict():
                return agents
            def broken():
                raise RuntimeError("no config here")
            def wrong():
                return 42
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import refs  # type: ignore[import-not-found]

    assert load_app("refs:app") is refs.app
    assert load_app("refs:make_app") is refs.app
    assert load_app("refs:make_async") is refs.app
    for ref in ("refs:agents", "refs:make_dict"):
        made = load_app(ref)
        assert isinstance(made, App) and made.agents["echo"].fn is refs.echo
    assert set(load_app(None).agents) == {"chat", "stream", "noop"}
    for ref, needle in [
        ("refs", "--app must be MODULE:ATTR"),
        ("refs:nothing", "has no attribute 'nothing'"),
        ("refs:broken", "calling it raised RuntimeError: no config here"),
        ("refs:wrong", "expected an App"),
        ("no_such_module_here:app", "cannot import 'no_such_module_here'"),
    ]:
        with pytest.raises(BadInput, match=needle):
            load_app(ref)
