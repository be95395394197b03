"""`Watchdog`: request deadlines without a cancel scope per request.

A trio cancel scope costs about as much as two checkpoints, and a model call used to open
one for its request timeout. Here every in-flight exchange of a session is written in a
dict with its deadline (an insert and a delete per request), and one task, owned by the
session's nursery, sleeps until the earliest deadline. An exchange still there at its
deadline is *expired*: marked, and its connection closed at once, which wakes the task
blocked on it with a connection error that the session reports as a timeout.

The task scans the dict only when it wakes: at the earliest deadline it computed (most of
those exchanges have long finished; then it computes the next) or when an exchange with an
earlier deadline than every pending one is added (rare: deadlines are ``now + timeout``).
"""

from __future__ import annotations

import math
from typing import NoReturn, Protocol, final

import trio

__all__ = ["Expirable", "Watchdog"]


class Expirable(Protocol):
    """What a `Watchdog` watches: something it can end at its deadline."""

    def expire(self) -> None:
        """Mark as timed out and wake whoever waits on it (no I/O wait; may close sockets)."""


@final
class Watchdog:
    """Expires each watched item that is still watched at its deadline (see module doc).

    `watch` and `unwatch` never block; `run` is the task (start it in a nursery).
    """

    __slots__ = ("_due", "_scope", "_wake")

    def __init__(self) -> None:
        self._due: dict[Expirable, float] = {}
        self._wake = math.inf  # when `run` wakes next
        self._scope: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._due)

    def watch(self, item: Expirable, deadline: float) -> None:
        """Expire ``item`` at ``deadline`` (a trio clock time) unless unwatched before."""
        self._due[item] = deadline
        if deadline < self._wake:
            self._wake = deadline
            if self._scope is not None:
                self._scope.deadline = deadline

    def unwatch(self, item: Expirable) -> None:
        """Stop watching ``item`` (nothing if it is not watched: it may have expired)."""
        self._due.pop(item, None)

    async def run(self) -> NoReturn:
        """Expire items as their deadlines pass, forever (until cancelled)."""
        due = self._due
        while True:
            self._wake = min(due.values(), default=math.inf)
            with trio.CancelScope(deadline=self._wake) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            for item, deadline in list(due.items()):
                if deadline <= now:
                    del due[item]
                    item.expire()
