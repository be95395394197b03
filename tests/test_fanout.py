"""Parallel tool calls (`call_many`) under the autojump clock: exact virtual time.

Concurrency is proven by virtual elapsed time (three 1 s tools take 1 s) and by counting
the calls running at once; no real-time assertion anywhere.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.llm.types import ToolCall
from agentflow_trio.tools import ToolRegistry, call_many, tool


class Probe:
    """Counts running calls and remembers how each call ended."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.ended: dict[str, str] = {}

    def registry(self) -> ToolRegistry:
        probe = self

        @tool
        async def work(key: str, seconds: float = 0.0, fail: bool = False) -> dict[str, Any]:
            """Sleep, then answer or raise."""
            probe.running += 1
            probe.peak = max(probe.peak, probe.running)
            try:
                await trio.sleep(seconds)
                if fail:
                    raise ValueError(f"{key} failed")
                probe.ended[key] = "returned"
                return {"key": key}
            except trio.Cancelled:
                probe.ended[key] = "cancelled"
                raise
            finally:
                probe.running -= 1

        return ToolRegistry([work])


def w(key: str, seconds: float = 0.0, fail: bool = False) -> tuple[str, dict[str, Any]]:
    return ("work", {"key": key, "seconds": seconds, "fail": fail})


async def test_results_in_input_order_and_calls_run_concurrently(autojump_clock: Any) -> None:
    probe = Probe()
    registry = probe.registry()
    start = trio.current_time()
    results = await call_many(registry, None, [w("a", 3), w("b", 1), w("c", 2)])
    assert trio.current_time() - start == pytest.approx(3)  # not 6: concurrent
    assert [r.output for r in results] == [{"key": "a"}, {"key": "b"}, {"key": "c"}]
    assert [r.duration for r in results] == pytest.approx([3, 1, 2])
    assert probe.peak == 3


async def test_per_call_timeout(autojump_clock: Any) -> None:
    probe = Probe()
    start = trio.current_time()
    results = await call_many(probe.registry(), None, [w("a", 5), w("b", 1)], timeout=2)
    assert trio.current_time() - start == pytest.approx(2)
    assert [r.outcome for r in results] == ["timed_out", "ok"]
    assert results[0].error is not None and results[0].error["timeout"] == 2
    assert probe.ended == {"a": "cancelled", "b": "returned"}


async def test_timeout_counts_from_the_start_of_each_call(autojump_clock: Any) -> None:
    # With one slot, the second call waits 1 s for the first, then gets its full 1.5 s.
    probe = Probe()
    results = await call_many(
        probe.registry(), None, [w("a", 1), w("b", 1.2)], max_parallel=1, timeout=1.5
    )
    assert [r.outcome for r in results] == ["ok", "ok"]


async def test_a_failing_call_does_not_cancel_its_siblings(autojump_clock: Any) -> None:
    probe = Probe()
    results = await call_many(probe.registry(), None, [w("a", 2), w("bad", 0, True), w("c", 1)])
    assert [r.outcome for r in results] == ["ok", "error", "ok"]
    assert results[1].error is not None
    assert results[1].error["message"] == "bad failed"
    assert probe.ended == {"a": "returned", "c": "returned"}


async def test_cancel_siblings_keeps_finished_results(autojump_clock: Any) -> None:
    probe = Probe()
    start = trio.current_time()
    calls = [w("fast", 1), w("bad", 2, True), w("slow", 5), w("queued", 0.5)]
    results = await call_many(
        probe.registry(), None, calls, max_parallel=3, on_error="cancel_siblings"
    )
    assert trio.current_time() - start == pytest.approx(2)
    assert [r.outcome for r in results] == ["ok", "error", "cancelled", "ok"]
    # "queued" started at t=1 when "fast" freed its slot, and finished at t=1.5.
    assert probe.ended == {"fast": "returned", "slow": "cancelled", "queued": "returned"}
    cancelled = results[2]
    assert cancelled.error is not None
    assert results[1].call_id in cancelled.error["message"]
    assert cancelled.duration == pytest.approx(2)
    assert cancelled.to_message().tool_call_id == cancelled.call_id


