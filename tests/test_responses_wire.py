"""The Responses wire (``llm._responses_wire``) both ways, as pure functions.

Our messages -> request body -> (the answer the API would give) -> our values -> the next
turn's input items. The official ``openai`` SDK judges every shape: request bodies and
input items are validated against its ``ResponseCreateParams`` / ``ResponseInputParam``
types, responses and stream events are built through its ``Response`` and
``ResponseStreamEvent`` models before we parse them.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from openai.types.responses import Response, ResponseInputParam, ResponseStreamEvent
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)

from agentflow_trio.errors import (
    BadRequestError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    StreamEndedEarlyError,
)
from agentflow_trio.llm import ChatRequest, ToolCall, collect_stream
from agentflow_trio.llm import _responses_body as body_wire
from agentflow_trio.llm import _responses_wire as wire
from agentflow_trio.llm._accumulate import ChunkDecoder, StreamAccumulator
from agentflow_trio.llm._lines import MAX_MALFORMED
from agentflow_trio.llm.output import plan_for
from agentflow_trio.llm.types import (
    Message,
    ProviderItem,
    ToolSpec,
    assistant,
    system,
    tool_message,
    user,
)

BODY = pydantic.TypeAdapter(ResponseCreateParamsNonStreaming)
STREAM_BODY = pydantic.TypeAdapter(ResponseCreateParamsStreaming)
INPUT = pydantic.TypeAdapter(ResponseInputParam)
EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)

REASONING = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [{"type": "summary_text", "text": "look it up"}],
    "encrypted_content": "gAAAA-opaque",
}
CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "search",
    "arguments": '{"q": "Paris"}',
    "status": "completed",
}
USAGE = {
    "input_tokens": 30,
    "input_tokens_details": {"cached_tokens": 12, "cache_write_tokens": 0},
    "output_tokens": 9,
    "output_tokens_details": {"reasoning_tokens": 4},
    "total_tokens": 39,
}


def message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": list(parts),
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def response(
    *output: dict[str, Any],
    status: str = "completed",
    usage: dict[str, Any] | None = USAGE,
    **fields: Any,
) -> dict[str, Any]:
    """A ``response`` object as the API sends it: built by the SDK's model, dumped as JSON."""
    data = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1.0,
        "model": "gpt-r",
        "status": status,
        "output": list(output),
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
        **fields,
    }
    dumped: dict[str, Any] = Response.model_validate(data).model_dump(
        mode="json", exclude_unset=True
    )
    return dumped


def event(kind: str, sequence: int, **fields: Any) -> dict[str, Any]:
    """A stream event checked by the SDK's event union (then the dict itself is used)."""
    data = {"type": kind, "sequence_number": sequence, **fields}
    EVENT.validate_python(data)
    return data


# -- requests -------------------------------------------------------------------------------


def test_a_tool_turn_becomes_input_items_the_sdk_accepts() -> None:
    call = ToolCall.parse("call_1", "search", '{"q": "Paris"}')
    messages = (
        system("Be brief."),
        system("Cite sources."),
        user("Where is the Louvre?"),
        assistant("Let me look.", (call,), (ProviderItem("openai_responses", REASONING),)),
        tool_message("call_1", '{"hits": 3}'),
        system("Answer in French."),
    )
    instructions, items = wire.input_items(messages)
    assert instructions == "Be brief.\n\nCite sources."
    assert items == [
        {"role": "user", "content": "Where is the Louvre?"},
        REASONING,  # in place: before the turn's text and calls, verbatim
        {"role": "assistant", "content": "Let me look."},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "search",
            "arguments": '{"q": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": '{"hits": 3}'},
        {"role": "system", "content": "Answer in French."},
    ]
    INPUT.validate_python(items)


def test_other_vendors_items_are_dropped() -> None:
    thinking = ProviderItem("anthropic", {"type": "thinking", "thinking": "hm", "signature": "s"})
    ours = ProviderItem("openai_responses", REASONING)
    _, items = wire.input_items((user("q"), assistant("a", (), (thinking, ours))))
    assert items == [
        {"role": "user", "content": "q"},
        REASONING,
        {"role": "assistant", "content": "a"},
    ]


