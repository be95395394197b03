"""The mock LLM server, over real HTTP.

Rules of this module (as trio-websocket's tests): loopback only, port 0, the real clock
(real sockets), and every trio test body under an absolute ``trio.fail_after``. The
official ``openai`` SDK tests run the mock in a background thread (``trio.run``) and use
the SDK's own timeout. Streams are parsed by hand here, so a protocol slip shows up.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import attrs
import httpx2
import openai
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.errors import ConfigError
from agentflow_trio.mockllm import (
    MockLLM,
    MockLLMConfig,
    MockLLMStats,
    MockReply,
    MockToolCall,
    _payloads,
    open_mock_llm,
)
from agentflow_trio.mockllm import server as mock_llm_module

TIMEOUT = 10
CHAT = "/v1/chat/completions"
PARIS = "Paris it is."
HELLO = [{"role": "user", "content": "what is the capital of France"}]
WEATHER = MockToolCall("get_weather", {"city": "Paris", "unit": "C"}, id="call_w1")


@asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[tuple[MockLLM, httpx2.AsyncClient]]:
    async with (
        open_mock_llm(**overrides) as mock,
        httpx2.AsyncClient(base_url=mock.url, timeout=TIMEOUT) as client,
    ):
        yield mock, client


def sse_events(text: str) -> list[Any]:
    """The ``data:`` payloads of a server-sent event stream: JSON objects, or "[DONE]"."""
    assert text.endswith("\n\n"), "an SSE stream ends with a blank line"
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def ndjson_lines(text: str) -> list[Any]:
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def streamed_text(chunks: list[Any]) -> str:
    return "".join(
        chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"]
    )


async def raw_exchange(port: int, request: bytes, *, until: bytes | None = None) -> bytes:
    """Send ``request`` on a fresh socket; read until ``until`` is seen or the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while until is None or until not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
        return data


# -- OpenAI chat ------------------------------------------------------------------------


async def test_chat_completion_default_reply() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(reply_text=PARIS) as (mock, client):
            response = await client.post(CHAT, json={"model": "m-1", "messages": HELLO})
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            body = response.json()
            assert body["object"] == "chat.completion"
            assert body["id"].startswith("chatcmpl-")
            assert isinstance(body["created"], int)
            assert body["model"] == "m-1"
            choice = body["choices"][0]
            assert choice["message"] == {
                "role": "assistant",
                "content": PARIS,
                "refusal": None,
            }
            assert choice["finish_reason"] == "stop"
            usage = body["usage"]
            assert usage["prompt_tokens"] == len(HELLO[0]["content"].split())
            assert usage["completion_tokens"] == len(PARIS.split())
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            assert mock.received[-1] == {"model": "m-1", "messages": HELLO}
            assert mock.received.maxlen == mock_llm_module.RECEIVED_LIMIT


@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_stream_is_server_sent_events(include_usage: bool) -> None:
    text = "one two three four five six seven"
    with trio.fail_after(TIMEOUT):
        async with serving(reply_text=text, stream_chunks=3) as (mock, client):
            request = {
                "messages": HELLO,
                "stream": True,
                "stream_options": {"include_usage": include_usage},
            }
            response = await client.post(CHAT, json=request)
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["transfer-encoding"] == "chunked"
            events = sse_events(response.text)
            assert events[-1] == "[DONE]"
            chunks = events[:-1]
            assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
            assert len({chunk["id"] for chunk in chunks}) == 1
            content = [
                c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")
            ]
            assert len(content) == 3
            assert content[0]["choices"][0]["delta"]["role"] == "assistant"
            assert all("role" not in c["choices"][0]["delta"] for c in content[1:])
            assert streamed_text(chunks) == text
            finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
            assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
            usage_chunks = [c for c in chunks if not c["choices"]]
            if include_usage:
                assert usage_chunks == [chunks[-1]]
                assert chunks[-1]["usage"]["completion_tokens"] == len(text.split())
            else:
                assert usage_chunks == []
            assert mock.stats().streams == 1


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40), chunks=st.integers(1, 12), usage=st.booleans())
def test_stream_events_reassemble_the_reply(text: str, chunks: int, usage: bool) -> None:
    completion = _payloads.Completion("chatcmpl-x", 0, "m", text, (), 1, 1)
    raw = b"".join(_payloads.chat_stream_events(completion, chunks, usage)).decode()
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    pieces = [e for e in events[:-1] if e["choices"] and e["choices"][0]["delta"].get("content")]
    assert streamed_text(events[:-1]) == text
    assert len(pieces) == min(chunks, len(text))
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum(not e["choices"] for e in events[:-1]) == int(usage)


