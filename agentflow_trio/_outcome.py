"""Which exceptions are an agent's to report, and which only pass through it.

An agent's error is anything it raises, BaseException subclasses included (a custom
``BaseException``, ``GeneratorExit``, a ``trio.Cancelled`` it made or re-raised from
another scope): it becomes a ``failed`` result. Three kinds pass through instead:
``trio.Cancelled`` (the scope that was cancelled decides), ``KeyboardInterrupt`` and
``SystemExit`` (the process is stopping). Whether a ``Cancelled`` is real is told by
whether the task really is cancelled now, never by the exception's class alone.
A `UsageLimitExceeded` (alone, or inside the ExceptionGroup of a nursery) ends the event
``usage_limit_exceeded`` instead of ``failed`` (`failure`).
Shared by ``agents.py`` (`invoke`) and ``runner.py`` (an event's run).
"""

from __future__ import annotations

import math
from typing import Final

import trio

from .errors import UsageLimitExceeded
from .events import AgentResult, ErrorInfo, Outcome
from .usage import UsageMeter

__all__ = [
    "CALLER_CANCELLED",
    "SHUTDOWN_CANCELLED",
    "cancelled_now",
    "escaped",
    "failure",
    "only_cancelled",
    "passes_through",
    "reraise",
    "settle",
    "stamp",
    "stops_process",
    "usage_error",
]

CALLER_CANCELLED: Final = ErrorInfo("Cancelled", "cancelled by its caller")
SHUTDOWN_CANCELLED: Final = ErrorInfo("Cancelled", "cancelled by runner shutdown")

_PASS_THROUGH: Final = (trio.Cancelled, KeyboardInterrupt, SystemExit)
_STOPS_PROCESS: Final = (KeyboardInterrupt, SystemExit)


def passes_through(exc: BaseException) -> bool:
    """A Cancelled, KeyboardInterrupt or SystemExit, alone or anywhere in a group."""
    if isinstance(exc, Exception):
        return False
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(_PASS_THROUGH) is not None
    return isinstance(exc, _PASS_THROUGH)


def stops_process(exc: BaseException) -> bool:
    """A KeyboardInterrupt or SystemExit, alone or anywhere in a group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(_STOPS_PROCESS) is not None
    return isinstance(exc, _STOPS_PROCESS)


def only_cancelled(exc: BaseException) -> bool:
    """A Cancelled, or a group of nothing but Cancelled."""
    if isinstance(exc, trio.Cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[1] is None


def cancelled_now() -> bool:
    """Whether the calling task is cancelled (an enclosing scope was cancelled and is not
    shielded from): ``current_effective_deadline`` is ``-inf`` exactly then."""
    return trio.current_effective_deadline() == -math.inf


def usage_error(exc: BaseException) -> UsageLimitExceeded | None:
    """The `UsageLimitExceeded` that ``exc`` is, or the first one inside its group."""
    if isinstance(exc, UsageLimitExceeded):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        group = exc.subgroup(UsageLimitExceeded)
        while group is not None:
            first = group.exceptions[0]
            if isinstance(first, UsageLimitExceeded):
                return first
            group = first if isinstance(first, BaseExceptionGroup) else None
    return None


def failure(
    exc: BaseException, agent: str | None = None, event_id: str | None = None
) -> AgentResult:
    """The result of an agent that raised ``exc`` (not one that passes through):
    ``usage_limit_exceeded`` for a usage limit (the limit error's type and message, the
    whole traceback; ``usage`` is what was spent when it was raised), else ``failed``."""
    limit = usage_error(exc)
    if limit is None:
        return AgentResult(Outcome.FAILED, None, ErrorInfo.from_exception(exc), event_id, agent)
    info = ErrorInfo.from_exception(exc)
    if limit is not exc:
        info = ErrorInfo(type(limit).__qualname__, str(limit), info.traceback)
    # What the agent had done so far, when it said (tool_agent keeps its transcript there).
    output = getattr(limit, "partial_output", None)
    return AgentResult(Outcome.USAGE_LIMIT_EXCEEDED, output, info, event_id, agent, limit.usage)


def escaped(exc: BaseException, nested: bool) -> AgentResult:
    """The result of an event whose run raised ``exc`` past the event's own scope: a
    real cancellation of this task (shutdown, or a nested call's caller) is
    ``cancelled``; anything else, a hand-made ``Cancelled`` included, is ``failed``
    (``usage_limit_exceeded`` for a usage limit)."""
    if only_cancelled(exc) and cancelled_now():
        error = CALLER_CANCELLED if nested else SHUTDOWN_CANCELLED
        return AgentResult(Outcome.CANCELLED, None, error)
    return failure(exc)


def reraise(exc: BaseException) -> bool:
    """Whether ``exc`` goes on after its event ended: a real cancellation (its scope's
    owner handles it) or a process stop. Anything else was the agent's error, now its
    result; swallowing it leaves a cancelled task cancelled (trio raises again at the
    task's next checkpoint)."""
    return stops_process(exc) or (only_cancelled(exc) and cancelled_now())


def settle(result: AgentResult, event_id: str, agent: str | None, meter: UsageMeter) -> AgentResult:
    """An event's final result: stamped with its id and agent, carrying the meter's usage
    when the event made a model call, and ``usage_limit_exceeded`` when it is a
    ``failed`` result that reports the `UsageLimitExceeded` the meter raised (an agent
    that returned the error as a result rather than raising it)."""
    outcome = result.outcome
    usage = meter.snapshot() if meter.requests else result.usage
    if (
        outcome is Outcome.FAILED
        and meter.exceeded is not None
        and result.error is not None
        and result.error.type == UsageLimitExceeded.__qualname__
    ):
        outcome = Outcome.USAGE_LIMIT_EXCEEDED
    if (
        result.event_id == event_id
        and (result.agent is not None or agent is None)
        and outcome is result.outcome
        and usage is result.usage
    ):
        return result
    name = result.agent or agent
    return AgentResult(outcome, result.output, result.error, event_id, name, usage)


def stamp(result: AgentResult, event_id: str, agent: str | None) -> AgentResult:
    """``result`` with the event's id, and the agent's name unless it names one."""
    if result.event_id == event_id and (result.agent is not None or agent is None):
        return result
    name = result.agent or agent
    return AgentResult(result.outcome, result.output, result.error, event_id, name, result.usage)