def test_body_fields_and_extra_last() -> None:
    spec = ToolSpec("search", "Search the web", {"type": "object", "properties": {"q": {}}})
    request = ChatRequest(
        (system("sys"), user("hi")),
        model="gpt-x",
        temperature=0.2,
        max_tokens=50,
        tools=(spec,),
        tool_choice="search",
        stop="END",  # no Responses field: left out
        extra={"previous_response_id": "resp_0", "store": False, "temperature": 0.7},
    )
    body = json.loads(wire.request_body(request, "default", stream=True))
    assert body == {
        "model": "gpt-x",
        "instructions": "sys",
        "input": [{"role": "user", "content": "hi"}],
        "temperature": 0.7,
        "max_output_tokens": 50,
        "tools": [
            {
                "type": "function",
                "name": "search",
                "description": "Search the web",
                "parameters": {"type": "object", "properties": {"q": {}}},
                "strict": False,
            }
        ],
        "tool_choice": {"type": "function", "name": "search"},
        "stream": True,
        "previous_response_id": "resp_0",
        "store": False,
        "include": ["reasoning.encrypted_content"],  # store false: nothing kept server-side
    }
    STREAM_BODY.validate_python(body)
    plain = json.loads(wire.request_body(ChatRequest((user("hi"),)), "default", stream=False))
    assert plain == {"model": "default", "input": [{"role": "user", "content": "hi"}]}
    BODY.validate_python(plain)


LOGPROBS = "message.output_text.logprobs"


@pytest.mark.parametrize(
    ("extra", "include"),
    [
        ({"store": False}, ["reasoning.encrypted_content"]),
        ({"store": False, "include": [LOGPROBS]}, [LOGPROBS, "reasoning.encrypted_content"]),
        ({"store": False, "include": ["reasoning.encrypted_content"]}, None),
        ({"store": True, "include": [LOGPROBS]}, [LOGPROBS]),
        ({"reasoning": {"effort": "low"}}, None),
    ],
)
def test_store_false_asks_for_encrypted_reasoning(extra: Any, include: Any) -> None:
    body = json.loads(wire.request_body(ChatRequest((user("hi"),), extra=extra), "m", stream=False))
    assert body.get("include") == (include or extra.get("include"))
    BODY.validate_python(body)


@pytest.mark.parametrize(
    ("choice", "wired"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("final_result", {"type": "function", "name": "final_result"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "function", "name": "f"}),
        ({"type": "web_search_preview"}, {"type": "web_search_preview"}),
    ],
)
def test_tool_choice(choice: Any, wired: Any) -> None:
    assert wire.tool_choice(choice) == wired


def test_native_output_is_the_text_format_the_sdk_sends() -> None:
    from openai.lib._parsing._responses import type_to_text_format_param

    class PydanticCity(pydantic.BaseModel):
        name: str
        population: int

    plan = plan_for(PydanticCity)
    assert plan.response_format is not None
    request = ChatRequest((user("capital?"),), response_format=plan.response_format)
    body = json.loads(wire.request_body(request, "m", stream=False))
    ours = body["text"]["format"]
    sdk = dict(type_to_text_format_param(PydanticCity))
    assert ours["type"] == sdk["type"] == "json_schema"
    assert ours["strict"] is sdk["strict"] is True
    assert ours["name"] == plan.name
    assert _no_titles(ours["schema"]) == _no_titles(sdk["schema"])
    BODY.validate_python(body)
    assert wire.text_format({"type": "json_object"}) == {"type": "json_object"}
    # extra's text object adds to the format instead of replacing it
    terse = ChatRequest(
        request.messages, response_format=plan.response_format, extra={"text": {"verbosity": "low"}}
    )
    merged = json.loads(wire.request_body(terse, "m", stream=False))["text"]
    assert merged == {"format": ours, "verbosity": "low"}


