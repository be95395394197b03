"""LLM values, the stream accumulator, FakeProvider and LLMClient: pure, no sockets."""

from __future__ import annotations

import types
from functools import partial
from typing import Any

import attrs
import pytest
import trio

import agentflow_trio.llm as llm_pkg
from agentflow_trio import _json
from agentflow_trio.errors import ResponseFormatError, ServerError
from agentflow_trio.llm import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    FakeProvider,
    LLMClient,
    Message,
    StreamAccumulator,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    assistant,
    collect_stream,
    system,
    tool_message,
    user,
)


def test_exported_members() -> None:
    # As httpx's test_exported_members: __all__ is exactly the public names.
    public = {
        name
        for name, value in vars(llm_pkg).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(llm_pkg.__all__) == public
    assert llm_pkg.__all__ == sorted(llm_pkg.__all__)


def test_names_keep_their_paths_after_the_split() -> None:
    """``llm.provider`` and ``llm.http`` still offer what they did before ``base``, ``stack``
    and ``_session`` took the protocol, the stack and the session seam out of them."""
    from agentflow_trio.llm import _session, base, http, provider, stack

    assert provider.Provider is base.Provider is llm_pkg.Provider
    for name in provider.__all__:
        assert getattr(provider, name) is getattr(llm_pkg, name), name
    for name in ("ProviderStack", "StackStatistics", "open_stack", "deployment_gate"):
        assert getattr(provider, name) is getattr(stack, name), name
    assert (http.Session, http.LineDecoder) == (_session.Session, _session.LineDecoder)
    assert llm_pkg.PoolStatistics is http.PoolStatistics is llm_pkg.HTTPPoolStatistics


def test_message_helpers() -> None:
    call = ToolCall("c1", "search", {"q": "x"})
    assert system("be brief") == Message("system", "be brief")
    assert user("hi").role == "user"
    assert assistant(None, (call,)).tool_calls == (call,)
    tool = tool_message("c1", "42")
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "c1", "42")


def test_tool_call_parse_keeps_bad_arguments() -> None:
    good = ToolCall.parse("c1", "f", '{"a": 1}')
    assert good.arguments == {"a": 1} and good.parse_error is None
    assert good.raw_arguments == '{"a": 1}'
    bad = ToolCall.parse("c2", "f", '{"a": 1')
    assert bad.arguments == {} and bad.raw_arguments == '{"a": 1'
    assert bad.parse_error is not None and "JSON" in bad.parse_error
    listed = ToolCall.parse("c3", "f", "[1, 2]")
    assert listed.arguments == {} and "object" in (listed.parse_error or "")
    empty = ToolCall.parse("c4", "f", "")
    assert empty.arguments == {} and empty.parse_error is None


def test_tool_call_arguments_json() -> None:
    assert ToolCall("c", "f", {"a": 1}).arguments_json() == '{"a":1}'
    assert ToolCall("c", "f", {"a": 1}, raw_arguments='{"a": 1}').arguments_json() == '{"a": 1}'


def test_cache_key_is_canonical() -> None:
    a = ChatRequest((user("hi"),), temperature=0.0, extra={"x": 1, "y": 2})
    b = ChatRequest((user("hi"),), temperature=0.0, extra={"y": 2, "x": 1})
    assert a.to_cache_key() == b.to_cache_key()
    assert a.to_cache_key() != attrs.evolve(a, temperature=0.5).to_cache_key()
    assert a.to_cache_key() != attrs.evolve(a, messages=(user("hi!"),)).to_cache_key()
    tools = (ToolSpec("search", "find things"),)
    assert a.to_cache_key() != attrs.evolve(a, tools=tools).to_cache_key()
    answered = ChatRequest((tool_message("c1", "no"),))
    failed = ChatRequest((tool_message("c1", "no", is_error=True),))
    assert answered.to_cache_key() != failed.to_cache_key()


def test_with_model_and_the_cache_key_keep_every_field() -> None:
    """A field added to `ChatRequest` must reach `with_model` (the router's copy, on its
    hot path) and the cache key; ``response_format`` (structured output) included."""
    values = {
        "messages": (user("hi"),),
        "model": "group",
        "temperature": 0.5,
        "max_tokens": 10,
        "tools": (ToolSpec("t"),),
        "tool_choice": "auto",
        "stop": ("x",),
        "extra": {"a": 1},
        "response_format": {"type": "json_object"},
    }
    assert set(values) == {f.name for f in attrs.fields(ChatRequest)}
    request = ChatRequest(**values)  # type: ignore[arg-type]
    assert request.with_model("m") == attrs.evolve(request, model="m")
    assert set(request.to_canonical()) == set(values)
    plain = attrs.evolve(request, response_format=None)
    assert plain.to_cache_key() != request.to_cache_key()


