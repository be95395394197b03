"""Which exceptions are an agent's to report, and which only pass through it.

An agent's error is anything it raises, BaseException subclasses included (a custom
``BaseException``, ``GeneratorExit``, a ``trio.Cancelled`` it made or re-raised from
another scope): it becomes a ``failed`` result. Three kinds pass through instead:
``trio.Cancelled`` (the scope that was cancelled decides), ``KeyboardInterrupt`` and
``SystemExit`` (the process is stopping). Whether a ``Cancelled`` is real is told by
whether the task really is cancelled now, never by the exception's class alone.
Shared by ``agents.py`` (`invoke`) and ``runner.py`` (an event's run).
"""

from __future__ import annotations

import math
from typing import Final

import trio

__all__ = ["cancelled_now", "only_cancelled", "passes_through", "stops_process"]

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