async def test_scripted_tool_call_then_default_reply() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            mock.script(MockReply(tool_calls=(WEATHER,)))
            response = await client.post(CHAT, json={"messages": HELLO, "tools": tools})
            choice = response.json()["choices"][0]
            assert choice["finish_reason"] == "tool_calls"
            (call,) = choice["message"]["tool_calls"]
            assert call["id"] == "call_w1"
            assert call["type"] == "function"
            assert call["function"]["name"] == "get_weather"
            assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "unit": "C"}
            assert choice["message"]["content"] is None
            assert mock.received[-1]["tools"] == tools
            # The script is consumed: the next request gets the default reply.
            again = (await client.post(CHAT, json={"messages": HELLO})).json()
            assert again["choices"][0]["message"]["content"] == mock.config.reply_text
            assert mock.stats().scripted == 1


async def test_scripted_tool_calls_stream_as_openai_deltas() -> None:
    second = MockToolCall("lookup", {"query": "trio nurseries", "limit": 3})
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            mock.script(MockReply(text="Let me check.", tool_calls=(WEATHER, second)))
            response = await client.post(CHAT, json={"messages": HELLO, "stream": True})
            chunks = sse_events(response.text)[:-1]
            assert streamed_text(chunks) == "Let me check."
            calls: dict[int, dict[str, str]] = {}
            for chunk in chunks:
                for delta in chunk["choices"][0]["delta"].get("tool_calls", []):
                    call = calls.setdefault(delta["index"], {"arguments": ""})
                    if "id" in delta:
                        assert "id" not in call, "id and name come once, in the first delta"
                        call["id"] = delta["id"]
                        call["name"] = delta["function"]["name"]
                    call["arguments"] += delta["function"]["arguments"]
            assert sorted(calls) == [0, 1]
            assert calls[0]["id"] == "call_w1"
            assert calls[0]["name"] == "get_weather"
            assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": "C"}
            assert calls[1]["id"].startswith("call_")
            assert json.loads(calls[1]["arguments"]) == {"query": "trio nurseries", "limit": 3}
            assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_results_get_an_answer_quoting_them() -> None:
    messages = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "22C and sunny"},
    ]
    with trio.fail_after(TIMEOUT):
        async with serving() as (_, client):
            body = (await client.post(CHAT, json={"messages": messages})).json()
            choice = body["choices"][0]
            assert "22C and sunny" in choice["message"]["content"]
            assert choice["finish_reason"] == "stop"
            assert "tool_calls" not in choice["message"]
            # A new user turn after the tool round gets the plain reply again.
            later = [*messages, {"role": "assistant", "content": "ok"}, *HELLO]
            body = (await client.post(CHAT, json={"messages": later})).json()
            assert "22C" not in body["choices"][0]["message"]["content"]


async def test_script_is_fifo_across_dialects() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            mock.script(MockReply(text="first"), MockReply(text="second"))
            first = await client.post(CHAT, json={"messages": HELLO})
            second = await client.post("/api/chat", json={"messages": HELLO, "stream": False})
            assert first.json()["choices"][0]["message"]["content"] == "first"
            assert second.json()["message"]["content"] == "second"


async def test_scripted_raw_body_status_and_headers() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            mock.script(
                MockReply(status=502, body="<html>bad gateway</html>", content_type="text/html"),
                MockReply(body='{"choices": [', headers={"x-mock": "yes"}),
                MockReply(status=429, headers={"retry-after": "7"}),
                MockReply(status=503),
            )
            html = await client.post(CHAT, json={"messages": HELLO})
            assert (html.status_code, html.text) == (502, "<html>bad gateway</html>")
            assert html.headers["content-type"] == "text/html"
            broken = await client.post(CHAT, json={"messages": HELLO})
            assert broken.status_code == 200
            assert broken.text == '{"choices": ['
            assert broken.headers["x-mock"] == "yes"
            limited = await client.post(CHAT, json={"messages": HELLO})
            assert limited.status_code == 429
            assert limited.headers["retry-after"] == "7"
            assert limited.json()["error"]["type"] == "requests"
            unavailable = await client.post(CHAT, json={"messages": HELLO})
            assert unavailable.status_code == 503
            assert unavailable.json()["error"]["type"] == "server_error"
            stats = mock.stats()
            assert stats.scripted == 4
            assert stats.chat == 0  # raw bodies and errors are not generated completions
            assert stats.by_status == {502: 1, 200: 1, 429: 1, 503: 1}