async def test_cancel_siblings_cancels_calls_still_waiting_for_a_slot(
    autojump_clock: Any,
) -> None:
    probe = Probe()
    calls = [w("bad", 1, True), w("waiting", 1)]
    results = await call_many(
        probe.registry(), None, calls, max_parallel=1, on_error="cancel_siblings"
    )
    assert [r.outcome for r in results] == ["error", "cancelled"]
    assert results[1].duration == 0
    assert "waiting" not in probe.ended  # never started


async def test_timeout_counts_as_failure_for_cancel_siblings(autojump_clock: Any) -> None:
    probe = Probe()
    results = await call_many(
        probe.registry(), None, [w("a", 9), w("b", 9)], timeout=1, on_error="cancel_siblings"
    )
    assert sorted(r.outcome for r in results) == ["cancelled", "timed_out"]


async def test_cancelling_the_caller_cancels_every_call(autojump_clock: Any) -> None:
    probe = Probe()
    seen: list[type[BaseException]] = []
    with trio.move_on_after(1) as scope:
        try:
            await call_many(probe.registry(), None, [w("a", 5), w("b", 5), w("c", 5)])
        except BaseException as exc:
            seen.append(type(exc))
            raise
    assert scope.cancelled_caught
    assert seen == [trio.Cancelled]  # bare, not wrapped in an exception group
    assert probe.ended == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert probe.running == 0


async def test_max_parallel_caps_concurrency(autojump_clock: Any) -> None:
    probe = Probe()
    start = trio.current_time()
    results = await call_many(
        probe.registry(), None, [w(str(i), 1) for i in range(7)], max_parallel=3
    )
    assert probe.peak == 3
    assert trio.current_time() - start == pytest.approx(3)  # ceil(7 / 3) rounds of 1 s
    assert all(r.ok for r in results)


