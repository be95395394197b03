"""How many tasks a fan-out of asynchronous tools spawns (issue #23): the first call runs
in the caller's task, inside the fan-out's nursery; each other call gets a task of its own.
Concurrency and cancellation stay as `call_many` promises (virtual time, autojump clock).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from agentflow_trio.tools import ToolRegistry, call_many, tool


def _registry(seen: list[object]) -> ToolRegistry:
    @tool
    async def wait(key: str, seconds: float = 1.0, fail: bool = False) -> dict[str, Any]:
        """Record the task, sleep, answer or raise."""
        seen.append(trio.lowlevel.current_task())
        await trio.sleep(seconds)
        if fail:
            raise ValueError(f"{key} failed")
        return {"key": key}

    return ToolRegistry([wait])


async def test_a_lone_async_call_runs_in_the_callers_task(autojump_clock: Any) -> None:
    seen: list[object] = []
    results = await call_many(_registry(seen), None, [("wait", {"key": "a"})])
    assert [r.output for r in results] == [{"key": "a"}]
    assert seen == [trio.lowlevel.current_task()]


async def test_n_async_calls_spawn_n_minus_one_tasks_and_run_together(
    autojump_clock: Any,
) -> None:
    seen: list[object] = []
    start = trio.current_time()
    calls = [("wait", {"key": k}) for k in "abcd"]
    results = await call_many(_registry(seen), None, calls)
    assert trio.current_time() - start == 1.0  # all four at once
    assert [r.output for r in results] == [{"key": k} for k in "abcd"]
    caller = trio.lowlevel.current_task()
    assert seen.count(caller) == 1 and len(set(map(id, seen))) == 4


async def test_a_failing_sibling_cancels_the_call_in_the_callers_task(
    autojump_clock: Any,
) -> None:
    seen: list[object] = []
    calls = [("wait", {"key": "slow", "seconds": 5.0}), ("wait", {"key": "bad", "fail": True})]
    start = trio.current_time()
    results = await call_many(_registry(seen), None, calls, on_error="cancel_siblings")
    assert trio.current_time() - start == 1.0  # the first call did not run its 5 s
    assert [r.outcome for r in results] == ["cancelled", "error"]


async def test_cancelling_the_caller_cancels_the_call_in_its_task(autojump_clock: Any) -> None:
    seen: list[object] = []
    calls = [("wait", {"key": k, "seconds": 5.0}) for k in "ab"]
    with trio.move_on_after(1.0) as scope:
        await call_many(_registry(seen), None, calls)
        pytest.fail("call_many returned although cancelled")
    assert scope.cancelled_caught and len(seen) == 2
