"""``serve`` streaming an event as Server-Sent Events, and the usage fields of its answers.

Rules: the server and the mock LLM bind 127.0.0.1 port 0 and are cancelled by the test
that started them; every test uses the real clock under an absolute ``trio.fail_after``;
requests go through a real HTTP client (httpx2) or a raw socket. Order is proven by the
mock's own behaviour (a ``stall`` fault sends only the first chunks until the client
leaves), never by timing.
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

import agentflow_trio as af
from agentflow_trio.config import RetryConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.mockllm import Fault, MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.progress import PartialOutput, current_sink
from agentflow_trio.runner import Runner
from agentflow_trio.server import make_app, serve
from agentflow_trio.testing import mock_llm_config
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

TIMEOUT = 10
REPLY = "It is eighteen degrees in Oslo and sunny all day."
OSLO_CALL = MockReply(tool_calls=(MockToolCall("weather", {"city": "Oslo"}, id="w1"),))
NEVER_ASKED = MockReply(text="never asked for")
STALLED = MockReply(text=REPLY, fault=Fault("stall", after_chunks=2))
"""The role chunk and the first piece of ``REPLY``, then nothing until the client leaves."""


@tool
async def weather(city: str) -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temp_c": 18}


@asynccontextmanager
async def served_agent(
    agent: af.Agent | None = None, config: af.Config | None = None, **mock_options: Any
) -> AsyncIterator[tuple[MockLLM, Runner, httpx2.AsyncClient]]:
    """The mock LLM, a runner with ``agent`` as ``"ask"`` on it (by default a tool agent
    with the ``weather`` tool), served over HTTP."""
    if agent is None:
        agent = tool_agent(tools=ToolRegistry([weather]))
    async with (
        open_mock_llm(**mock_options) as mock,
        open_provider(mock_llm_config(mock, retry=RetryConfig(enabled=False))) as provider,
        Runner(config, agents={"ask": agent}, llm=LLMClient(provider)) as runner,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(functools.partial(serve, make_app(runner), port=0))
        base = f"http://127.0.0.1:{port}"
        async with httpx2.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
            yield mock, runner, client
        nursery.cancel_scope.cancel()


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Parse SSE: one ``{"id", "event", "data"}`` per event (data decoded as JSON)."""
    fields: dict[str, str] = {}
    async for line in lines:
        if not line:
            if fields:
                yield {
                    "id": int(fields["id"]),
                    "event": fields["event"],
                    "data": json.loads(fields["data"]),
                }
                fields = {}
            continue
        name, _, value = line.partition(": ")
        assert name not in fields, f"field {name} twice in one event"
        fields[name] = value


def ended(runner: Runner) -> trio.MemoryReceiveChannel[af.AgentResult]:
    """The results of the runner's events, as they end (the after_event hook)."""
    send, receive = trio.open_memory_channel[af.AgentResult](16)
    runner.hooks.after_event.append(lambda event, result: send.send_nowait(result))
    return receive


async def test_a_streamed_event_sends_text_tool_calls_and_the_result_last() -> None:
    body = {"type": "ask", "data": {"query": "Weather in Oslo?"}}
    with trio.fail_after(TIMEOUT):
        async with served_agent(stream_chunks=6) as (mock, _runner, client):
            script = (OSLO_CALL, MockReply(text=REPLY))
            mock.script(*script)
            async with client.stream("POST", "/v1/events?stream=true", json=body) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["cache-control"] == "no-cache"
                events = [e async for e in sse_events(response.aiter_lines())]
            stats = mock.stats()
            mock.script(*script)
            plain = (await client.post("/v1/events", json=body)).json()

    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert kinds.index("tool_call_started") < kinds.index("tool_call_finished")
    deltas = [e["data"] for e in events if e["event"] == "text_delta"]
    assert "".join(d["text"] for d in deltas) == REPLY and len(deltas) > 1
    assert kinds.index("tool_call_finished") < kinds.index("text_delta")
    started, finished = (e["data"] for e in events if e["event"].startswith("tool_call"))
    assert started == {"call_id": "w1", "name": "weather", "arguments": {"city": "Oslo"}}
    assert finished["status"] == "ok" and finished["output"] == {"city": "Oslo", "temp_c": 18}
    assert finished["error"] is None and finished["duration"] >= 0

    result = events[-1]["data"]
    assert result["outcome"] == "succeeded" and result["output"]["text"] == REPLY
    assert result.keys() == plain.keys()  # the same JSON as the non-streamed answer
    for mine, theirs in zip(
        result["output"]["tool_results"], plain["output"]["tool_results"], strict=False
    ):
        assert {**mine, "duration": 0} == {**theirs, "duration": 0}
    usage = result["usage"]  # what the mock reported, summed over both model calls
    assert usage["requests"] == 2 == stats.streams
    assert usage["input_tokens"] == stats.prompt_tokens
    assert usage["output_tokens"] == stats.completion_tokens


