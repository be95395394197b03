"""The tool loop's caches (issue #23) stay right when what they cache changes: the OpenAI
wire's encoded message runs under a conversation edited between calls, the tools' share
of a token estimate under a registry that gains a tool, both bounded; and a usage meter's
own tally, split off only when a nested meter is made, counts as a separate one did."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentflow_trio.llm import _openai_wire as wire
from agentflow_trio.llm import types
from agentflow_trio.llm.types import (
    ChatRequest,
    Message,
    ToolCall,
    assistant,
    estimate_input_tokens,
    system,
    tool_message,
    user,
)
from agentflow_trio.tools import ToolRegistry, tool
from agentflow_trio.usage import UsageMeter


def _sent(messages: list[Message]) -> list[dict[str, Any]]:
    body = orjson.loads(wire.chat_body(ChatRequest(tuple(messages)), "m", stream=False))
    return body["messages"]  # type: ignore[no-any-return]


def _plain(messages: list[Message]) -> list[dict[str, Any]]:
    return [wire._message(m) for m in messages]


def test_a_conversation_edited_between_calls_is_sent_as_it_is_now() -> None:
    call = ToolCall.parse("c1", "lookup", '{"key":"a"}')
    messages = [system("s"), user("q"), assistant(None, (call,)), tool_message("c1", "{}")]
    assert _sent(messages) == _plain(messages)
    messages.append(assistant("a"))
    assert _sent(messages) == _plain(messages)
    messages[1] = user("another question")  # an edit in the middle of the cached run
    assert _sent(messages) == _plain(messages)
    del messages[2:4]  # a shorter conversation: its run is found again or encoded
    assert _sent(messages) == _plain(messages)
    messages.insert(0, system("first"))
    assert _sent(messages) == _plain(messages)
    equal = [Message(m.role, m.content, m.name, m.tool_calls, m.tool_call_id) for m in messages]
    assert _sent(equal) == _plain(messages)  # equal but new objects: encoded, same text


def test_a_shared_history_is_reused_and_each_tail_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history = [user(f"q{n}") for n in range(5)]
    _sent([*history, user("first")])
    second = [*history, user("second")]
    expected = _plain(second)
    seen: list[Message] = []
    encode = wire._message
    monkeypatch.setattr(wire, "_message", lambda m: seen.append(m) or encode(m))
    assert _sent(second) == expected
    assert seen == [second[-1]]  # the history's run was found: only the new last message


def test_the_message_runs_start_again_past_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "_CACHE_BYTES", 300)
    cache = wire._Prefixes()
    for n in range(20):
        run = (user(f"{n}"), user(f"{n}b"))
        cache.put(run, b"x" * 100)
        assert cache.longest(run, 2) == (2, b"x" * 100)
    assert len(cache.entries) <= 3


def test_the_tools_share_of_an_estimate_follows_the_registry() -> None:
    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return key

    @tool
    def describe_everything_at_length(topic: str, depth: int, style: str) -> str:
        """Describe a topic at length, in a style, to a depth, with examples and caveats."""
        return topic

    registry = ToolRegistry([lookup])
    question = (user("q"),)
    one = estimate_input_tokens(ChatRequest(question, tools=registry.specs()))
    assert estimate_input_tokens(ChatRequest(question, tools=registry.specs())) == one
    registry.register(describe_everything_at_length)
    two = estimate_input_tokens(ChatRequest(question, tools=registry.specs()))
    assert two > one
    fresh = tuple(registry.specs())  # a new tuple of the same specs: counted the same
    assert estimate_input_tokens(ChatRequest(question, tools=fresh)) == two


def test_the_tools_share_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(types, "_TOOL_CHARS_MAX", 4)
    monkeypatch.setattr(types, "_TOOL_CHARS", {})
    kept = [(types.ToolSpec(f"t{n}"),) for n in range(10)]
    for specs in kept:
        estimate_input_tokens(ChatRequest((user("q"),), tools=specs))
    assert len(types._TOOL_CHARS) <= 4


def test_an_events_own_usage_splits_off_when_a_nested_meter_is_made() -> None:
    parent = UsageMeter()
    parent.start_call(10)
    parent.charge("m", "", 10, 2, 0)
    own = parent.own_usage()
    assert own is not None and (own.requests, own.input_tokens, own.output_tokens) == (1, 10, 2)
    child = UsageMeter(parent=parent)
    child.start_call(5)
    child.charge("m", "d", 5, 1, 0)
    parent.start_call(3)
    parent.charge("n", "", 3, 3, 0)
    total = parent.snapshot()
    assert (total.requests, total.input_tokens, total.output_tokens) == (3, 18, 6)
    own = parent.own_usage()
    assert own is not None
    assert (own.requests, own.input_tokens, own.output_tokens) == (2, 13, 5)
    assert set(own.by_model) == {"m", "n"} and own.by_model["m"].input_tokens == 10
    assert not own.by_deployment  # the nested call's deployment is not the parent's own
    assert child.own_usage() == child.snapshot()
    assert UsageMeter().own_usage() is None
