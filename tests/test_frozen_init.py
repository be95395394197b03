"""`fast_init`: the hot value classes' cheaper ``__init__`` builds the same frozen values
(positional, keyword, defaults, ``attrs.evolve``), and refuses fields it cannot serve."""

from __future__ import annotations

import attrs
import pytest

from agentflow_trio._frozen import fast_init
from agentflow_trio.llm.types import (
    ChatRequest,
    Message,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from agentflow_trio.tools import ToolResult
from agentflow_trio.usage import RunUsage


def test_the_values_are_built_as_attrs_built_them() -> None:
    m = Message("tool", "x", tool_call_id="c1")
    assert (m.role, m.content, m.name, m.tool_calls) == ("tool", "x", None, ())
    assert m.tool_call_id == "c1"
    assert m == Message(role="tool", content="x", tool_call_id="c1")
    assert hash(m) == hash(Message("tool", "x", None, (), "c1"))
    assert attrs.evolve(m, content="y").content == "y"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        m.content = "z"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Message("user")  # type: ignore[call-arg]
    assert ToolCall("i", "n").arguments == {}
    assert ChatRequest((m,)).tools == () and Usage(1, 2).total_tokens == 0
    assert ToolResult("c", "t", "ok").duration == 0.0 and RunUsage().cost == 0.0
    assert Message.__init__.__qualname__ == "Message.__init__"


def test_stream_values_are_built_as_attrs_built_them() -> None:
    delta = ToolCallDelta(0, arguments='{"a"')
    chunk = StreamChunk("hi", (delta,), model="m", refusal="")
    assert (chunk.delta_text, chunk.tool_call_deltas, chunk.finish_reason) == ("hi", (delta,), None)
    assert (chunk.model, chunk.deployment, chunk.items, chunk.response_id) == ("m", "", (), "")
    assert chunk == StreamChunk(
        delta_text="hi", tool_call_deltas=(ToolCallDelta(0, None, None, '{"a"'),), model="m"
    )
    assert attrs.evolve(chunk, deployment="d").deployment == "d"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        chunk.model = "x"  # type: ignore[misc]
    assert StreamChunk.__init__.__qualname__ == "StreamChunk.__init__"


def test_fields_it_cannot_serve_are_refused() -> None:
    @attrs.frozen(slots=True)
    class Checked:
        n: int = attrs.field(validator=attrs.validators.instance_of(int))

    @attrs.frozen(slots=True)
    class Made:
        items: list[int] = attrs.Factory(list)

    @attrs.frozen(slots=True)
    class Later:
        n: int

        def __attrs_post_init__(self) -> None:
            pass

    for cls in (Checked, Made, Later):
        with pytest.raises(TypeError):
            fast_init(cls)
