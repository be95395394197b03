"""Router streams over scripted in-process streams, under the autojump MockClock.

A stream that fails, stalls or ends before its first chunk reached the caller is restarted
on the other deployment; once a chunk reached the caller, it ends with the typed
`IncompleteStreamError` saying how much was delivered, never a truncated success.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from agentflow_trio.config import DeploymentConfig, LLMConfig, RouterConfig
from agentflow_trio.errors import (
    IncompleteStreamError,
    LLMReadError,
    ResponseFormatError,
    ServerError,
    StreamCutError,
    StreamEndedEarlyError,
    StreamStalledError,
)
from agentflow_trio.llm import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ProviderStack,
    StreamChunk,
    Usage,
    open_provider,
    user,
)

REQUEST = ChatRequest((user("hello"),))
WORDS = ("one ", "two ", "three")
FINAL = StreamChunk("", (), "stop", Usage(1, 3, 4))


class _Chunks:
    def __init__(self, script: Script) -> None:
        self._script = script
        self._given = 0

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> StreamChunk:
        script = self._script
        await trio.sleep(script.first_delay if self._given == 0 else 0)
        if self._given == script.fail_at:
            if script.then == "stall":
                await trio.sleep_forever()
            if script.then == "eof":
                raise StopAsyncIteration
            raise script.error
        self._given += 1
        if self._given <= len(WORDS):
            return StreamChunk(WORDS[self._given - 1])
        if self._given == len(WORDS) + 1:
            return FINAL
        raise StopAsyncIteration


class Script:
    """A provider whose stream gives WORDS then FINAL, or fails as told: ``open_error`` at
    the opening, or ``then`` ("raise" ``error``, "stall", "eof") once ``fail_at`` chunks
    were given; ``first_delay`` before the first chunk."""

    def __init__(
        self,
        *,
        fail_at: int = -1,
        then: str = "raise",
        error: BaseException | None = None,
        open_error: BaseException | None = None,
        first_delay: float = 0.0,
    ) -> None:
        self.fail_at = fail_at
        self.then = then
        self.error = error or LLMReadError("connection reset")
        self.open_error = open_error
        self.first_delay = first_delay
        self.requests: list[ChatRequest] = []
        self.closed = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        raise NotImplementedError

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        self.requests.append(request)
        await trio.lowlevel.checkpoint()
        if self.open_error is not None:
            raise self.open_error
        try:
            yield _Chunks(self)
        finally:
            self.closed += 1

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def routed(a: Script, b: Script, **router: Any) -> AsyncIterator[ProviderStack]:
    """``a`` is always tried first (weight 1000 to 1)."""
    deployments = {
        "a": DeploymentConfig(provider="fake", model="ma", group="g", weight=1_000_000),
        "b": DeploymentConfig(provider="fake", model="mb", group="g", weight=1),
    }
    llm = LLMConfig(provider="fake", deployments=deployments, router=RouterConfig(**router))
    async with open_provider(llm, transports={"a": a, "b": b}, rng=random.Random(3)) as stack:  # type: ignore[dict-item]
        yield stack


async def read(stack: ProviderStack) -> list[StreamChunk]:
    got: list[StreamChunk] = []
    async with stack.stream(REQUEST) as chunks:
        async for chunk in chunks:
            got.append(chunk)
    return got


def text(chunks: list[StreamChunk]) -> str:
    return "".join(c.delta_text for c in chunks)


async def test_a_whole_stream_says_who_answered(autojump_clock: MockClock) -> None:
    async with routed(Script(), Script()) as stack:
        chunks = await read(stack)
    assert text(chunks) == "one two three"
    assert (chunks[-1].finish_reason, chunks[-1].deployment, chunks[-1].model) == (
        "stop",
        "a",
        "ma",
    )
    assert chunks[-1].usage == Usage(1, 3, 4)
    assert {c.deployment for c in chunks[:-1]} == {""}


@pytest.mark.parametrize(
    "a",
    [
        Script(open_error=ServerError("HTTP 503", status=503)),
        Script(fail_at=0, error=LLMReadError("reset before the first chunk")),
        Script(fail_at=0, error=ResponseFormatError("malformed event")),
        Script(fail_at=0, then="eof"),
    ],
    ids=["503-at-open", "cut-before-first-chunk", "garbage", "empty"],
)
async def test_a_stream_that_fails_before_its_first_chunk_restarts_elsewhere(
    autojump_clock: MockClock, a: Script
) -> None:
    b = Script()
    async with routed(a, b) as stack:
        start = trio.current_time()
        chunks = await read(stack)
        assert trio.current_time() == start
        assert stack.router is not None
        (dep_a, dep_b) = stack.router.statistics().deployments
    assert text(chunks) == "one two three"
    assert chunks[-1].deployment == "b"
    assert b.requests == [REQUEST] and a.requests == [REQUEST]  # the same request, no prefill
    assert (dep_a.successes, dep_a.failovers, dep_b.successes) == (0, 1, 1)
    assert a.closed == (0 if a.open_error else 1)
    assert (dep_a.in_flight, dep_b.in_flight) == (0, 0)


async def test_no_first_chunk_within_first_token_timeout_moves_on(
    autojump_clock: MockClock,
) -> None:
    a, b = Script(first_delay=60.0), Script()
    async with routed(a, b, first_token_timeout=2.0) as stack:
        start = trio.current_time()
        chunks = await read(stack)
        assert trio.current_time() - start == 2.0
        assert stack.router is not None
        dep_a = stack.router.statistics().deployments[0]
    assert chunks[-1].deployment == "b"
    assert (dep_a.failures, dep_a.cooling) == ({"timeout": 1}, True)
    assert a.closed == 1


async def test_a_slow_first_token_within_the_limit_is_waited_for(
    autojump_clock: MockClock,
) -> None:
    async with routed(Script(first_delay=1.5), Script(), first_token_timeout=2.0) as stack:
        chunks = await read(stack)
    assert chunks[-1].deployment == "a"


@pytest.mark.parametrize(
    ("a", "error", "delivered"),
    [
        (Script(fail_at=2, error=LLMReadError("reset")), StreamCutError, (2, 8)),
        (
            Script(fail_at=2, error=ServerError("error in stream", status=500)),
            StreamCutError,
            (2, 8),
        ),
        (Script(fail_at=1, error=ResponseFormatError("bad")), StreamEndedEarlyError, (1, 4)),
        (Script(fail_at=3, then="eof"), StreamEndedEarlyError, (3, 13)),
        (Script(fail_at=2, then="stall"), StreamStalledError, (2, 8)),
    ],
    ids=["cut", "error-event", "malformed", "no-finish-reason", "stall"],
)
async def test_a_stream_broken_after_chunks_reached_the_caller_is_a_typed_error(
    autojump_clock: MockClock,
    a: Script,
    error: type[IncompleteStreamError],
    delivered: tuple[int, int],
) -> None:
    b = Script()
    got: list[StreamChunk] = []
    async with routed(a, b, stream_idle_timeout=3.0) as stack:
        start = trio.current_time()
        with pytest.raises(error) as info:
            async with stack.stream(REQUEST) as chunks:
                async for chunk in chunks:
                    got.append(chunk)
        elapsed = trio.current_time() - start
        assert stack.router is not None
        dep_a = stack.router.statistics().deployments[0]
    assert (info.value.delivered_chunks, info.value.delivered_chars) == delivered
    assert info.value.deployment == "a"
    assert len(got) == delivered[0]
    assert all(c.finish_reason is None for c in got)  # never a truncated "success"
    assert b.requests == []  # nothing is resent, no assistant prefill anywhere
    assert elapsed == (3.0 if a.then == "stall" else 0.0)
    assert sum(dep_a.failures.values()) == 1 and dep_a.successes == 0
    assert dep_a.in_flight == 0
    assert a.closed == 1


async def test_a_caller_leaving_early_is_neither_success_nor_failure(
    autojump_clock: MockClock,
) -> None:
    a = Script()
    async with routed(a, Script()) as stack:
        async with stack.stream(REQUEST) as chunks:
            async for _ in chunks:
                break
        assert stack.router is not None
        dep_a = stack.router.statistics().deployments[0]
    assert (dep_a.successes, dep_a.failures, dep_a.in_flight, a.closed) == (0, {}, 0, 1)


async def test_a_cancelled_stream_releases_everything(autojump_clock: MockClock) -> None:
    a = Script(fail_at=1, then="stall")
    async with routed(a, Script(), stream_idle_timeout=0) as stack:
        with trio.move_on_after(5.0):
            await read(stack)
        assert stack.router is not None
        dep_a = stack.router.statistics().deployments[0]
    assert (dep_a.failures, dep_a.in_flight, a.closed) == ({}, 0, 1)
