"""CircuitBreaker: counting rules, cancel-scope awareness, half-open probes (MockClock)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.errors import (
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    LLMTimeoutError,
    NotFoundError,
    ServerError,
)
from agentflow_trio.resilience import (
    BreakerState,
    BreakerTimeoutError,
    CircuitBreaker,
    LocalRateLimitError,
)


class Boom(Exception):
    pass


async def ok(value: Any = "ok", delay: float = 0.0) -> Any:
    await trio.sleep(delay)
    return value


async def fail(exc: BaseException | None = None, delay: float = 0.0) -> None:
    await trio.sleep(delay)
    raise exc if exc is not None else Boom()


async def hang() -> None:
    await trio.sleep_forever()


async def open_breaker(breaker: CircuitBreaker, failures: int) -> None:
    for _ in range(failures):
        with pytest.raises(Boom):
            await breaker.call(fail)


async def test_success_passes_args_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker("b")
    assert await breaker.call(ok, 42, 1.0) == 42
    stats = breaker.statistics()
    assert (stats.state, stats.successes, stats.failures) == (BreakerState.CLOSED, 1, 0)
    assert breaker.retry_after() == 0.0
    assert stats.open_until is None


async def test_consecutive_failures_open_and_open_refuses_without_calling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker("svc", failure_threshold=3, open_timeout=10.0)
    await open_breaker(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    await open_breaker(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    opened_at = trio.current_time()
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    await trio.sleep(4)
    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(counted)
    assert calls == 0
    assert info.value.name == "svc"
    assert info.value.retry_after == pytest.approx(6.0)
    assert trio.current_time() == opened_at + 4  # refused at once
    stats = breaker.statistics()
    assert (stats.rejections, stats.opened_count, stats.failures) == (1, 1, 3)
    assert stats.open_until == opened_at + 10.0
    assert breaker.retry_after() == pytest.approx(6.0)


async def test_success_resets_the_consecutive_count(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    await open_breaker(breaker, 2)
    await breaker.call(ok)
    await open_breaker(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.statistics().consecutive_failures == 2


async def test_ordinary_exception_is_reraised_unchanged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker()
    error = ServerError("down", status=503)
    with pytest.raises(ServerError) as info:
        await breaker.call(fail, error)
    assert info.value is error
    assert breaker.statistics().failures == 1


async def test_own_timeout_is_a_counted_failure(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker("slow", call_timeout=5.0, failure_threshold=2)
    start = trio.current_time()
    with pytest.raises(BreakerTimeoutError) as info:
        await breaker.call(hang)
    assert isinstance(info.value, LLMTimeoutError)
    assert (info.value.name, info.value.timeout) == ("slow", 5.0)
    assert trio.current_time() - start == 5.0
    assert breaker.statistics().failures == 1
    with pytest.raises(BreakerTimeoutError):
        await breaker.call(hang)
    assert breaker.state is BreakerState.OPEN


@pytest.mark.parametrize("outer", [1.0, 5.0])  # 5.0: both deadlines expire together
async def test_outer_cancellation_propagates_uncounted(
    autojump_clock: trio.testing.MockClock, outer: float
) -> None:
    breaker = CircuitBreaker(call_timeout=5.0, failure_threshold=1)
    with trio.move_on_after(outer) as scope:
        await breaker.call(hang)
    assert scope.cancelled_caught
    stats = breaker.statistics()
    assert (stats.failures, stats.successes, stats.state) == (0, 0, BreakerState.CLOSED)


async def test_no_scope_of_its_own_under_a_sooner_enclosing_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under an enclosing deadline that ends first the breaker opens no scope (it could
    never fire): visible only if that deadline is later moved past ``call_timeout``,
    which is then what bounds the call (documented)."""
    breaker = CircuitBreaker(call_timeout=5.0, failure_threshold=1)

    async def extend_then_sleep(scope: trio.CancelScope) -> str:
        scope.deadline = trio.current_time() + 100.0
        await trio.sleep(20.0)  # past call_timeout: no BreakerTimeoutError
        return "done"

    with trio.CancelScope(deadline=trio.current_time() + 2.0) as outer:
        assert await breaker.call(extend_then_sleep, outer) == "done"
    assert breaker.statistics().successes == 1
    # With the enclosing deadline later than call_timeout, the breaker's own scope rules.
    with trio.move_on_after(100.0), pytest.raises(BreakerTimeoutError):
        await breaker.call(hang)


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError("bad", status=400),
        AuthenticationError("who", status=401),
        NotFoundError("where", status=404),
        LocalRateLimitError("throttled", retry_after=1.0),
    ],
)
async def test_not_the_dependencys_fault_is_not_counted(
    autojump_clock: trio.testing.MockClock, error: Exception
) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    with pytest.raises(type(error)) as info:
        await breaker.call(fail, error)
    assert info.value is error
    stats = breaker.statistics()
    assert (stats.failures, stats.successes, stats.state) == (0, 0, BreakerState.CLOSED)