async def test_truncated_stream_stops_without_done_and_closes() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(stream_chunks=6) as (mock, _):
            mock.script(MockReply(text="a fairly long answer to cut", truncate_stream=True))
            body = json.dumps({"messages": HELLO, "stream": True}).encode()
            request = b"POST %b HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (
                CHAT.encode(),
                len(body),
                body,
            )
            data = await raw_exchange(mock.port, request)  # reads until the server closes
            head, _, rest = data.partition(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head
            assert b"connection: close" in head
            assert b"data: {" in rest
            assert b"[DONE]" not in rest
            assert not rest.endswith(b"0\r\n\r\n")


async def test_scripted_delay_and_configured_latency_are_slept() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(latency=0.1) as (mock, client):
            mock.script(MockReply(text="slow", delay=0.1))
            start = trio.current_time()
            await client.post(CHAT, json={"messages": HELLO})
            assert trio.current_time() - start >= 0.2  # a sleep never ends early


# -- embeddings and models --------------------------------------------------------------


async def test_openai_embeddings_are_deterministic_unit_vectors() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(embedding_dim=12) as (mock, client):
            listed = (
                await client.post("/v1/embeddings", json={"input": ["alpha", "beta", "alpha"]})
            ).json()
            assert listed["object"] == "list"
            assert listed["model"] == mock.config.model
            assert [item["index"] for item in listed["data"]] == [0, 1, 2]
            vectors = [item["embedding"] for item in listed["data"]]
            assert all(len(vector) == 12 for vector in vectors)
            assert vectors[0] == vectors[2] != vectors[1]
            assert math.isclose(sum(v * v for v in vectors[1]), 1.0, rel_tol=1e-4)
            single = (await client.post("/v1/embeddings", json={"input": "alpha"})).json()
            assert single["data"][0]["embedding"] == vectors[0]
            assert listed["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
            packed = await client.post(
                "/v1/embeddings",
                json={"input": "alpha", "encoding_format": "base64", "dimensions": 4},
            )
            raw = base64.b64decode(packed.json()["data"][0]["embedding"])
            assert len(struct.unpack("<4f", raw)) == 4
            assert mock.stats().embeddings == 3


async def test_models_lists_the_configured_model() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(model="mock-large") as (_, client):
            body = (await client.get("/v1/models")).json()
            assert body["object"] == "list"
            assert [model["id"] for model in body["data"]] == ["mock-large"]


# -- Azure ------------------------------------------------------------------------------


async def test_azure_paths_need_api_version_and_api_key() -> None:
    base = "/openai/deployments/gpt4o-prod"
    with trio.fail_after(TIMEOUT):
        async with serving() as (_, client):
            ok = await client.post(
                f"{base}/chat/completions?api-version=2024-06-01",
                json={"messages": HELLO},
                headers={"api-key": "k"},
            )
            assert ok.status_code == 200
            assert ok.json()["model"] == "gpt4o-prod"  # no model in the body: the deployment
            assert ok.json()["choices"][0]["message"]["role"] == "assistant"
            embedded = await client.post(
                f"{base}/embeddings?api-version=2024-06-01",
                json={"input": "x"},
                headers={"api-key": "k"},
            )
            assert embedded.json()["data"][0]["object"] == "embedding"
            missing_version = await client.post(
                f"{base}/chat/completions", json={"messages": HELLO}, headers={"api-key": "k"}
            )
            assert missing_version.status_code == 400
            error = missing_version.json()["error"]
            assert error["code"] == "MissingApiVersionParameter"
            assert "api-version" in error["message"]
            missing_key = await client.post(
                f"{base}/chat/completions?api-version=2024-06-01", json={"messages": HELLO}
            )
            assert missing_key.status_code == 401
            assert "api-key" in missing_key.json()["error"]["message"]


# -- Ollama -----------------------------------------------------------------------------


async def test_ollama_chat_streams_ndjson_by_default() -> None:
    text = "Bonjour from the mock"
    with trio.fail_after(TIMEOUT):
        async with serving(reply_text=text, stream_chunks=4) as (_, client):
            response = await client.post("/api/chat", json={"model": "llama3", "messages": HELLO})
            assert response.headers["content-type"] == "application/x-ndjson"
            lines = ndjson_lines(response.text)
            assert [line["done"] for line in lines] == [False] * 4 + [True]
            assert all(line["model"] == "llama3" and line["created_at"] for line in lines)
            assert "".join(line["message"]["content"] for line in lines) == text
            assert all(line["message"]["role"] == "assistant" for line in lines)
            final = lines[-1]
            assert final["done_reason"] == "stop"
            assert final["prompt_eval_count"] == len(HELLO[0]["content"].split())
            assert final["eval_count"] == len(text.split())


async def test_ollama_chat_non_streaming_with_tool_calls() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            mock.script(MockReply(tool_calls=(WEATHER,)))
            body = (
                await client.post("/api/chat", json={"messages": HELLO, "stream": False})
            ).json()
            assert body["done"] is True
            assert body["message"]["tool_calls"] == [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}
            ]
            mock.script(MockReply(tool_calls=(WEATHER,)))
            streamed = ndjson_lines((await client.post("/api/chat", json={"messages": HELLO})).text)
            calls = [c for line in streamed for c in line["message"].get("tool_calls", [])]
            assert calls == body["message"]["tool_calls"]


async def test_ollama_embed() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(embedding_dim=5) as (_, client):
            one = (await client.post("/api/embed", json={"model": "e", "input": "hi"})).json()
            many = (await client.post("/api/embed", json={"input": ["hi", "there"]})).json()
            assert one["model"] == "e"
            assert len(one["embeddings"]) == 1 and len(one["embeddings"][0]) == 5
            assert many["embeddings"][0] == one["embeddings"][0] != many["embeddings"][1]


# -- faults -----------------------------------------------------------------------------


async def test_error_rate_answers_500_json() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(error_rate=1.0) as (mock, client):
            response = await client.post(CHAT, json={"messages": HELLO})
            assert response.status_code == 500
            assert response.json()["error"]["type"] == "server_error"
            ollama = await client.post("/api/chat", json={"messages": HELLO})
            assert ollama.status_code == 500
            assert isinstance(ollama.json()["error"], str)
            stats = mock.stats()
            assert (stats.errors, stats.chat, stats.by_status) == (2, 0, {500: 2})
            # Control endpoints are never faulted.
            assert (await client.get("/stats")).status_code == 200


async def test_rate_limit_answers_429_with_retry_after() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(rate_limit_rate=1.0, retry_after=1.5) as (mock, client):
            response = await client.post(CHAT, json={"messages": HELLO})
            assert response.status_code == 429
            assert response.headers["retry-after"] == "2"  # whole seconds, rounded up
            assert response.headers["retry-after-ms"] == "1500"
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
            assert mock.stats().rate_limited == 1


async def test_fault_rates_split_traffic_and_are_counted() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(error_rate=0.3, rate_limit_rate=0.3, seed=7) as (mock, client):
            statuses = [
                (await client.post(CHAT, json={"messages": HELLO})).status_code for _ in range(90)
            ]
            stats = mock.stats()
            assert {200, 429, 500} == set(statuses)
            assert stats.errors == statuses.count(500)
            assert stats.rate_limited == statuses.count(429)
            assert stats.chat == statuses.count(200)


async def test_config_can_be_replaced_while_serving() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            assert (await client.post(CHAT, json={"messages": HELLO})).status_code == 200
            mock.config = attrs.evolve(mock.config, error_rate=1.0)
            assert (await client.post(CHAT, json={"messages": HELLO})).status_code == 500
            with pytest.raises(TypeError):
                mock.config = {"error_rate": 0}


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "needle"),
    [
        ("POST", "/v1/nothing", b"{}", 404, "/v1/nothing"),
        ("GET", CHAT, b"", 405, "POST"),
        ("POST", CHAT, b'{"messages": [', 400, "JSON"),
        ("POST", CHAT, b"[1, 2]", 400, "object"),
        ("POST", CHAT, b'{"model": "x"}', 400, "messages"),
        ("POST", "/v1/embeddings", b'{"input": 3}', 400, "input"),
        ("POST", "/api/chat", b"not json", 400, "JSON"),
    ],
)
async def test_bad_requests_get_json_errors(
    method: str, path: str, content: bytes, status: int, needle: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            response = await client.request(method, path, content=content)
            assert response.status_code == status
            error = response.json()["error"]
            message = error if isinstance(error, str) else error["message"]
            assert needle in message
            assert mock.stats().by_status == {status: 1}


async def test_body_over_the_limit_is_413() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(max_body_bytes=1024) as (mock, client):
            big = {"messages": [{"role": "user", "content": "x" * 4096}]}
            response = await client.post(CHAT, json=big)
            assert response.status_code == 413
            assert response.headers["connection"] == "close"
            assert (await client.post(CHAT, json={"messages": HELLO})).status_code == 200
            assert mock.stats().by_status == {413: 1, 200: 1}


async def test_malformed_http_is_400_and_closes() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            data = await raw_exchange(mock.port, b"NOT HTTP AT ALL\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 400 ")
            assert b"connection: close" in data


def test_non_loopback_bind_is_refused() -> None:
    with pytest.raises(ConfigError, match="allow_remote"):
        MockLLMConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="non-loopback"):
        attrs.evolve(MockLLMConfig(), host="192.0.2.10")
    assert MockLLMConfig(host="0.0.0.0", allow_remote=True).allow_remote
    assert MockLLMConfig(host="localhost").host == "localhost"
    assert MockLLMConfig(host="::1").host == "::1"


