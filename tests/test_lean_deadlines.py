"""Request deadlines without a cancel scope per call (issue 23): `Watchdog`,
`CircuitBreaker.call_bounded` and the lean session's ``post_json``.

The watchdog's own logic is pure and runs under the autojump clock (exact and instant);
the session and the provider stack talk to a real trio server on 127.0.0.1 port 0 that
reads a request and then answers, or never does, on the real clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from agentflow_trio._deadline import CALL_DEADLINE, CallDeadline
from agentflow_trio.config import CircuitBreakerConfig, LLMConfig, RetryConfig
from agentflow_trio.errors import LLMTimeoutError
from agentflow_trio.llm import ChatRequest, open_provider, user
from agentflow_trio.llm._lean._watchdog import Watchdog
from agentflow_trio.llm._lean.session import LeanSession, open_lean_session
from agentflow_trio.llm._lines import SSEDecoder
from agentflow_trio.resilience import BreakerTimeoutError, CircuitBreaker

PATH = "/chat/completions"
CHAT = b'{"choices": [{"message": {"role": "assistant", "content": "ok"}}]}'
REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(CHAT)).encode()
    + b"\r\n\r\n"
    + CHAT
)


class _Item:
    def __init__(self) -> None:
        self.expired_at: float | None = None

    def expire(self) -> None:
        self.expired_at = trio.current_time()


# -- Watchdog (pure logic, virtual time) ------------------------------------------------------


async def test_watchdog_expires_at_the_deadline_and_only_what_is_still_watched(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watchdog = Watchdog()
    late, early, done = _Item(), _Item(), _Item()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog.run)
        await trio.sleep(1)  # the watchdog sleeps with nothing to watch
        start = trio.current_time()
        watchdog.watch(late, start + 10)
        watchdog.watch(done, start + 3)
        await trio.sleep(1)
        # Earlier than every pending deadline: the sleeping watchdog is woken for it.
        watchdog.watch(early, start + 2)
        await trio.sleep(0.5)
        watchdog.unwatch(done)
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert early.expired_at == start + 2
    assert late.expired_at == start + 10
    assert done.expired_at is None
    assert len(watchdog) == 0


async def test_watchdog_unwatch_of_an_expired_item_is_harmless(
    autojump_clock: trio.testing.MockClock,
) -> None:
    watchdog = Watchdog()
    item = _Item()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog.run)
        watchdog.watch(item, trio.current_time() + 1)
        await trio.sleep(2)
        watchdog.unwatch(item)
        nursery.cancel_scope.cancel()
    assert item.expired_at is not None and len(watchdog) == 0


# -- CircuitBreaker.call_bounded (virtual time) ------------------------------------------------


async def test_call_bounded_hands_its_deadline_down_and_maps_a_fired_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker("b", call_timeout=5.0, failure_threshold=2)
    seen: list[CallDeadline | None] = []

    async def bounded_wait() -> str:
        deadline = CALL_DEADLINE.get()
        seen.append(deadline)
        assert deadline is not None
        with trio.move_on_at(deadline.at) as scope:
            await trio.sleep(60)
        if scope.cancelled_caught:
            deadline.fired = True
            raise LLMTimeoutError("callee's timeout")
        return "done"

    start = trio.current_time()
    with pytest.raises(BreakerTimeoutError) as info:
        await breaker.call_bounded(bounded_wait)
    assert trio.current_time() == start + 5.0
    assert isinstance(info.value.__cause__, LLMTimeoutError)
    assert seen[0] is not None and seen[0].at == start + 5.0
    assert CALL_DEADLINE.get() is None  # reset on the way out
    assert breaker.statistics().failures == 1

    async def quick() -> str:
        return "ok"

    assert await breaker.call_bounded(quick) == "ok"
    assert breaker.statistics().consecutive_failures == 0


async def test_call_bounded_counts_an_unfired_error_like_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker("b", call_timeout=5.0, failure_threshold=1)

    async def broken() -> None:
        raise LLMTimeoutError("the callee's own timeout, not the breaker's")

    with pytest.raises(LLMTimeoutError) as info:
        await breaker.call_bounded(broken)
    assert not isinstance(info.value, BreakerTimeoutError)
    assert breaker.statistics().failures == 1


# -- the lean session and the provider stack (real sockets, real clock) -----------------------


@asynccontextmanager
async def server(answers: int, then: bytes = b"") -> AsyncIterator[tuple[str, list[int]]]:
    """A server that reads each request and answers the first ``answers`` (over all
    connections), then sends ``then`` (nothing, or a stream's first part) and never
    anything more; the list counts the connections it accepted."""
    accepted: list[int] = []
    left = [answers]

    async def handle(stream: trio.SocketStream) -> None:
        accepted.append(1)
        async with stream:
            data = b""
            while True:
                piece = await stream.receive_some(65536)
                if not piece:
                    return
                data += piece
                while b"\r\n\r\n" in data:
                    head, _, rest = data.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(rest) < length:
                        break
                    data = rest[length:]
                    if left[0] <= 0:
                        await stream.send_all(then)
                        await trio.sleep_forever()
                    left[0] -= 1
                    await stream.send_all(REPLY)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1", accepted
        nursery.cancel_scope.cancel()


def _llm(url: str, **settings: Any) -> LLMConfig:
    return LLMConfig(provider="openai", base_url=url, api_key="sk-test", model="m", **settings)


@asynccontextmanager
async def warm_session(url: str, **settings: Any) -> AsyncIterator[LeanSession]:
    """A lean session whose one connection has answered once (kept alive): the next
    request takes it at once, the path the watchdog times."""
    async with open_lean_session(
        _llm(url, **settings), headers={}, deployment="d", base_url=url
    ) as session:
        with trio.fail_after(10):
            await session.post_json(url + PATH, b"{}")
        yield session


async def hung_call(session: LeanSession, url: str) -> None:
    """``post_json`` on a server that does not answer, checking that the watchdog (not a
    cancel scope) holds the exchange while it waits."""
    watchdog = session._watchdog
    assert watchdog is not None

    async def probe() -> None:
        await trio.sleep(0.1)
        assert len(watchdog) == 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await session.post_json(url + PATH, b"{}")


async def test_post_json_times_out_by_the_watchdog_and_the_pool_recovers() -> None:
    async with server(answers=1) as (url, _), warm_session(url, request_timeout=0.3) as session:
        start = trio.current_time()
        with (
            trio.fail_after(10),
            pytest.RaisesGroup(
                pytest.RaisesExc(LLMTimeoutError, match="no complete response within 0.3s")
            ),
        ):
            await hung_call(session, url)
        assert trio.current_time() - start >= 0.3
        assert session._watchdog is not None and len(session._watchdog) == 0
        stats = session.pool_statistics()
        assert stats.active == 0 and stats.connections == 0  # the aborted one is gone


async def test_post_json_answers_and_unwatches() -> None:
    async with server(answers=100) as (url, accepted), warm_session(url, request_timeout=5) as s:
        with trio.fail_after(10):
            for _ in range(3):
                answer = await s.post_json(url + PATH, b"{}")
                assert answer["choices"][0]["message"]["content"] == "ok"
        assert s._watchdog is not None and len(s._watchdog) == 0
        assert len(accepted) == 1  # kept alive: the watchdog left the connection alone


async def test_post_json_cancelled_by_the_caller_is_unwatched() -> None:
    async with server(answers=1) as (url, _), warm_session(url, request_timeout=30) as session:
        with trio.move_on_after(0.3) as scope:
            await hung_call(session, url)
        assert scope.cancelled_caught
        assert session._watchdog is not None and len(session._watchdog) == 0


@pytest.mark.parametrize(
    ("request_timeout", "caller_in", "fired"),
    [(30.0, 0.3, True), (0.3, 30.0, False)],
    ids=["callers-deadline-first", "own-timeout-first"],
)
async def test_post_json_ends_at_the_first_deadline_and_says_whose(
    request_timeout: float, caller_in: float, fired: bool
) -> None:
    """The caller's `CALL_DEADLINE` is told it fired only when it was the one that ended
    the request (the breaker turns that into its own timeout error)."""
    async with (
        server(answers=1) as (url, _),
        warm_session(url, request_timeout=request_timeout) as session,
    ):
        deadline = CallDeadline(trio.current_time() + caller_in)
        token = CALL_DEADLINE.set(deadline)
        try:
            with trio.fail_after(10), pytest.RaisesGroup(LLMTimeoutError):
                await hung_call(session, url)
        finally:
            CALL_DEADLINE.reset(token)
        assert deadline.fired is fired


TIMEOUTS = pytest.mark.parametrize(
    ("call_timeout", "request_timeout", "breaker_error"),
    [(0.3, 30.0, True), (30.0, 0.3, False)],
)


@asynccontextmanager
async def hung_stack(call_timeout: float, request_timeout: float) -> AsyncIterator[Any]:
    """A provider stack (breaker on, retry off) over the lean session whose server answers
    one call (done here, so the next takes the kept connection) and then never again."""
    async with server(answers=1) as (url, _):
        llm = _llm(
            url,
            request_timeout=request_timeout,
            retry=RetryConfig(enabled=False),
            circuit_breaker=CircuitBreakerConfig(call_timeout=call_timeout),
        )
        async with open_provider(llm) as stack:
            assert stack.breaker is not None
            with trio.fail_after(10):
                assert (await stack.complete(ChatRequest([user("hi")]))).text == "ok"
            yield stack


@TIMEOUTS
async def test_stack_breaker_timeout_over_the_lean_session(
    call_timeout: float, request_timeout: float, breaker_error: bool
) -> None:
    """Through `open_provider`: the breaker's call timeout (no scope of its own) and the
    session's request timeout each end a hung call, counted once by the breaker."""
    async with hung_stack(call_timeout, request_timeout) as stack:
        start = trio.current_time()
        with trio.fail_after(10), pytest.raises(LLMTimeoutError) as info:
            await stack.complete(ChatRequest([user("hi again")]))
        assert trio.current_time() - start >= 0.3
        assert isinstance(info.value, BreakerTimeoutError) is breaker_error
        assert stack.breaker.statistics().failures == 1


@TIMEOUTS
async def test_stack_breaker_timeout_on_a_stream_opening(
    call_timeout: float, request_timeout: float, breaker_error: bool
) -> None:
    """A stream whose head never comes: the breaker's call timeout (handed down, no scope)
    or the session's request timeout ends the opening, counted once by the breaker."""
    async with hung_stack(call_timeout, request_timeout) as stack:
        start = trio.current_time()
        with trio.fail_after(10), pytest.raises(LLMTimeoutError) as info:
            async with stack.stream(ChatRequest([user("a stream")])):
                pass
        assert trio.current_time() - start >= 0.3
        assert isinstance(info.value, BreakerTimeoutError) is breaker_error
        assert stack.breaker.statistics().failures == 1


SSE_START = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
    b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'
)


