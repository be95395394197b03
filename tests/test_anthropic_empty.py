"""Empty messages on the Anthropic wire: never an empty text block, never empty content.

The real Messages API answers 400 to an empty text block ("text content blocks must be
non-empty") and to a message with no content other than a final assistant one; so does the
mock (`_anthropic.problem` is its judge, used here directly on the bodies we build and over
HTTP against the provider). Messages with nothing to say are left out; a cache breakpoint
they carried moves to the block before them. Rules: loopback only, port 0, the real clock,
an absolute ``trio.fail_after`` around each HTTP test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from agentflow_trio.config import LLMConfig, RetryConfig
from agentflow_trio.llm import ChatRequest, open_provider
from agentflow_trio.llm import _anthropic_wire as wire
from agentflow_trio.llm.types import (
    Message,
    ProviderItem,
    ToolCall,
    assistant,
    system,
    tool_message,
    user,
)
from agentflow_trio.mockllm import MockReply, _anthropic, open_mock_llm

TIMEOUT = 10
CACHE = {"type": "ephemeral"}
CALL = ToolCall("tu_1", "search", {"q": "x"}, '{"q": "x"}')


def body_of(messages: tuple[Message, ...]) -> dict[str, Any]:
    return json.loads(wire.messages_body(ChatRequest(messages), "m", max_tokens=64, stream=False))


def test_empty_messages_are_left_out_and_their_breakpoints_kept() -> None:
    body = body_of(
        (
            system(""),
            system("A"),
            user("u1"),
            system("mid"),  # moved into system, after the first
            Message("assistant", "aloud", tool_calls=(CALL,)),
            tool_message("tu_1", "res"),
            assistant(""),
            Message("user", "", cache_control=CACHE),
            user("ok ñ"),
            Message("assistant", "", cache_control=CACHE),
        )
    )
    assert _anthropic.problem(body) is None
    assert body["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "mid"}]
    first, turn, results = body["messages"]
    assert first == {"role": "user", "content": "u1"}
    assert [b["type"] for b in turn["content"]] == ["text", "tool_use"]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "tu_1", "content": "res", "cache_control": CACHE},
        {"type": "text", "text": "ok ñ", "cache_control": CACHE},
    ]


def test_a_breakpoint_on_an_empty_message_after_plain_text_makes_it_a_block() -> None:
    body = body_of((user("hi"), Message("assistant", None, cache_control=CACHE)))
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": CACHE}]}
    ]


_maybe_empty = st.sampled_from(["", "", "word"])
_message = st.one_of(
    st.builds(lambda t: Message("system", t), _maybe_empty),
    st.builds(
        lambda t, c: Message("user", t, cache_control=c), _maybe_empty, st.none() | st.just(CACHE)
    ),
    st.builds(
        lambda t, c: Message("assistant", t, cache_control=c),
        _maybe_empty,
        st.none() | st.just(CACHE),
    ),
    st.just(Message("assistant", "", items=(ProviderItem("openai_responses", {"type": "x"}),))),
)


@given(st.lists(_message, max_size=8))
def test_no_body_has_empty_content_whatever_the_messages(messages: list[Message]) -> None:
    body = body_of((*messages, user("last")))
    assert _anthropic.problem(body) is None


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([{"role": "user", "content": ""}], "messages.0: all messages must have non-empty"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": []},
                {"role": "user", "content": "b"},
            ],
            "messages.1: all messages must have non-empty content except for the optional final",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": ""}]}],
            "messages: text content blocks must be non-empty",
        ),
    ],
)
def test_the_mock_refuses_empty_content_as_the_api_does(messages: Any, fragment: str) -> None:
    problem = _anthropic.problem({"model": "m", "max_tokens": 5, "messages": messages})
    assert problem is not None and problem.startswith(fragment)


def test_the_mock_takes_an_empty_final_assistant_message_and_refuses_an_empty_system_block() -> (
    None
):
    base = {"model": "m", "max_tokens": 5}
    final = [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]
    assert _anthropic.problem({**base, "messages": final}) is None
    empty_system = {**base, "messages": final[:1], "system": [{"type": "text", "text": ""}]}
    assert _anthropic.problem(empty_system) == "system: text content blocks must be non-empty"


async def test_the_reviewers_edge_conversation_is_answered() -> None:
    messages = (
        system("A"),
        user("u1"),
        system("mid-system"),
        Message("assistant", "thinking aloud", tool_calls=(CALL,)),
        tool_message("tu_1", "res"),
        assistant(""),
        user(""),
        user("ok ñ"),
    )
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            config = LLMConfig(
                provider="anthropic",
                model="claude-mock",
                base_url=mock.url,
                retry=RetryConfig(enabled=False),
            )
            async with open_provider(config) as provider:
                mock.script(MockReply(text="fine"))
                response = await provider.complete(ChatRequest(messages))
            (sent,) = mock.received
    assert response.text == "fine"
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]


@pytest.mark.parametrize("stream", [False, True])
def test_pause_turn_is_not_a_stop(stream: bool) -> None:
    message = {
        "type": "message",
        "model": "m",
        "content": [{"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {}}],
        "stop_reason": "pause_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    if stream:
        parser = wire.EventParser("d")
        chunk = parser({"type": "message_delta", "delta": {"stop_reason": "pause_turn"}})
        assert chunk is not None and chunk.finish_reason == "pause_turn"
        return
    response = wire.parse_message(message, "d")
    assert response.finish_reason == "pause_turn"
    assert [i.data["type"] for i in response.items] == ["server_tool_use"]  # sent back as is
    assert wire.message_json(response)["stop_reason"] == "pause_turn"
