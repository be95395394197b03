"""The Anthropic Messages wire, both ways, as pure functions (no I/O).

Our messages -> a ``/v1/messages`` body -> our messages again; bodies the official
``anthropic`` SDK sends read back and re-encode to the same JSON; a ``message`` object ->
`ChatResponse` -> the same object, checked by the SDK's own pydantic models; a stream's
SSE events -> chunks -> the same `ChatResponse` as the whole message; error objects ->
the typed errors the router classifies.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
import httpx2
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow_trio.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    StreamEndedEarlyError,
)
from agentflow_trio.llm import _anthropic_wire as wire
from agentflow_trio.llm._accumulate import ChunkDecoder, StreamAccumulator
from agentflow_trio.llm._routing import FAILURE_KINDS, classify
from agentflow_trio.llm.anthropic import _Events
from agentflow_trio.llm.types import (
    ChatRequest,
    Message,
    ProviderItem,
    ToolCall,
    ToolSpec,
    Usage,
    assistant,
    system,
    tool_message,
    user,
)

WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
THINKING = {"type": "thinking", "thinking": "Two cities: call both.", "signature": "sig=="}
REDACTED = {"type": "redacted_thinking", "data": "opaque"}
CACHE = {"type": "ephemeral"}


def call(id: str, name: str, args: dict[str, Any]) -> ToolCall:
    return ToolCall.parse(id, name, json.dumps(args, separators=(",", ":"), ensure_ascii=False))


def body_of(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    return json.loads(wire.messages_body(request, "claude-x", max_tokens=4096, stream=stream))


TOOL_TURN = (
    Message("system", "You are terse.", cache_control=CACHE),
    system("Answer in English."),
    user("Weather in Paris and Rome?"),
    assistant(
        None,
        (
            call("tu_1", "get_weather", {"city": "Paris"}),
            call("tu_2", "get_weather", {"city": "Rome"}),
        ),
        (ProviderItem("anthropic", THINKING), ProviderItem("anthropic", REDACTED)),
    ),
    tool_message("tu_1", '{"temp_c":18}'),
    tool_message("tu_2", '{"temp_c":24}'),
    user("And which is warmer?"),
    assistant("Rome."),
    Message("user", "Thanks, bye.", cache_control=CACHE),
)


# --------------------------------------------------------------------------- requests


def test_a_tool_turn_goes_out_in_the_messages_shape() -> None:
    request = ChatRequest(
        TOOL_TURN, tools=(WEATHER,), tool_choice="auto", stop="END", temperature=0.2
    )
    body = body_of(request)
    assert body["model"] == "claude-x" and body["max_tokens"] == 4096
    assert body["system"] == [
        {"type": "text", "text": "You are terse.", "cache_control": CACHE},
        {"type": "text", "text": "Answer in English."},
    ]
    assert [t["role"] for t in body["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    thought = body["messages"][1]["content"]
    assert thought[:2] == [THINKING, REDACTED]  # thinking first, verbatim
    assert thought[2:] == [
        {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "tu_2", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    # both results in one user turn, the follow-up question after them
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "tu_1", "content": '{"temp_c":18}'},
        {"type": "tool_result", "tool_use_id": "tu_2", "content": '{"temp_c":24}'},
        {"type": "text", "text": "And which is warmer?"},
    ]
    assert body["messages"][3] == {"role": "assistant", "content": "Rome."}
    assert body["messages"][4]["content"] == [
        {"type": "text", "text": "Thanks, bye.", "cache_control": CACHE}
    ]
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": dict(WEATHER.parameters),
        }
    ]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["stop_sequences"] == ["END"] and body["temperature"] == 0.2
    assert "stream" not in body and body_of(request, stream=True)["stream"] is True


def test_one_plain_system_message_is_a_string_and_other_vendors_items_are_dropped() -> None:
    foreign = ProviderItem("openai_responses", {"type": "reasoning", "id": "rs_1"})
    request = ChatRequest(
        (system("Be brief."), user("hi"), assistant("hello", items=(foreign,)), user("again"))
    )
    body = body_of(request)
    assert body["system"] == "Be brief."
    assert body["messages"][1] == {"role": "assistant", "content": "hello"}


def test_an_empty_user_message_after_tool_results_is_not_an_empty_block() -> None:
    calls = (call("tu_1", "get_weather", {"city": "Paris"}),)
    request = ChatRequest(
        (user("x"), assistant(None, calls), tool_message("tu_1", "18C"), user(""))
    )
    (result,) = body_of(request)["messages"][-1]["content"]
    assert result["type"] == "tool_result"


@pytest.mark.parametrize(
    ("choice", "wire_choice"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ("final_result", {"type": "tool", "name": "final_result"}),
        ({"type": "any", "disable_parallel_tool_use": True}, None),
    ],
)
def test_tool_choice(choice: Any, wire_choice: Any) -> None:
    request = ChatRequest((user("x"),), tools=(WEATHER,), tool_choice=choice)
    body = body_of(request)
    assert body["tool_choice"] == (wire_choice or choice)
    assert wire.parse_request(body).tool_choice == choice


def test_max_tokens_model_and_extra() -> None:
    thinking = {"type": "enabled", "budget_tokens": 2048}
    request = ChatRequest(
        (user("x"),), model="claude-y", max_tokens=99, extra={"thinking": thinking}
    )
    body = body_of(request)
    assert (body["model"], body["max_tokens"], body["thinking"]) == ("claude-y", 99, thinking)
    assert "system" not in body and "tools" not in body


def test_a_json_schema_reply_format_is_refused_with_the_mode_to_use() -> None:
    request = ChatRequest((user("x"),), response_format={"type": "json_object"})
    with pytest.raises(ConfigError, match="output_mode 'tool'"):
        body_of(request)


def test_round_trip_our_messages_wire_ours() -> None:
    request = ChatRequest(
        TOOL_TURN,
        model="claude-x",
        temperature=0.5,
        max_tokens=512,
        tools=(WEATHER,),
        tool_choice="get_weather",
        stop=("A", "B"),
        extra={"metadata": {"user_id": "u1"}},
    )
    assert wire.parse_request(body_of(request)) == request


_text = st.text(min_size=1, max_size=12)
_args = st.dictionaries(st.sampled_from("abc"), st.integers(-(2**53), 2**53) | _text, max_size=2)
_cache = st.none() | st.just(CACHE)


@st.composite
def _conversation(draw: st.DrawFn) -> tuple[Message, ...]:
    """Conversations in the shape the wire keeps as is (system first; tool results right
    after the assistant turn that asked; at most one user message after them)."""
    out: list[Message] = [Message("system", draw(_text), cache_control=draw(_cache))]
    out.append(Message("user", draw(_text), cache_control=draw(_cache)))
    for turn in range(draw(st.integers(0, 3))):
        n = draw(st.integers(0, 2))
        calls = tuple(call(f"t{turn}_{i}", draw(_text), draw(_args)) for i in range(n))
        items = tuple(
            ProviderItem("anthropic", {"type": "thinking", "thinking": t, "signature": "s"})
            for t in draw(st.lists(_text, max_size=1))
        )
        content = draw(_text) if draw(st.booleans()) or not (calls or items) else None
        out.append(Message("assistant", content, None, calls, None, items))
        out.extend(Message("tool", draw(_text), None, (), c.id) for c in calls)
        out.append(Message("user", draw(_text), cache_control=draw(_cache)))
    return tuple(out)


@given(_conversation())
def test_round_trip_holds_for_generated_conversations(messages: tuple[Message, ...]) -> None:
    request = ChatRequest(messages, model="claude-x", max_tokens=1)
    assert wire.parse_request(body_of(request)) == request


def _sdk_body(**kwargs: Any) -> dict[str, Any]:
    """The JSON body the official SDK sends for ``messages.create(**kwargs)``."""
    sent: list[bytes] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.read())
        return httpx2.Response(400, json={"type": "error", "error": {"type": "x", "message": "x"}})

    client = anthropic.Anthropic(
        api_key="k",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(**kwargs)
    return json.loads(sent[0])


def test_what_the_sdk_sends_reads_back_and_re_encodes_to_the_same_json() -> None:
    sdk = _sdk_body(
        model="claude-x",
        max_tokens=300,
        system=[{"type": "text", "text": "Be brief.", "cache_control": CACHE}],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    THINKING,
                    {
                        "type": "tool_use",
                        "id": "tu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "18C"}],
            },
        ],
        tools=[
            {
                "name": "get_weather",
                "description": "Current weather for a city",
                "input_schema": dict(WEATHER.parameters),
            }
        ],
        tool_choice={"type": "any"},
        stop_sequences=["END"],
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    request = wire.parse_request(sdk)
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]
    assert request.messages[2].items == (ProviderItem("anthropic", THINKING),)
    assert request.messages[2].tool_calls[0].arguments == {"city": "Paris"}
    assert request.tool_choice == "required" and request.stop == "END"
    assert body_of(request) == sdk


# --------------------------------------------------------------------------- responses

MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        THINKING,
        {"type": "text", "text": "Checking "},
        {"type": "text", "text": "both."},
        {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "tu_2", "name": "get_weather", "input": {"city": "Rome"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    },
}


def test_a_message_becomes_a_response() -> None:
    response = wire.parse_message(MESSAGE, "claude-x")
    assert response.text == "Checking both."
    assert response.tool_calls == (
        call("tu_1", "get_weather", {"city": "Paris"}),
        call("tu_2", "get_weather", {"city": "Rome"}),
    )
    assert response.items == (ProviderItem("anthropic", THINKING),)
    assert response.finish_reason == "tool_calls" and response.model == "claude-x"
    # the whole input: fresh + read from the cache + written to it
    assert response.usage == Usage(130, 7, 137, 100, 20)
    assert response.refusal is None and response.raw is MESSAGE


def test_a_response_goes_back_to_the_same_message_the_sdk_accepts() -> None:
    response = wire.parse_message(MESSAGE, "claude-x")
    again = wire.message_json(response, "msg_1")
    joined = [THINKING, {"type": "text", "text": "Checking both."}, *MESSAGE["content"][3:]]
    assert again == {**MESSAGE, "content": joined}
    anthropic.types.Message.model_validate(again)
    assert wire.parse_message(again, "claude-x") == response


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("something_new", "something_new"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    response = wire.parse_message({**MESSAGE, "stop_reason": stop}, "d")
    assert response.finish_reason == finish
    assert (response.refusal is not None) == (stop == "refusal")


@pytest.mark.parametrize("bad", [{"type": "message"}, {"content": [{"text": "x"}]}, [1]])
def test_a_body_of_the_wrong_shape_is_a_format_error(bad: Any) -> None:
    with pytest.raises(ResponseFormatError, match="unexpected response shape"):
        wire.parse_message(bad, "d")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kind", "cls", "status", "failure"),
    [
        ("overloaded_error", ServerError, 529, "server_error"),
        ("api_error", ServerError, 500, "server_error"),
        ("rate_limit_error", RateLimitError, 429, "rate_limit"),
        ("invalid_request_error", BadRequestError, 400, "bad_request"),
        ("authentication_error", AuthenticationError, 401, "auth"),
        ("permission_error", AuthenticationError, 403, "auth"),
        ("not_found_error", NotFoundError, 404, "not_found"),
        ("billing_error", APIStatusError, 402, "server_error"),  # another vendor may serve
        ("brand_new_error", ServerError, 500, "server_error"),
    ],
)
def test_error_objects_become_typed_errors(
    kind: str, cls: type[Exception], status: int, failure: str
) -> None:
    data = {"type": "error", "error": {"type": kind, "message": "Overloaded"}}
    exc = wire.error_from_body(data, "claude-x", retry_after=2.0 if status == 429 else None)
    assert type(exc) is cls and exc.status == status and exc.deployment == "claude-x"
    assert kind in str(exc) and "Overloaded" in str(exc)
    assert FAILURE_KINDS[classify(exc)] == failure
    with pytest.raises(cls):
        wire.parse_message(data, "claude-x")


def test_a_prompt_too_long_error_is_the_context_length_class() -> None:
    data = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 300000 tokens > 200000 maximum",
        },
    }
    assert FAILURE_KINDS[classify(wire.error_from_body(data, "d"))] == "context_length"


# --------------------------------------------------------------------------- streams


def events_of(message: dict[str, Any], *, pieces: int = 3) -> list[dict[str, Any]]:
    """The SSE events the API streams for ``message`` (text, arguments and thinking
    split into ``pieces``)."""

    def split(text: str) -> list[str]:
        size = max(1, -(-len(text) // pieces))
        return [text[i : i + size] for i in range(0, len(text), size)]

    used = message["usage"]
    start_usage = {**used, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {**message, "content": [], "stop_reason": None, "usage": start_usage},
        },
        {"type": "ping"},
    ]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            deltas = [{"type": "text_delta", "text": t} for t in split(block["text"])]
        elif kind == "tool_use":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
            )
            text = json.dumps(block["input"], separators=(",", ":"))
            deltas = [{"type": "input_json_delta", "partial_json": t} for t in split(text)]
        elif kind == "thinking":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
            deltas = [{"type": "thinking_delta", "thinking": t} for t in split(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            events.append({"type": "content_block_start", "index": index, "content_block": block})
            deltas = []
        events.extend({"type": "content_block_delta", "index": index, "delta": d} for d in deltas)
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": used["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


STREAMED = {
    **MESSAGE,
    "content": [
        THINKING,
        REDACTED,
        {"type": "text", "text": "Checking both."},
        *MESSAGE["content"][3:],
    ],
}


def test_the_events_are_the_sdks_stream_events() -> None:
    adapter = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
    for event in events_of(STREAMED):
        if event["type"] != "ping":
            adapter.validate_python(event)


@pytest.mark.parametrize("pieces", [1, 3, 50])
def test_a_stream_folds_into_the_same_response_as_the_message(pieces: int) -> None:
    parser = wire.EventParser("claude-x")
    acc = StreamAccumulator()
    for event in events_of(STREAMED, pieces=pieces):
        chunk = parser(event)
        if chunk is not None:
            acc.add(chunk)
    assert parser.stopped
    whole = wire.parse_message(STREAMED, "claude-x")
    streamed = acc.response()
    assert streamed == whole  # raw is not compared
    assert streamed.items == (
        ProviderItem("anthropic", THINKING),
        ProviderItem("anthropic", REDACTED),
    )


def decode(body: bytes, step: int = 7) -> tuple[ChunkDecoder, StreamAccumulator]:
    parser = wire.EventParser("claude-x")
    decoder = ChunkDecoder(_Events(), parser)
    acc = StreamAccumulator()
    for i in range(0, len(body), step):
        for chunk in decoder.feed(body[i : i + step]):
            acc.add(chunk)
        if decoder.done:
            break
    else:
        for chunk in decoder.finish():
            acc.add(chunk)
    return decoder, acc


def decode_cuts(body: bytes, cuts: list[int]) -> StreamAccumulator:
    parser = wire.EventParser("claude-x")
    decoder = ChunkDecoder(_Events(), parser)
    acc = StreamAccumulator()
    bounds = [0, *sorted(set(cuts)), len(body)]
    for start, stop in itertools.pairwise(bounds):
        for chunk in decoder.feed(body[start:stop]):
            acc.add(chunk)
    assert decoder.done
    return acc


@given(st.lists(st.integers(0, len(sse(events_of(STREAMED)))), max_size=12), st.booleans())
def test_any_slicing_of_the_body_gives_the_same_answer(cuts: list[int], crlf: bool) -> None:
    body = sse(events_of(STREAMED))
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    acc = decode_cuts(body, [c for c in cuts if c <= len(body)])
    assert acc.response() == wire.parse_message(STREAMED, "claude-x")


def test_ping_events_are_not_decoded() -> None:
    body = sse(events_of(STREAMED)).replace(b'data: {"type": "ping"}', b"data: {not json")
    parser = wire.EventParser("claude-x")
    decoder = ChunkDecoder(_Events(), parser)
    decoder.feed(body)
    assert decoder.done and decoder.malformed == 0


def test_sse_bytes_end_at_message_stop() -> None:
    decoder, acc = decode(sse(events_of(STREAMED)) + b"event: ping\ndata: {}\n\n")
    assert decoder.done and decoder.finished
    assert acc.response() == wire.parse_message(STREAMED, "claude-x")


def test_a_body_ending_after_the_stop_reason_is_whole_and_before_it_is_cut() -> None:
    events = events_of(STREAMED)
    _, acc = decode(sse(events[:-1]))  # no message_stop
    assert acc.response().finish_reason == "tool_calls"
    with pytest.raises(StreamEndedEarlyError, match="message_stop"):
        decode(sse(events[:-2]))  # no message_delta either


@pytest.mark.parametrize("step", [7, 1 << 20], ids=["pieces", "one_piece"])
def test_malformed_events_are_skipped_and_counted(step: int) -> None:
    events = events_of(STREAMED)
    body = sse(events[:4]) + b"event: content_block_delta\ndata: {not json\n\n" + sse(events[4:])
    decoder, acc = decode(body, step)
    assert decoder.malformed == 1
    assert acc.response() == wire.parse_message(STREAMED, "claude-x")


@pytest.mark.parametrize("step", [7, 1 << 20], ids=["pieces", "one_piece"])
def test_a_run_of_garbage_fails_the_stream(step: int) -> None:
    garbage = b"event: content_block_delta\ndata: {not json\n\n" * 17
    with pytest.raises(ResponseFormatError, match="17 malformed payloads in a row"):
        decode(sse(events_of(STREAMED)[:4]) + garbage, step)


def test_an_error_event_raises_its_typed_error() -> None:
    events = events_of(STREAMED)[:3]
    events.append({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    with pytest.raises(ServerError, match="overloaded_error") as info:
        decode(sse(events))
    assert info.value.status == 529


def test_stream_usage_keeps_the_input_counts_of_message_start() -> None:
    parser = wire.EventParser("d")
    chunks = [parser(e) for e in events_of(MESSAGE)]
    final = next(c for c in chunks if c is not None and c.finish_reason)
    assert final.usage == Usage(130, 7, 137, 100, 20)
    assert all(c.model == "claude-x" for c in chunks if c is not None)


def test_a_streamed_refusal() -> None:
    parser = wire.EventParser("d")
    acc = StreamAccumulator()
    refused = {
        **MESSAGE,
        "content": [{"type": "text", "text": "I can't"}],
        "stop_reason": "refusal",
    }
    for event in events_of(refused):
        chunk = parser(event)
        if chunk is not None:
            acc.add(chunk)
    response = acc.response()
    assert response.finish_reason == "content_filter"
    assert response.refusal == wire.parse_message(refused, "d").refusal