async def test_call_forms_and_ids(autojump_clock: Any) -> None:
    registry = Probe().registry()
    calls: list[Any] = [
        ToolCall("model_id", "work", {"key": "a"}),
        ("work", {"key": "b"}),
        ("work", {"key": "c"}, "my_id"),
        ToolCall.parse("bad_json", "work", "{nope"),
    ]
    results = await registry.call_many(None, calls)
    assert results[0].call_id == "model_id" and results[2].call_id == "my_id"
    assert results[1].call_id.startswith("call_")
    assert [r.outcome for r in results] == ["ok", "ok", "ok", "error"]
    assert await call_many(registry, None, []) == []
    with pytest.raises(TypeError):
        await call_many(registry, None, ["work"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_parallel"):
        await call_many(registry, None, [w("a")], max_parallel=0)
    with pytest.raises(ValueError, match="on_error"):
        await call_many(registry, None, [w("a")], on_error="explode")  # type: ignore[arg-type]


async def test_registry_default_cap_and_bound_view(autojump_clock: Any) -> None:
    probe = Probe()
    registry = probe.registry()
    registry.max_parallel = 2
    results = await registry.bind(None).call_many([w(str(i), 1) for i in range(5)])
    assert probe.peak == 2 and len(results) == 5


# --------------------------------------------------------------------------- property

BEHAVIOUR = st.tuples(st.integers(min_value=0, max_value=6), st.booleans())


@settings(deadline=None, max_examples=60)
@given(
    plan=st.lists(BEHAVIOUR, min_size=1, max_size=12),
    max_parallel=st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
    timeout=st.one_of(st.none(), st.integers(min_value=0, max_value=5).map(lambda t: t + 0.5)),
    own_timeout=st.one_of(st.none(), st.integers(min_value=0, max_value=5).map(lambda t: t + 0.5)),
)
def test_property_bound_order_and_outcomes(
    plan: list[tuple[int, bool]],
    max_parallel: int | None,
    timeout: float | None,
    own_timeout: float | None,
) -> None:
    """Over generated latencies and failures: concurrency never exceeds max_parallel,
    results come back in input order, and each outcome is the one the plan implies."""
    running = 0
    peak = 0

    @tool(timeout=own_timeout)
    async def job(index: int, latency: int, fail: bool) -> dict[str, Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await trio.sleep(latency)
            if fail:
                raise RuntimeError(f"job {index} failed")
            return {"index": index}
        finally:
            running -= 1

    registry = ToolRegistry([job])
    calls = [
        ("job", {"index": i, "latency": lat, "fail": fail}, f"id{i}")
        for i, (lat, fail) in enumerate(plan)
    ]

    async def main() -> list[Any]:
        return await call_many(registry, None, calls, max_parallel=max_parallel, timeout=timeout)

    results = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    limit = min(t for t in (timeout, own_timeout, float("inf")) if t is not None)
    assert peak <= (max_parallel or len(plan))
    assert [r.call_id for r in results] == [f"id{i}" for i in range(len(plan))]
    for (latency, fail), result in zip(plan, results, strict=True):
        if latency > limit:
            assert result.outcome == "timed_out"
        elif fail:
            assert result.outcome == "error"
            assert result.error is not None and result.error["exception"] == "RuntimeError"
        else:
            assert result.outcome == "ok"
    assert running == 0


# -- synchronous tools: answered in the caller's task, no task per call -----------------


def _sync_registry(log: list[str]) -> ToolRegistry:
    @tool
    def upper(key: str) -> str:
        """Upper-case ``key`` (or raise for ``boom``)."""
        log.append(key)
        if key == "boom":
            raise ValueError("boom")
        return key.upper()

    @tool
    async def slow(key: str, seconds: float = 1.0) -> str:
        """Sleep, then answer."""
        log.append(key)
        await trio.sleep(seconds)
        return key

    return ToolRegistry([upper, slow])


async def test_sync_tools_run_in_the_callers_task(autojump_clock: Any) -> None:
    caller = trio.lowlevel.current_task()
    seen: list[object] = []

    @tool
    def where(n: int) -> int:
        """Record the task that runs the call."""
        seen.append(trio.lowlevel.current_task())
        return n

    registry = ToolRegistry([where])
    results = await call_many(registry, None, [("where", {"n": i}) for i in range(3)])
    assert [r.output for r in results] == [{"result": 0}, {"result": 1}, {"result": 2}]
    assert seen == [caller, caller, caller]


async def test_sync_and_async_tools_mixed_keep_input_order(autojump_clock: Any) -> None:
    log: list[str] = []
    registry = _sync_registry(log)
    start = trio.current_time()
    calls = [("slow", {"key": "s1"}), ("upper", {"key": "a"}), ("slow", {"key": "s2"})]
    calls += [("upper", {"key": 3}), ("nope", {})]
    results = await call_many(registry, None, calls)
    assert trio.current_time() - start == 1.0  # the two async calls ran concurrently
    assert [r.outcome for r in results] == ["ok", "ok", "ok", "error", "error"]
    assert [r.output for r in results[:3]] == [{"result": "s1"}, {"result": "A"}, {"result": "s2"}]
    assert results[3].error is not None and results[3].error["type"] == "invalid_arguments"
    assert results[4].error is not None and results[4].error["type"] == "unknown_tool"
    assert sorted(log) == ["a", "s1", "s2"]  # bad arguments never reached the tool


async def test_sync_failure_with_cancel_siblings_stops_the_calls_after_it(
    autojump_clock: Any,
) -> None:
    log: list[str] = []
    registry = _sync_registry(log)
    calls = [("upper", {"key": "a"}), ("upper", {"key": "boom"}), ("upper", {"key": "c"})]
    calls.append(("slow", {"key": "d"}))
    results = await call_many(registry, None, calls, on_error="cancel_siblings")
    assert [r.outcome for r in results] == ["ok", "error", "cancelled", "cancelled"]
    assert results[1].traceback is not None and "ValueError: boom" in results[1].traceback
    assert results[2].error is not None and "sibling call" in results[2].error["message"]
    assert log == ["a", "boom"]  # neither c nor d ran


async def test_sync_tool_that_ran_past_its_timeout_is_timed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @tool(timeout=1.0)
    def stuck(seconds: float) -> str:
        """Hold the thread for ``seconds`` of (virtual) time."""
        autojump_clock.jump(seconds)
        return "late"

    registry = ToolRegistry([stuck])
    results = await call_many(
        registry, None, [("stuck", {"seconds": 2.0}), ("stuck", {"seconds": 0.5})]
    )
    assert [r.outcome for r in results] == ["timed_out", "ok"]
    assert results[0].error is not None and results[0].error["timeout"] == 1.0


async def test_one_sync_call_runs_inline_is_timed_and_is_a_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`call` of a synchronous tool takes `call_many`'s inline path: the same outcomes,
    and still a checkpoint (a cancelled caller sees its cancellation after the call)."""
    ran: list[float] = []

    @tool(timeout=1.0)
    def stuck(seconds: float) -> Any:
        """Hold the thread for ``seconds`` of (virtual) time."""
        ran.append(seconds)
        autojump_clock.jump(seconds)
        if seconds < 0:
            raise ValueError("negative")
        if seconds == 0:

            async def later() -> str:
                await trio.sleep(0.25)
                return "awaited"

            return later()
        return "done"

    registry = ToolRegistry([stuck])
    late = await registry.call(None, "stuck", {"seconds": 2.0})
    assert late.outcome == "timed_out" and late.duration == 2.0
    assert (await registry.call(None, "stuck", {"seconds": 0.5})).output == {"result": "done"}
    failed = await registry.call(None, "stuck", {"seconds": -1.0})
    assert failed.outcome == "error" and failed.traceback is not None
    deferred = await registry.call(None, "stuck", {"seconds": 0.0})
    assert deferred.output == {"result": "awaited"} and deferred.duration == 0.25
    with trio.CancelScope() as scope:
        scope.cancel()
        await registry.call(None, "stuck", {"seconds": 0.1})
        raise AssertionError("a call is a checkpoint")  # pragma: no cover
    assert ran == [2.0, 0.5, -1.0, 0.0, 0.1]  # it ran, then the checkpoint raised


async def test_plain_function_returning_a_coroutine_runs_once_concurrently(
    autojump_clock: Any,
) -> None:
    runs: list[int] = []

    async def later(n: int) -> int:
        runs.append(n)
        await trio.sleep(1)
        return n * 10

    def deferred(n: int) -> Any:
        """A plain function that hands back a coroutine."""
        return later(n)

    registry = ToolRegistry([tool(deferred)])
    start = trio.current_time()
    results = await call_many(registry, None, [("deferred", {"n": 1}), ("deferred", {"n": 2})])
    assert trio.current_time() - start == 1.0
    assert [r.output for r in results] == [{"result": 10}, {"result": 20}]
    assert sorted(runs) == [1, 2]  # each once (trio may start the two tasks in either order)


async def test_an_all_sync_fan_out_is_a_checkpoint(autojump_clock: Any) -> None:
    log: list[str] = []
    registry = _sync_registry(log)
    with trio.CancelScope() as scope:
        scope.cancel()
        await call_many(registry, None, [("upper", {"key": "a"})])
    assert scope.cancelled_caught
    assert log == []  # cancelled before anything ran


SYNC_CALL = st.one_of(
    st.tuples(st.just("upper"), st.fixed_dictionaries({"key": st.sampled_from(["a", "boom"])})),
    st.tuples(st.just("upper"), st.fixed_dictionaries({"key": st.integers(0, 3)})),
    st.tuples(st.just("upper"), st.just({})),
    st.tuples(st.just("missing"), st.just({"key": "a"})),
)


@settings(deadline=None)
@given(calls=st.lists(SYNC_CALL, min_size=1, max_size=8))
def test_property_inline_path_equals_calling_each_tool(calls: list[tuple[str, Any]]) -> None:
    """The inline fast path answers exactly as `ToolRegistry.call` does, call by call."""
    log: list[str] = []
    registry = _sync_registry(log)
    specs = [(name, args, f"id{i}") for i, (name, args) in enumerate(calls)]

    async def main() -> tuple[list[Any], list[Any]]:
        fast = await call_many(registry, None, specs)
        slow = [await registry.call(None, n, a, call_id=c) for n, a, c in specs]
        return fast, slow

    fast, slow = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert fast == slow
    assert [r.traceback is None for r in fast] == [r.traceback is None for r in slow]