def _no_titles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _no_titles(v) for k, v in value.items() if k != "title"}
    return value


# -- responses ------------------------------------------------------------------------------


def test_a_function_call_answer_and_its_next_turn() -> None:
    data = response(REASONING, message(text_part("Let me "), text_part("look.")), CALL)
    got = wire.parse_response(data, "dep")
    assert got.text == "Let me look."
    assert got.tool_calls == (ToolCall.parse("call_1", "search", '{"q": "Paris"}'),)
    assert got.finish_reason == "tool_calls"
    # A reasoning turn keeps its whole output: the API pairs items by id.
    assert got.items == tuple(ProviderItem("openai_responses", i) for i in data["output"])
    assert got.response_id == "resp_1"
    assert got.model == "gpt-r"
    assert got.usage is not None
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (30, 9)
    assert (got.usage.total_tokens, got.usage.cached_tokens) == (39, 12)
    # Our messages -> wire: the answer goes back as the API gave it, ids and all.
    turn = assistant(got.text, got.tool_calls, got.items)
    _, items = wire.input_items((turn, tool_message("call_1", "3 hits")))
    assert items == [
        *data["output"],
        {"type": "function_call_output", "call_id": "call_1", "output": "3 hits"},
    ]
    INPUT.validate_python(items)


def test_a_turn_without_reasoning_keeps_no_items() -> None:
    got = wire.parse_response(response(message(text_part("hi")), CALL), "dep")
    assert got.items == () and got.text == "hi" and len(got.tool_calls) == 1


def test_an_edited_turn_sends_what_it_says_now() -> None:
    data = response(REASONING, message(text_part("Let me look.")), CALL)
    got = wire.parse_response(data, "dep")
    other = ToolCall.parse("call_2", "weather", '{"city": "Paris"}')
    # The text changed and the call was replaced: the reasoning still goes first, the new
    # text takes the message's place, the dropped call's item is gone, the new call follows.
    _, items = wire.input_items((assistant("Checking.", (other,), got.items),))
    assert items == [
        data["output"][0],
        {"role": "assistant", "content": "Checking."},
        {
            "type": "function_call",
            "call_id": "call_2",
            "name": "weather",
            "arguments": '{"city": "Paris"}',
        },
    ]
    INPUT.validate_python(items)


@pytest.mark.parametrize(
    ("status", "details", "finish"),
    [
        ("completed", None, "stop"),
        ("incomplete", {"reason": "max_output_tokens"}, "length"),
        ("incomplete", {"reason": "content_filter"}, "content_filter"),
    ],
)
def test_finish_reasons(status: str, details: Any, finish: str) -> None:
    data = response(message(text_part("hi")), status=status, incomplete_details=details)
    assert wire.parse_response(data, "dep").finish_reason == finish


def test_refusal_and_no_usage() -> None:
    refusal = {"type": "refusal", "refusal": "I can't help with that."}
    got = wire.parse_response(response(message(refusal), usage=None), "dep")
    assert (got.text, got.refusal, got.usage) == ("", "I can't help with that.", None)


@pytest.mark.parametrize(
    ("code", "kind", "status"),
    [
        ("rate_limit_exceeded", RateLimitError, 429),
        ("server_error", ServerError, 500),
        ("invalid_prompt", BadRequestError, 400),
        ("vector_store_timeout", ServerError, 504),
    ],
)
def test_a_failed_response_raises_its_typed_error(code: str, kind: type, status: int) -> None:
    data = response(status="failed", usage=None, error={"code": code, "message": "no luck"})
    with pytest.raises(kind) as caught:
        wire.parse_response(data, "dep")
    assert caught.value.status == status
    assert code in str(caught.value) and "no luck" in str(caught.value)


def test_a_wrong_shape_is_a_format_error() -> None:
    with pytest.raises(ResponseFormatError, match="dep: unexpected response shape"):
        wire.parse_response({"id": "resp_1", "output": [{"no": "type"}]}, "dep")
    with pytest.raises(ResponseFormatError):
        wire.StreamEvents("dep")({"type": "response.output_item.added"})