@pytest.mark.parametrize(
    "bad",
    [
        {"latency": -1.0},
        {"error_rate": 1.5},
        {"error_rate": 0.7, "rate_limit_rate": 0.7},
        {"stream_chunks": 0},
        {"embedding_dim": 0},
        {"port": 70000},
    ],
)
def test_bad_config_values_raise_config_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        MockLLMConfig(**bad)
    assert info.value.key in bad


# -- HTTP plumbing ----------------------------------------------------------------------


async def test_chunked_request_body_and_keep_alive() -> None:
    async def body() -> AsyncIterator[bytes]:
        payload = json.dumps({"messages": HELLO}).encode()
        for start in range(0, len(payload), 7):
            yield payload[start : start + 7]

    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            for _ in range(3):
                response = await client.post(CHAT, content=body())
                assert response.status_code == 200
            assert mock.received[-1] == {"messages": HELLO}
            assert mock.stats().connections == 1  # one kept-alive connection


async def test_expect_100_continue() -> None:
    body = json.dumps({"messages": HELLO}).encode()
    head = b"POST %b HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: %d\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            stream = await trio.open_tcp_stream("127.0.0.1", mock.port)
            async with stream:
                await stream.send_all(head % (CHAT.encode(), len(body)))
                interim = await stream.receive_some(1024)
                assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
                await stream.send_all(body)
                answer = await stream.receive_some(65536)
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


