"""`EventHandle`, the runner's promise for one accepted event, and the checks made
before one exists: nothing that would fail inside the runner's tasks (an object that
is not an `Event`, a NaN timeout) gets a handle. Shared by ``runner.py`` and its
re-exports; users get handles from `Runner.emit`, never build them.
"""

from __future__ import annotations

from typing import Final, final

import trio

from .agents import _timeout_seconds
from .events import AgentResult, ErrorInfo, Event, Outcome

__all__ = ["CALLER_CANCELLED", "EventHandle", "new_handle"]

CALLER_CANCELLED: Final = ErrorInfo("Cancelled", "cancelled by its caller")


@final
class EventHandle:
    """The runner's promise for one accepted event; completes exactly once.

    Only the runner makes these. ``await handle.result()`` returns the `AgentResult`
    whatever the outcome; ``handle.cancel()`` asks for the event to end as ``cancelled``
    (at once if it is still queued, at its next checkpoint if it runs).
    """

    __slots__ = (
        "_cancel_requested",
        "_done",
        "_result",
        "_scope",
        "_slot_held",
        "event",
        "timeout",
    )

    def __init__(self, event: Event, timeout: float | None) -> None:
        self.event = event
        self.timeout = timeout
        self._result: AgentResult | None = None
        self._done: trio.Event | None = None  # made only if someone waits before the end
        self._scope: trio.CancelScope | None = None
        self._cancel_requested = False
        self._slot_held = False  # a worker slot is held on behalf of this handle

    @property
    def done(self) -> bool:
        """True once the event has ended (in any outcome)."""
        return self._result is not None

    async def result(self) -> AgentResult:
        """Wait for the event to end and return its result. Always a checkpoint."""
        if self._result is None:
            if self._done is None:
                self._done = trio.Event()
            await self._done.wait()
        else:
            await trio.lowlevel.checkpoint()
        assert self._result is not None
        return self._result

    def result_nowait(self) -> AgentResult:
        """The result if the event has ended; else raise `trio.WouldBlock`."""
        if self._result is None:
            raise trio.WouldBlock
        return self._result

    def cancel(self) -> None:
        """Ask for the event to end ``cancelled``; does nothing once it has ended."""
        if self._result is not None or self._cancel_requested:
            return
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()
        else:  # still queued: resolve now; the dispatcher skips it later
            self._resolve(AgentResult(Outcome.CANCELLED, None, CALLER_CANCELLED, self.event.id))

    def _resolve(self, result: AgentResult) -> bool:
        if self._result is not None:
            return False
        self._result = result
        if self._done is not None:
            self._done.set()
        return True

    def __repr__(self) -> str:
        state = self._result.outcome.value if self._result is not None else "pending"
        return f"<EventHandle {self.event.id} {self.event.type} {state}>"


def new_handle(event: Event, timeout: float | None) -> EventHandle:
    """A handle for ``event``, after the checks that keep bad input out of the runner.

    Raises:
        TypeError: ``event`` is not an `Event` with a string ``type``.
        ConfigError: ``timeout`` is not None, a number > 0 or ``math.inf``.
    """
    if not isinstance(event, Event) or type(event.type) is not str:
        raise TypeError(f"expected an Event whose type is a str, got {event!r}")
    if timeout is not None:
        timeout = _timeout_seconds(timeout)
    return EventHandle(event, timeout)