# -- streams --------------------------------------------------------------------------------


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def stream_of(final: dict[str, Any], *, cut_at: int | None = None) -> list[dict[str, Any]]:
    """The event sequence the API sends for ``final`` (text in two deltas, arguments in
    two), checked by the SDK; ``cut_at`` keeps only the first events."""
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    n = iter(range(1000))
    out = [
        event("response.created", next(n), response=start),
        event("response.in_progress", next(n), response=start),
    ]
    for index, item in enumerate(final["output"]):
        if item["type"] == "message":
            shell = {**item, "status": "in_progress", "content": []}
            out.append(event("response.output_item.added", next(n), output_index=index, item=shell))
            for part in item["content"]:
                text = part["text"]
                for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                    out.append(
                        event(
                            "response.output_text.delta",
                            next(n),
                            item_id=item["id"],
                            output_index=index,
                            content_index=0,
                            delta=piece,
                            logprobs=[],
                        )
                    )
        elif item["type"] == "function_call":
            shell = {**item, "status": "in_progress", "arguments": ""}
            out.append(event("response.output_item.added", next(n), output_index=index, item=shell))
            args = item["arguments"]
            for piece in (args[:5], args[5:]):
                out.append(
                    event(
                        "response.function_call_arguments.delta",
                        next(n),
                        item_id=item["id"],
                        output_index=index,
                        delta=piece,
                    )
                )
        else:
            out.append(event("response.output_item.added", next(n), output_index=index, item=item))
        out.append(event("response.output_item.done", next(n), output_index=index, item=item))
    out.append(event("response.completed", next(n), response=final))
    return out if cut_at is None else out[:cut_at]


def decode(events: list[dict[str, Any]], size: int = 37) -> tuple[ChunkDecoder, list[Any]]:
    """The chunks of ``events`` sent as SSE, fed ``size`` bytes at a time."""
    decoder = ChunkDecoder(
        wire.ResponsesSSEDecoder(max_malformed=MAX_MALFORMED), wire.StreamEvents("dep")
    )
    body = sse(events)
    chunks = []
    for start in range(0, len(body), size):
        chunks.extend(decoder.feed(body[start : start + size]))
    chunks.extend(decoder.finish())
    return decoder, chunks


@pytest.mark.parametrize("size", [1, 7, 37, 200, 1 << 20])
async def test_any_slicing_of_the_body_gives_the_same_chunks(size: int) -> None:
    final = response(REASONING, message(text_part("Let me look.")), CALL)
    _, whole = decode(stream_of(final), 1 << 20)
    _, sliced = decode(stream_of(final), size)
    assert sliced == whole
    streamed = await collect_stream(_aiter(sliced))
    assert streamed.text == "Let me look." and streamed.finish_reason == "tool_calls"
    assert streamed.items == wire.parse_response(final, "dep").items


def test_events_it_never_reads_are_not_decoded() -> None:
    final = response(message(text_part("ok")))
    body = sse(stream_of(final))
    garbage = b"event: response.output_text.done\ndata: {not json\n\n"
    decoder = ChunkDecoder(
        wire.ResponsesSSEDecoder(max_malformed=MAX_MALFORMED), wire.StreamEvents("dep")
    )
    chunks = [*decoder.feed(garbage + body + garbage), *decoder.finish()]
    assert "".join(c.delta_text for c in chunks) == "ok"
    assert decoder.malformed == 0  # dropped by name, never parsed


async def _aiter(items: list[Any]) -> Any:
    for item in items:
        yield item


async def test_a_stream_folds_into_what_the_plain_answer_says() -> None:
    final = response(REASONING, message(text_part("Let me look.")), CALL)
    _, chunks = decode(stream_of(final))
    streamed = await collect_stream(_aiter(chunks))
    plain = wire.parse_response(final, "dep")
    assert streamed.text == plain.text == "Let me look."
    assert streamed.tool_calls == plain.tool_calls
    assert streamed.finish_reason == plain.finish_reason == "tool_calls"
    assert streamed.usage == plain.usage
    assert streamed.items == plain.items
    assert streamed.response_id == plain.response_id == "resp_1"
    assert all(c.model == "gpt-r" for c in chunks)  # a cut stream is still charged to it