# -- statistics and lifetime ------------------------------------------------------------


async def test_stats_count_every_request_exactly() -> None:
    per_client, clients = 25, 4
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:

            async def hammer(index: int) -> None:
                async with httpx2.AsyncClient(base_url=mock.url) as client:
                    for n in range(per_client):
                        if n % 5 == 4:
                            await client.post("/v1/embeddings", json={"input": "x"})
                        elif n % 5 == 3:
                            await client.get("/missing")
                        else:
                            await client.post(CHAT, json={"messages": HELLO, "stream": n % 2 == 0})

            async with trio.open_nursery() as nursery:
                for index in range(clients):
                    nursery.start_soon(hammer, index)
            stats = mock.stats()
            total = per_client * clients
            assert stats.requests == total
            assert sum(stats.by_path.values()) == total
            assert stats.by_path["/missing"] == total // 5
            assert stats.by_path["/v1/embeddings"] == total // 5
            assert stats.by_status == {200: total - total // 5, 404: total // 5}
            assert stats.chat == 3 * total // 5
            assert stats.embeddings == total // 5
            async with httpx2.AsyncClient(base_url=mock.url) as client:
                over_http = (await client.get("/stats")).json()
                for racy in ("connections", "open_connections"):  # closes are seen later
                    del over_http[racy]
                assert over_http == {
                    key: value
                    for key, value in stats.to_json().items()
                    if key not in ("connections", "open_connections")
                }  # and /stats itself is not counted
                assert mock.stats().requests == total
                mock.reset_stats()
                assert mock.stats().requests == 0
                assert mock.stats().by_status == {}


async def test_control_api_scripts_and_resets() -> None:
    script = [
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
        {"text": "done", "status": 200},
    ]
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            queued = await client.post("/mock/script", json=script)
            assert queued.json() == {"queued": 2}
            first = (await client.post(CHAT, json={"messages": HELLO})).json()
            call = first["choices"][0]["message"]["tool_calls"][0]["function"]
            assert (call["name"], json.loads(call["arguments"])) == (
                "get_weather",
                {"city": "Oslo"},
            )
            bad = await client.post("/mock/script", json=[{"txet": "typo"}])
            assert bad.status_code == 400
            assert "txet" in bad.json()["error"]["message"]
            assert (await client.post("/mock/reset")).status_code == 200
            assert mock.stats() == MockLLMStats(open_connections=1)
            assert not mock.received
            after = (await client.post(CHAT, json={"messages": HELLO})).json()
            assert after["choices"][0]["message"]["content"] == mock.config.reply_text


async def test_client_disconnect_mid_stream_leaves_server_serving() -> None:
    body = json.dumps({"messages": HELLO, "stream": True}).encode()
    request = b"POST %b HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (
        CHAT.encode(),
        len(body),
        body,
    )
    with trio.fail_after(TIMEOUT):
        async with serving(stream_chunks=50, stream_delay=0.02) as (mock, client):
            first = await raw_exchange(mock.port, request, until=b"data: ")
            assert b"data: " in first  # the stream had started; the socket is now closed
            # The server notices at its next write; poll its counters (real I/O, real clock).
            while mock.stats().disconnects < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
            while mock.stats().open_connections > 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
            response = await client.post(CHAT, json={"messages": HELLO})
            assert response.status_code == 200
            stats = mock.stats()
            assert (stats.disconnects, stats.requests, stats.streams) == (1, 2, 1)


