"""Retry and PauseGate: backoff, Retry-After, deadlines, open circuits, shared pauses."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
import trio
import trio.testing

from agentflow_trio.errors import (
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    LLMConnectError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
)
from agentflow_trio.resilience import (
    BreakerTimeoutError,
    LocalRateLimitError,
    PauseGate,
    Retry,
)


class Script:
    """An async callable that raises the scripted errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self) -> str:
        self.times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def server_error(retry_after: float | None = None) -> ServerError:
    return ServerError("unavailable", status=503, retry_after=retry_after)


def rate_limited(retry_after: float | None) -> RateLimitError:
    return RateLimitError("slow down", status=429, retry_after=retry_after)


async def test_first_success_needs_one_attempt(autojump_clock: trio.testing.MockClock) -> None:
    retry = Retry()
    assert await retry.call(Script()) == "done"
    stats = retry.statistics()
    assert (stats.attempts, stats.retries, stats.giveups) == (1, 0, 0)


async def test_retries_then_reraises_the_last_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors = [server_error(), server_error(), server_error()]
    retry = Retry(max_attempts=3, base_delay=0.1)
    with pytest.raises(ServerError) as info:
        await retry.call(Script(*errors))
    assert info.value is errors[2]
    stats = retry.statistics()
    assert (stats.attempts, stats.retries, stats.giveups) == (3, 2, 1)


async def test_recovers_after_transient_errors(autojump_clock: trio.testing.MockClock) -> None:
    retry = Retry(max_attempts=3, base_delay=0.1)
    script = Script(LLMConnectError("refused"), BreakerTimeoutError("b", 1.0))
    assert await retry.call(script) == "done"
    assert len(script.times) == 3


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError("bad", status=400),
        AuthenticationError("who", status=401),
        NotFoundError("where", status=404),
        ResponseFormatError("not json"),
        ValueError("a bug"),
    ],
)
async def test_no_retry_on_errors_a_retry_cannot_fix(
    autojump_clock: trio.testing.MockClock, error: Exception
) -> None:
    retry = Retry(max_attempts=5)
    script = Script(error)
    with pytest.raises(type(error)) as info:
        await retry.call(script)
    assert info.value is error
    assert len(script.times) == 1
    assert retry.statistics().giveups == 1


async def test_custom_retry_on(autojump_clock: trio.testing.MockClock) -> None:
    retry = Retry(max_attempts=3, base_delay=0.0, retry_on=lambda e: isinstance(e, ValueError))
    assert await retry.call(Script(ValueError("flaky"))) == "done"


async def test_backoff_is_full_jitter_exponential(autojump_clock: trio.testing.MockClock) -> None:
    retry = Retry(max_attempts=5, base_delay=1.0, max_delay=3.0, rng=random.Random(7))
    script = Script(*(server_error() for _ in range(4)))
    await retry.call(script)
    gaps = [b - a for a, b in zip(script.times, script.times[1:], strict=False)]
    expected_rng = random.Random(7)
    expected = [expected_rng.uniform(0.0, min(3.0, 1.0 * 2**n)) for n in range(4)]
    assert gaps == pytest.approx(expected)


async def test_retry_after_is_a_minimum(autojump_clock: trio.testing.MockClock) -> None:
    retry = Retry(max_attempts=2, base_delay=0.001)
    script = Script(server_error(retry_after=10.0))
    await retry.call(script)
    assert script.times[1] - script.times[0] == pytest.approx(10.0)


async def test_escalating_retry_after_is_reread(autojump_clock: trio.testing.MockClock) -> None:
    retry = Retry(max_attempts=4, base_delay=0.0)
    script = Script(rate_limited(1.0), rate_limited(2.0), rate_limited(4.0))
    await retry.call(script)
    start = script.times[0]
    assert [t - start for t in script.times] == [0.0, 1.0, 3.0, 7.0]


async def test_never_sleeps_past_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    retry = Retry(max_attempts=5, base_delay=0.0)
    script = Script(rate_limited(1.0), rate_limited(10.0))
    start = trio.current_time()
    with trio.move_on_after(5.0) as scope, pytest.raises(RateLimitError) as info:
        await retry.call(script)
    assert not scope.cancelled_caught
    assert info.value.retry_after == 10.0  # the last error, re-raised at once
    assert trio.current_time() - start == 1.0
    assert retry.statistics().giveups == 1


async def test_backoff_that_would_cross_the_deadline_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retry = Retry(max_attempts=10, base_delay=4.0, max_delay=4.0, rng=random.Random(1))
    script = Script(*(server_error() for _ in range(9)))
    deadline = trio.current_time() + 10.0
    with trio.move_on_at(deadline) as scope, pytest.raises(ServerError):
        await retry.call(script)
    assert not scope.cancelled_caught
    assert trio.current_time() < deadline
    assert 1 < len(script.times) < 10


async def test_already_cancelled_makes_no_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retry = Retry()
    script = Script()
    with trio.CancelScope() as scope:
        scope.cancel()
        assert trio.current_effective_deadline() == -math.inf
        await retry.call(script)
    assert script.times == []
    assert retry.statistics().attempts == 0


async def test_no_deadline_means_only_max_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retry = Retry(max_attempts=3, base_delay=0.0, max_delay=1000.0)
    script = Script(rate_limited(1000.0), rate_limited(1000.0), rate_limited(1000.0))
    assert trio.current_effective_deadline() == math.inf
    with pytest.raises(RateLimitError):
        await retry.call(script)
    assert len(script.times) == 3
    assert script.times[-1] - script.times[0] == 2000.0


