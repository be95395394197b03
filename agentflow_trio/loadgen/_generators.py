"""The two load generators: closed (virtual users in a loop) and open (scheduled arrivals).

Both call ``await target(index) -> outcome`` (an outcome label such as ``"succeeded"``) and
report each finished request to ``recorder.record(stage, intended, started, ended,
outcome)`` with times from ``trio.current_time()``, so they run exactly under
``MockClock``. Latency is measured from the *intended* start, never from when the request
was actually sent (no coordinated omission):

* closed model: a user intends to send when its think time ends (``ended + think``), or,
  for a user added by a ramp, when the ramp called for it;
* open model: the intended start of arrival k is its scheduled time, however far behind
  the generator (or the system under test) is; a request that had to wait for an
  in-flight slot carries that wait in its latency.

Each request is attributed to the stage its intended start falls in. When the plan ends
no new request starts; requests in flight get ``grace`` seconds to finish and are then
cancelled (not recorded: `RunSummary.unfinished` counts them). Every task a generator
starts lives in its own nursery and is gone when the call returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from .stages import Plan

__all__ = ["Recorder", "RunSummary", "Target", "ThinkTime", "run_closed", "run_open"]

Target = Callable[[int], Awaitable[str]]
"""``await target(index)`` sends one request and returns its outcome label."""

ThinkTime = float | Callable[[], float]
"""Seconds a virtual user pauses between requests: a number or a function returning one."""


class Recorder(Protocol):
    """Where generators report finished requests (times from ``trio.current_time()``)."""

    def record(
        self, stage: int, intended: float, started: float, ended: float, outcome: str
    ) -> None: ...


@attrs.frozen(slots=True)
class RunSummary:
    """What a generator did, besides what it recorded.

    ``started_at``/``ended_at`` are trio times (the plan's start; when the last request
    finished or the grace period ran out). ``issued`` requests were started and
    ``completed`` of them finished; ``dropped`` open-model arrivals were due before the end
    but never started because ``max_in_flight`` requests were still running.
    """

    started_at: float
    ended_at: float
    issued: int
    completed: int
    dropped: int = 0

    @property
    def elapsed(self) -> float:
        """Seconds from the plan's start to the end of the last request."""
        return self.ended_at - self.started_at

    @property
    def unfinished(self) -> int:
        """Requests cancelled at the end of the grace period."""
        return self.issued - self.completed


async def run_closed(
    target: Target,
    plan: Plan,
    recorder: Recorder,
    *,
    think_time: ThinkTime = 0.0,
    max_requests: int | None = None,
    grace: float = 30.0,
) -> RunSummary:
    """Run virtual users (``plan.users_at(t)`` of them) that call ``target`` back to back.

    Users are numbered from 0; a ramp down stops the highest numbers after their current
    request. With ``max_requests`` exactly that many requests are issued (fewer if the plan
    ends first), and the run ends as soon as they have finished.
    """
    if plan.is_rate:
        raise ValueError("a closed-model plan counts users, not rates")
    if max_requests is not None and max_requests < 1:
        raise ValueError(f"max_requests must be >= 1, got {max_requests}")
    users = _ClosedUsers(target, plan, recorder, think_time, max_requests)
    async with trio.open_nursery() as nursery:
        await users.control(nursery)
        nursery.cancel_scope.deadline = trio.current_time() + grace
    return users.summary(trio.current_time())