async def test_open_mock_llm_leaves_nothing_running() -> None:
    task = trio.lowlevel.current_task()
    with trio.fail_after(TIMEOUT):
        nurseries_before = list(task.child_nurseries)
        async with open_mock_llm() as mock:
            assert len(task.child_nurseries) == len(nurseries_before) + 1
            port = mock.port
            async with httpx2.AsyncClient() as client:
                assert (await client.get(f"{mock.url}/v1/models")).status_code == 200
        with pytest.raises(RuntimeError):
            _ = mock.url
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)
        assert task.child_nurseries == nurseries_before


async def test_error_in_block_comes_out_unwrapped() -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(KeyError, match="boom"):
        async with open_mock_llm():
            raise KeyError("boom")


async def test_serve_reports_the_port_to_nursery_start() -> None:
    with trio.fail_after(TIMEOUT):
        mock = MockLLM()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(mock.serve)
            assert port == mock.port
            assert mock.url == f"http://127.0.0.1:{port}"
            with pytest.raises(RuntimeError):
                await nursery.start(mock.serve)  # one serve at a time
            nursery.cancel_scope.cancel()


def test_public_names_are_exported() -> None:
    import agentflow_trio.mockllm as mockllm

    public = {name for name in vars(mock_llm_module) if not name.startswith("_")}
    exported = set(mock_llm_module.__all__)
    assert exported <= public
    assert exported | {"PreciseClock"} <= set(mockllm.__all__)
    assert mockllm.__all__ == sorted(mockllm.__all__, key=lambda n: (not n.isupper(), n))
    assert mockllm.PreciseClock.__module__ == "agentflow_trio.mockllm.clock"
    assert MockReply.__module__ == "agentflow_trio.mockllm.server"


def test_old_import_paths_still_work() -> None:
    """The mock moved from ``server/`` to ``mockllm/``; what users typed before still works."""
    import agentflow_trio.mockllm as mockllm
    import agentflow_trio.server as server
    from agentflow_trio.server import clock as old_clock
    from agentflow_trio.server import mock_llm as old_mock_llm

    assert set(old_mock_llm.__all__) == set(mock_llm_module.__all__)
    for name in old_mock_llm.__all__:
        assert getattr(old_mock_llm, name) is getattr(mockllm, name), name
    assert old_clock.PreciseClock is mockllm.PreciseClock
    mock_names = set(mock_llm_module.__all__) - {"RECEIVED_LIMIT"} | {"PreciseClock"}
    assert mock_names <= set(server.__all__)
    for name in mock_names:
        assert getattr(server, name) is getattr(mockllm, name), name


# -- the official openai SDK against the mock --------------------------------------------