async def test_never_retries_after_cancellation(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        await trio.sleep_forever()

    retry = Retry(max_attempts=5)
    with trio.move_on_after(3.0) as scope:
        await retry.call(hang)
    assert scope.cancelled_caught
    assert calls == 1
    assert retry.statistics().giveups == 0


async def test_circuit_open_ends_retries_when_it_does_not_fit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retry = Retry(max_attempts=5)
    script = Script(CircuitOpenError("llm", 30.0))
    with trio.move_on_after(10.0), pytest.raises(CircuitOpenError):
        await retry.call(script)
    assert len(script.times) == 1
    assert trio.current_time() == script.times[0]


async def test_circuit_open_that_fits_gets_exactly_one_more_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retry = Retry(max_attempts=5, base_delay=0.0)
    error = server_error()
    script = Script(CircuitOpenError("llm", 2.0), error)
    with trio.move_on_after(10.0), pytest.raises(ServerError) as info:
        await retry.call(script)
    assert info.value is error
    assert [t - script.times[0] for t in script.times] == [0.0, 2.0]
    script = Script(CircuitOpenError("llm", 2.0))
    with trio.fail_after(10.0):
        assert await retry.call(script) == "done"


async def test_circuit_open_without_a_deadline_fails_fast(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retry = Retry(max_attempts=5)
    script = Script(CircuitOpenError("llm", 2.0))
    start = trio.current_time()
    with pytest.raises(CircuitOpenError):
        await retry.call(script)
    assert len(script.times) == 1
    assert trio.current_time() == start


async def test_one_429_pauses_every_caller_of_the_gate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = PauseGate()
    first = Retry(gate=gate, base_delay=0.0)
    second = Retry(gate=gate, base_delay=0.0)
    start = trio.current_time()
    a = Script(rate_limited(10.0))
    b = Script()

    async def later() -> None:
        await trio.sleep(1.0)
        await second.call(b)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.call, a)
        nursery.start_soon(later)
    assert gate.paused_until == start + 10.0
    assert b.times == [start + 10.0]  # waited for the pause a's 429 started
    assert a.times == [start, start + 10.0]


async def test_429_pauses_the_gate_even_when_giving_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = PauseGate()
    retry = Retry(max_attempts=1, gate=gate)
    with pytest.raises(RateLimitError):
        await retry.call(Script(rate_limited(5.0)))
    assert gate.paused()
    assert gate.paused_until == trio.current_time() + 5.0


async def test_local_rate_limit_does_not_pause_the_gate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = PauseGate()
    retry = Retry(max_attempts=1, gate=gate)
    with pytest.raises(LocalRateLimitError):
        await retry.call(Script(LocalRateLimitError("local", retry_after=5.0)))
    assert not gate.paused()


async def test_gate_pause_past_the_deadline_raises_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = PauseGate()
    gate.pause_until(trio.current_time() + 20.0)
    retry = Retry(gate=gate)
    script = Script()
    with trio.move_on_after(5.0), pytest.raises(RateLimitError) as info:
        await retry.call(script)
    assert isinstance(info.value, LocalRateLimitError)
    assert info.value.status == 429
    assert info.value.retry_after == 20.0
    assert script.times == []
    stats = retry.statistics()  # the gate's refusal is the first attempt's failure
    assert (stats.attempts, stats.retries, stats.giveups) == (0, 0, 1)


async def test_gate_keeps_the_longest_pause_and_wait_follows_extensions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = PauseGate()
    start = trio.current_time()
    gate.pause_until(start + 5.0)
    gate.pause_until(start + 2.0)
    assert gate.paused_until == start + 5.0

    async def extend() -> None:
        await trio.sleep(4.0)
        gate.pause_until(start + 8.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(extend)
        await gate.wait()
        assert trio.current_time() == start + 8.0
    with trio.testing.assert_checkpoints():
        await gate.wait()  # not paused: still a checkpoint


@pytest.mark.parametrize(
    "make",
    [lambda: Retry(max_attempts=0), lambda: Retry(base_delay=-1.0)],
)
def test_constructor_validates(make: Callable[[], Retry]) -> None:
    with pytest.raises(ValueError):
        make()


# -- hostile Retry-After (issue 17): capped by max_delay, never a parked deployment -----


async def test_absurd_retry_after_is_capped_by_max_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = PauseGate()
    retry = Retry(max_attempts=2, base_delay=0.0, max_delay=30.0, gate=gate)
    script = Script(rate_limited(1_000_000_000.0))  # ~31 years, no caller deadline
    start = trio.current_time()
    assert await retry.call(script) == "done"
    assert script.times == [start, start + 30.0]
    assert gate.paused_until == start + 30.0


async def test_absurd_retry_after_does_not_park_the_deployment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = PauseGate()
    first = Retry(max_attempts=1, max_delay=10.0, gate=gate)
    with pytest.raises(RateLimitError):
        await first.call(Script(rate_limited(1e9)))
    assert gate.paused_until == trio.current_time() + 10.0
    later = Script()
    with trio.fail_after(60.0):  # a later caller with a deadline waits out the short pause
        assert await Retry(gate=gate).call(later) == "done"
    assert later.times == [gate.paused_until]


async def test_retry_after_above_max_delay_on_a_5xx_is_capped_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retry = Retry(max_attempts=3, base_delay=0.0, max_delay=2.0)
    script = Script(server_error(retry_after=86_400.0), server_error(retry_after=1e300))
    await retry.call(script)
    start = script.times[0]
    assert [t - start for t in script.times] == [0.0, 2.0, 4.0]


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_constructor_rejects_nan_and_infinite_delays(value: float) -> None:
    with pytest.raises(ValueError):
        Retry(max_delay=value)
    with pytest.raises(ValueError):
        Retry(base_delay=value)