@attrs.define(slots=True, eq=False)
class _ClosedUsers:
    target: Target
    plan: Plan
    recorder: Recorder
    think_time: ThinkTime
    max_requests: int | None
    t0: float = 0.0
    end: float = 0.0
    users: int = 0
    issued: int = 0
    completed: int = 0
    running: set[int] = attrs.field(factory=set)
    stopped: trio.Event = attrs.field(factory=trio.Event)

    async def control(self, nursery: trio.Nursery) -> None:
        """Start and retire users as the plan asks, until it ends or the cap is reached."""
        plan = self.plan
        self.t0 = trio.current_time()
        end = self.end = self.t0 + plan.total
        while not self.stopped.is_set():
            now = trio.current_time()
            if now >= end:
                break
            self.users = plan.users_at(now - self.t0)
            for index in range(self.users):
                if index not in self.running:
                    self.running.add(index)
                    nursery.start_soon(self.user, index, now)
            with trio.move_on_at(min(self.t0 + plan.next_change(now - self.t0), end)):
                await self.stopped.wait()
        self.users = 0
        self.stopped.set()

    def may_start(self, index: int) -> bool:
        if self.stopped.is_set() or index >= self.users or trio.current_time() >= self.end:
            return False
        if self.max_requests is not None and self.issued >= self.max_requests:
            self.stopped.set()
            return False
        return True

    async def user(self, index: int, intended: float) -> None:
        try:
            while self.may_start(index):
                self.issued += 1
                started = trio.current_time()
                stage = self.plan.locate(intended - self.t0)[0]
                outcome = await self.target(index)
                ended = trio.current_time()
                self.completed += 1
                self.recorder.record(stage, intended, started, ended, outcome)
                think = self.think_time() if callable(self.think_time) else self.think_time
                if think > 0:
                    intended = ended + think
                    with trio.move_on_at(intended):
                        await self.stopped.wait()
                else:  # back to back: no timer, no scope; a checkpoint keeps it fair
                    intended = ended
                    await trio.lowlevel.checkpoint()
        finally:
            self.running.discard(index)

    def summary(self, now: float) -> RunSummary:
        return RunSummary(self.t0, now, self.issued, self.completed)


async def run_open(
    target: Target,
    plan: Plan,
    recorder: Recorder,
    *,
    max_in_flight: int = 10_000,
    grace: float = 30.0,
) -> RunSummary:
    """Start a request at each of ``plan.arrivals()``, whether earlier ones finished or not.

    At most ``max_in_flight`` requests run at once; an arrival that finds them all busy
    waits (its latency still counts from its scheduled time). Arrivals still waiting when
    the plan ends are counted as ``dropped``.
    """
    if not plan.is_rate:
        raise ValueError("an open-model plan needs rates (such as '200/s')")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    arrivals = _OpenArrivals(target, plan, recorder, trio.CapacityLimiter(max_in_flight))
    async with trio.open_nursery() as nursery:
        await arrivals.schedule(nursery)
        nursery.cancel_scope.deadline = trio.current_time() + grace
    return arrivals.summary(trio.current_time())


@attrs.define(slots=True, eq=False)
class _OpenArrivals:
    target: Target
    plan: Plan
    recorder: Recorder
    slots: trio.CapacityLimiter
    t0: float = 0.0
    issued: int = 0
    completed: int = 0
    dropped: int = 0

    async def schedule(self, nursery: trio.Nursery) -> None:
        """Start each arrival at its time. An arrival already due (the OS wakes a sleeper
        in whole milliseconds, so at high rates several come due at once) starts without a
        timer or a cancel scope, after a plain checkpoint; so does one that finds a free
        slot at once. Only waiting (for the time, or for a slot) opens a scope."""
        now = trio.current_time
        t0 = self.t0 = now()
        end = t0 + self.plan.total
        slots = self.slots
        due = iter(self.plan.arrivals())
        for offset in due:
            intended = t0 + offset
            if intended >= end:
                return
            if intended > now():
                await trio.sleep_until(intended)
            else:
                await trio.lowlevel.checkpoint()  # behind schedule: still let requests run
            token = object()
            try:
                slots.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                acquired = False
                with trio.move_on_at(end):
                    await slots.acquire_on_behalf_of(token)
                    acquired = True
                if not acquired:
                    self.dropped += 1 + sum(1 for later in due if t0 + later < end)
                    return
            self.issued += 1
            nursery.start_soon(self.arrival, self.issued - 1, intended, token)

    async def arrival(self, index: int, intended: float, token: object) -> None:
        try:
            started = trio.current_time()
            outcome = await self.target(index)
            ended = trio.current_time()
            self.completed += 1
            stage = self.plan.locate(intended - self.t0)[0]
            self.recorder.record(stage, intended, started, ended, outcome)
        finally:
            self.slots.release_on_behalf_of(token)

    def summary(self, now: float) -> RunSummary:
        return RunSummary(self.t0, now, self.issued, self.completed, self.dropped)