@contextmanager
def mock_in_thread(**overrides: Any) -> Iterator[tuple[MockLLM, trio.lowlevel.TrioToken]]:
    """Run the mock under ``trio.run`` in a thread, for synchronous clients."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def run() -> None:
        box["token"] = trio.lowlevel.current_trio_token()
        async with open_mock_llm(**overrides) as mock:
            with trio.CancelScope() as scope:
                box["mock"], box["scope"] = mock, scope
                ready.set()
                await trio.sleep_forever()

    thread = threading.Thread(target=trio.run, args=(run,), daemon=True)
    thread.start()
    assert ready.wait(TIMEOUT), "the mock did not start"
    try:
        yield box["mock"], box["token"]
    finally:
        trio.from_thread.run_sync(box["scope"].cancel, trio_token=box["token"])
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def sdk_client(mock: MockLLM) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.url + "/v1", api_key="x", max_retries=0, timeout=TIMEOUT)


def test_openai_sdk_chat_and_tool_calls() -> None:
    with mock_in_thread(reply_text="Paris.") as (mock, token), sdk_client(mock) as client:
        completion = client.chat.completions.create(model="mock-gpt", messages=HELLO)
        assert isinstance(completion, openai.types.chat.ChatCompletion)
        assert completion.choices[0].message.content == "Paris."
        assert completion.usage is not None and completion.usage.total_tokens > 0
        trio.from_thread.run_sync(mock.script, MockReply(tool_calls=(WEATHER,)), trio_token=token)
        called = client.chat.completions.create(
            model="mock-gpt",
            messages=HELLO,
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        )
        assert called.choices[0].finish_reason == "tool_calls"
        (call,) = called.choices[0].message.tool_calls or []
        assert call.id == "call_w1"
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "C"}


def test_openai_sdk_streaming_with_usage_and_tool_calls() -> None:
    with (
        mock_in_thread(reply_text="one two three", stream_chunks=3) as (mock, token),
        sdk_client(mock) as client,
    ):
        chunks = list(
            client.chat.completions.create(
                model="mock-gpt",
                messages=HELLO,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "one two three"
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
        trio.from_thread.run_sync(mock.script, MockReply(tool_calls=(WEATHER,)), trio_token=token)
        stream = client.chat.completions.create(
            model="mock-gpt",
            messages=HELLO,
            stream=True,
        )
        arguments, names = "", []
        for chunk in stream:
            for delta in chunk.choices[0].delta.tool_calls or []:
                if delta.function and delta.function.name:
                    names.append(delta.function.name)
                arguments += (delta.function and delta.function.arguments) or ""
        assert names == ["get_weather"]
        assert json.loads(arguments) == {"city": "Paris", "unit": "C"}


def test_openai_sdk_embeddings_and_errors() -> None:
    with mock_in_thread(embedding_dim=16) as (mock, _), sdk_client(mock) as client:
        result = client.embeddings.create(model="mock-embed", input=["a", "b"])  # base64 on wire
        assert [len(item.embedding) for item in result.data] == [16, 16]
        floats = client.embeddings.create(model="m", input="a", encoding_format="float")
        assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)
        mock.config = attrs.evolve(mock.config, rate_limit_rate=1.0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=HELLO)
        mock.config = attrs.evolve(mock.config, rate_limit_rate=0.0, error_rate=1.0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=HELLO)


def test_azure_openai_sdk() -> None:
    with mock_in_thread() as (mock, _):
        client = openai.AzureOpenAI(
            azure_endpoint=mock.url,
            api_key="x",
            api_version="2024-06-01",
            max_retries=0,
            timeout=TIMEOUT,
        )
        with client:
            completion = client.chat.completions.create(model="gpt4o-prod", messages=HELLO)
            assert completion.choices[0].message.content == mock.config.reply_text
            assert mock.stats().by_path == {"/openai/deployments/gpt4o-prod/chat/completions": 1}


async def test_async_openai_sdk_under_trio() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            client = openai.AsyncOpenAI(
                base_url=mock.url + "/v1", api_key="x", max_retries=0, timeout=TIMEOUT
            )
            async with client:
                completion = await client.chat.completions.create(model="m", messages=HELLO)
                assert completion.choices[0].message.content == mock.config.reply_text


async def test_head_request_sends_no_body_and_keeps_the_connection_usable() -> None:
    with trio.fail_after(10):
        async with open_mock_llm() as mock:
            stream = await trio.open_tcp_stream("127.0.0.1", mock.port)
            async with stream:
                await stream.send_all(b"HEAD /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
                await stream.send_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
                data = b""
                while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"}"):
                    chunk = await stream.receive_some(65536)
                    assert chunk, f"connection closed early: {data!r}"
                    data += chunk
    head_response, get_response = data.split(b"HTTP/1.1 ")[1:]
    assert head_response.endswith(b"\r\n\r\n")  # headers only
    assert get_response.startswith(b"200") and b'"object":"list"' in get_response


# -- replies shaped by the request: response_format, format, a forced tool -----------------

_SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 6}}},
    {"type": "integer", "minimum": 3, "multipleOf": 2},
    {"type": "number", "exclusiveMinimum": 0, "maximum": 0.25},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 3},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "null"}], "items": False},
    {"enum": ["x", "y"]},
    {"anyOf": [{"type": "null"}, {"type": "string", "format": "date-time"}]},
    {"type": ["null", "object"], "additionalProperties": {"type": "integer"}},
    {
        "$defs": {"Node": {"type": "object", "properties": {"v": {"const": 4}}}},
        "type": "object",
        "properties": {"n": {"$ref": "#/$defs/Node"}},
        "required": ["n"],
        "additionalProperties": False,
    },
]


@pytest.mark.parametrize("schema", _SCHEMAS, ids=range(len(_SCHEMAS)))
def test_schema_examples_fit_their_schema(schema: dict[str, Any]) -> None:
    import jsonschema

    from agentflow_trio.mockllm import _examples

    value = _examples.example(schema)
    jsonschema.Draft202012Validator(schema).validate(value)
    assert _examples.example(schema) == value  # deterministic


async def test_shaped_replies_and_scripted_refusal_finish_and_cached_tokens() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    with trio.fail_after(TIMEOUT):
        async with serving() as (_mock, client):
            shaped = {"type": "json_schema", "json_schema": {"name": "N", "schema": schema}}
            body = {"model": "m", "messages": HELLO, "response_format": shaped}
            answer = (await client.post(CHAT, json=body)).json()["choices"][0]
            assert json.loads(answer["message"]["content"]) == {"n": 1}
            forced = {"type": "function", "function": {"name": "f"}}
            body = {"model": "m", "messages": HELLO, "tools": [tool], "tool_choice": forced}
            answer = (await client.post(CHAT, json=body)).json()["choices"][0]
            (call,) = answer["message"]["tool_calls"]
            assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == (
                "f",
                {"n": 1},
            )
            assert answer["finish_reason"] == "tool_calls"
            ollama = await client.post(
                "/api/chat",
                json={"model": "m", "messages": HELLO, "format": schema, "stream": False},
            )
            assert json.loads(ollama.json()["message"]["content"]) == {"n": 1}
            script = [
                {"refusal": "I won't."},
                {"text": "cut", "finish_reason": "content_filter", "cached_tokens": 3},
            ]
            assert (await client.post("/mock/script", json=script)).status_code == 200
            refused = (await client.post(CHAT, json={"model": "m", "messages": HELLO})).json()
            message = refused["choices"][0]["message"]
            assert (message["content"], message["refusal"]) == (None, "I won't.")
            filtered = (await client.post(CHAT, json={"model": "m", "messages": HELLO})).json()
            assert filtered["choices"][0]["finish_reason"] == "content_filter"
            assert filtered["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
            bad = await client.post("/mock/script", json=[{"cached_tokens": "3"}])
            assert bad.status_code == 400


def test_openai_sdk_reads_refusals_and_cached_tokens() -> None:
    with mock_in_thread() as (mock, token), sdk_client(mock) as client:
        replies = (MockReply(refusal="No, sorry."), MockReply(text="ok", cached_tokens=4))
        trio.from_thread.run_sync(mock.script, *replies, trio_token=token)
        refused = client.chat.completions.create(model="m", messages=HELLO)
        assert refused.choices[0].message.refusal == "No, sorry."
        assert refused.choices[0].message.content is None
        cached = client.chat.completions.create(model="m", messages=HELLO)
        details = cached.usage.prompt_tokens_details if cached.usage else None
        assert details is not None and details.cached_tokens == 4
        trio.from_thread.run_sync(mock.script, MockReply(refusal="Nope."), trio_token=token)
        stream = client.chat.completions.create(model="m", messages=HELLO, stream=True)
        pieces = [c.choices[0].delta.refusal or "" for c in stream if c.choices]
        assert "".join(pieces) == "Nope."
