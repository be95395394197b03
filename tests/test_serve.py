"""``server.app``: the runner over HTTP, served in-process by `serve` (``server._http``).

Rules: the server binds 127.0.0.1 port 0 and is cancelled by the test that started it;
every test uses the real clock under an absolute ``trio.fail_after``; requests go through
a real HTTP client (httpx2).
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import agentflow_trio as af
from agentflow_trio.observability.metrics import RunnerMetrics
from agentflow_trio.runner import Runner
from agentflow_trio.server import make_app, serve

TIMEOUT = 10


@af.agent
async def echo(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    return {"echo": dict(event.data), "trace": event.metadata.get("trace")}


@af.agent
async def boom(ctx: af.Context, event: af.Event) -> None:
    raise RuntimeError("the agent broke")


AGENTS = {"echo": echo, "boom": boom}


@asynccontextmanager
async def served(runner: Runner, **options: Any) -> AsyncIterator[httpx2.AsyncClient]:
    metrics = _metrics(runner)
    app = make_app(runner, metrics=metrics, **options)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve, app, port=0))
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as c:
            yield c
        nursery.cancel_scope.cancel()


def _metrics(runner: Runner) -> RunnerMetrics:
    metrics = RunnerMetrics(process=False)
    metrics.attach(runner)
    return metrics


async def test_post_runs_the_event_and_returns_its_result() -> None:
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner) as client:
            ok = await client.post(
                "/v1/events", json={"type": "echo", "data": {"q": 1}, "metadata": {"trace": "t"}}
            )
            assert ok.status_code == 200
            body = ok.json()
            assert body["outcome"] == "succeeded" and body["status"] == "done"
            assert body["output"] == {"echo": {"q": 1}, "trace": "t"}
            assert body["agent"] == "echo" and body["id"]

            failed = await client.post("/v1/events", json={"type": "boom"})
            assert failed.status_code == 200  # the outcome is in the body
            assert failed.json()["outcome"] == "failed"
            assert failed.json()["error"] == {"type": "RuntimeError", "message": "the agent broke"}

            unknown = await client.post("/v1/events", json={"type": "nobody"})
            assert unknown.status_code == 404  # not accepted (tests/test_serve_hostile.py)
            assert "no agent named 'nobody'" in unknown.json()["error"]


async def test_async_post_then_get() -> None:
    gate = trio.Event()

    @af.agent
    async def slow(ctx: af.Context, event: af.Event) -> str:
        await gate.wait()
        return "finally"

    with trio.fail_after(TIMEOUT):
        async with Runner(agents={"slow": slow}) as runner, served(runner) as client:
            accepted = await client.post("/v1/events?async=1", json={"type": "slow"})
            assert accepted.status_code == 202
            event_id = accepted.json()["id"]
            assert accepted.json()["status"] == "pending"

            pending = await client.get(f"/v1/events/{event_id}")
            assert pending.status_code == 200
            assert pending.json() == {"id": event_id, "status": "pending"}

            finished = trio.Event()
            runner.hooks.after_event.append(lambda event, result: finished.set())
            gate.set()
            await finished.wait()
            done = (await client.get(f"/v1/events/{event_id}")).json()
            assert done["outcome"] == "succeeded" and done["output"] == "finally"
            assert done["id"] == event_id

            missing = await client.get("/v1/events/no-such-id")
            assert missing.status_code == 404
            assert "unknown or expired" in missing.json()["error"]


async def test_async_results_are_bounded() -> None:
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner, max_results=2) as client:
            ids = []
            for i in range(3):
                finished = trio.Event()
                runner.hooks.after_event.append(lambda event, result, f=finished: f.set())
                body = {"type": "echo", "data": {"i": i}}
                r = await client.post("/v1/events?async=true", json=body)
                ids.append(r.json()["id"])
                await finished.wait()
            assert (await client.get(f"/v1/events/{ids[0]}")).status_code == 404  # evicted
            assert (await client.get(f"/v1/events/{ids[2]}")).json()["output"]["echo"] == {"i": 2}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'{"data": {}}', '"type": a non-empty string'),
        (b'{"type": "echo", "data": [1]}', '"data" must be a JSON object'),
        (b'{"type": "echo", "colour": 1}', "unknown field(s) colour"),
    ],
)
async def test_bad_requests_get_400_with_a_reason(body: bytes, reason: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner) as client:
            response = await client.post(
                "/v1/events", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400
            assert reason in response.json()["error"]
            assert runner.statistics().accepted == 0


async def test_huge_body_gets_413() -> None:
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner, max_body_bytes=1024) as client:
            big = {"type": "echo", "data": {"blob": "x" * 4096}}
            response = await client.post("/v1/events", json=big)
            assert response.status_code == 413
            assert "over 1024 bytes" in response.json()["error"]

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: read and cut
                for _ in range(8):
                    yield b"x" * 512

            json_type = {"content-type": "application/json"}
            streamed = await client.post("/v1/events", content=chunks(), headers=json_type)
            assert streamed.status_code == 413
            assert runner.statistics().accepted == 0


async def test_queue_full_is_503() -> None:
    gate = trio.Event()

    @af.agent
    async def stuck(ctx: af.Context, event: af.Event) -> None:
        await gate.wait()

    config = af.Config.from_mapping({"runner": {"max_concurrent_events": 1}})
    with trio.fail_after(TIMEOUT):
        async with Runner(config, agents={"stuck": stuck}) as runner, served(runner) as client:
            first = await client.post("/v1/events?async=1", json={"type": "stuck"})
            assert first.status_code == 202
            refused = await client.post("/v1/events", json={"type": "stuck"})
            assert refused.status_code == 503
            assert refused.json()["error"].startswith("QueueFull")
            assert refused.headers["retry-after"] == "1"
            gate.set()


async def test_healthz_metrics_and_routing() -> None:
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner) as client:
            for _ in range(3):
                await client.post("/v1/events", json={"type": "echo"})
            await client.post("/v1/events", json={"type": "boom"})

            health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "ok" and health.json()["completed"] == 4

            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
            totals = {
                (s.labels.get("agent_name"), s.labels.get("status")): s.value
                for s in families["agent_requests"].samples
                if s.name == "agent_requests_total"
            }
            assert totals == {("echo", "succeeded"): 3.0, ("boom", "failed"): 1.0}
            durations = families["agent_request_duration_seconds"].samples
            counts = [s.value for s in durations if s.name.endswith("_count")]
            assert sum(counts) == 4
            completed = families["runner_events_completed"].samples
            assert sum(s.value for s in completed if s.name.endswith("_total")) == 4

            assert (await client.get("/nowhere")).status_code == 404
            wrong = await client.get("/v1/events")
            assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


async def test_serve_runner_in_process_on_port_0() -> None:
    from agentflow_trio.server import ServedRunner, serve_runner

    started: list[object] = []

    async def companion(runner: Runner, *, task_status: trio.TaskStatus[str]) -> None:
        started.append(runner)
        task_status.started("companion ready")
        await trio.sleep_forever()

    config = af.Config.from_mapping({"llm": {"provider": "fake"}})
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            served: ServedRunner = await nursery.start(
                functools.partial(serve_runner, config, AGENTS, port=0, companions=[companion])
            )
            assert served.port > 0 and served.url == f"http://127.0.0.1:{served.port}"
            assert served.target == "in-process fake provider"
            assert served.companions == ("companion ready",) and started == [served.runner]
            assert served.runner.metrics is not None and served.runner.llm is not None
            async with httpx2.AsyncClient(base_url=served.url, timeout=TIMEOUT) as client:
                reply = await client.post("/v1/events", json={"type": "echo", "data": {"q": 2}})
                assert reply.status_code == 200
                assert reply.json()["output"] == {"echo": {"q": 2}, "trace": None}
                metrics = (await client.get("/metrics")).text
                assert 'agent_requests_total{agent_name="echo",status="succeeded"} 1.0' in metrics
            nursery.cancel_scope.cancel()


async def test_serve_runner_refuses_a_remote_host_and_names_a_busy_port() -> None:
    from agentflow_trio.server import serve_runner

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            with pytest.raises(af.ConfigError, match="allow_remote"):
                await nursery.start(functools.partial(serve_runner, None, AGENTS, host="0.0.0.0"))
            busy = trio.socket.socket()
            await busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            with busy, pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
                await nursery.start(functools.partial(serve_runner, None, AGENTS, port=port))


# A tool-calling transcript in the OpenAI chat shape, keys in the order the wire writes them
# (role, content, name, tool_calls, tool_call_id); argument text kept with its own spacing.
TRANSCRIPT: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris and Oslo?", "name": "ana"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_p",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":  "Paris"}'},
            },
            {
                "id": "call_o",
                "type": "function",
                "function": {"name": "weather", "arguments": '{ "city": "Oslo" }'},
            },
        ],
    },
    {"role": "tool", "content": '{"temp_c":18}', "name": "weather", "tool_call_id": "call_p"},
    {"role": "tool", "content": '{"temp_c":-3}', "tool_call_id": "call_o"},
    {"role": "assistant", "content": "Paris 18C, Oslo -3C."},
    {"role": "user", "content": "And tomorrow?"},
]


async def test_a_posted_tool_transcript_reaches_the_model_as_the_openai_sdk_sends_it() -> None:
    import openai

    from agentflow_trio.config import RetryConfig
    from agentflow_trio.llm import LLMClient, open_provider
    from agentflow_trio.mockllm import MockReply, open_mock_llm
    from agentflow_trio.testing import mock_llm_config
    from agentflow_trio.tools import ToolRegistry, tool, tool_agent

    @tool
    def weather(city: str) -> dict[str, Any]:
        """The weather in a city."""
        return {"temp_c": 0}

    agent = tool_agent(tools=ToolRegistry([weather]))
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm() as mock,
            open_provider(mock_llm_config(mock, retry=RetryConfig(enabled=False))) as provider,
            Runner(agents={"ask": agent}, llm=LLMClient(provider)) as runner,
            served(runner) as client,
        ):
            mock.script(MockReply(text="Same."))
            body = {"type": "ask", "data": {"messages": TRANSCRIPT}}
            answer = await client.post("/v1/events", json=body)
            assert answer.status_code == 200 and answer.json()["outcome"] == "succeeded"
            ours = mock.received[-1]["messages"]

            sdk = openai.OpenAI(base_url=mock.url + "/v1", api_key="k", max_retries=0)
            with sdk:
                await trio.to_thread.run_sync(
                    lambda: sdk.chat.completions.create(model="mock-gpt", messages=TRANSCRIPT)
                )
            theirs = mock.received[-1]["messages"]

            # The transcript the agent answered with, posted back as is, is the same wire.
            again = answer.json()["output"]["transcript"]
            mock.script(MockReply(text="Same."))
            await client.post("/v1/events", json={"type": "ask", "data": {"messages": again}})
            round_trip = mock.received[-1]["messages"]

    assert theirs == TRANSCRIPT  # the SDK sends the transcript as given
    assert json.dumps(ours) == json.dumps(theirs)  # same values, same key order
    assert round_trip[: len(ours)] == ours  # plus the assistant's own answer
    assert round_trip[-1] == {"role": "assistant", "content": "Same."}
