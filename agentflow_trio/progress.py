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

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
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
    "ProgressReceiver",
    "ProgressSink",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallStarted",
    "current_sink",
    "enter_sink",
    "exit_sink",
    "open_progress_channel",
    "text_delta",
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

_new_object = object.__new__
_set_text = TextDelta.__dict__["text"].__set__  # the slots' own descriptors: a frozen
_set_model = TextDelta.__dict__["model"].__set__  # class's __setattr__ is not called


def text_delta(text: str, model: str = "") -> TextDelta:
    """``TextDelta(text, model)``, built in two thirds of the time (one is made per model
    chunk a caller streams: bench/stream_overhead.py)."""
    delta = _new_object(TextDelta)
    _set_text(delta, text)
    _set_model(delta, model)
    return delta


class _Channel:
    """The state one sink and its receiver share: a bounded FIFO of items, one waiting
    receiver at most, and the senders waiting for room."""

    __slots__ = ("closed", "getter", "gone", "items", "max_items", "putters", "waiting")

    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.items: deque[ProgressItem] = deque()
        self.max_items = max_items
        self.closed = False  # no more items (the event ended)
        self.gone = False  # the receiver went away: items are dropped
        self.getter: trio.lowlevel.Task | None = None
        self.putters = trio.lowlevel.ParkingLot()
        self.waiting = 0  # senders parked (or just woken) in `putters`

    def wake_getter(self) -> None:
        getter = self.getter
        if getter is not None:
            self.getter = None
            trio.lowlevel.reschedule(getter)

    def abort_getter(self, _: object) -> trio.lowlevel.Abort:
        self.getter = None
        return trio.lowlevel.Abort.SUCCEEDED


@final
class ProgressSink:
    """Where an event's code sends progress items: the send side of a bounded channel.

    ``await send(item)`` waits while the channel holds ``max_items`` (backpressure); once
    the caller has gone away (`ProgressReceiver.close`) items are dropped silently, since
    the event is being cancelled anyway. Any number of tasks may send.

    While the channel has room, ``send`` is a cancellation point but does not yield to
    the scheduler: a model stream's chunks already read go to the caller in one run, and
    the caller, woken once, takes them all. The channel is a deque and a parking lot
    rather than a trio memory channel for the same reason: an item costs a fraction of
    a model chunk's own CPU (bench/stream_overhead.py).
    """

    __slots__ = ("_channel",)

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    async def send(self, item: ProgressItem) -> None:
        """Send ``item``, waiting for room (then it yields to the scheduler; with room it
        only checks for cancellation)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        channel = self._channel
        while len(channel.items) >= channel.max_items and not channel.gone:
            channel.waiting += 1
            try:
                await channel.putters.park()
            finally:
                channel.waiting -= 1
        if channel.gone or channel.closed:
            return
        channel.items.append(item)
        if channel.getter is not None:
            channel.wake_getter()

    def send_nowait(self, item: ProgressItem) -> None:
        """Send ``item`` if there is room (dropped if the caller went away or the sink
        was closed); not a checkpoint.

        Raises:
            trio.WouldBlock: the channel is full.
        """
        channel = self._channel
        if channel.gone or channel.closed:
            return
        if len(channel.items) >= channel.max_items:
            raise trio.WouldBlock
        channel.items.append(item)
        if channel.getter is not None:
            channel.wake_getter()

    def close(self) -> None:
        """No more items: the caller's iteration ends after what is buffered. Not a
        checkpoint; idempotent."""
        channel = self._channel
        channel.closed = True
        channel.wake_getter()
        channel.putters.unpark_all()


@final
class ProgressReceiver:
    """Where a caller takes an event's progress items from, in the order they were sent
    (one receiving task at a time). Made by `open_progress_channel`."""

    __slots__ = ("_channel",)

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def receive_nowait(self) -> ProgressItem:
        """The oldest item.

        Raises:
            trio.WouldBlock: none is buffered yet.
            trio.EndOfChannel: none is buffered and the sink was closed.
            trio.ClosedResourceError: this receiver was closed.
        """
        channel = self._channel
        items = channel.items
        if items:
            if channel.waiting:
                channel.putters.unpark()
            return items.popleft()
        if channel.gone:
            raise trio.ClosedResourceError("the progress receiver was closed")
        if channel.closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> ProgressItem:
        """The oldest item, waiting for one. A cancellation point; a scheduling point
        only when it waits (as `ProgressSink.send`).

        Raises:
            trio.EndOfChannel: the sink was closed and every item was taken.
            trio.ClosedResourceError: this receiver was closed.
            trio.BusyResourceError: another task is waiting already.
        """
        channel = self._channel
        if channel.items or channel.gone or channel.closed:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            if channel.getter is not None:
                raise trio.BusyResourceError("another task is receiving")
            channel.getter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(channel.abort_getter)
        return self.receive_nowait()

    def close(self) -> None:
        """Stop receiving: buffered items are dropped, senders never wait again. Not a
        checkpoint; idempotent."""
        channel = self._channel
        channel.gone = True
        channel.items.clear()
        channel.putters.unpark_all()
        channel.wake_getter()

    def buffered(self) -> int:
        """How many items are waiting to be received."""
        return len(self._channel.items)

    def then(self, last: Callable[[], Awaitable[ProgressItem]]) -> AsyncIterator[ProgressItem]:
        """``async for`` over the items until the sink is closed (or this receiver), then
        one more: ``await last()``. A buffered item is returned at once (no trip through
        the scheduler: a caller that fell behind catches up in one go); waiting for one
        is the checkpoint, and it comes at least once every ``max_items`` items (the
        sender must run to send more), so the loop stays cancellable."""
        return _ItemsThen(self, last)


@final
class _ItemsThen:
    """`ProgressReceiver.then`: the items, inline on the fast path, then the last one."""

    __slots__ = ("_channel", "_last", "_receiver")

    def __init__(
        self, receiver: ProgressReceiver, last: Callable[[], Awaitable[ProgressItem]]
    ) -> None:
        self._receiver: ProgressReceiver | None = receiver
        self._channel = receiver._channel
        self._last: Callable[[], Awaitable[ProgressItem]] | None = last

    def __aiter__(self) -> _ItemsThen:
        return self

    async def __anext__(self) -> ProgressItem:
        channel = self._channel
        items = channel.items
        if items:
            if channel.waiting:
                channel.putters.unpark()
            return items.popleft()
        receiver = self._receiver
        if receiver is not None:
            try:
                return await receiver.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._receiver = None
        last = self._last
        if last is None:
            raise StopAsyncIteration
        self._last = None
        return await last()


_SINK: ContextVar[ProgressSink | None] = ContextVar("agentflow_trio_progress", default=None)


def current_sink() -> ProgressSink | None:
    """The sink of the event this code runs for, or None when nobody streams it."""
    return _SINK.get()


def open_progress_channel(max_items: int) -> tuple[ProgressSink, ProgressReceiver]:
    """A sink and the receiver its items come out of, buffering at most ``max_items``.

    Raises:
        ValueError: ``max_items`` is below 1.
    """
    channel = _Channel(max_items)
    return ProgressSink(channel), ProgressReceiver(channel)


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
