"""The Anthropic provider against the real mock LLM over HTTP (``POST /v1/messages``).

Rules of this module: loopback only, port 0, the real clock (real sockets), and every
test body under an absolute ``trio.fail_after``. The provider is driven through
`open_provider` / `open_llm_client` as an agent would use it (no retries, so each fault is
seen once). What the model was sent is read from the mock's received bodies; the mock
checks thinking blocks come back signed and unchanged, as the real API does. The last
tests run `tool_agent` and ``complete(..., output_type=T)`` on ``openai`` and
``anthropic`` alike: the same scenario, the same result.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import agentflow_trio as af
from agentflow_trio.config import LLMConfig, RetryConfig
from agentflow_trio.errors import (
    BadRequestError,
    ConfigError,
    RateLimitError,
    ServerError,
    StreamCutError,
)
from agentflow_trio.llm import (
    ChatRequest,
    EmbeddingRequest,
    LLMClient,
    ProviderStack,
    ToolSpec,
    collect_stream,
    open_llm_client,
    open_provider,
    tool_message,
    user,
)
from agentflow_trio.llm.anthropic import ANTHROPIC_VERSION, AnthropicProvider
from agentflow_trio.llm.output import OutputRefusedError
from agentflow_trio.llm.types import Message, ProviderItem, assistant, system
from agentflow_trio.mockllm import Fault, MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.testing import mock_llm_config
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

TIMEOUT = 10
NO_RETRY = RetryConfig(enabled=False)
MODEL = "claude-mock"
WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALLS = (
    MockToolCall("get_weather", {"city": "Paris"}, id="toolu_a"),
    MockToolCall("get_time", {"zone": "CET", "precise": True}, id="toolu_b"),
)
THINK = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
PROVIDERS = ["openai", "anthropic"]


def anthropic_config(mock: MockLLM, **fields: Any) -> LLMConfig:
    """An ``[llm]`` section for the Anthropic provider pointed at ``mock``."""
    fields.setdefault("model", MODEL)
    fields.setdefault("retry", NO_RETRY)
    fields.setdefault("base_url", mock.url)
    return LLMConfig(provider="anthropic", api_key="sk-ant-test", **fields)


def config_for(provider: str, mock: MockLLM) -> LLMConfig:
    if provider == "anthropic":
        return anthropic_config(mock)
    return mock_llm_config(mock, "openai", retry=NO_RETRY)


@asynccontextmanager
async def serving(
    mock_config: dict[str, Any] | None = None, **fields: Any
) -> AsyncIterator[tuple[MockLLM, ProviderStack]]:
    async with (
        open_mock_llm(**(mock_config or {})) as mock,
        open_provider(anthropic_config(mock, **fields)) as provider,
    ):
        yield mock, provider


async def streamed(provider: Any, request: ChatRequest) -> Any:
    async with provider.stream(request) as chunks:
        return await collect_stream(chunks)


# --------------------------------------------------------------------------- one call


async def test_complete_sends_the_messages_shape_and_reads_the_answer() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, provider):
            assert isinstance(provider.transport, AnthropicProvider)
            assert provider.transport.native_output is False
            request = ChatRequest(
                (system("Be brief."), user("what is the capital of France")), stop="\n"
            )
            response = await provider.complete(request)
            body = mock.received[-1]
    assert response.text == mock.config.reply_text
    assert response.finish_reason == "stop" and response.tool_calls == ()
    assert response.model == MODEL and response.raw is not None
    assert response.usage is not None and response.usage.prompt_tokens == 8
    assert response.usage.total_tokens == 8 + response.usage.completion_tokens
    assert body == {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "what is the capital of France"}],
        "system": "Be brief.",
        "stop_sequences": ["\n"],
    }


async def test_stream_gives_text_usage_and_releases_the_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving({"stream_chunks": 4}) as (mock, provider):
            async with provider.stream(ChatRequest((user("say hello"),))) as chunks:
                got = [chunk async for chunk in chunks]
                assert chunks.malformed == 0
            whole = await provider.complete(ChatRequest((user("say hello"),)))
            assert mock.received[0]["stream"] is True
            pool = provider.statistics().pool
            assert (pool.active, pool.requests) == (0, 0)
    assert len([c for c in got if c.delta_text]) == 4
    assert "".join(c.delta_text for c in got) == mock.config.reply_text == whole.text
    final = [c for c in got if c.finish_reason]
    assert len(final) == 1 and final[0].finish_reason == "stop"
    assert final[0].usage == whole.usage and final[0].model == MODEL


@pytest.mark.parametrize("base", ["", "/", "/v1", "/v1/"])
async def test_a_base_url_with_or_without_v1(base: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            config = anthropic_config(mock, base_url=mock.url + base)
            async with open_provider(config) as provider:
                await provider.complete(ChatRequest((user("x"),)))
            assert mock.stats().by_path == {"/v1/messages": 1}


async def test_headers_key_and_version() -> None:
    with trio.fail_after(TIMEOUT):
        # These checks read the httpx2 client's headers: pin that transport.
        async with serving(transport="httpx2", headers={"anthropic-beta": "b1"}) as (_, provider):
            headers = provider.transport.session.client.headers  # type: ignore[attr-defined]
    assert headers["x-api-key"] == "sk-ant-test"
    assert headers["anthropic-version"] == ANTHROPIC_VERSION
    assert headers["anthropic-beta"] == "b1" and "authorization" not in headers


async def test_cache_control_goes_out_and_cache_usage_comes_back() -> None:
    cache = {"type": "ephemeral"}
    request = ChatRequest(
        (Message("system", "A long manual.", cache_control=cache), user("Question?"))
    )
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, provider):
            mock.script(MockReply(text="A.", cached_tokens=100, cache_creation_tokens=20))
            response = await provider.complete(request)
            mock.script(MockReply(text="A.", cached_tokens=100, cache_creation_tokens=20))
            again = await streamed(provider, request)
            body = mock.received[0]
    assert body["system"] == [{"type": "text", "text": "A long manual.", "cache_control": cache}]
    assert response.usage is not None
    fresh = response.usage.prompt_tokens - 120
    assert fresh > 0 and response.usage.cached_tokens == 100
    assert response.usage.cache_creation_tokens == 20
    assert again.usage == response.usage


async def test_embeddings_are_refused_with_a_typed_error() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, provider):
            with pytest.raises(ConfigError, match="no embeddings API"):
                await provider.embed(EmbeddingRequest(("x",)))
            assert mock.stats().requests == 0


async def test_a_refusal() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, provider):
            mock.script(MockReply(refusal="I can't help with that."))
            response = await provider.complete(ChatRequest((user("x"),)))
            mock.script(MockReply(refusal="I can't help with that."))
            again = await streamed(provider, ChatRequest((user("x"),)))
    assert response.finish_reason == again.finish_reason == "content_filter"
    assert response.refusal == again.refusal == "I can't help with that."


# --------------------------------------------------------------------------- tools


async def test_parallel_tool_calls_plain_and_streamed() -> None:
    request = ChatRequest((user("weather in Paris?"),), tools=(WEATHER,), tool_choice="required")
    with trio.fail_after(TIMEOUT):
        async with serving({"stream_chunks": 3}) as (mock, provider):
            mock.script(MockReply(tool_calls=CALLS))
            response = await provider.complete(request)
            sent = mock.received[-1]
            mock.script(MockReply(tool_calls=CALLS))
            again = await streamed(provider, request)
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": dict(WEATHER.parameters),
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    assert response.finish_reason == again.finish_reason == "tool_calls"
    assert [(c.id, c.name, dict(c.arguments)) for c in response.tool_calls] == [
        ("toolu_a", "get_weather", {"city": "Paris"}),
        ("toolu_b", "get_time", {"zone": "CET", "precise": True}),
    ]
    assert again.tool_calls == response.tool_calls


async def test_tool_results_go_back_as_one_user_turn() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, provider):
            mock.script(MockReply(tool_calls=CALLS))
            first = await provider.complete(
                ChatRequest((user("weather?"),), tools=(WEATHER,), tool_choice="get_weather")
            )
            assert mock.received[-1]["tool_choice"] == {"type": "tool", "name": "get_weather"}
            history = (
                user("weather?"),
                assistant(None, first.tool_calls),
                tool_message("toolu_a", "18C and sunny"),
                tool_message("toolu_b", "09:00"),
            )
            answer = await provider.complete(ChatRequest(history))
            sent = mock.received[-1]["messages"]
    assert "18C and sunny" in answer.text  # the mock echoes the last tool result
    assert sent[1] == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_a",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
            {
                "type": "tool_use",
                "id": "toolu_b",
                "name": "get_time",
                "input": {"zone": "CET", "precise": True},
            },
        ],
    }
    assert sent[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18C and sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "09:00"},
        ],
    }


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_thinking_is_kept_and_sent_back_across_a_tool_turn(stream: bool) -> None:
    ask = ChatRequest((user("weather?"),), tools=(WEATHER,), max_tokens=2048, extra=THINK)
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, provider):
            mock.script(MockReply(tool_calls=CALLS[:1], thinking="Paris: call the tool."))
            first = await (streamed(provider, ask) if stream else provider.complete(ask))
            (item,) = first.items
            assert item.provider == "anthropic" and item.data["type"] == "thinking"
            assert item.data["thinking"] == "Paris: call the tool."
            turn = (
                *ask.messages,
                assistant(first.text or None, first.tool_calls, first.items),
                tool_message("toolu_a", "18C"),
            )
            answer = await provider.complete(attrs.evolve(ask, messages=turn))
            assert mock.received[-1]["messages"][1]["content"][0] == dict(item.data)
            # The API (and the mock) refuse the turn without its signed thinking block.
            with pytest.raises(BadRequestError, match="thinking"):
                bare = (*turn[:1], assistant(None, first.tool_calls), *turn[2:])
                await provider.complete(attrs.evolve(ask, messages=bare))
            other = ProviderItem("openai_responses", {"type": "reasoning", "id": "rs_1"})
            with pytest.raises(BadRequestError, match="thinking"):
                foreign = (*turn[:1], assistant(None, first.tool_calls, (other,)), *turn[2:])
                await provider.complete(attrs.evolve(ask, messages=foreign))
    assert answer.finish_reason == "stop" and "18C" in answer.text


# --------------------------------------------------------------------------- errors


async def test_overloaded_529_is_a_server_error() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, provider):
            mock.script(MockReply(fault=Fault("server_error", status=529)))
            with pytest.raises(ServerError) as caught:
                await provider.complete(ChatRequest((user("x"),)))
    assert caught.value.status == 529 and caught.value.retryable
    assert "overloaded_error" in caught.value.excerpt


async def test_rate_limit_reads_retry_after() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, provider):
            mock.script(MockReply(fault=Fault("rate_limit", retry_after=3)))
            with pytest.raises(RateLimitError) as caught:
                await provider.complete(ChatRequest((user("x"),)))
    assert caught.value.retry_after == 3 and "rate_limit_error" in caught.value.excerpt


async def test_an_error_event_mid_stream_is_a_typed_error() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving({"stream_chunks": 4}) as (mock, provider):
            mock.script(MockReply(fault=Fault("stream_error", after_chunks=4, status=529)))
            with pytest.raises(ServerError, match="overloaded_error") as caught:
                await streamed(provider, ChatRequest((user("x"),)))
    assert caught.value.status == 529


async def test_a_cut_stream_says_how_much_was_delivered() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving({"stream_chunks": 4}) as (mock, provider):
            mock.script(MockReply(fault=Fault("cut", after_chunks=5)))
            with pytest.raises(StreamCutError) as caught:
                await streamed(provider, ChatRequest((user("x"),)))
    assert caught.value.delivered_chunks >= 1 and caught.value.delivered_chars >= 1


async def test_no_message_stop_after_the_stop_reason_is_still_whole() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, provider):
            mock.script(MockReply(fault=Fault("no_done")))
            response = await streamed(provider, ChatRequest((user("x"),)))
    assert response.text == mock.config.reply_text and response.finish_reason == "stop"


async def test_malformed_events_are_skipped_and_counted() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving({"stream_chunks": 4}) as (mock, provider):
            mock.script(MockReply(fault=Fault("malformed", after_chunks=3, count=2)))
            async with provider.stream(ChatRequest((user("x"),))) as chunks:
                response = await collect_stream(chunks)
                assert chunks.malformed == 2  # type: ignore[attr-defined]
    assert response.finish_reason == "stop"


# --------------------------------------------------------------------------- same on both


def weather_tools() -> tuple[ToolRegistry, list[str]]:
    log: list[str] = []

    @tool
    async def search(q: str) -> dict[str, Any]:
        """Search the web."""
        log.append(f"search:{q}")
        return {"hits": [q]}

    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        log.append(f"weather:{city}")
        return {"city": city, "temp_c": 18}

    return ToolRegistry([search, weather]), log


async def _search_then_answer(
    provider: str, agent: af.Agent, answer: str
) -> tuple[af.AgentResult, dict[str, Any]]:
    """Run ``agent`` once on ``provider`` against the mock, which asks for ``search`` and
    ``weather`` (ids ``call_s``, ``call_w``) and then answers ``answer``: the result, and
    the second request the mock received (the one carrying the tool results)."""
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm() as mock,
            open_llm_client(config_for(provider, mock)) as llm,
            af.Runner(agents={"ask": agent}, llm=llm) as runner,
        ):
            mock.script(
                MockReply(
                    tool_calls=(
                        MockToolCall("search", {"q": "trio"}, id="call_s"),
                        MockToolCall("weather", {"city": "Paris"}, id="call_w"),
                    )
                ),
                MockReply(text=answer),
            )
            result = await runner.call(af.Event("ask", {"query": "trio? weather?"}))
            return result, mock.received[1]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_agent_runs_the_same_on_each_provider(provider: str) -> None:
    registry, log = weather_tools()
    agent = tool_agent(tools=registry, system="You are helpful.")
    result, second = await _search_then_answer(provider, agent, "Trio is nice and Paris is 18C.")
    assert result.succeeded, result.error
    assert result.output["text"] == "Trio is nice and Paris is 18C."
    assert result.output["steps"] == 2 and sorted(log) == ["search:trio", "weather:Paris"]
    assert [r.outcome for r in result.output["tool_results"]] == ["ok", "ok"]
    roles = [m.role for m in result.output["transcript"]]
    assert roles[-4:] == ["assistant", "tool", "tool", "assistant"]
    assert result.usage is not None and result.usage.requests == 2
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert set(result.usage.by_model) == {MODEL if provider == "anthropic" else "gpt-4o-mini"}
    if provider == "anthropic":
        assert second["system"] == "You are helpful."
        results = second["messages"][-1]["content"]
        assert [(r["type"], r["tool_use_id"]) for r in results] == [
            ("tool_result", "call_s"),
            ("tool_result", "call_w"),
        ]
        assert json.loads(results[1]["content"]) == {"city": "Paris", "temp_c": 18}


async def test_tool_agent_sends_thinking_back_on_anthropic() -> None:
    registry, log = weather_tools()
    fields = {"max_tokens": 2048, "extra": THINK}
    agent = tool_agent(tools=registry, request_fields=fields)
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm() as mock,
            open_llm_client(anthropic_config(mock)) as llm,
            af.Runner(agents={"ask": agent}, llm=llm) as runner,
        ):
            mock.script(
                MockReply(
                    tool_calls=(MockToolCall("weather", {"city": "Paris"}, id="call_w"),),
                    thinking="Look it up.",
                ),
                MockReply(text="18C."),
            )
            result = await runner.call(af.Event("ask", {"query": "weather?"}))
            sent_back = mock.received[1]["messages"][1]["content"][0]
    assert result.succeeded, result.error  # the mock refuses a turn without its thinking
    assert result.output["text"] == "18C." and log == ["weather:Paris"]
    assert sent_back["type"] == "thinking" and sent_back["thinking"] == "Look it up."


@attrs.frozen
class City:
    name: str
    population: int


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_output_re_asks_then_returns_the_type_on_each_provider(
    provider: str,
) -> None:
    def final(value: dict[str, Any]) -> MockReply:
        return MockReply(tool_calls=(MockToolCall("final_result", value, id="call_out"),))

    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm() as mock,
            open_llm_client(config_for(provider, mock)) as llm,
        ):
            mock.script(final({"name": "Paris", "population": "lots"}))
            mock.script(final({"name": "Paris", "population": 2_100_000}))
            city = await llm.complete(
                [system("You know cities."), user("The capital of France?")],
                output_type=City,
                output_mode="tool",
            )
            unscripted = await llm.complete("a city?", output_type=City)  # auto mode
            mock.script(MockReply(refusal="I can't help with that."))
            with pytest.raises(OutputRefusedError) as refused:
                await llm.complete("capital?", output_type=City, output_retries=3)
            second = mock.received[1]
            auto = mock.received[2]
    assert city == City("Paris", 2_100_000)
    assert isinstance(unscripted, City) and isinstance(unscripted.population, int)
    assert refused.value.refusal == "I can't help with that."
    if provider == "anthropic":
        assert isinstance(llm, LLMClient) and not llm.native_output
        assert auto["tool_choice"] == {"type": "tool", "name": "final_result"}
        # the bad call and its problems went back as tool_use / tool_result
        bad, answer = second["messages"][-2:]
        assert bad["content"][0]["name"] == "final_result"
        (result,) = answer["content"]
        assert result["tool_use_id"] == "call_out" and "population" in result["content"]
    else:
        assert "response_format" in auto  # openai's auto is the native mode


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_output_streams_on_each_provider(provider: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm(stream_chunks=5) as mock,
            open_llm_client(config_for(provider, mock)) as llm,
        ):
            async with llm.stream_output("a city?", output_type=City, output_mode="tool") as s:
                partials = [p async for p in s]
                value = await s.result()
    assert isinstance(value, City) and partials
    assert json.loads(json.dumps(attrs.asdict(value)))["name"] == value.name


async def test_a_failed_tool_call_goes_back_as_an_error_result() -> None:
    @tool
    async def search(q: str) -> dict[str, Any]:
        """Search the web."""
        raise RuntimeError(f"search is down for {q}")

    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": city, "temp_c": 18}

    agent = tool_agent(tools=ToolRegistry([search, weather]))
    result, second = await _search_then_answer("anthropic", agent, "Search failed; Paris is 18C.")
    results = second["messages"][-1]["content"]
    assert result.succeeded, result.error
    assert [r.outcome for r in result.output["tool_results"]] == ["error", "ok"]
    assert [m.is_error for m in result.output["transcript"][-3:-1]] == [True, False]
    failed, answered = results
    assert failed["is_error"] is True and "search is down for trio" in failed["content"]
    assert "is_error" not in answered  # said only of a failure, as the API's default
