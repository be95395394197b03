"""Every adapter (OpenAI, Azure, Ollama) against the real mock LLM over HTTP.

Rules of this module: loopback only, port 0, the real clock (real sockets), and every
test body under an absolute ``trio.fail_after``. Each adapter is driven through
`open_provider` with the default stack (retry and breaker on), as an agent would use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from agentflow_trio.config import LLMConfig, RetryConfig
from agentflow_trio.errors import AuthenticationError, BadRequestError, ConfigError
from agentflow_trio.llm import (
    ChatRequest,
    EmbeddingRequest,
    ProviderStack,
    StreamChunk,
    ToolSpec,
    collect_stream,
    open_provider,
    tool_message,
    user,
)
from agentflow_trio.mockllm import MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.testing import mock_llm_config

TIMEOUT = 10
NO_RETRY = RetryConfig(enabled=False)
DIALECTS = ["openai", "azure", "ollama"]
WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALLS = (
    MockToolCall("get_weather", {"city": "Paris"}, id="call_a"),
    MockToolCall("get_time", {"zone": "CET", "precise": True}, id="call_b"),
)


@asynccontextmanager
async def serving(
    dialect: str, mock_config: dict[str, Any] | None = None, **fields: Any
) -> AsyncIterator[tuple[MockLLM, ProviderStack]]:
    async with (
        open_mock_llm(**(mock_config or {})) as mock,
        open_provider(mock_llm_config(mock, dialect, **{"retry": NO_RETRY, **fields})) as provider,
    ):
        yield mock, provider


async def _stream(provider: ProviderStack, request: ChatRequest) -> list[StreamChunk]:
    async with provider.stream(request) as chunks:
        return [chunk async for chunk in chunks]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_complete(dialect: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(dialect) as (mock, provider):
            request = ChatRequest((user("what is the capital of France"),), temperature=0.0)
            response = await provider.complete(request)
            assert response.text == mock.config.reply_text
            assert response.finish_reason == "stop" and response.tool_calls == ()
            assert response.usage is not None and response.usage.prompt_tokens == 6
            assert response.usage.total_tokens == 6 + response.usage.completion_tokens
            assert response.raw is not None
            body = mock.received[-1]
            assert body["messages"] == [
                {"role": "user", "content": "what is the capital of France"}
            ]
            assert body.get("stream", False) is False


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_stream_with_usage(dialect: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(dialect, {"stream_chunks": 4}) as (mock, provider):
            chunks = await _stream(provider, ChatRequest((user("say hello"),)))
            assert len([c for c in chunks if c.delta_text]) == 4
            assert "".join(c.delta_text for c in chunks) == mock.config.reply_text
            assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 2
            assert any(c.finish_reason == "stop" for c in chunks)
            if dialect != "ollama":
                assert mock.received[-1]["stream_options"] == {"include_usage": True}
            assert mock.received[-1]["stream"] is True
            assert provider.statistics().pool == attrs.evolve(
                provider.statistics().pool, active=0, requests=0
            )


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_embeddings(dialect: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(dialect, {"embedding_dim": 6}) as (mock, provider):
            response = await provider.embed(EmbeddingRequest(("alpha", "beta gamma", "alpha")))
            assert len(response.vectors) == 3 and all(len(v) == 6 for v in response.vectors)
            assert response.vectors[0] == response.vectors[2] != response.vectors[1]
            assert response.usage is not None and response.usage.prompt_tokens == 4
            assert mock.received[-1]["input"] == ["alpha", "beta gamma", "alpha"]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_tool_calls(dialect: str) -> None:
    request = ChatRequest((user("weather in Paris?"),), tools=(WEATHER,), tool_choice="auto")
    with trio.fail_after(TIMEOUT):
        async with serving(dialect) as (mock, provider):
            mock.script(MockReply(tool_calls=CALLS))
            response = await provider.complete(request)
            sent = mock.received[-1]
            assert sent["tools"] == [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Current weather for a city",
                        "parameters": dict(WEATHER.parameters),
                    },
                }
            ]
            assert response.finish_reason == "tool_calls"
            assert [(c.name, dict(c.arguments)) for c in response.tool_calls] == [
                ("get_weather", {"city": "Paris"}),
                ("get_time", {"zone": "CET", "precise": True}),
            ]
            if dialect != "ollama":  # Ollama sends no ids; the adapter numbers the calls
                assert [c.id for c in response.tool_calls] == ["call_a", "call_b"]
            else:
                assert [c.id for c in response.tool_calls] == ["call_0", "call_1"]

            mock.script(MockReply(tool_calls=CALLS))
            async with provider.stream(request) as chunks:
                streamed = await collect_stream(chunks)
            assert streamed.tool_calls == response.tool_calls
            assert streamed.finish_reason == "tool_calls"


@pytest.mark.parametrize("dialect", ["openai", "azure"])
async def test_tool_round_trip_and_named_choice(dialect: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(dialect) as (mock, provider):
            mock.script(MockReply(tool_calls=CALLS[:1]))
            first = await provider.complete(
                ChatRequest((user("weather?"),), tools=(WEATHER,), tool_choice="get_weather")
            )
            assert mock.received[-1]["tool_choice"] == {
                "type": "function",
                "function": {"name": "get_weather"},
            }
            call = first.tool_calls[0]
            history = (
                user("weather?"),
                attrs.evolve(user(""), role="assistant", content=None, tool_calls=(call,)),
                tool_message(call.id, "18C and sunny"),
            )
            answer = await provider.complete(ChatRequest(history))
            assert "18C and sunny" in answer.text
            sent = mock.received[-1]["messages"]
            assert sent[1]["tool_calls"] == [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.raw_arguments},
                }
            ]
            assert sent[2] == {"role": "tool", "content": "18C and sunny", "tool_call_id": "call_a"}


async def test_openai_headers_and_body() -> None:
    with trio.fail_after(TIMEOUT):
        # These checks read the httpx2 client's headers: pin that transport.
        async with serving(
            "openai", organization="org-1", headers={"x-team": "a"}, transport="httpx2"
        ) as (
            mock,
            provider,
        ):
            client = provider.transport.session.client  # type: ignore[attr-defined]
            assert client.headers["authorization"] == "Bearer sk-test"
            assert client.headers["openai-organization"] == "org-1"
            assert client.headers["x-team"] == "a"
            await provider.complete(
                ChatRequest((user("x"),), model="gpt-x", max_tokens=5, stop=("\n",))
            )
            body = mock.received[-1]
            assert (body["model"], body["max_tokens"], body["stop"]) == ("gpt-x", 5, ["\n"])


async def test_azure_deployment_url_key_and_version() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("azure", api_version="2024-10-21", transport="httpx2") as (
            mock,
            provider,
        ):
            client = provider.transport.session.client  # type: ignore[attr-defined]
            assert client.headers["api-key"] == "sk-test"
            assert "authorization" not in client.headers
            await provider.complete(ChatRequest((user("x"),)))
            await provider.embed(EmbeddingRequest(("x",)))
            paths = mock.stats().by_path
            assert paths["/openai/deployments/dep-1/chat/completions"] == 1
            assert paths["/openai/deployments/dep-1/embeddings"] == 1
            assert "model" not in mock.received[-1]


async def test_azure_refusals_are_typed() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("azure", api_key="") as (_, provider):
            with pytest.raises(AuthenticationError) as info:
                await provider.complete(ChatRequest((user("x"),)))
            assert info.value.status == 401 and info.value.deployment == "dep-1"
        async with serving("azure", api_version="") as (_, provider):
            with pytest.raises(BadRequestError, match="api-version"):
                await provider.complete(ChatRequest((user("x"),)))


async def test_azure_needs_a_base_url() -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(ConfigError, match="base_url"):
        async with open_provider(LLMConfig(provider="azure")):
            pass  # pragma: no cover


async def test_ollama_options_and_ndjson() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("ollama", {"stream_chunks": 3}) as (mock, provider):
            request = ChatRequest((user("x"),), temperature=0.3, max_tokens=7, stop="END")
            await provider.complete(request)
            body = mock.received[-1]
            assert body["stream"] is False and body["model"] == "gpt-4o-mini"
            assert body["options"] == {"temperature": 0.3, "num_predict": 7, "stop": ["END"]}
            chunks = await _stream(provider, request)
            assert len([c for c in chunks if c.delta_text]) == 3
            assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None


async def test_min_connections_are_warmed_up() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("openai", min_connections=4) as (_, provider):
            stats = provider.statistics().pool
            assert stats is not None and (stats.connections, stats.idle, stats.opened) == (4, 4, 4)
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(provider.complete, ChatRequest((user("x"),)))
            after = provider.statistics().pool
            assert after is not None and after.opened == 4  # reused, none new


async def test_connections_are_reused_within_their_lifetime() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("openai") as (mock, provider):
            for _ in range(3):
                await provider.complete(ChatRequest((user("x"),)))
                await _stream(provider, ChatRequest((user("x"),)))
            pool = provider.statistics().pool
            assert pool is not None and pool.opened == 1 and mock.stats().connections == 1


async def test_max_connection_lifetime_retires_connections() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving("openai", max_connection_lifetime=0.05) as (mock, provider):
            await provider.complete(ChatRequest((user("x"),)))
            await provider.complete(ChatRequest((user("x"),)))  # still young: reused
            await trio.sleep(0.1)
            await provider.complete(ChatRequest((user("x"),)))
            pool = provider.statistics().pool
            assert pool is not None and pool.opened == 2 and pool.connections == 1
            assert mock.stats().connections == 2


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_response_format_reaches_each_wire(dialect: str) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    shaped = {"type": "json_schema", "json_schema": {"name": "N", "schema": schema}}
    with trio.fail_after(TIMEOUT):
        async with serving(dialect) as (mock, provider):
            answer = await provider.complete(ChatRequest((user("n?"),), response_format=shaped))
            async with provider.stream(
                ChatRequest((user("n?"),), response_format={"type": "json_object"})
            ) as chunks:
                streamed = await collect_stream(chunks)
            schema_body, object_body = mock.received
    assert answer.text == '{"n":1}'  # the mock answers what the schema asks for
    assert streamed.text == "{}"
    if dialect == "ollama":
        assert (schema_body["format"], object_body["format"]) == (schema, "json")
        assert "response_format" not in schema_body
    else:
        assert schema_body["response_format"] == shaped
        assert object_body["response_format"] == {"type": "json_object"}
