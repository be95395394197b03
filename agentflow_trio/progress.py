"""What a streaming caller sees while its event runs: typed progress items, and the sink
the event's code sends them to.

``runner.stream(event)`` (and ``handle.events()``) give a caller these items in order: model
text as it arrives (`TextDelta`), tool calls as they start and finish (`ToolCallStarted`,
`ToolCallFinished`), partial structured output (`PartialOutput`), and the event's
`FinalResult` last. Code running for the event finds the sink with `current_sink` (a
context variable, so tasks an agent starts inherit it) and ``await sink.send(item)``: the
sink is a bounded channel, so a slow caller slows the agent down instead of growing a
buffer. No sink (an event nobody streams) costs one context-variable lookup.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Final, final

import attrs
import trio

from .events import AgentResult

__all__ = [
    "FinalResult",
    "PartialOutput",
    "ProgressItem",
    "ProgressSink",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "current_sink",
    "enter_sink",
    "exit_sink",
    "open_progress_channel",
    "using_sink",
]

_EMPTY: Final[Mapping[str, Any]] = {}


@attrs.frozen(slots=True)
class TextDelta:
    """A piece of model text, as the model streamed it."""

    text: str
    model: str = ""


@attrs.frozen(slots=True)
class ToolCallStarted:
    """A tool call the model asked for is about to run."""

    call_id: str
    name: str
    arguments: Mapping[str, Any] = _EMPTY


@attrs.frozen(slots=True)
class ToolCallFinished:
    """A tool call ended; ``status`` is the `ToolResult` status (``ok``, ``error``...)."""

    call_id: str
    name: str
    status: str
    output: Any = None
    error: Any = None
    duration: float = 0.0


@attrs.frozen(slots=True)
class PartialOutput:
    """Structured output as far as it has streamed: a JSON value (dict, list...) that
    grows with each item; the validated, typed value comes with the `FinalResult`."""

    value: Any


@attrs.frozen(slots=True)
class FinalResult:
    """The event's result; always the last item."""

    result: AgentResult


ProgressItem = TextDelta | ToolCallStarted | ToolCallFinished | PartialOutput | FinalResult


@final
class ProgressSink:
    """Where an event's code sends progress items: the send side of a bounded channel.

    ``await send(item)`` waits while the channel is full (backpressure); once the caller
    has gone away (its receive side closed) items are dropped silently, since the event is
    being cancelled anyway.
    """

    __slots__ = ("_send",)

    def __init__(self, send: trio.MemorySendChannel[ProgressItem]) -> None:
        self._send = send

    async def send(self, item: ProgressItem) -> None:
        """Send ``item``, waiting for room. A checkpoint."""
        try:
            await self._send.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.lowlevel.checkpoint_if_cancelled()

    def close(self) -> None:
        """No more items: the caller's iteration ends after what is buffered."""
        self._send.close()


_SINK: ContextVar[ProgressSink | None] = ContextVar("agentflow_trio_progress", default=None)


def current_sink() -> ProgressSink | None:
    """The sink of the event this code runs for, or None when nobody streams it."""
    return _SINK.get()


def open_progress_channel(
    max_items: int,
) -> tuple[ProgressSink, trio.MemoryReceiveChannel[ProgressItem]]:
    """A sink and the receive side its items come out of, buffering at most ``max_items``."""
    send, receive = trio.open_memory_channel[ProgressItem](max_items)
    return ProgressSink(send), receive


@contextmanager
def using_sink(sink: ProgressSink | None) -> Iterator[None]:
    """Make ``sink`` the current one for the code inside (and the tasks it starts)."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


def enter_sink(sink: ProgressSink | None) -> Token[ProgressSink | None]:
    """`using_sink` in two calls, for the runner's hot path: make ``sink`` current and
    return the token `exit_sink` takes to undo it."""
    return _SINK.set(sink)


def exit_sink(token: Token[ProgressSink | None]) -> None:
    """Undo the `enter_sink` that returned ``token``."""
    _SINK.reset(token)
