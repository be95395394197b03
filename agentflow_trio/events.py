"""Values that travel through the runner: `Event`, `AgentResult`, `Outcome`, `ErrorInfo`.

All are frozen attrs classes with slots: cheap to build, safe to share between tasks.
"""

from __future__ import annotations

import enum
import itertools
import os
import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .usage import RunUsage

__all__ = ["AgentResult", "ErrorInfo", "Event", "Outcome", "new_event_id"]

_ID_PREFIX = os.urandom(6).hex() + "-"
_ID_COUNTER = itertools.count(1)


def new_event_id() -> str:
    """A process-unique, cluster-unique-in-practice id: 48 random bits plus a counter.

    Cheaper than ``uuid4`` on the hot path and still unique across worker processes.
    """
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


class Outcome(enum.StrEnum):
    """How an event ended. Exactly one per accepted event."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    USAGE_LIMIT_EXCEEDED = "usage_limit_exceeded"


_EMPTY: Mapping[str, Any] = {}


@attrs.frozen(slots=True)
class Event:
    """Something for an agent to handle.

    ``type`` picks the agent (or route); ``data`` is the payload and ``metadata`` carries
    routing keys, tracing ids and such. Treat both mappings as read-only. Events compare
    by value and hash by ``type``, ``id`` and ``created_at`` (so they can be set members).
    """

    type: str
    data: Mapping[str, Any] = attrs.field(default=_EMPTY, hash=False)
    metadata: Mapping[str, Any] = attrs.field(default=_EMPTY, hash=False)
    id: str = attrs.field(factory=new_event_id)
    created_at: float = attrs.field(factory=time.time)


@attrs.frozen(slots=True)
class ErrorInfo:
    """An exception reduced to text, so a result can outlive (and be sent away from) it."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Keep the exception's class, message and full formatted traceback.

        Never raises for a hostile exception: a ``__str__`` that fails gives a message
        saying so (as the traceback module does)."""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        try:
            message = str(exc)
        except Exception:
            message = "<exception str() failed>"
        return cls(type=type(exc).__qualname__, message=message, traceback=tb)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@attrs.frozen(slots=True)
class AgentResult:
    """What handling an event produced, whatever the outcome.

    Build one with the named constructors `ok`, `failed`, `timed_out`, `cancelled` and
    `usage_limit_exceeded`. The runner fills in ``event_id`` and ``agent``, and ``usage``
    (a `RunUsage`: requests, tokens, cost of every model call the event made, nested
    events' included) for an event that made a model call; None otherwise.
    """

    outcome: Outcome
    output: Any = attrs.field(default=None, hash=False)
    error: ErrorInfo | None = None
    event_id: str | None = None
    agent: str | None = None
    usage: RunUsage | None = attrs.field(default=None, hash=False)

    @classmethod
    def ok(cls, output: Any = None) -> AgentResult:
        """A successful result carrying ``output``."""
        return cls(Outcome.SUCCEEDED, output)

    @classmethod
    def failed(cls, error: BaseException | ErrorInfo | str, output: Any = None) -> AgentResult:
        """A failed result; an exception keeps its traceback text."""
        return cls(Outcome.FAILED, output, _error_info(error))

    @classmethod
    def timed_out(cls, message: str = "event timed out") -> AgentResult:
        """The event ran past its timeout and was cancelled."""
        return cls(Outcome.TIMED_OUT, None, ErrorInfo("Timeout", message))

    @classmethod
    def cancelled(cls, message: str = "event cancelled") -> AgentResult:
        """The event was cancelled (by its caller or by shutdown) before it finished."""
        return cls(Outcome.CANCELLED, None, ErrorInfo("Cancelled", message))

    @classmethod
    def usage_limit_exceeded(
        cls, error: BaseException | ErrorInfo | str, usage: RunUsage | None = None
    ) -> AgentResult:
        """The event's usage budget ran out (`UsageLimitExceeded`); ``usage`` is what
        it spent."""
        return cls(Outcome.USAGE_LIMIT_EXCEEDED, None, _error_info(error), usage=usage)

    @property
    def succeeded(self) -> bool:
        """True if the outcome is `Outcome.SUCCEEDED`."""
        return self.outcome is Outcome.SUCCEEDED

    def unwrap(self) -> Any:
        """Return ``output`` if the event succeeded, else raise `AgentFailed`."""
        if self.outcome is Outcome.SUCCEEDED:
            return self.output
        from .errors import AgentFailed

        raise AgentFailed(self)


def _error_info(error: BaseException | ErrorInfo | str) -> ErrorInfo:
    if isinstance(error, ErrorInfo):
        return error
    if isinstance(error, BaseException):
        return ErrorInfo.from_exception(error)
    return ErrorInfo("Error", str(error))
