"""The lean pool's slots (`ConnectionPool.try_acquire`, `acquire`, `release`): counted as a
``trio.Semaphore`` counts them, under the autojump clock. No connection is opened here.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from agentflow_trio.llm._lean.exceptions import PoolTimeout
from agentflow_trio.llm._lean.pool import ConnectionPool, PoolSettings


async def _never() -> trio.abc.Stream:
    raise AssertionError("no connection is opened in these tests")


def _pool(slots: int) -> ConnectionPool:
    return ConnectionPool(_never, PoolSettings(max_connections=slots, connection_timeout=5.0))


async def test_waiters_get_released_slots_first_come_first_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = _pool(1)
    assert pool.try_acquire() and not pool.try_acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await pool.acquire()
        order.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(wait, n)
            await trio.testing.wait_all_tasks_blocked()
        stats = pool.statistics()
        assert (stats.requests, stats.queued) == (4, 3)
        for _ in range(3):
            pool.release()  # handed to the first waiter: nobody else can take it meanwhile
            assert not pool.try_acquire()
            await trio.testing.wait_all_tasks_blocked()
    assert order == [0, 1, 2]
    pool.release()
    stats = pool.statistics()
    assert (stats.requests, stats.queued) == (0, 0)


async def test_a_waiter_that_gives_up_takes_no_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = _pool(1)
    assert pool.try_acquire()
    with pytest.raises(PoolTimeout):
        await pool.acquire()  # connection_timeout (5 s of virtual time)
    with trio.move_on_after(1):
        await pool.acquire()
    assert pool.statistics().queued == 0
    pool.release()
    assert pool.try_acquire()  # the slot came back to the count, not to a gone waiter
    pool.release()
