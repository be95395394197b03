"""Cancellation at random points never leaks a pooled connection or a task.

Regression test for encode/httpcore#1093 (pool slots leaked when requests waiting for a
connection are cancelled concurrently), on trio, through the whole default stack (retry and
breaker on). Rules of this module: loopback only, port 0, the real clock (real sockets),
every test body under an absolute ``trio.fail_after``. The mock answers in 2-4 ms and
streams 5 chunks 1 ms apart; calls are cancelled after 0-50 ms, so they die before
connecting, while queued for one of the few pool slots, mid-request and mid-stream.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio
import trio.testing

from agentflow_trio.config import LLMConfig
from agentflow_trio.llm import (
    ChatRequest,
    EmbeddingRequest,
    PoolStatistics,
    ProviderStack,
    collect_stream,
    open_provider,
    user,
)
from agentflow_trio.mockllm import MockLLM, open_mock_llm
from agentflow_trio.testing import mock_llm_config

TIMEOUT = 60
MAX_CONNECTIONS = 16
DELAYS = (0.002, 0.01, 0.05, 0.25)  # cancel after up to 2, 10, 50 or 250 ms
MOCK = {"latency": 0.003, "jitter": 0.001, "stream_delay": 0.001, "stream_chunks": 5, "seed": 7}


def _tasks() -> int:
    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


TRANSPORTS = pytest.mark.parametrize("transport", ["lean", "httpx2"])


def _config(mock: MockLLM, transport: str) -> LLMConfig:
    return mock_llm_config(
        mock,
        max_connections=MAX_CONNECTIONS,
        connection_timeout=5.0,
        request_timeout=5.0,
        transport=transport,
    )


def _settled(pool: PoolStatistics | None) -> bool:
    assert pool is not None
    return pool.requests == pool.queued == pool.active == 0 and pool.connections == pool.idle


async def _one(provider: ProviderStack, rng: random.Random, outcomes: Counter[str]) -> None:
    kind = rng.choice(("complete", "stream", "stream", "embed"))
    chunks_seen = 0
    with trio.move_on_after(rng.choice(DELAYS) * rng.random()) as scope:
        if kind == "complete":
            await provider.complete(ChatRequest((user("hi"),)))
        elif kind == "embed":
            await provider.embed(EmbeddingRequest(("a", "b")))
        else:
            async with provider.stream(ChatRequest((user("hi"),))) as chunks:
                async for _ in chunks:
                    chunks_seen += 1
    if not scope.cancelled_caught:
        outcomes["finished"] += 1
    elif kind == "stream" and chunks_seen:
        outcomes["cancelled mid-stream"] += 1
    else:
        outcomes["cancelled before an answer"] += 1


# The mock serves each connection with two tasks: the request loop and its timeout watchdog.
TASKS_PER_SERVED_CONNECTION = 2


@TRANSPORTS
async def test_random_cancellation_leaks_nothing(transport: str) -> None:
    rng = random.Random(1093)
    outcomes: Counter[str] = Counter()
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm(**MOCK) as mock,
            open_provider(_config(mock, transport)) as provider,
        ):
            await trio.testing.wait_all_tasks_blocked()
            tasks_before = _tasks() - TASKS_PER_SERVED_CONNECTION * mock.stats().open_connections
            done = 0
            while done < 1000:
                concurrency = min(rng.choice((1, 4, 16, 50, 100, 200)), 1000 - done)
                async with trio.open_nursery() as nursery:
                    for _ in range(concurrency):
                        nursery.start_soon(_one, provider, rng, outcomes)
                done += concurrency
            assert sum(outcomes.values()) == 1000
            # Every kind of ending happened, so the test exercised what it claims (how often
            # each does depends on the machine's speed: a slow one cancels more before the
            # answer, so the bar is a few of each, not a share).
            assert min(outcomes.values()) >= 5, outcomes
            assert len(outcomes) == 3, outcomes

            pool = provider.statistics().pool
            assert _settled(pool), pool
            assert pool is not None and pool.connections <= MAX_CONNECTIONS
            # Let the mock's connection tasks finish closing before counting them.
            await trio.testing.wait_all_tasks_blocked()
            assert (
                _tasks() - TASKS_PER_SERVED_CONNECTION * mock.stats().open_connections
                == tasks_before
            )
            breaker = provider.statistics().breaker  # cancellation is never a failure
            assert breaker is not None and breaker.failures == 0, (breaker, mock.stats())

            # The pool is whole again: 100 calls, more than the pool at once, all succeed.
            answers: list[str] = []

            async def ask() -> None:
                answers.append((await provider.complete(ChatRequest((user("hi"),)))).text)

            async with trio.open_nursery() as nursery:
                for _ in range(100):
                    nursery.start_soon(ask)
            assert answers == [mock.config.reply_text] * 100
            assert _settled(provider.statistics().pool)


@TRANSPORTS
async def test_leaving_a_stream_early_releases_its_connection(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm(**MOCK) as mock,
            open_provider(_config(mock, transport)) as provider,
        ):
            for _ in range(MAX_CONNECTIONS + 4):
                async with provider.stream(ChatRequest((user("hi"),))) as chunks:
                    async for _ in chunks:
                        break
                assert _settled(provider.statistics().pool)
            # Read to the end, the connection is reused rather than closed.
            before = provider.statistics().pool
            async with provider.stream(ChatRequest((user("hi"),))) as chunks:
                await collect_stream(chunks)
            async with provider.stream(ChatRequest((user("hi"),))) as chunks:
                await collect_stream(chunks)
            after = provider.statistics().pool
            assert before is not None and after is not None
            assert after.opened - before.opened <= 1


@TRANSPORTS
async def test_cancelled_while_queued_for_a_slot(transport: str) -> None:
    # All slots busy with slow answers; the queued calls are cancelled together.
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm(latency=0.2) as mock,
            open_provider(_config(mock, transport)) as provider,
        ):
            async with trio.open_nursery() as nursery:
                for _ in range(MAX_CONNECTIONS * 4):
                    nursery.start_soon(provider.complete, ChatRequest((user("hi"),)))
                await trio.sleep(0.05)
                pool = provider.statistics().pool
                assert pool is not None and pool.queued == MAX_CONNECTIONS * 3
                assert pool.active == MAX_CONNECTIONS
                nursery.cancel_scope.cancel()
            assert _settled(provider.statistics().pool)
            await provider.complete(ChatRequest((user("hi"),)))
