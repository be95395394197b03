"""The mock LLM's Anthropic Messages wire (``POST /v1/messages``), judged by the official
``anthropic`` SDK.

Rules of this module: loopback only, port 0, the real clock (real sockets), every test body
under an absolute ``trio.fail_after``. ``anthropic.AsyncAnthropic`` runs under trio (its
HTTP stack goes through anyio); the raw event sequence is also read by hand, so a protocol
slip the SDK forgives still shows up.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from typing import Any

import anthropic
import httpx2
import pytest
import trio
from _sdk_mock import TIMEOUT, post, serving_with, sse

from agentflow_trio.mockllm import (
    Fault,
    MockLLM,
    MockReply,
    MockToolCall,
    _anthropic,
)

MODEL = "claude-mock"
HELLO = [{"role": "user", "content": "what is the capital of France"}]
WEATHER = MockToolCall("get_weather", {"city": "Paris", "unit": "C"}, id="toolu_w1")
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
        },
    }
]
THINKING = {"type": "enabled", "budget_tokens": 1024}


def _client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0, timeout=TIMEOUT)


def serving(
    **overrides: Any,
) -> AbstractAsyncContextManager[tuple[MockLLM, anthropic.AsyncAnthropic]]:
    """The mock (``overrides`` of its config) and an ``anthropic`` client on it, no retries."""
    return serving_with(_client, **overrides)


async def test_create_answers_text_with_usage_and_is_counted() -> None:
    async with serving(reply_text="Paris it is.") as (mock, client):
        message = await client.messages.create(
            model=MODEL,
            max_tokens=64,
            system=[{"type": "text", "text": "Be brief and exact."}],
            messages=HELLO,
            metadata={"user_id": "u1"},
        )
        assert message.type == "message" and message.role == "assistant"
        assert message.id.startswith("msg_")
        assert message.model == MODEL
        assert [block.type for block in message.content] == ["text"]
        assert message.content[0].type == "text" and message.content[0].text == "Paris it is."
        assert message.stop_reason == "end_turn" and message.stop_sequence is None
        # six words of the user turn plus four of the system prompt
        assert message.usage.input_tokens == 10
        assert message.usage.output_tokens == 3
        assert message.usage.cache_read_input_tokens == 0
        stats = mock.stats()
        assert stats.by_path == {"/v1/messages": 1}
        assert stats.chat == 1 and stats.by_model == {MODEL: 1}
        assert (stats.prompt_tokens, stats.completion_tokens) == (10, 3)
        assert mock.received[-1]["max_tokens"] == 64


async def test_tool_use_turn_then_tool_result_is_quoted() -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(tool_calls=(WEATHER,), cached_tokens=7, cache_creation_tokens=3))
        first = await client.messages.create(
            model=MODEL, max_tokens=256, tools=TOOLS, messages=HELLO
        )
        assert first.stop_reason == "tool_use"
        (use,) = first.content
        assert use.type == "tool_use"
        assert (use.id, use.name, use.input) == ("toolu_w1", "get_weather", WEATHER.arguments)
        assert first.usage.cache_read_input_tokens == 7
        assert first.usage.cache_creation_input_tokens == 3
        second = await client.messages.create(
            model=MODEL,
            max_tokens=256,
            tools=TOOLS,
            messages=[
                *HELLO,
                {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": use.id,
                            "content": "sunny, 21 C",
                            "is_error": False,  # the SDK's own field: the mock accepts it
                        }
                    ],
                },
            ],
        )
        assert second.stop_reason == "end_turn"
        assert second.content[0].type == "text"
        assert second.content[0].text == "Based on the tool results: sunny, 21 C"


async def test_parallel_tool_calls_get_distinct_toolu_ids() -> None:
    async with serving() as (mock, client):
        calls = (MockToolCall("a", {"x": 1}), MockToolCall("b", {"y": [1, 2]}))
        mock.script(MockReply(text="Calling both.", tool_calls=calls))
        message = await client.messages.create(
            model=MODEL, max_tokens=64, messages=HELLO, tools=TOOLS
        )
        kinds = [block.type for block in message.content]
        assert kinds == ["text", "tool_use", "tool_use"]
        ids = [block.id for block in message.content if block.type == "tool_use"]
        assert len(set(ids)) == 2 and all(i.startswith("toolu_") for i in ids)


async def test_forced_tool_choice_gets_a_call_fitting_the_schema() -> None:
    async with serving() as (_, client):
        message = await client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=HELLO,
            tools=TOOLS,
            tool_choice={"type": "tool", "name": "get_weather"},
        )
        (use,) = message.content
        assert use.type == "tool_use" and use.name == "get_weather"
        assert isinstance(use.input, dict) and use.input["unit"] in ("C", "F")
        assert isinstance(use.input["city"], str)


async def test_thinking_blocks_are_signed_and_must_come_back_unchanged() -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(tool_calls=(WEATHER,), thinking="Weather needs the tool."))
        first = await client.messages.create(
            model=MODEL, max_tokens=2048, thinking=THINKING, tools=TOOLS, messages=HELLO
        )
        thinking, use = first.content
        assert thinking.type == "thinking" and thinking.thinking == "Weather needs the tool."
        assert thinking.signature == _anthropic.signature(thinking.thinking)
        assert use.type == "tool_use"
        result = {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rain"}],
        }
        blocks = [block.model_dump(exclude_none=True) for block in first.content]
        second = await client.messages.create(
            model=MODEL,
            max_tokens=2048,
            thinking=THINKING,
            tools=TOOLS,
            messages=[*HELLO, {"role": "assistant", "content": blocks}, result],
        )
        # thinking enabled and nothing scripted: a default thinking block comes first
        assert [block.type for block in second.content] == ["thinking", "text"]
        tampered = [{**blocks[0], "thinking": "something else"}, blocks[1]]
        for sent, fragment in ((tampered, "signature"), (blocks[1:], "thinking")):
            with pytest.raises(anthropic.BadRequestError, match=fragment) as caught:
                await client.messages.create(
                    model=MODEL,
                    max_tokens=2048,
                    thinking=THINKING,
                    tools=TOOLS,
                    messages=[*HELLO, {"role": "assistant", "content": sent}, result],
                )
            assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


async def test_redacted_thinking_is_accepted_back() -> None:
    async with serving() as (_, client):
        redacted = {"type": "redacted_thinking", "data": "opaque"}
        use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
        result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}
        message = await client.messages.create(
            model=MODEL,
            max_tokens=2048,
            thinking=THINKING,
            messages=[
                *HELLO,
                {"role": "assistant", "content": [redacted, use]},
                {"role": "user", "content": [result]},
            ],
        )
        assert message.content[-1].type == "text"


async def test_stream_text_and_final_message() -> None:
    async with serving(reply_text="one two three four", stream_chunks=3) as (mock, client):
        async with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
            pieces = [piece async for piece in stream.text_stream]
            final = await stream.get_final_message()
        assert len(pieces) == 3 and "".join(pieces) == "one two three four"
        assert final.content[0].type == "text"
        assert final.content[0].text == "one two three four"
        assert final.stop_reason == "end_turn"
        assert final.usage.input_tokens == 6 and final.usage.output_tokens == 4
        assert mock.stats().streams == 1


async def test_stream_assembles_tool_input_and_thinking() -> None:
    async with serving(stream_chunks=4) as (mock, client):
        mock.script(MockReply(tool_calls=(WEATHER,), thinking="Use the weather tool."))
        async with client.messages.stream(
            model=MODEL, max_tokens=2048, thinking=THINKING, tools=TOOLS, messages=HELLO
        ) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_message()
        assert kinds.count("input_json") >= 2  # the arguments came in several pieces
        thinking, use = final.content
        assert thinking.type == "thinking" and thinking.thinking == "Use the weather tool."
        assert thinking.signature == _anthropic.signature("Use the weather tool.")
        assert use.type == "tool_use" and use.input == WEATHER.arguments
        assert final.stop_reason == "tool_use"


async def test_raw_stream_has_the_real_event_sequence() -> None:
    async with serving(reply_text="a b", stream_chunks=2) as (mock, _):
        mock.script(MockReply(text="Let me look.", tool_calls=(WEATHER,)))
        answer = await post(
            mock,
            "/v1/messages",
            {"model": MODEL, "max_tokens": 9, "messages": HELLO, "stream": True},
            headers={"x-api-key": "x", "anthropic-version": "2023-06-01"},
        )
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = sse(answer.text)
        names = [name for name, _ in events]
        assert all(name == data["type"] for name, data in events)
        assert names[:2] == ["message_start", "ping"]
        assert names[-2:] == ["message_delta", "message_stop"]
        starts = [data for name, data in events if name == "content_block_start"]
        assert [data["content_block"]["type"] for data in starts] == ["text", "tool_use"]
        assert names.count("content_block_stop") == 2
        partial = "".join(
            data["delta"]["partial_json"]
            for name, data in events
            if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta"
        )
        assert json.loads(partial) == WEATHER.arguments
        start = events[0][1]["message"]
        assert start["content"] == [] and start["stop_reason"] is None
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
        assert events[-2][1]["usage"]["output_tokens"] > 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": MODEL, "messages": HELLO}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 5}, "messages"),
        ({"max_tokens": 5, "messages": HELLO}, "model"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "role",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "toolu_1",
                                "content": "x",
                                "is_error": "yes",
                            }
                        ],
                    }
                ],
            },
            "messages.0.content.0.is_error: Input should be a valid boolean",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": HELLO, "thinking": THINKING},
            "budget_tokens",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": ""}]},
            "messages.0: all messages must have non-empty content",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": HELLO, "system": [{"type": "text"}]},
            "system: text content blocks must be non-empty",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}],
            },
            "messages: text content blocks must be non-empty",
        ),
    ],
)
async def test_invalid_requests_are_400_invalid_request_error(
    body: dict[str, Any], fragment: str
) -> None:
    async with serving() as (mock, _):
        answer = await post(mock, "/v1/messages", body)
        assert answer.status_code == 400
        error = answer.json()
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert fragment in error["error"]["message"]


async def test_errors_map_to_the_sdk_classes() -> None:
    async with serving(retry_after=2.0) as (mock, client):
        mock.script(MockReply(fault=Fault("rate_limit", retry_after=3)))
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        headers = limited.value.response.headers
        assert headers["retry-after"] == "3"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        mock.script(MockReply(fault=Fault("server_error", status=529)))
        with pytest.raises(anthropic.OverloadedError) as overloaded:
            await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        assert overloaded.value.status_code == 529
        assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        mock.script(MockReply(status=500))
        with pytest.raises(anthropic.InternalServerError) as internal:
            await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        assert internal.value.body["error"]["type"] == "api_error"  # type: ignore[index]
        mock.script(MockReply(status=429))
        with pytest.raises(anthropic.RateLimitError) as scripted:
            await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        assert scripted.value.response.headers["retry-after"] == "2"
        mock.script(MockReply(fault=Fault("context_length")))
        with pytest.raises(anthropic.BadRequestError, match="prompt is too long"):
            await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        assert mock.stats().faults == {"rate_limit": 1, "server_error": 1, "context_length": 1}


async def test_model_fault_rules_apply_to_messages() -> None:
    faults = {MODEL: (Fault("server_error", status=529, times=1),)}
    async with serving(faults=faults) as (mock, client):
        with pytest.raises(anthropic.OverloadedError):
            await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        message = await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        assert message.content[0].type == "text"
        assert mock.stats().faults_by_model == {MODEL: {"server_error": 1}}


async def test_mid_stream_error_event_raises_in_the_sdk() -> None:
    async with serving(stream_chunks=4) as (mock, client):
        mock.script(MockReply(fault=Fault("stream_error", after_chunks=4, status=529)))
        pieces: list[str] = []
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
                async for piece in stream.text_stream:
                    pieces.append(piece)
        assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert pieces == [mock.config.reply_text[: len(pieces[0])]]  # one delta got through
        assert mock.stats().faults == {"stream_error": 1}


@pytest.mark.parametrize(
    "fault", [Fault("cut", after_chunks=3), Fault("malformed", after_chunks=3)]
)
async def test_broken_streams_fail_in_the_sdk(fault: Fault) -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(fault=fault))
        with pytest.raises((anthropic.APIError, ValueError)):
            async with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
                await stream.get_final_message()
        assert mock.stats().faults == {fault.kind: 1}


async def test_no_done_drops_message_stop_and_stall_hangs_until_the_client_leaves() -> None:
    async with serving() as (mock, _):
        body = {"model": MODEL, "max_tokens": 9, "messages": HELLO, "stream": True}
        async with httpx2.AsyncClient(base_url=mock.url, timeout=TIMEOUT) as http:
            mock.script(MockReply(fault=Fault("no_done")))
            answer = await http.post("/v1/messages", json=body)
            names = [name for name, _ in sse(answer.text)]
            assert names[-1] == "message_delta" and "message_stop" not in names
            mock.script(MockReply(fault=Fault("stall", after_chunks=2)))
            received = b""
            with trio.move_on_after(1.0) as waited:
                async with http.stream("POST", "/v1/messages", json=body) as hung:
                    async for data in hung.aiter_bytes():
                        received += data
            assert waited.cancelled_caught  # the stream never ended by itself
            assert received.count(b"\n\n") == 2 and b"message_start" in received


async def test_plain_malformed_body_is_not_json() -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(fault=Fault("malformed")))
        with pytest.raises((anthropic.APIResponseValidationError, ValueError)):
            await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)


async def test_script_over_http_carries_thinking_and_cache_fields() -> None:
    async with serving() as (mock, client):
        scripted = await post(
            mock,
            "/mock/script",
            [{"text": "ok", "thinking": "hm", "cached_tokens": 4, "cache_creation_tokens": 2}],
        )
        assert scripted.status_code == 200
        message = await client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        assert [block.type for block in message.content] == ["thinking", "text"]
        assert message.usage.cache_read_input_tokens == 4
        assert message.usage.cache_creation_input_tokens == 2


async def test_unprefixed_path_and_scripted_finish_reason() -> None:
    async with serving() as (mock, _):
        mock.script(MockReply(text="cut short", finish_reason="length"))
        answer = await post(mock, "/messages", {"model": MODEL, "max_tokens": 2, "messages": HELLO})
        assert answer.json()["stop_reason"] == "max_tokens"
        assert mock.stats().by_path == {"/messages": 1}


async def test_count_tokens_counts_the_prompt_like_a_reply_does() -> None:
    async with serving() as (mock, client):
        counted = await client.messages.count_tokens(
            model=MODEL, system="Be brief.", messages=HELLO
        )
        assert counted.input_tokens == 8
        message = await client.messages.create(
            model=MODEL, max_tokens=5, system="Be brief.", messages=HELLO
        )
        assert message.usage.input_tokens == counted.input_tokens
        with pytest.raises(anthropic.BadRequestError, match="messages"):
            await client.messages.count_tokens(model=MODEL, messages=[])
        assert mock.stats().by_path == {"/v1/messages/count_tokens": 2, "/v1/messages": 1}


def test_to_chat_translates_blocks_both_ways_of_a_tool_turn() -> None:
    body = {
        "model": MODEL,
        "system": "sys",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "r"}],
                    }
                ],
            },
        ],
        "tools": TOOLS,
        "tool_choice": {"type": "any"},
    }
    chat = _anthropic.to_chat(body)
    assert chat["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "r"},
    ]
    assert chat["tool_choice"] == "required"
    assert chat["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