async def test_the_first_delta_comes_before_the_last_chunk_and_leaving_cancels_the_event() -> None:
    # The mock sends the first two SSE events of the reply (its role chunk and the first
    # piece of text), then nothing more until the client leaves: whatever text the caller
    # sees came before the model's last chunk was sent.
    with trio.fail_after(TIMEOUT):
        async with served_agent(stream_chunks=8) as (mock, runner, client):
            results = ended(runner)
            mock.script(STALLED)
            body = {"type": "ask", "data": {"query": "Weather?"}}
            headers = {"accept": "text/event-stream"}
            async with client.stream("POST", "/v1/events", json=body, headers=headers) as response:
                assert response.status_code == 200
                async for event in sse_events(response.aiter_lines()):
                    assert event["event"] == "text_delta"
                    first = event["data"]["text"]
                    break
                assert mock.stats().faults == {"stall": 1}  # the stream is held by the mock
                assert runner.statistics().running_events == 1
            # The client left mid-stream: the event is cancelled, its model stream closed.
            result = await results.receive()
            assert mock.stats().requests == 1
    assert first and REPLY.startswith(first) and first != REPLY
    assert result.outcome is af.Outcome.CANCELLED


async def test_leaving_while_a_tool_runs_cancels_it_and_the_next_model_call_is_never_sent() -> None:
    tool_cancelled = trio.Event()

    @tool
    async def lookup(q: str) -> dict[str, Any]:
        """Never answers."""
        try:
            await trio.sleep_forever()
        finally:
            tool_cancelled.set()

    agent = tool_agent(tools=ToolRegistry([lookup]))
    with trio.fail_after(TIMEOUT):
        async with served_agent(agent) as (mock, runner, client):
            results = ended(runner)
            mock.script(
                MockReply(tool_calls=(MockToolCall("lookup", {"q": "x"}, id="l1"),)),
                NEVER_ASKED,
            )
            body = {"type": "ask", "data": {"query": "look it up"}}
            async with client.stream("POST", "/v1/events?stream=1", json=body) as response:
                async for event in sse_events(response.aiter_lines()):
                    if event["event"] == "tool_call_started":
                        break
            await tool_cancelled.wait()
            result = await results.receive()
            assert mock.stats().requests == 1  # the model was not asked again
    assert result.outcome is af.Outcome.CANCELLED


