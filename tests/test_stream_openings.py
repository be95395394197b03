"""A stream's opening through retry over a bounded breaker (``llm._openings``): the first
attempt in the opening's own frame must count, time out, retry and close exactly as
``retry.call(breaker.call_bounded, ...)`` does. The transport here is a `FakeProvider` that
claims a session honouring `CALL_DEADLINE`, so the stack takes that path."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from agentflow_trio._deadline import CALL_DEADLINE
from agentflow_trio.config import CircuitBreakerConfig, LLMConfig, RetryConfig
from agentflow_trio.errors import CircuitOpenError, ServerError
from agentflow_trio.llm import ChatRequest, FakeProvider, ProviderStack, open_provider, user
from agentflow_trio.resilience import BreakerStatistics, BreakerTimeoutError, RetryStatistics

REQUEST = ChatRequest((user("hello"),))


class _Session:
    honours_call_deadline = True


class _Bounded:
    """A provider over ``fake`` that honours `CALL_DEADLINE` on a stream's opening (as the
    lean session does): it records each opening's deadline, and one that would hang waits
    until that deadline, then reports that it fired."""

    session = _Session()

    def __init__(self, fake: FakeProvider, *, hang: int = 0) -> None:
        self.fake = fake
        self.hang = hang  # this many openings hang first
        self.deadlines: list[float | None] = []
        self.events: list[str] = []

    async def complete(self, request: ChatRequest) -> Any:
        return await self.fake.complete(request)

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[Any]]:
        caller = CALL_DEADLINE.get()
        self.deadlines.append(None if caller is None else caller.at)
        if self.hang:
            self.hang -= 1
            assert caller is not None
            await trio.sleep_until(caller.at)
            caller.fired = True
            raise ServerError("hung", status=504)
        self.events.append("open")
        try:
            async with self.fake.stream(request) as chunks:
                yield chunks
        finally:
            self.events.append("close")

    async def embed(self, request: Any) -> Any:
        return await self.fake.embed(request)

    async def aclose(self) -> None:
        await self.fake.aclose()


@asynccontextmanager
async def _stack(transport: _Bounded, **breaker: Any) -> AsyncIterator[ProviderStack]:
    llm = LLMConfig(
        provider="fake",
        retry=RetryConfig(max_attempts=3, base_delay=0.5, max_delay=4.0),
        circuit_breaker=CircuitBreakerConfig(call_timeout=5.0, **breaker),
    )
    async with open_provider(llm, transport=transport, rng=random.Random(1)) as stack:
        yield stack


def _statistics(stack: ProviderStack) -> tuple[RetryStatistics, BreakerStatistics]:
    assert stack.retry is not None and stack.breaker is not None
    return stack.retry.statistics(), stack.breaker.statistics()


async def _read(stack: ProviderStack) -> str:
    async with stack.stream(REQUEST) as chunks:
        return "".join([chunk.delta_text async for chunk in chunks])


async def test_first_attempt_counts_and_sets_the_call_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = _Bounded(FakeProvider.scripted(["one answer"]))
    async with _stack(transport) as stack:
        start = trio.current_time()
        assert await _read(stack) == "one answer"
        assert CALL_DEADLINE.get() is None  # reset once the opening is done
        assert transport.deadlines == [start + 5.0]
        assert transport.events == ["open", "close"]
        retry, breaker = _statistics(stack)
        assert (retry.attempts, retry.retries, retry.giveups) == (1, 0, 0)
        assert (breaker.failures, breaker.successes) == (0, 1)


async def test_a_failed_first_attempt_is_retried_the_whole_way_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeProvider.scripted([ServerError("x", status=500), "second answer"])
    transport = _Bounded(fake)
    async with _stack(transport) as stack:
        assert await _read(stack) == "second answer"
        retry, breaker = _statistics(stack)
        assert (retry.attempts, retry.retries) == (2, 1)
        assert (breaker.failures, breaker.successes) == (1, 1)
        assert len(transport.deadlines) == 2
        assert transport.events == ["open", "close", "open", "close"]


async def test_the_call_deadline_ending_the_first_attempt_is_the_breakers_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = _Bounded(FakeProvider.scripted(["late answer"]), hang=3)
    async with _stack(transport) as stack:
        with pytest.raises(BreakerTimeoutError) as info:
            await _read(stack)
        assert isinstance(info.value.__cause__, ServerError)
        retry, breaker = _statistics(stack)
        assert (retry.attempts, retry.giveups) == (3, 1)
        assert breaker.failures == 3
        assert transport.events == []


async def test_an_open_breaker_refuses_without_opening(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = _Bounded(FakeProvider.scripted(["never"]), hang=1)
    async with _stack(transport, failure_threshold=1, open_timeout=30.0) as stack:
        with pytest.raises(CircuitOpenError):
            await _read(stack)  # the first attempt's timeout opens it; the retry is refused
        assert _statistics(stack)[1].rejections == 1
        with pytest.raises(CircuitOpenError):
            await _read(stack)  # no deadline to wait for the open time in: at once
        retry, breaker = _statistics(stack)
        assert (breaker.failures, breaker.rejections, retry.attempts) == (1, 2, 3)
        assert transport.events == []


async def test_a_paused_deployment_is_waited_for_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = _Bounded(FakeProvider.scripted(["after the pause"]))
    async with _stack(transport) as stack:
        assert stack.retry is not None and stack.retry.gate is not None
        start = trio.current_time()
        stack.retry.gate.pause_until(start + 2.0)
        assert await _read(stack) == "after the pause"
        assert transport.deadlines == [start + 2.0 + 5.0]
        assert _statistics(stack)[0].attempts == 1


async def test_a_cancelled_caller_makes_no_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = _Bounded(FakeProvider.scripted(["unused"]))
    async with _stack(transport) as stack:
        with trio.CancelScope() as scope:
            scope.cancel()
            await _read(stack)
        assert scope.cancelled_caught
        assert transport.deadlines == []
        assert _statistics(stack)[0].attempts == 0