async def test_custom_is_failure(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, is_failure=lambda exc: isinstance(exc, Boom))
    with pytest.raises(ServerError):
        await breaker.call(fail, ServerError("x", status=500))
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN


async def test_half_open_probe_success_closes(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_timeout=10.0)
    await open_breaker(breaker, 1)
    await trio.sleep(9.5)
    assert breaker.state is BreakerState.OPEN
    await trio.sleep(0.5)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.retry_after() == 0.0
    assert await breaker.call(ok, "probe") == "probe"
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("how", ["error", "timeout"])
async def test_half_open_probe_failure_reopens(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_timeout=10.0, call_timeout=3.0)
    await open_breaker(breaker, 1)
    await trio.sleep(10)
    with pytest.raises(Boom if how == "error" else BreakerTimeoutError):
        await breaker.call(fail if how == "error" else hang)
    assert breaker.state is BreakerState.OPEN
    stats = breaker.statistics()
    assert stats.opened_count == 2
    assert stats.open_until == trio.current_time() + 10.0


async def test_neutral_probe_leaves_half_open(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_timeout=1.0)
    await open_breaker(breaker, 1)
    await trio.sleep(1)
    with pytest.raises(BadRequestError):
        await breaker.call(fail, BadRequestError("bad", status=400))
    assert breaker.state is BreakerState.HALF_OPEN
    await breaker.call(ok)
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_admits_at_most_n_probes(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_timeout=1.0, half_open_max_calls=2)
    await open_breaker(breaker, 1)
    await trio.sleep(1)
    entered = 0

    async def probe() -> None:
        nonlocal entered
        entered += 1
        await trio.sleep(5)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(breaker.call, probe)
        nursery.start_soon(breaker.call, probe)
        await trio.testing.wait_all_tasks_blocked()
        assert entered == 2
        assert breaker.retry_after() == 1.0  # saturated: open_timeout
        with pytest.raises(CircuitOpenError):
            await breaker.call(probe)
        assert entered == 2
    assert breaker.state is BreakerState.CLOSED
    assert breaker.statistics().rejections == 1


async def test_cancelled_probe_frees_its_permit(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_timeout=1.0, call_timeout=None)
    await open_breaker(breaker, 1)
    await trio.sleep(1)
    with trio.move_on_after(2):
        await breaker.call(hang)
    stats = breaker.statistics()
    assert (stats.state, stats.failures, stats.successes) == (BreakerState.HALF_OPEN, 1, 0)
    assert await breaker.call(ok, "next probe") == "next probe"
    assert breaker.state is BreakerState.CLOSED