async def test_a_raw_socket_client_that_hangs_up_cancels_the_event() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_agent(stream_chunks=8) as (mock, runner, client):
            results = ended(runner)
            mock.script(STALLED)
            port = client.base_url.port
            body = b'{"type": "ask", "data": {"query": "hi"}}'
            request = (
                b"POST /v1/events?stream=true HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            ) % (len(body), body)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(request)
            received = b""
            while b"event: text_delta" not in received:
                received += await stream.receive_some(4096)
            await stream.aclose()
            result = await results.receive()
    head = received.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"transfer-encoding: chunked" in head
    assert result.outcome is af.Outcome.CANCELLED and mock.stats().requests == 1


async def http10_post(port: int, path: str, body: bytes) -> bytes:
    """POST ``body`` as an HTTP/1.0 client (what nginx sends upstream by default) on a raw
    socket; everything the server sends until it closes the connection."""
    request = (
        b"POST %s HTTP/1.0\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    ) % (path.encode(), len(body), body)
    received = b""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        while data := await stream.receive_some(65536):
            received += data
    return received


async def lines_of(body: bytes) -> AsyncIterator[str]:
    """``body``'s lines, as ``sse_events`` reads them."""
    for line in body.decode().split("\n"):
        yield line


async def test_an_http10_stream_ends_with_the_result_and_the_connection_closes() -> None:
    # HTTP/1.0 has no chunks: the body ends when the server closes the connection. The
    # server learns the client is done inside the write of the last event; that write
    # must not be cancelled half-way, or the socket stays open and the client hangs.
    body = b'{"type": "ask", "data": {"query": "Weather in Oslo?"}}'
    with trio.fail_after(TIMEOUT):
        async with served_agent(stream_chunks=6) as (mock, runner, client):
            results = ended(runner)
            port = client.base_url.port
            mock.script(OSLO_CALL, MockReply(text=REPLY))
            answer = await http10_post(port, "/v1/events?stream=true", body)
            result = await results.receive()
            events = [e async for e in sse_events(lines_of(answer.partition(b"\r\n\r\n")[2]))]

    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"connection: close" in head
    assert b"transfer-encoding" not in head  # HTTP/1.0: the close ends the body
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1 and "text_delta" in kinds
    assert events[-1]["data"]["outcome"] == "succeeded" == result.outcome.value
    assert events[-1]["data"]["output"]["text"] == REPLY


# ------------------------------------------------------------------ limits and usage


async def test_body_limits_end_the_event_usage_limit_exceeded_with_its_usage() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_agent() as (mock, _runner, client):
            mock.script(OSLO_CALL, NEVER_ASKED)
            body = {"type": "ask", "data": {"query": "Oslo?"}, "limits": {"max_requests": 1}}
            answer = await client.post("/v1/events", json=body)
            stats = mock.stats()
    assert answer.status_code == 200
    result = answer.json()
    assert result["outcome"] == "usage_limit_exceeded"
    assert result["error"]["type"] == "UsageLimitExceeded"
    assert "max_requests" in result["error"]["message"]
    assert stats.requests == 1  # the second call was refused before it was sent
    assert result["usage"]["requests"] == 1
    assert result["usage"]["input_tokens"] == stats.prompt_tokens


async def test_body_limits_only_tighten_the_servers_own() -> None:
    config = af.Config.from_mapping({"limits": {"max_requests": 1}})
    with trio.fail_after(TIMEOUT):
        async with served_agent(config=config) as (mock, _runner, client):
            mock.script(OSLO_CALL, NEVER_ASKED)
            loose = {"type": "ask", "data": {"query": "Oslo?"}, "limits": {"max_requests": 50}}
            answer = (await client.post("/v1/events", json=loose)).json()
            assert mock.stats().requests == 1
    assert answer["outcome"] == "usage_limit_exceeded"


async def test_a_streamed_event_over_its_limit_ends_with_that_result() -> None:
    with trio.fail_after(TIMEOUT):
        async with served_agent() as (mock, _runner, client):
            mock.script(OSLO_CALL, NEVER_ASKED)
            body = {"type": "ask", "data": {"query": "Oslo?"}, "limits": {"max_requests": 1}}
            async with client.stream("POST", "/v1/events?stream=true", json=body) as response:
                events = [e async for e in sse_events(response.aiter_lines())]
    assert [e["event"] for e in events][-3:] == [
        "tool_call_started",
        "tool_call_finished",
        "result",
    ]
    assert events[-1]["data"]["outcome"] == "usage_limit_exceeded"
    assert events[-1]["data"]["usage"]["requests"] == 1


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ([1], "limits: expected an object of limits, got list"),
        ({"max_request": 1}, "limits.max_request: unknown limit 'max_request'"),
        ({"max_cost": -1}, "limits.max_cost: expected a number between 0"),
        ({"max_total_tokens": 1.5}, "limits.max_total_tokens: expected an integer"),
        ({"max_requests": True}, "limits.max_requests: expected an integer"),
    ],
)
async def test_bad_limits_get_400_naming_the_key(limits: Any, reason: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with served_agent() as (_, runner, c):
            body = {"type": "ask", "data": {"query": "x"}, "limits": limits}
            answer = await c.post("/v1/events?stream=true", json=body)
            assert answer.status_code == 400
            assert reason in answer.json()["error"]
            both = await c.post("/v1/events?stream=1&async=1", json={"type": "ask"})
            assert both.status_code == 400 and "not both" in both.json()["error"]
            assert runner.statistics().accepted == 0


async def test_an_item_json_cannot_carry_is_an_error_event_and_the_stream_goes_on() -> None:
    @af.agent
    async def odd(ctx: af.Context, event: af.Event) -> Any:
        sink = current_sink()
        assert sink is not None
        await sink.send(PartialOutput({"x": float("nan")}))
        await sink.send(PartialOutput({"x": 1}))
        return {"bytes": b"\x00"}

    with trio.fail_after(TIMEOUT):
        async with served_agent(odd) as (_, _runner, client):
            async with client.stream("POST", "/v1/events?stream=true", json={"type": "ask"}) as r:
                events = [e async for e in sse_events(r.aiter_lines())]
    assert [e["event"] for e in events] == ["error", "partial_output", "error"]
    assert "partial_output.value.x is nan" in events[0]["data"]["error"]
    assert events[1]["data"] == {"value": {"x": 1}}
    last = events[2]["data"]
    assert "result.output.bytes is of type bytes" in last["error"]
    assert last["outcome"] == "succeeded" and last["event"] == "result"


@pytest.mark.parametrize("text", ["plain", 'quote " and \n newline', "lone \ud800 surrogate", ""])
def test_a_text_delta_frame_is_one_data_line_of_strict_json(text: str) -> None:
    from agentflow_trio.progress import TextDelta
    from agentflow_trio.server._sse import item_frame

    body, last = item_frame(5, TextDelta(text, "m"))
    head, data = body.split(b"\ndata: ")
    assert head == b"id: 5\nevent: text_delta" and data.endswith(b"\n\n") and not last
    assert b"\n" not in data[:-2]
    assert json.loads(data) == {"text": text, "model": "m"}


async def test_a_refused_stream_request_is_answered_json_before_any_event() -> None:
    sse = {"accept": "text/event-stream"}
    with trio.fail_after(TIMEOUT):
        async with served_agent() as (_, runner, client):
            plain = {**sse, "content-type": "text/plain"}
            wrong_type = await client.post("/v1/events", content=b"{}", headers=plain)
            unknown = await client.post("/v1/events", json={"type": "nobody"}, headers=sse)
            accepted = runner.statistics().accepted
    assert wrong_type.status_code == 415 and unknown.status_code == 404
    for answer in (wrong_type, unknown):
        assert answer.headers["content-type"] == "application/json"
        assert "error" in answer.json()
    assert accepted == 0