def _text(item: Any) -> str:
    return str(item["choices"][0]["delta"]["content"])


async def test_stream_head_wait_times_out_by_the_watchdog() -> None:
    async with server(answers=1) as (url, _), warm_session(url, request_timeout=0.3) as session:
        watchdog = session._watchdog
        assert watchdog is not None
        start = trio.current_time()
        with trio.fail_after(10), pytest.raises(LLMTimeoutError, match="no complete response"):
            async with session.open_stream(
                url + PATH, b"{}", SSEDecoder(), _text, ("text/event-stream",)
            ):
                pass
        assert trio.current_time() - start >= 0.3
        assert len(watchdog) == 0
        assert session.pool_statistics().connections == 0


async def test_stalled_stream_times_out_by_the_watchdog() -> None:
    async with (
        server(answers=1, then=SSE_START) as (url, _),
        warm_session(url, request_timeout=0.3) as session,
    ):
        watchdog = session._watchdog
        assert watchdog is not None
        seen: list[str] = []
        with trio.fail_after(10), pytest.raises(LLMTimeoutError, match=r"no stream data for 0\.3s"):
            async with session.open_stream(
                url + PATH, b"{}", SSEDecoder(), _text, ("text/event-stream",)
            ) as items:
                async for item in items:
                    seen.append(item)
                    assert len(watchdog) == 0  # watched only while a part is awaited
        assert seen == ["x"]
        assert len(watchdog) == 0
        assert session.pool_statistics().connections == 0