def test_a_stream_cut_before_completed_ended_early() -> None:
    final = response(message(text_part("Hello there")))
    with pytest.raises(StreamEndedEarlyError, match=r"response\.completed"):
        decode(stream_of(final, cut_at=4))


def test_incomplete_ends_the_stream_with_its_reason() -> None:
    final = response(
        message(text_part("Hel")),
        status="incomplete",
        incomplete_details={"reason": "max_output_tokens"},
    )
    events = stream_of(final)
    events[-1] = event("response.incomplete", events[-1]["sequence_number"], response=final)
    decoder, chunks = decode(events)
    assert decoder.finished and chunks[-1].finish_reason == "length"


def test_error_events_raise_typed_errors() -> None:
    parse = wire.StreamEvents("dep")
    with pytest.raises(RateLimitError):
        parse(event("error", 3, code="rate_limit_exceeded", message="slow down", param=None))
    failed = response(status="failed", usage=None, error={"code": "server_error", "message": "x"})
    with pytest.raises(ServerError):
        parse(event("response.failed", 4, response=failed))


def test_unknown_events_are_ignored_and_garbage_is_counted() -> None:
    final = response(message(text_part("ok")))
    events = stream_of(final)
    events.insert(2, {"type": "response.some_future_event", "sequence_number": 99})
    body = sse(events).replace(b"\n\n", b"\n\ndata: {not json\n\n", 1)
    decoder = ChunkDecoder(
        wire.ResponsesSSEDecoder(max_malformed=MAX_MALFORMED), wire.StreamEvents("dep")
    )
    acc = StreamAccumulator()
    for chunk in [*decoder.feed(body), *decoder.finish()]:
        acc.add(chunk)
    assert acc.response().text == "ok" and decoder.malformed == 1


def test_a_streamed_refusal_is_a_refusal() -> None:
    parse = wire.StreamEvents("dep")
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    chunk = parse(event("response.refusal.delta", 5, delta="I can't.", **where))
    assert chunk is not None and chunk.refusal == "I can't." and not chunk.delta_text


def test_a_call_whose_arguments_come_only_when_done() -> None:
    parse = wire.StreamEvents("dep")
    shell = {**CALL, "status": "in_progress", "arguments": ""}
    added = parse(event("response.output_item.added", 1, output_index=0, item=shell))
    done = parse(event("response.output_item.done", 2, output_index=0, item=CALL))
    acc = StreamAccumulator()
    for chunk in (added, done):
        assert chunk is not None
        acc.add(chunk)
    assert acc.response().tool_calls == (ToolCall.parse("call_1", "search", '{"q": "Paris"}'),)


def test_a_message_without_items_keeps_none() -> None:
    assert wire.input_items((Message("assistant", None, tool_calls=()),)) == (None, [])


def test_a_loops_history_is_encoded_once_and_the_body_stays_the_same() -> None:
    spec = ToolSpec("search", "Search.", {"type": "object", "properties": {"q": {}}})
    call = ToolCall.parse("call_1", "search", '{"q": "x"}')
    history: tuple[Message, ...] = (system("sys"), user("go"))
    reasoning = (ProviderItem("openai_responses", REASONING),)
    for step in range(3):
        request = ChatRequest(history, tools=(spec,))
        body = json.loads(wire.request_body(request, "m", stream=False))
        instructions, items = wire.input_items(history)
        assert body["instructions"] == instructions == "sys"
        assert body["input"] == json.loads(json.dumps(items))  # as the plain translation
        assert body["tools"] == wire.tools((spec,))
        history = (*history, assistant(None, (call,), reasoning), tool_message("call_1", f"{step}"))
    # The last request sent history[:-2]: all but its last message (and the system one,
    # which is the instructions) are kept encoded.
    cached = [m for m in history if id(m) in body_wire._MESSAGES.entries]
    assert cached == list(history[1:-3])
    # A fresh tuple of equal specs (a registry's) reuses the encoded tools list.
    again = ToolSpec(spec.name, spec.description, spec.parameters)
    assert body_wire._tools_piece((again,)) is body_wire._tools_piece((spec,))


