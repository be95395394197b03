"""Property-testing your own scheduler with agentflow_trio's testing kit.

Copy this file into your tests after ``pip install -e '.[dev]'`` and run
``pytest test_my_scheduler.py``. The kit's pytest plugin (fixtures ``runner_factory``,
``fake_llm``, ``mock_llm``, ``mcp_server``) is loaded by its entry point; in a checkout
that is not installed, add ``-p agentflow_trio.testing.plugin``.

The code under test is `PriorityRouter`, a routing agent a user might write: it hands
each event to an inner agent, at most ``limit`` at a time, and when events have to wait
the one with the highest ``data["priority"]`` goes next. Its promises are checked the way
the runner's own are: hypothesis generates workloads (arrivals, durations, failures,
timeouts, callers giving up, priorities), `replay` runs each one under virtual time and
records a trace, and `check_trace` checks conservation, bounds (here: the router's own
limit on the inner agent), timeouts, order (here: priority) and shutdown. A broken
router fails with the invariant and the event id, for example::

    InvariantViolation: bounds (agent started) violated for event 5c1e...-7 at t=3:
    3 'work' agents running when it was agent started, the limit is 2
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentflow_trio as af
from agentflow_trio.testing import (
    FakeLLM,
    PriorityOrder,
    RunnerFactory,
    Workload,
    check_trace,
    delayed,
    replay,
    workload_agent,
)
from agentflow_trio.testing.strategies import event_specs, workloads

# ---------------------------------------------------------------- the code under test


@attrs.define
class _Ticket:
    wakeup: trio.Event = attrs.Factory(trio.Event)
    granted: bool = False
    cancelled: bool = False


class PriorityRouter:
    """A routing agent: runs ``inner`` on each event, at most ``limit`` at a time.

    Events that find every slot taken wait; a freed slot goes to the waiting event with
    the highest ``event.data["priority"]`` (first come first served among equals). A
    waiting event that is cancelled (timeout, caller) leaves the queue; one cancelled just
    after being handed a slot passes it on.
    """

    def __init__(self, inner: Any, *, limit: int, name: str = "priority_router") -> None:
        self.inner = inner
        self.limit = limit
        self.name = name
        self._running = 0
        self._waiting: list[tuple[int, int, _Ticket]] = []
        self._arrivals = itertools.count()

    async def __call__(self, ctx: af.Context, event: af.Event) -> af.AgentResult:
        await self._acquire(int(event.data.get("priority", 0)))
        try:
            return await ctx.run(self.inner, event)
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._running < self.limit and not self._waiting:
            self._running += 1
            return
        ticket = _Ticket()
        heapq.heappush(self._waiting, (-priority, next(self._arrivals), ticket))
        try:
            await ticket.wakeup.wait()
        except BaseException:
            if ticket.granted:
                self._release()  # handed a slot as we were cancelled: pass it on
            else:
                ticket.cancelled = True
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, ticket = heapq.heappop(self._waiting)
            if not ticket.cancelled:
                ticket.granted = True  # the slot goes straight to the next event
                ticket.wakeup.set()
                return
        self._running -= 1


# ---------------------------------------------------------------- property tests

LIMIT = 2

# Traffic with pressure: up to 25 events arriving in the first 4 virtual seconds, working 0
# to 6 s, priorities 0..3, every emit mode, failures, per-event timeouts, callers giving
# up, and 3 to 8 runner workers, so more events reach the router than it lets through.
traffic = workloads(
    specs=event_specs(priorities=3, max_arrival=4, max_duration=6),
    workers=st.integers(3, 8),
    max_in_flight=st.integers(3, 16),
)


def highest_priority_first(event: af.Event) -> int:
    return -int(event.data["priority"])


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic)
def test_router_keeps_its_promises(workload: Workload) -> None:
    router = PriorityRouter(workload_agent, limit=LIMIT)
    trace = replay(workload, agents={"work": router}, track_agents=True)
    promises = attrs.evolve(
        trace.bounds,  # the runner's own bounds, from the workload's config
        agent_limits={"work": LIMIT},
        priority=PriorityOrder(highest_priority_first, agent="work"),
    )
    check_trace(trace, promises)


# ---------------------------------------------------------------- one example, with fixtures


@pytest.mark.trio
async def test_urgent_questions_overtake_the_queue(
    runner_factory: RunnerFactory, fake_llm: FakeLLM
) -> None:
    """runner_factory gives virtual time; fake_llm answers after 1 virtual second each."""

    @af.agent(name="answer")
    async def answer(ctx: af.Context, event: af.Event) -> str:
        reply = await ctx.llm.complete(event.data["question"])
        return str(reply.text)

    fake_llm.script(*(delayed(1, f"answer {i}") for i in range(4)))
    router = PriorityRouter(answer, limit=1)
    runner = runner_factory({"ask": router}, llm=fake_llm.client, worker_pool_size=4)
    questions = [("routine 1", 0), ("routine 2", 0), ("routine 3", 0), ("urgent", 9)]
    handles = []
    async with runner:
        for question, priority in questions:
            event = af.Event("ask", {"question": question, "priority": priority})
            handles.append(await runner.emit(event))
            await trio.testing.wait_all_tasks_blocked()  # it reached the router
        results = [await h.result() for h in handles]
    assert all(r.succeeded for r in results)
    asked = [request.messages[-1].content for request in fake_llm.requests]
    assert asked == ["routine 1", "urgent", "routine 2", "routine 3"]
    assert trio.current_time() == 4  # one at a time, one virtual second each
