"""The mock LLM's OpenAI Responses wire (``POST /v1/responses``), judged by the official
``openai`` SDK; and every `Fault` kind on both new wires (Responses and Anthropic).

Rules of this module: loopback only, port 0, the real clock (real sockets), every test body
under an absolute ``trio.fail_after``. ``openai.AsyncOpenAI`` runs under trio (its HTTP
stack goes through anyio); the raw event sequence is also read by hand.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx2
import jsonschema
import openai
import pytest
from _sdk_mock import TIMEOUT, post, serving_with, sse

from agentflow_trio.mockllm import (
    Fault,
    MockLLM,
    MockReply,
    MockToolCall,
    _anthropic,
    _responses,
)

MODEL = "gpt-mock"
QUESTION = "what is the capital of France"
WEATHER = MockToolCall("get_weather", {"city": "Paris", "unit": "C"}, id="call_w1")
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


def _client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=TIMEOUT)


def serving(**overrides: Any) -> AbstractAsyncContextManager[tuple[MockLLM, openai.AsyncOpenAI]]:
    """The mock (``overrides`` of its config) and an ``openai`` client on its /v1, no retries."""
    return serving_with(_client, **overrides)


async def test_create_answers_text_with_usage_and_echoes_settings() -> None:
    async with serving(reply_text="Paris it is.") as (mock, client):
        response = await client.responses.create(
            model=MODEL,
            input=QUESTION,
            instructions="Be brief.",
            store=False,
            previous_response_id="resp_earlier",
            max_output_tokens=50,
            metadata={"k": "v"},
        )
        assert response.id.startswith("resp_") and response.object == "response"
        assert response.status == "completed" and response.model == MODEL
        assert response.output_text == "Paris it is."
        (item,) = response.output
        assert item.type == "message" and item.role == "assistant"
        assert item.content[0].type == "output_text"
        assert (response.previous_response_id, response.store) == ("resp_earlier", False)
        assert (response.instructions, response.max_output_tokens) == ("Be brief.", 50)
        assert response.metadata == {"k": "v"}
        usage = response.usage
        assert usage is not None
        assert (usage.input_tokens, usage.output_tokens) == (8, 3)  # 6 words + 2 instructions
        assert usage.total_tokens == 11
        assert usage.input_tokens_details.cached_tokens == 0
        assert usage.output_tokens_details.reasoning_tokens == 0
        stats = mock.stats()
        assert stats.by_path == {"/v1/responses": 1} and stats.chat == 1
        assert (stats.prompt_tokens, stats.completion_tokens) == (8, 3)


async def test_function_call_turn_then_output_is_quoted() -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(tool_calls=(WEATHER,), cached_tokens=5))
        first = await client.responses.create(model=MODEL, input=QUESTION, tools=TOOLS)
        (call,) = first.output
        assert call.type == "function_call"
        assert (call.call_id, call.name, call.status) == ("call_w1", "get_weather", "completed")
        assert call.id is not None and call.id.startswith("fc_")
        assert json.loads(call.arguments) == WEATHER.arguments
        assert first.output_text == ""
        assert first.usage is not None and first.usage.input_tokens_details.cached_tokens == 5
        second = await client.responses.create(
            model=MODEL,
            tools=TOOLS,
            input=[
                {"role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
                call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
            previous_response_id=first.id,
        )
        assert second.output_text == "Based on the tool results: sunny"
        assert second.previous_response_id == first.id


async def test_forced_tool_and_json_schema_format_get_fitting_replies() -> None:
    async with serving() as (_, client):
        forced = await client.responses.create(
            model=MODEL,
            input=QUESTION,
            tools=TOOLS,
            tool_choice={"type": "function", "name": "get_weather"},
        )
        (call,) = forced.output
        assert call.type == "function_call"
        jsonschema.validate(json.loads(call.arguments), TOOLS[0]["parameters"])
        shaped = await client.responses.create(
            model=MODEL,
            input=QUESTION,
            text={
                "format": {
                    "type": "json_schema",
                    "name": "answer",
                    "schema": ANSWER_SCHEMA,
                    "strict": True,
                }
            },
        )
        jsonschema.validate(json.loads(shaped.output_text), ANSWER_SCHEMA)


async def test_reasoning_items_come_out_and_are_accepted_back() -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(tool_calls=(WEATHER,), thinking="Need the weather tool."))
        first = await client.responses.create(
            model=MODEL,
            input=QUESTION,
            tools=TOOLS,
            store=False,
            include=["reasoning.encrypted_content"],
            reasoning={"effort": "low", "summary": "auto"},
        )
        reasoning, call = first.output
        assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
        assert [part.text for part in reasoning.summary] == ["Need the weather tool."]
        assert reasoning.encrypted_content == _anthropic.signature("Need the weather tool.")
        assert first.usage is not None
        assert first.usage.output_tokens_details.reasoning_tokens == 4
        assert call.type == "function_call"
        second = await client.responses.create(
            model=MODEL,
            input=[
                {"role": "user", "content": QUESTION},
                reasoning.model_dump(exclude_none=True),
                call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id, "output": "rain"},
            ],
            reasoning={"effort": "low"},
        )
        # reasoning asked for and none scripted: a default reasoning item comes first
        assert [item.type for item in second.output] == ["reasoning", "message"]
        assert second.output_text == "Based on the tool results: rain"


async def test_store_false_refuses_a_reasoning_item_without_encrypted_content() -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(tool_calls=(WEATHER,), thinking="Need the weather tool."))
        first = await client.responses.create(
            model=MODEL, input=QUESTION, tools=TOOLS, store=False, reasoning={"effort": "low"}
        )
        reasoning, call = first.output
        assert reasoning.type == "reasoning" and reasoning.encrypted_content is None
        history: list[Any] = [
            {"role": "user", "content": QUESTION},
            reasoning.model_dump(exclude_none=True),
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "rain"},
        ]
        with pytest.raises(openai.NotFoundError) as refused:  # 404, as the real API
            await client.responses.create(model=MODEL, input=history, store=False)
        # stored (the default): the item is found by its id
        stored = await client.responses.create(model=MODEL, input=history)
    assert refused.value.body["message"] == (  # type: ignore[index]
        f"Item with id '{reasoning.id}' not found. Items are not persisted when `store` is "
        "set to false. Try again with `store` set to true, or remove this item from your input."
    )
    assert stored.output_text == "Based on the tool results: rain"


async def test_stream_events_in_order_with_sequence_numbers() -> None:
    async with serving(reply_text="one two three", stream_chunks=3) as (_, client):
        stream = await client.responses.create(model=MODEL, input=QUESTION, stream=True)
        events = [event async for event in stream]
        kinds = [event.type for event in events]
        assert kinds == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        assert [event.sequence_number for event in events] == list(range(len(events)))
        deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
        assert "".join(deltas) == "one two three"
        completed = events[-1]
        assert completed.type == "response.completed"
        assert completed.response.output_text == "one two three"
        assert completed.response.usage is not None
        assert completed.response.usage.output_tokens == 3


async def test_stream_helper_assembles_function_call_arguments() -> None:
    async with serving(stream_chunks=4) as (mock, client):
        mock.script(MockReply(tool_calls=(WEATHER,)))
        async with client.responses.stream(model=MODEL, input=QUESTION, tools=TOOLS) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
        assert kinds.count("response.function_call_arguments.delta") >= 2
        assert "response.function_call_arguments.done" in kinds
        (call,) = final.output
        assert call.type == "function_call" and call.name == "get_weather"
        assert json.loads(call.arguments) == WEATHER.arguments
        assert mock.stats().streams == 1


async def test_raw_stream_has_event_lines_and_echoes_the_request() -> None:
    async with serving(stream_chunks=2) as (mock, _):
        mock.script(MockReply(text="Done.", thinking="brief"))
        answer = await post(
            mock, "/responses", {"model": MODEL, "input": QUESTION, "stream": True, "store": False}
        )
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = sse(answer.text)
        assert all(name == data["type"] for name, data in events)
        names = [name for name, _ in events]
        assert names.index("response.reasoning_summary_text.delta") < names.index(
            "response.output_text.delta"
        )
        created = events[0][1]["response"]
        assert created["status"] == "in_progress" and created["output"] == []
        assert events[-1][1]["response"]["store"] is False
        assert mock.stats().by_path == {"/responses": 1}


async def test_incomplete_and_refusal_replies() -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(text="cut", finish_reason="length"))
        cut = await client.responses.create(model=MODEL, input=QUESTION)
        assert cut.status == "incomplete"
        assert cut.incomplete_details is not None
        assert cut.incomplete_details.reason == "max_output_tokens"
        mock.script(MockReply(refusal="I can't help with that."))
        refused = await client.responses.create(model=MODEL, input=QUESTION)
        (item,) = refused.output
        assert item.type == "message" and item.content[0].type == "refusal"


async def test_errors_map_to_the_sdk_classes() -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(fault=Fault("rate_limit", retry_after=2)))
        with pytest.raises(openai.RateLimitError) as limited:
            await client.responses.create(model=MODEL, input=QUESTION)
        assert limited.value.response.headers["retry-after"] == "2"
        mock.script(MockReply(fault=Fault("server_error", status=503)))
        with pytest.raises(openai.InternalServerError) as failed:
            await client.responses.create(model=MODEL, input=QUESTION)
        assert failed.value.status_code == 503
        assert failed.value.body["type"] == "server_error"  # type: ignore[index]
        mock.script(MockReply(fault=Fault("context_length")))
        with pytest.raises(openai.BadRequestError) as long:
            await client.responses.create(model=MODEL, input=QUESTION)
        assert long.value.code == "context_length_exceeded"
        with pytest.raises(openai.BadRequestError, match="input"):
            await client.responses.create(model=MODEL, input=[{"role": "robot", "content": "x"}])
        assert mock.stats().faults == {"rate_limit": 1, "server_error": 1, "context_length": 1}


async def test_model_fault_rules_apply_to_responses() -> None:
    async with serving(faults={MODEL: "rate_limit:times=1"}) as (mock, client):
        with pytest.raises(openai.RateLimitError):
            await client.responses.create(model=MODEL, input=QUESTION)
        response = await client.responses.create(model=MODEL, input=QUESTION)
        assert response.output_text == mock.config.reply_text
        assert mock.stats().faults_by_model == {MODEL: {"rate_limit": 1}}


async def test_mid_stream_failure_sends_error_then_response_failed() -> None:
    async with serving(stream_chunks=3) as (mock, client):
        mock.script(MockReply(fault=Fault("stream_error", after_chunks=5)))
        stream = await client.responses.create(model=MODEL, input=QUESTION, stream=True)
        events = [event async for event in stream]
        kinds = [event.type for event in events]
        assert kinds[-2:] == ["error", "response.failed"]
        assert "response.completed" not in kinds
        assert [event.sequence_number for event in events] == list(range(len(events)))
        failed = events[-1]
        assert failed.type == "response.failed"
        assert failed.response.status == "failed"
        assert failed.response.error is not None
        assert failed.response.error.code == "server_error"


@pytest.mark.parametrize(
    "fault", [Fault("cut", after_chunks=3), Fault("malformed", after_chunks=3)]
)
async def test_broken_streams_fail_in_the_sdk(fault: Fault) -> None:
    async with serving() as (mock, client):
        mock.script(MockReply(fault=fault))
        with pytest.raises((openai.APIError, ValueError)):
            async with client.responses.stream(model=MODEL, input=QUESTION) as stream:
                await stream.get_final_response()
        assert mock.stats().faults == {fault.kind: 1}


async def test_no_done_drops_response_completed() -> None:
    async with serving() as (mock, _):
        mock.script(MockReply(fault=Fault("no_done")))
        answer = await post(
            mock, "/v1/responses", {"model": MODEL, "input": QUESTION, "stream": True}
        )
        names = [name for name, _ in sse(answer.text)]
        assert names[-1] == "response.output_item.done"


def test_to_chat_translates_items() -> None:
    body = {
        "instructions": "sys",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "r"},
        ],
        "tools": TOOLS,
        "tool_choice": "required",
        "text": {"format": {"type": "json_object"}},
    }
    chat = _responses.to_chat(body)
    assert chat["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
    ]
    assert chat["tool_choice"] == "required"
    assert chat["tools"][0]["function"]["name"] == "get_weather"
    assert chat["response_format"] == {"type": "json_object"}


FAULT_CASES = [
    (Fault("rate_limit"), "429"),
    (Fault("server_error", status=503), "503"),
    (Fault("reset"), "broken"),
    (Fault("no_response", seconds=0), "broken"),
    (Fault("slow_first_token", seconds=0.01), "complete"),
    (Fault("cut", after_chunks=2), "broken"),
    (Fault("stall", after_chunks=2, seconds=0), "broken"),
    (Fault("malformed", after_chunks=2), "garbage"),
    (Fault("no_done"), "unfinished"),
    (Fault("stream_error", after_chunks=2), "error event"),
    (Fault("context_length"), "400"),
    (Fault("content_filter"), "400"),
]
WIRES = {
    "/v1/responses": ({"input": QUESTION}, b"response.completed"),
    "/v1/messages": (
        {"max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]},
        b"message_stop",
    ),
}


@pytest.mark.parametrize("path", sorted(WIRES))
@pytest.mark.parametrize(("fault", "outcome"), FAULT_CASES, ids=lambda v: getattr(v, "kind", v))
async def test_every_fault_kind_applies_to_the_new_wires(
    path: str, fault: Fault, outcome: str
) -> None:
    body, last = WIRES[path]
    async with serving(faults={MODEL: fault}) as (mock, _):
        try:
            answer = await post(mock, path, {"model": MODEL, "stream": True, **body})
        except httpx2.TransportError:
            got = "broken"
        else:
            text = answer.content
            if answer.status_code != 200:
                got = str(answer.status_code)
            elif b"<garbage" in text:
                got = "garbage"
            elif b"event: error" in text:
                got = "error event"
            elif text.rstrip().endswith(b"}") and last in text.rsplit(b"\n\n", 2)[-2]:
                got = "complete"
            else:
                got = "unfinished"
        assert got == outcome
        assert mock.stats().faults == {fault.kind: 1}


def test_the_mock_llm_command_names_its_five_wires() -> None:
    from click.testing import CliRunner

    from agentflow_trio.cli import main

    text = " ".join(CliRunner().invoke(main, ["mock-llm", "--help"]).output.split())
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/api/chat"):
        assert path in text
    assert "Azure" in text and "OpenAI-compatible mock LLM (also" not in text
