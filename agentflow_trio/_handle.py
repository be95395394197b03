"""`EventHandle`, the runner's promise for one accepted event, and the checks made
before one exists: nothing that would fail inside the runner's tasks (an object that
is not an `Event`, a NaN timeout, limits that are not `UsageLimits`) gets a handle.
Shared by ``runner.py`` and its re-exports; users get handles from `Runner.emit`, never
build them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeAlias, final

import trio

from ._outcome import CALLER_CANCELLED
from .agents import _timeout_seconds
from .events import AgentResult, ErrorInfo, Event, Outcome
from .progress import (
    FinalResult,
    ProgressItem,
    ProgressReceiver,
    ProgressSink,
    open_progress_channel,
)
from .usage import UsageLimits

__all__ = ["CALLER_CANCELLED", "EventHandle", "ItemStream", "new_handle", "open_item_stream"]

ItemStream: TypeAlias = AsyncIterator[ProgressItem]
"""What ``runner.stream(event)`` gives: progress items, the `FinalResult` last."""


@final
class EventHandle:
    """The runner's promise for one accepted event; completes exactly once.

    Only the runner makes these. ``await handle.result()`` returns the `AgentResult`
    whatever the outcome; ``handle.cancel()`` asks for the event to end as ``cancelled``
    (at once if it is still queued, at its next checkpoint if it runs);
    ``async for item in handle.events()`` gives the event's progress items, the
    `FinalResult` last (see `events`). ``limits`` are the event's own usage limits
    (``emit(..., limits=)``), tightened by the agent's and ``[limits]`` when it runs.
    """

    __slots__ = (
        "_cancelled_by",
        "_done",
        "_items",
        "_result",
        "_scope",
        "_sink",
        "_slot_held",
        "_waiter",
        "event",
        "limits",
        "timeout",
    )

    def __init__(
        self, event: Event, timeout: float | None, limits: UsageLimits | None = None
    ) -> None:
        self.event = event
        self.timeout = timeout
        self.limits = limits
        self._sink: ProgressSink | None = None  # the event's code sends progress here
        self._items: ProgressReceiver | None = None
        self._result: AgentResult | None = None
        self._waiter: trio.lowlevel.Task | None = None  # the first task waiting for the end
        self._done: trio.Event | None = None  # made only if a second task waits as well
        self._scope: trio.CancelScope | None = None
        self._cancelled_by: ErrorInfo | None = None  # why a cancel was asked for, if one was
        self._slot_held = False  # a worker slot is held on behalf of this handle

    @property
    def done(self) -> bool:
        """True once the event has ended (in any outcome)."""
        return self._result is not None

    async def result(self) -> AgentResult:
        """Wait for the event to end and return its result. Always a checkpoint."""
        if self._result is None:
            if self._waiter is None and self._done is None:  # the usual case: one caller
                self._waiter = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
            else:
                if self._done is None:
                    self._done = trio.Event()
                await self._done.wait()
        else:
            await trio.lowlevel.checkpoint()
        assert self._result is not None
        return self._result

    def _abort_wait(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        """The waiting caller was cancelled: it no longer waits (a trio.Event's set and
        closure, saved for the one caller almost every handle has)."""
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def result_nowait(self) -> AgentResult:
        """The result if the event has ended; else raise `trio.WouldBlock`."""
        if self._result is None:
            raise trio.WouldBlock
        return self._result

    def events(self) -> AsyncIterator[ProgressItem]:
        """The event's progress items in the order its code sent them, then exactly one
        `FinalResult` (the event's result), last.

        For a handle emitted with ``stream=True`` the items come through a bounded
        channel (``runner.stream_buffer`` items): while it is full, the event's code
        waits in ``sink.send`` (backpressure), so read promptly or the event slows down
        (and may time out). Without ``stream=True`` the only item is the `FinalResult`.
        Iterate once: the items are not kept. Leaving the loop early does not cancel
        the event (``runner.stream`` does; or call `cancel`).
        """
        if self._items is None:
            return _FinalOnly(self)
        return self._items.then(self._final)

    async def _final(self) -> FinalResult:
        """The last item of `events`: no scheduler trip once the event has ended (the
        stream's end was the wait)."""
        result = self._result
        if result is None:
            return FinalResult(await self.result())
        await trio.lowlevel.checkpoint_if_cancelled()
        return FinalResult(result)

    def cancel(self) -> None:
        """Ask for the event to end ``cancelled``; does nothing once it has ended."""
        self._stop(CALLER_CANCELLED)

    def _stop(self, why: ErrorInfo) -> None:
        """`cancel`, the result's error saying ``why`` (the caller, or the runner's
        shutdown of an event run in its caller's task)."""
        if self._result is not None or self._cancelled_by is not None:
            return
        self._cancelled_by = why
        if self._scope is not None:
            self._scope.cancel()
        else:  # still queued: resolve now; the dispatcher skips it later
            self._resolve(AgentResult(Outcome.CANCELLED, None, why, self.event.id))

    def _resolve(self, result: AgentResult) -> bool:
        if self._result is not None:
            return False
        self._result = result
        if self._sink is not None:  # the event's code has ended: no more items
            self._sink.close()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        if self._done is not None:
            self._done.set()
        return True

    def _open_stream(self, max_items: int) -> None:
        self._sink, self._items = open_progress_channel(max_items)

    def _stop_stream(self) -> None:
        """The caller is gone: drop buffered items, and make later sends no-ops."""
        if self._items is not None:
            self._items.close()

    def __repr__(self) -> str:
        state = self._result.outcome.value if self._result is not None else "pending"
        return f"<EventHandle {self.event.id} {self.event.type} {state}>"


@final
class _FinalOnly:
    """`EventHandle.events` of a handle not streamed: the `FinalResult` alone."""

    __slots__ = ("_handle",)

    def __init__(self, handle: EventHandle) -> None:
        self._handle: EventHandle | None = handle

    def __aiter__(self) -> _FinalOnly:
        return self

    async def __anext__(self) -> ProgressItem:
        handle = self._handle
        if handle is None:
            raise StopAsyncIteration
        self._handle = None
        return await handle._final()


@asynccontextmanager
async def open_item_stream(emit: Callable[[], Awaitable[EventHandle]]) -> AsyncIterator[ItemStream]:
    """``runner.stream``: emit (``emit()``, a streamed handle), give its items; on leaving
    before the event ended, stop the stream, cancel the event and wait for it to end
    (shielded: the event's scope is cancelled, so it ends at its next checkpoint)."""
    handle = await emit()
    try:
        yield handle.events()
    finally:
        if handle._result is None:
            handle._stop_stream()
            handle.cancel()
            with trio.CancelScope(shield=True):
                await handle.result()


def new_handle(
    event: Event, timeout: float | None, limits: UsageLimits | None = None
) -> EventHandle:
    """A handle for ``event``, after the checks that keep bad input out of the runner.

    Raises:
        TypeError: ``event`` is not an `Event` with a string ``type``, or ``limits`` is
            not None or a `UsageLimits`.
        ConfigError: ``timeout`` is not None, a number > 0 or ``math.inf``.
    """
    if not isinstance(event, Event) or type(event.type) is not str:
        raise TypeError(f"expected an Event whose type is a str, got {event!r}")
    if timeout is not None:
        timeout = _timeout_seconds(timeout)
    if limits is not None and not isinstance(limits, UsageLimits):
        raise TypeError(f"limits must be a UsageLimits, got {limits!r}")
    return EventHandle(event, timeout, limits)