def test_usage_reads_cached_tokens_from_the_openai_shape() -> None:
    from agentflow_trio.llm import _openai_wire

    data = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert _openai_wire.usage(data) == Usage(10, 2, 12, 0)
    details = {**data, "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0}}
    assert _openai_wire.usage(details) == Usage(10, 2, 12, 8)
    assert _openai_wire.usage({**data, "prompt_tokens_details": None}) == Usage(10, 2, 12)


def test_a_refusal_is_read_from_replies_and_chunks() -> None:
    from agentflow_trio.llm import _openai_wire

    body = {
        "choices": [
            {
                "message": {"role": "assistant", "content": None, "refusal": "No."},
                "finish_reason": "stop",
            }
        ]
    }
    assert _openai_wire.parse_chat(body, "d").refusal == "No."
    chunk = {"choices": [{"delta": {"refusal": "No"}, "finish_reason": None}]}
    parsed = _openai_wire.parse_chunk(chunk, "d")
    assert parsed is not None and parsed.refusal == "No"
    acc = StreamAccumulator()
    acc.add(parsed)
    acc.add(StreamChunk(refusal="."))
    acc.add(StreamChunk("", (), "stop"))
    assert acc.response().refusal == "No."
    assert StreamAccumulator().response().refusal is None


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        ({"content": "Hi"}, ("Hi", 0, "")),  # the usual delta: text alone
        ({"role": "assistant", "content": "Hi"}, ("Hi", 0, "")),
        ({"content": "Hi", "refusal": "No"}, ("Hi", 0, "No")),
        (
            {"content": "Hi", "tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]},
            ("Hi", 1, ""),
        ),
    ],
)
def test_a_text_chunk_keeps_the_tool_calls_and_refusal_beside_its_text(
    delta: dict[str, Any], expected: tuple[str, int, str]
) -> None:
    from agentflow_trio.llm import _openai_wire

    chunk = {"model": "m", "choices": [{"delta": delta, "finish_reason": None}]}
    for parse in (
        partial(_openai_wire.parse_chunk, deployment="d"),
        _openai_wire.chunk_parser("d"),
    ):
        parsed = parse(chunk)
        assert parsed is not None and parsed.model == "m"
        assert (parsed.delta_text, len(parsed.tool_call_deltas), parsed.refusal) == expected


