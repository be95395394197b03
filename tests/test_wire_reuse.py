"""What the OpenAI wire encodes once and reuses (issue #23): the tools list and every
message but the last of a conversation; and the SSE decoder's bulk path, which must
decode exactly as the line-by-line one does."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.errors import ResponseFormatError
from agentflow_trio.llm import _openai_wire as wire
from agentflow_trio.llm._lines import SSEDecoder
from agentflow_trio.llm.types import (
    ChatRequest,
    ToolCall,
    ToolSpec,
    assistant,
    system,
    tool_message,
    user,
)

SCHEMA = {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}


def _conversation() -> tuple[Any, ...]:
    call = ToolCall.parse("c1", "lookup", '{"key":"a"}')
    return (
        system("be brief"),
        user("what is a?", name="ann"),
        assistant(None, (call,)),
        tool_message("c1", '{"value":"A"}'),
        assistant("a is A"),
        user("and b?"),
    )


def _expected(messages: tuple[Any, ...]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name is not None:
            d["name"] = m.name
        if m.tool_calls:
            d["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json()},
                }
                for c in m.tool_calls
            ]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    encode = wire._message

    def counted(m: Any) -> dict[str, Any]:
        seen.append(m)
        return encode(m)

    monkeypatch.setattr(wire, "_message", counted)
    return seen


def test_messages_encode_once_and_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = _conversation()
    spec = ToolSpec("lookup", "Look a key up.", SCHEMA)
    seen = _counting(monkeypatch)
    first = wire.chat_body(ChatRequest(messages, tools=(spec,)), "m", stream=False)
    assert len(seen) == len(messages)
    seen.clear()
    # The next call of a loop: the same messages plus a new last one.
    longer = (*messages, assistant("b is B"))
    second = wire.chat_body(ChatRequest(longer, tools=(spec,)), "m", stream=False)
    assert seen == [messages[-1], longer[-1]]  # only what was last before, and the new last
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look a key up.",
                                                "parameters": SCHEMA}}]  # fmt: skip
    assert orjson.loads(first) == {"messages": _expected(messages), "model": "m", "tools": tools}
    assert orjson.loads(second) == {"messages": _expected(longer), "model": "m", "tools": tools}


def test_an_equal_but_new_message_is_encoded_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = _conversation()
    wire.chat_body(ChatRequest(messages), "m", stream=False)
    seen = _counting(monkeypatch)
    changed = (user("another first question"), *messages[1:])
    body = orjson.loads(wire.chat_body(ChatRequest(changed), "m", stream=False))
    assert body["messages"][0]["content"] == "another first question"
    assert seen[0] is changed[0]


def test_tools_are_reused_by_name_description_and_schema_object() -> None:
    first = (ToolSpec("lookup", "Look a key up.", SCHEMA),)
    again = (ToolSpec("lookup", "Look a key up.", SCHEMA),)  # a registry's fresh tuple
    assert wire._tools_piece(first) is wire._tools_piece(again)
    other_schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    changed = (ToolSpec("lookup", "Look a key up.", other_schema),)
    body = orjson.loads(
        wire.chat_body(ChatRequest((user("x"),), tools=changed), None, stream=False)
    )
    assert body["tools"][0]["function"]["parameters"] == other_schema


def test_the_caches_start_again_past_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "_CACHE_BYTES", 200)
    cache: wire._Encoded[int, Any] = wire._Encoded()
    values = [object() for _ in range(10)]
    for n, value in enumerate(values):
        cache.put(n, value, b'"' + b"x" * 48 + b'"')
    assert len(cache.entries) < 5
    assert cache.get(9, values[9]) is not None
    assert cache.get(9, values[8]) is None  # a key reused by another value is a miss


# -- the SSE decoder's bulk path -------------------------------------------------------------

_DATA = st.text(alphabet='abc{}":, ', min_size=0, max_size=12)
_EVENT = st.one_of(
    st.builds(lambda d: b"data: " + orjson.dumps({"t": d}), _DATA),
    st.builds(lambda d: b"data:" + orjson.dumps([d]), _DATA),
    st.builds(
        lambda a, b: b'data: {"t":\ndata: ' + orjson.dumps(a + b) + b"}", _DATA, _DATA
    ),  # two data lines: joined with a newline
    st.builds(lambda d: b": keep-alive\ndata: " + orjson.dumps(d), _DATA),
    st.just(b"event: ping"),
    st.just(b"data: not json"),
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(_EVENT, max_size=12),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_bulk_feeding_decodes_as_line_by_line(
    events: list[bytes], crlf: bool, cuts: list[int]
) -> None:
    body = b"".join(e + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    bounds = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
    pieces = [body[a:b] for a, b in itertools.pairwise(bounds)]
    assert _decode(pieces) == _decode([body[i : i + 1] for i in range(len(body))])


def _decode(pieces: list[bytes]) -> tuple[list[Any], bool, int, str | None]:
    """Payloads, done, malformed count and the error (its type), feeding ``pieces``."""
    decoder = SSEDecoder(max_malformed=100)
    out: list[Any] = []
    try:
        for piece in pieces:
            out += decoder.feed(piece)
    except ResponseFormatError as exc:
        return out, decoder.done, decoder.malformed, type(exc).__name__
    return out, decoder.done, decoder.malformed, None


def test_bulk_feeding_stops_at_done_and_keeps_a_partial_event() -> None:
    decoder = SSEDecoder()
    out = decoder.feed(b'data: {"a":1}\n\ndata: {"b"')
    assert out == [{"a": 1}]
    assert decoder.feed(b':2}\n\ndata: [DONE]\n\ndata: {"late":1}\n\n') == [{"b": 2}]
    assert decoder.done
