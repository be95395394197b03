"""Stopping a load run early (``agentcli``'s Ctrl-C) and keeping what it measured.

`drive_until` runs a generator (`run_closed` or `run_open`) and, if ``stop`` is set before
it ends, cancels it at once: no new request starts, the requests in flight are cancelled
(counted as issued but unfinished, never recorded), and a `RunSummary` of what finished
comes back with ``interrupted`` true. Everything recorded until then stays in the
recorder, so the report covers the partial run exactly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from ._generators import RunSummary, Target

__all__ = ["drive_until"]


@attrs.define(slots=True)
class _Counted:
    """How many requests the generator started and how many returned."""

    target: Target
    issued: int = 0
    completed: int = 0

    async def __call__(self, index: int) -> str:
        self.issued += 1
        outcome = await self.target(index)
        self.completed += 1  # the generator records it before its next checkpoint
        return outcome


async def drive_until(
    stop: trio.Event | None,
    drive: Callable[[Target], Awaitable[RunSummary]],
    target: Target,
) -> tuple[RunSummary, bool]:
    """``(await drive(target), False)``, or, once ``stop`` is set first, the summary of
    the run so far and True (see the module docstring). ``stop`` None: never stopped."""
    if stop is None:
        return await drive(target), False
    counted = _Counted(target)
    began = trio.current_time()
    finished: list[RunSummary] = []

    async def run(cancel_scope: trio.CancelScope) -> None:
        finished.append(await drive(counted))
        cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, nursery.cancel_scope)
        await stop.wait()
        nursery.cancel_scope.cancel()
    if finished:
        return finished[0], False
    now = trio.current_time()
    return RunSummary(began, now, counted.issued, counted.completed), True
