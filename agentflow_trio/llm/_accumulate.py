"""Fold a stream of `StreamChunk` back into one `ChatResponse`.

Tool calls arrive in pieces keyed by ``index`` (id and name first, then argument
fragments); the accumulator joins them and parses the arguments once, at the end, with
`ToolCall.parse` (so bad JSON from the model becomes ``parse_error``, never an exception).
"""

from __future__ import annotations

from collections.abc import AsyncIterable

from .types import ChatResponse, StreamChunk, ToolCall, Usage

__all__ = ["StreamAccumulator", "collect_stream"]


class StreamAccumulator:
    """Collects chunks with `add`; `response` builds the `ChatResponse` seen so far."""

    __slots__ = ("_calls", "_finish", "_text", "_usage")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}
        self._finish: str | None = None
        self._usage: Usage | None = None

    def add(self, chunk: StreamChunk) -> None:
        """Fold one chunk in."""
        if chunk.delta_text:
            self._text.append(chunk.delta_text)
        for delta in chunk.tool_call_deltas:
            call = self._calls.setdefault(delta.index, ["", "", ""])
            if delta.id:
                call[0] = delta.id
            if delta.name:
                call[1] = delta.name
            call[2] += delta.arguments
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage

    def response(self, model: str = "") -> ChatResponse:
        """The accumulated text, tool calls (in index order), finish reason and usage."""
        calls = tuple(
            ToolCall.parse(c[0] or f"call_{i}", c[1], c[2]) for i, c in sorted(self._calls.items())
        )
        return ChatResponse("".join(self._text), calls, self._finish, self._usage, model)


async def collect_stream(chunks: AsyncIterable[StreamChunk], model: str = "") -> ChatResponse:
    """Consume ``chunks`` to the end and return the whole response."""
    acc = StreamAccumulator()
    async for chunk in chunks:
        acc.add(chunk)
    return acc.response(model)
