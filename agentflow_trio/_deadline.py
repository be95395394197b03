"""A caller's deadline handed down as data: `CallDeadline` and `CALL_DEADLINE`.

A trio cancel scope costs about as much as two checkpoints; a circuit breaker that opens one
per model call pays that on every call, although the HTTP session below it times its own
waits anyway. So a guard whose callee bounds every wait of its own (the lean HTTP session
does) may skip its scope and set `CALL_DEADLINE` instead: the callee then ends each wait at
the earlier of its own deadline and this one, and sets ``fired`` when it was this one that
ended it, so the guard can report its own timeout. Shared by resilience/ (which sets it) and
llm/_lean/ (which honours it).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import final

__all__ = ["CALL_DEADLINE", "CallDeadline"]


@final
class CallDeadline:
    """``at``: a trio clock time the callee must not wait past; ``fired``: it did end a wait."""

    __slots__ = ("at", "fired")

    def __init__(self, at: float) -> None:
        self.at = at
        self.fired = False


CALL_DEADLINE: ContextVar[CallDeadline | None] = ContextVar(
    "agentflow_trio.call_deadline", default=None
)
