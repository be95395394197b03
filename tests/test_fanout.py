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