def compact_sse(events: list[dict[str, Any]]) -> bytes:
    """As the API sends them: compact JSON (``"model":"gpt-r"``), UTF-8 unescaped."""
    return b"".join(
        f"event: {e['type']}\ndata: {json.dumps(e, separators=(',', ':'), ensure_ascii=False)}"
        "\n\n".encode()
        for e in events
    )


@pytest.mark.parametrize("text", ["plain", 'say "hi"', "ü🎉 Ω", "back\\slash\nline", "}"])
def test_a_text_delta_read_undecoded_says_what_the_json_says(text: str) -> None:
    final = response(message(text_part(text)))
    decoder = ChunkDecoder(wire.ResponsesSSEDecoder(), wire.StreamEvents("dep"))
    chunks = decoder.feed(compact_sse(stream_of(final)))
    assert "".join(c.delta_text for c in chunks) == text and decoder.done


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
def test_what_the_chunks_do_not_need_is_not_decoded(spaced: bool) -> None:
    """Message and reasoning item events, and ``response.created`` past its model, are
    read undecoded (garbage there is not even counted); a call's item event is decoded."""
    final = response(REASONING, message(text_part("ok")), CALL)
    events = stream_of(final)
    body = sse(events) if spaced else compact_sse(events)
    model = b'"model": "gpt-r"' if spaced else b'"model":"gpt-r"'
    parts = body.split(b"\n\n")
    parts[0] = parts[0][: parts[0].index(model) + len(model)] + b", <garbage"
    for index, part in enumerate(parts):  # message and reasoning item events: garbage
        if part.startswith(b"event: response.output_item.") and b"function_call" not in part:
            parts[index] = part.replace(b"{", b"<garbage", 1)
    body = b"\n\n".join(parts)
    decoder = ChunkDecoder(
        wire.ResponsesSSEDecoder(max_malformed=MAX_MALFORMED), wire.StreamEvents("dep")
    )
    chunks = decoder.feed(body)
    assert decoder.malformed == 0 and decoder.done
    assert all(c.model == "gpt-r" for c in chunks)
    assert "".join(c.delta_text for c in chunks) == "ok"
    (named,) = [d for c in chunks for d in c.tool_call_deltas if d.name]
    assert (named.id, named.name) == ("call_1", "search")  # from the call's added event
    assert chunks[-1].items == wire.parse_response(final, "dep").items  # from completed


def test_a_created_event_without_a_plain_model_string_is_decoded() -> None:
    final = response(message(text_part("ok")), model="gpt-\u00e9")
    decoder = ChunkDecoder(wire.ResponsesSSEDecoder(), wire.StreamEvents("dep"))
    chunks = decoder.feed(compact_sse(stream_of(final)))
    assert chunks[0].model == "gpt-\u00e9" and decoder.done


@pytest.mark.parametrize("size", [1, 37, 1 << 20])
@pytest.mark.parametrize("last", ["response.completed", "response.incomplete"])
def test_the_stream_is_done_at_its_last_event(size: int, last: str) -> None:
    """Nothing after the last event is read, so the connection drains and is pooled."""
    final = response(message(text_part("ok")))
    events = stream_of(final)
    events[-1] = {**events[-1], "type": last}
    body = compact_sse(events) + b"event: response.output_text.delta\ndata: {garbage\n\n"
    decoder = ChunkDecoder(
        wire.ResponsesSSEDecoder(max_malformed=MAX_MALFORMED), wire.StreamEvents("dep")
    )
    chunks = []
    for start in range(0, len(body), size):
        chunks += decoder.feed(body[start : start + size])
    assert decoder.done and decoder.malformed == 0
    assert chunks[-1].finish_reason == "stop" and chunks[-1].response_id == "resp_1"