@pytest.mark.parametrize(
    "chunk",
    [
        {"model": "m", "choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "Hi"}}]},  # no finish_reason key, no model
        {"choices": [{"delta": {"content": "Hi"}, "finish_reason": "stop"}]},
        {"choices": [{"delta": {"content": ""}, "finish_reason": None}]},  # nothing to say
        {"choices": [{"delta": {}, "finish_reason": "length"}]},
        {"choices": [{"finish_reason": "stop"}]},  # no delta at all
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        {"choices": [{"delta": {"content": "Hi"}}], "usage": {"total_tokens": 5}},
        {"choices": [{"delta": {"content": "Hi"}}], "usage": None},
        {"model": "m"},  # no choices key
    ],
)
def test_the_chunk_parser_answers_as_parse_chunk(chunk: dict[str, Any]) -> None:
    # `chunk_parser`'s closure answers the usual text chunk itself: every other shape must
    # still come out exactly as `parse_chunk` makes it.
    from agentflow_trio.llm import _openai_wire

    assert _openai_wire.chunk_parser("d")(chunk) == _openai_wire.parse_chunk(chunk, "d")


@pytest.mark.parametrize(
    ("chunk", "error"),
    [
        (
            {"error": {"message": "overloaded"}, "choices": [{"delta": {"content": "x"}}]},
            ServerError,
        ),
        ({"choices": [{"delta": "text"}]}, ResponseFormatError),
        ({"choices": "x"}, ResponseFormatError),
        (["not", "an", "object"], ResponseFormatError),
    ],
)
def test_the_chunk_parser_raises_as_parse_chunk(chunk: Any, error: type[Exception]) -> None:
    from agentflow_trio.llm import _openai_wire

    with pytest.raises(error):
        _openai_wire.chunk_parser("d")(chunk)
    with pytest.raises(error):
        _openai_wire.parse_chunk(chunk, "d")


def test_json_encodes_read_only_mappings() -> None:
    spec = ToolSpec("f")  # default parameters are a MappingProxyType
    assert _json.loads(_json.dumps({"p": spec.parameters})) == {
        "p": {"type": "object", "properties": {}}
    }
    assert _json.dumps_canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


def test_accumulator_joins_text_and_tool_call_fragments() -> None:
    acc = StreamAccumulator()
    acc.add(StreamChunk("Hel"))
    acc.add(StreamChunk("lo", (ToolCallDelta(0, "c1", "search", '{"q":'),)))
    acc.add(StreamChunk("", (ToolCallDelta(1, "c2", "bad", "{"),)))
    acc.add(StreamChunk("", (ToolCallDelta(0, None, None, '"x"}'),)))
    acc.add(StreamChunk("", (), "tool_calls", Usage(1, 2, 3)))
    response = acc.response("m")
    assert response.text == "Hello"
    assert [c.name for c in response.tool_calls] == ["search", "bad"]
    assert response.tool_calls[0].arguments == {"q": "x"}
    assert response.tool_calls[1].parse_error is not None
    assert (response.finish_reason, response.usage, response.model) == (
        "tool_calls",
        Usage(1, 2, 3),
        "m",
    )


async def test_fake_provider_handler_kinds() -> None:
    async def async_handler(request: ChatRequest) -> ChatResponse:
        await trio.lowlevel.checkpoint()
        return ChatResponse("async", finish_reason="stop")

    assert (await FakeProvider(async_handler).complete(ChatRequest((user("x"),)))).text == "async"
    failing = FakeProvider(lambda request: ServerError("boom", status=500))
    with pytest.raises(ServerError):
        await failing.complete(ChatRequest((user("x"),)))
    echo = FakeProvider()
    response = await echo.complete(ChatRequest((system("s"), user("ping"))))
    assert response.text == "echo: ping" and response.usage is not None
    assert [r.messages[-1].content for r in echo.requests] == ["ping"]


async def test_fake_provider_scripted_in_order_then_exhausted() -> None:
    fake = FakeProvider.scripted(["one", ServerError("two", status=503), "three"])
    request = ChatRequest((user("x"),))
    assert (await fake.complete(request)).text == "one"
    with pytest.raises(ServerError):
        await fake.complete(request)
    assert (await fake.complete(request)).text == "three"
    with pytest.raises(RuntimeError, match="no replies left"):
        await fake.complete(request)
    assert len(fake.requests) == 4


async def test_fake_provider_streams_the_reply() -> None:
    call = ToolCall.parse("c1", "search", '{"q":"x"}')
    reply = ChatResponse("one two three", (call,), "tool_calls", Usage(1, 3, 4))
    fake = FakeProvider.scripted([reply])
    async with fake.stream(ChatRequest((user("x"),))) as chunks:
        seen = [chunk async for chunk in chunks]
    assert len(seen) > 3
    assert "".join(c.delta_text for c in seen) == "one two three"
    acc = StreamAccumulator()
    for chunk in seen:
        acc.add(chunk)
    assert acc.response().tool_calls == (call,)
    assert seen[-1].usage == Usage(1, 3, 4)


async def test_fake_provider_embeddings_are_deterministic() -> None:
    fake = FakeProvider(dim=5)
    first = await fake.embed(EmbeddingRequest(("a", "b")))
    second = await fake.embed(EmbeddingRequest(("b",)))
    assert len(first.vectors) == 2 and all(len(v) == 5 for v in first.vectors)
    assert first.vectors[1] == second.vectors[0] != first.vectors[0]


async def test_fake_provider_refuses_after_close() -> None:
    fake = FakeProvider()
    await fake.aclose()
    await fake.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await fake.complete(ChatRequest((user("x"),)))


async def test_llm_client_builds_requests() -> None:
    fake = FakeProvider()
    client = LLMClient(fake)
    await client.complete("plain text", temperature=0.2, stop=["\n"])
    await client.complete([system("s"), user("u")], tools=[{"name": "f", "description": "d"}])
    base = ChatRequest((user("req"),), max_tokens=5)
    await client.complete(base, max_tokens=9)
    first, second, third = fake.requests
    assert first.messages == (user("plain text"),)
    assert (first.temperature, first.stop) == (0.2, ("\n",))
    assert second.tools == (ToolSpec("f", "d"),)
    assert third.max_tokens == 9 and third.messages == base.messages
    async with client.stream("hello world") as chunks:
        assert (await collect_stream(chunks)).text == "echo: hello world"
    vectors = await client.embed("one")
    assert len(vectors.vectors) == 1 and fake.embed_requests[-1].inputs == ("one",)


async def test_a_collected_stream_names_the_model_and_deployment_that_answered() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield StreamChunk(delta_text="hi")
        yield StreamChunk(finish_reason="stop", model="gpt-b-2024", deployment="b")

    response = await collect_stream(chunks(), model="gpt-b")
    assert (response.text, response.model, response.deployment) == ("hi", "gpt-b-2024", "b")

    async def unnamed():  # type: ignore[no-untyped-def]
        yield StreamChunk(delta_text="hi", finish_reason="stop")

    response = await collect_stream(unnamed(), model="gpt-b")
    assert (response.model, response.deployment) == ("gpt-b", "")