async def test_late_result_of_a_pre_open_call_does_not_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, open_timeout=100.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(breaker.call, ok, None, 5.0)
        await trio.testing.wait_all_tasks_blocked()
        await open_breaker(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.statistics().successes == 1


async def test_no_timeout_when_call_timeout_is_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker(call_timeout=None)
    assert await breaker.call(ok, "late", 10_000.0) == "late"
    assert breaker.statistics().failures == 0


async def test_refusal_is_a_checkpoint(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    await open_breaker(breaker, 1)
    with trio.testing.assert_checkpoints(), pytest.raises(CircuitOpenError):
        await breaker.call(ok)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(half_open_max_calls=0)
    with pytest.raises(ValueError):
        CircuitBreaker(call_timeout=0)


# --- properties -------------------------------------------------------------------------

THRESHOLD, OPEN_TIMEOUT, CALL_TIMEOUT = 2, 7.0, 5.0
KINDS = ["success", "failure", "timeout", "outer", "neutral"]
ops_strategy = st.lists(
    st.tuples(
        st.integers(0, 12),  # gap before the call
        st.sampled_from(KINDS),
        st.integers(0, 5),  # duration (success/failure/neutral: < 5; outer: 0..5)
    ),
    max_size=25,
)


class BreakerModel:
    """The rules, for calls made one after the other."""

    def __init__(self) -> None:
        self.state = "closed"
        self.consecutive = self.failures = self.successes = 0
        self.rejections = self.opened = 0
        self.open_until = -math.inf

    def step(self, now: float, kind: str, duration: float) -> tuple[str | None, float]:
        """Returns (what the call raises, time it ends)."""
        if self.state == "open" and now >= self.open_until:
            self.state = "half_open"
        if self.state == "open":
            if kind == "outer" and duration == 0:
                return "cancelled", now  # cancelled at the refusal's checkpoint
            self.rejections += 1
            return "open", now
        probe = self.state == "half_open"
        if kind == "success":
            self.successes += 1
            self.consecutive = 0
            self.state = "closed"
            return None, now + duration
        if kind == "neutral":
            return "neutral", now + duration
        if kind == "outer":
            return "cancelled", now + duration
        end = now + (duration if kind == "failure" else CALL_TIMEOUT)
        self.failures += 1
        if self.state == "closed":
            self.consecutive += 1
            if self.consecutive >= THRESHOLD:
                self._open(end)
        elif probe:
            self._open(end)
        return ("failure" if kind == "failure" else "timeout"), end

    def _open(self, now: float) -> None:
        self.state, self.open_until, self.consecutive = "open", now + OPEN_TIMEOUT, 0
        self.opened += 1


async def _run_one(breaker: CircuitBreaker, kind: str, duration: float) -> str | None:
    try:
        if kind == "outer":
            with trio.move_on_after(duration):
                await breaker.call(hang)
            return "cancelled"
        if kind == "success":
            await breaker.call(ok, None, duration)
        elif kind == "failure":
            await breaker.call(fail, None, duration)
        elif kind == "neutral":
            await breaker.call(fail, BadRequestError("bad", status=400), duration)
        else:
            await breaker.call(hang)
    except CircuitOpenError:
        return "open"
    except Boom:
        return "failure"
    except BreakerTimeoutError:
        return "timeout"
    except BadRequestError:
        return "neutral"
    return None


@settings(deadline=None, max_examples=150)
@given(ops_strategy)
def test_property_breaker_matches_model_and_never_counts_outer_cancel(
    ops: list[tuple[int, str, int]],
) -> None:
    async def main() -> None:
        breaker = CircuitBreaker(
            failure_threshold=THRESHOLD, open_timeout=OPEN_TIMEOUT, call_timeout=CALL_TIMEOUT
        )
        model = BreakerModel()
        start = trio.current_time()
        for gap, kind, raw in ops:
            duration = float(raw if kind == "outer" else min(raw, 4))
            await trio.sleep(gap)
            expected, end = model.step(trio.current_time() - start, kind, duration)
            assert await _run_one(breaker, kind, duration) == expected
            assert trio.current_time() - start == end
            stats = breaker.statistics()
            assert stats.state.value == model.state
            assert (stats.failures, stats.successes, stats.rejections) == (
                model.failures,
                model.successes,
                model.rejections,
            )
            assert (stats.opened_count, stats.consecutive_failures) == (
                model.opened,
                model.consecutive,
            )

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


callers_strategy = st.lists(
    st.tuples(
        st.integers(0, 20),  # start offset after the breaker opened
        st.sampled_from(["success", "failure", "outer", "neutral", "timeout"]),
        st.integers(0, 6),  # duration
    ),
    min_size=1,
    max_size=12,
)


@settings(deadline=None, max_examples=150)
@given(st.integers(1, 3), callers_strategy)
def test_property_half_open_admits_at_most_n_probes(
    max_probes: int, callers: list[tuple[int, str, int]]
) -> None:
    async def main() -> None:
        breaker = CircuitBreaker(
            failure_threshold=1, open_timeout=3.0, call_timeout=4.0, half_open_max_calls=max_probes
        )
        await open_breaker(breaker, 1)
        running_probes = peak = 0

        async def body(kind: str, duration: float) -> None:
            nonlocal running_probes, peak
            probe = breaker.state is BreakerState.HALF_OPEN  # no checkpoint since admission
            running_probes += probe
            peak = max(peak, running_probes)
            try:
                if kind == "success":
                    await trio.sleep(duration)
                elif kind in ("failure", "neutral"):
                    await trio.sleep(duration)
                    raise Boom() if kind == "failure" else BadRequestError("x", status=400)
                else:
                    await trio.sleep_forever()  # own timeout, or cancelled by the caller
            finally:
                running_probes -= probe

        async def caller(offset: int, kind: str, duration: int) -> None:
            await trio.sleep(offset)
            with trio.move_on_after(duration if kind == "outer" else math.inf):
                with contextlib.suppress(
                    CircuitOpenError, Boom, BadRequestError, BreakerTimeoutError
                ):
                    await breaker.call(body, kind, float(duration))

        async with trio.open_nursery() as nursery:
            for spec in callers:
                nursery.start_soon(caller, *spec)
        assert peak <= max_probes
        assert running_probes == 0
        # Every permit came back: once half-open, max_probes fresh probes all get in.
        await trio.sleep(3)
        if breaker.state is BreakerState.HALF_OPEN:
            entered = 0

            async def hold() -> None:
                nonlocal entered
                entered += 1
                await trio.sleep(1)

            async with trio.open_nursery() as nursery:
                for _ in range(max_probes):
                    nursery.start_soon(breaker.call, hold)
            assert entered == max_probes

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
