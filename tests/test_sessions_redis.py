"""Sessions shared through Redis (`RedisSessionStore`) against a real ``redis-server``.

Rules: Redis is a real server on 127.0.0.1, a free port, started and stopped by PID
(tests/_redis.py); "processes" are runners with their own Redis connection and store, or
real worker subprocesses stopped with SIGTERM. Real clock, an absolute ``trio.fail_after``
around every body; concurrency is forced with gates, never with sleeps; waiting for a
state polls Redis, never a timed assertion.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import agentflow_trio as af
from agentflow_trio.config import (
    Config,
    DistributedConfig,
    MemoryConfig,
    RetryConfig,
    RunnerConfig,
)
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.llm.types import user
from agentflow_trio.state import (
    HISTORY_KEY,
    SessionConflict,
    SessionDataError,
    SessionError,
    SessionStore,
    SessionTooLarge,
)
from agentflow_trio.testing import mock_llm_config
from agentflow_trio.tools import ToolRegistry, tool_agent

pytest.importorskip("coredis")
pytest.importorskip("zstandard")

import zstandard
from _redis import RedisServer, redis_server
from test_sessions import chat_server, post_turn, said, where

from agentflow_trio.distributed import (
    RedisSessionStore,
    RemoteRunner,
    open_redis_client,
    open_session_store,
    run_worker,
)
from agentflow_trio.mockllm import MockReply, open_mock_llm

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30
PREFIX = "agentflow:session:"


@asynccontextmanager
async def redis_store(url: str, **options: Any) -> AsyncIterator[RedisSessionStore]:
    """A store on its own connection pool: one per simulated process."""
    async with open_redis_client(url) as redis:
        yield RedisSessionStore(redis, **options)


def in_session(event_type: str, session: str = "s1", **data: Any) -> af.Event:
    return af.Event(event_type, data, {"session_id": session})


@af.agent
async def read(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    return dict(ctx.state)


def gated(gate: trio.Event, change: Callable[[af.Context, af.Event], None]) -> af.Agent:
    """An agent that makes its change, then waits at ``gate`` before it may commit."""

    async def run(ctx: af.Context, event: af.Event) -> Any:
        change(ctx, event)
        await gate.wait()
        return event.data.get("name")

    return af.Agent(run, name="gated")


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.01)


# --------------------------------------------------------------------------- the store


async def test_round_trip_versions_ttl_and_statistics(redis_server: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store(redis_server.url, ttl=120.0) as store:
            new = await store.load("s1")
            assert (new.version, dict(new.state)) == (0, {})
            assert await store.save(new) == 0  # nothing to write
            assert not await store.redis.exists([PREFIX + "s1"])
            new.state.update({"n": 1, "items": (1, 2)})
            v1 = await store.save(new)
            loaded = await store.load("s1")
            assert loaded.version == v1 != 0
            assert dict(loaded.state) == {"n": 1, "items": [1, 2]}  # JSON: a tuple is a list
            assert 0 < await store.redis.pttl(PREFIX + "s1") <= 120_000
            assert await store.save(loaded) == v1  # unchanged: the TTL is refreshed only
            loaded.state.set("n", 2)
            assert await store.save(loaded) not in (0, v1)
            s = store.statistics()
    assert (s.loads, s.hits, s.misses, s.saves, s.unchanged) == (2, 1, 1, 2, 2)
    assert s.compressed == 0 and s.compression_ratio == pytest.approx(
        s.bytes_encoded / s.bytes_stored
    )


async def test_a_state_over_the_bound_is_refused_and_nothing_is_written(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store(redis_server.url, max_state_bytes=2048) as store:
            first = await store.load("s1")
            first.state.set("small", "x")
            version = await store.save(first)
            big = await store.load("s1")
            big.state.set("blob", "y" * 4096)
            with pytest.raises(SessionTooLarge) as caught:
                await store.save(big)
            after = await store.load("s1")
    assert caught.value.limit == 2048 and caught.value.size > 4096
    assert "max_state_bytes = 2048" in str(caught.value)
    assert after.version == version and dict(after.state) == {"small": "x"}
    assert store.statistics().too_large == 1


@pytest.mark.parametrize("codec", ["zstd", "zlib"])
async def test_compression_above_the_threshold_with_its_header_and_ratio(
    redis_server: RedisServer, codec: Any
) -> None:
    text = "the same words again and again " * 200
    with trio.fail_after(TIMEOUT):
        async with (
            redis_store(redis_server.url, compression=codec, compression_threshold=1024) as store,
            redis_store(redis_server.url) as plain_reader,
        ):
            for session, value in (("small", "tiny"), ("large", text)):
                snap = await store.load(session)
                snap.state.set("text", value)
                await store.save(snap)
            small = await store.redis.hget(PREFIX + "small", "d")
            large = await store.redis.hget(PREFIX + "large", "d")
            read_back = await plain_reader.load("large")  # any store reads any codec
            s = store.statistics()
    assert small is not None and small[0] == 0  # under the threshold: raw JSON
    assert large is not None and large[0] == {"zlib": 1, "zstd": 2}[codec]
    assert len(large) < len(text) // 10
    assert read_back.state["text"] == text
    assert s.compressed == 1 and s.compression_ratio > 5


def _zstd(data: bytes, *, with_size: bool = True) -> bytes:
    return bytes(zstandard.ZstdCompressor(write_content_size=with_size).compress(data))


BOMB = b'{"k":"' + b"0" * (8 << 20) + b'"}'


@pytest.mark.parametrize(
    ("version", "entry", "why"),
    [
        (b"1", b"", "bytes stored"),
        (b"1", b"\x09{}", "unknown header"),
        (b"1", b"\x00not json", "not JSON"),
        (b"1", b"\x00[1, 2]", "not an object"),
        (b"1", b"\x00" + b"[" * 60_000, "not JSON"),
        (b"1", b"\x00" + b" " * 70_000, "bytes stored"),
        (b"1", b"\x01" + zlib.compress(BOMB), "inflates past"),
        (b"1", b"\x01" + zlib.compress(b'{"a":1}')[:-3], "truncated"),
        (b"1", b"\x01" + zlib.compress(b'{"a":1}') + b"junk", "trailing"),
        (b"1", b"\x01not zlib", "broken zlib"),
        (b"1", b"\x02" + _zstd(BOMB), "zstd frame of"),
        (b"1", b"\x02" + _zstd(b'{"a":1}', with_size=False), "zstd frame of -1"),
        (b"1", b"\x02not zstd", "zstd"),
        (b"x1", b'\x00{"a":1}', "is not a number"),
    ],
)  # fmt: skip
async def test_a_hostile_entry_is_a_typed_refusal(
    redis_server: RedisServer, version: bytes, entry: bytes, why: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store(redis_server.url, max_state_bytes=65536) as store:
            await store.redis.hset(PREFIX + "s1", {"v": version, "d": entry})
            with pytest.raises(SessionDataError, match=why) as caught:
                await store.load("s1")
    assert caught.value.session_id == "s1"


async def test_a_malformed_entry_fails_its_event_and_the_runner_goes_on(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store(redis_server.url) as store:
            await store.redis.hset(PREFIX + "bad", {"v": b"1", "d": b"\x00[]"})
            async with af.Runner(agents={"read": read}, sessions=store) as runner:
                bad = await runner.call(in_session("read", session="bad"))
                good = await runner.call(in_session("read", session="good"))
    assert bad.outcome is af.Outcome.FAILED and bad.error is not None
    assert bad.error.type == "SessionDataError" and "not an object" in bad.error.message
    assert good.outcome is af.Outcome.SUCCEEDED


async def test_bad_session_ids_and_values_are_typed_errors(redis_server: RedisServer) -> None:
    @af.agent
    async def odd(ctx: af.Context, event: af.Event) -> None:
        ctx.state.set("thing", object())

    with trio.fail_after(TIMEOUT):
        async with redis_store(redis_server.url) as store:
            for session_id in (7, "", "x" * 257):
                with pytest.raises(SessionError, match="session id"):
                    await store.load(session_id)
            async with af.Runner(agents={"odd": odd}, sessions=store) as runner:
                result = await runner.call(in_session("odd"))
            assert not await store.redis.exists([PREFIX + "s1"])
    assert result.outcome is af.Outcome.FAILED and result.error is not None
    assert result.error.type == "SessionError" and "JSON" in result.error.message


async def test_redis_down_fails_the_event_with_broker_unavailable(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store(redis_server.url, command_timeout=2.0) as store:
            async with af.Runner(agents={"read": read}, sessions=store) as runner:
                redis_server.stop()
                result = await runner.call(in_session("read"))
    assert result.outcome is af.Outcome.FAILED and result.error is not None
    assert result.error.type == "BrokerUnavailable" and "session load" in result.error.message


async def test_an_entry_that_expired_mid_event_is_written_back_whole(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with redis_store(redis_server.url) as store:
            first = await store.load("s1")
            first.state.update({"a": 1, "b": 2})
            await store.save(first)
            event = await store.load("s1")
            event.state.set("b", 3)
            await store.redis.delete([PREFIX + "s1"])  # what the TTL does
            await store.save(event)
            after = await store.load("s1")
    assert dict(after.state) == {"a": 1, "b": 3}


async def test_a_session_that_keeps_changing_ends_in_a_conflict(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            redis_store(redis_server.url, max_attempts=1) as patient,
            redis_store(redis_server.url) as other,
        ):
            slow = await patient.load("s1")
            slow.state.set("mine", 1)
            fast = await other.load("s1")
            fast.state.set("theirs", 1)
            await other.save(fast)
            with pytest.raises(SessionConflict, match="kept changing for 1 tries"):
                await patient.save(slow)  # merged, but no try left to write it
            after = await other.load("s1")
    assert dict(after.state) == {"theirs": 1}


async def test_open_session_store_follows_memory_backend(redis_server: RedisServer) -> None:
    distributed = DistributedConfig(redis_url=redis_server.url, key_prefix="app")
    memory = MemoryConfig(
        backend="redis", state_cache_ttl=90.0, max_state_bytes=4096,
        enable_state_compression=True, compression="zlib", compression_threshold=100,
    )  # fmt: skip
    with trio.fail_after(TIMEOUT):
        async with open_session_store(Config()) as local:
            assert isinstance(local, SessionStore)
        cfg = Config(memory=memory, distributed=distributed)
        async with open_session_store(cfg) as shared:
            assert isinstance(shared, RedisSessionStore)
            assert (shared.ttl, shared.max_state_bytes, shared.prefix) == (
                90.0, 4096, "app:session:",
            )  # fmt: skip
            assert (shared.compression, shared.compression_threshold) == ("zlib", 100)
            snap = await shared.load("s1")
            snap.state.set("k", "v")
            await shared.save(snap)
            assert await shared.redis.exists(["app:session:s1"]) == 1


# --------------------------------------------------------------------------- two runners, one Redis


@asynccontextmanager
async def two_runners(
    url: str, agents: Mapping[str, Any]
) -> AsyncIterator[tuple[af.Runner, af.Runner, RedisSessionStore]]:
    """Two runners, each with its own connection and store: two processes, one Redis."""
    async with (
        redis_store(url) as one,
        redis_store(url) as two,
        af.Runner(agents=agents, sessions=one) as first,
        af.Runner(agents=agents, sessions=two) as second,
    ):
        yield first, second, two


async def test_two_runners_keep_each_others_writes_and_both_turns(
    redis_server: RedisServer,
) -> None:
    gate = trio.Event()

    def change(ctx: af.Context, event: af.Event) -> None:
        ctx.state.set(f"by:{event.data['name']}", True)
        ctx.remember(user(event.data["name"]))

    agents = {"gated": gated(gate, change), "read": read}
    with trio.fail_after(TIMEOUT):
        async with two_runners(redis_server.url, agents) as (first, second, _):
            a = await first.emit(in_session("gated", name="a"))
            b = await second.emit(in_session("gated", name="b"))
            await wait_until(lambda: first.statistics().running_agents == 1)
            await wait_until(lambda: second.statistics().running_agents == 1)
            await trio.testing.wait_all_tasks_blocked()  # both loaded the same version
            gate.set()
            results = [await a.result(), await b.result()]
            state = (await first.call(in_session("read"))).output
    assert all(r.outcome is af.Outcome.SUCCEEDED for r in results), results
    assert state["by:a"] is True and state["by:b"] is True
    assert sorted(m["content"] for m in state[HISTORY_KEY]["messages"]) == ["a", "b"]


async def test_a_clash_between_two_runners_fails_the_later_event(
    redis_server: RedisServer,
) -> None:
    gate = trio.Event()

    def increment(ctx: af.Context, event: af.Event) -> None:
        ctx.state.set("n", int(ctx.state.get("n", 0)) + 1)

    agents = {"gated": gated(gate, increment), "read": read}
    with trio.fail_after(TIMEOUT):
        async with two_runners(redis_server.url, agents) as (first, second, _):
            a = await first.emit(in_session("gated", name="a"))
            b = await second.emit(in_session("gated", name="b"))
            await wait_until(lambda: first.statistics().running_agents == 1)
            await wait_until(lambda: second.statistics().running_agents == 1)
            gate.set()
            results = [await a.result(), await b.result()]
            state = (await first.call(in_session("read"))).output
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["failed", "succeeded"]
    (lost,) = [r for r in results if r.outcome is af.Outcome.FAILED]
    assert lost.error is not None and lost.error.type == "SessionConflict"
    assert state["n"] == 1  # one increment committed, the other refused: none lost silently


async def test_no_lost_update_under_concurrent_load(redis_server: RedisServer) -> None:
    """100 events on one session through two runners at once: a counter only moves by
    the events that succeeded, and every succeeded event's own key and message is kept."""

    @af.agent
    async def work(ctx: af.Context, event: af.Event) -> int:
        n = event.data["n"]
        ctx.state.set(f"seen:{n}", True)
        ctx.remember(user(str(n)), limit=1000)
        if n % 4 == 0:
            ctx.state.set("count", int(ctx.state.get("count", 0)) + 1)
        await trio.lowlevel.checkpoint()
        return n

    agents = {"work": work, "read": read}
    with trio.fail_after(TIMEOUT):
        async with two_runners(redis_server.url, agents) as (first, second, store):
            handles = []
            for n in range(100):
                runner = first if n % 2 else second
                handles.append(await runner.emit(in_session("work", n=n)))
            results = [await h.result() for h in handles]
            state = (await first.call(in_session("read"))).output
            merges = store.statistics().merges
    done = {r.output for r in results if r.outcome is af.Outcome.SUCCEEDED}
    for r in results:
        if r.outcome is not af.Outcome.SUCCEEDED:
            assert r.error is not None and r.error.type == "SessionConflict", r
            assert r.output % 4 == 0  # only the counter can clash
    assert {k for k in state if k.startswith("seen:")} == {f"seen:{n}" for n in done}
    assert sorted(int(m["content"]) for m in state[HISTORY_KEY]["messages"]) == sorted(done)
    assert state.get("count", 0) == sum(1 for n in done if n % 4 == 0)
    assert merges > 0  # the events did overlap: saves found newer versions and merged


# --------------------------------------------------------------------------- serve and workers


async def test_two_servers_share_one_conversation_through_redis(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm() as mock,
            redis_store(redis_server.url) as one,
            redis_store(redis_server.url) as two,
            chat_server(mock, {"where": where}, one) as server_a,
            chat_server(mock, {"where": where}, two) as server_b,
        ):
            mock.script(
                MockReply(text='{"name": "Oslo", "country": "Norway"}'),
                MockReply(text='{"name": "Bergen", "country": "Norway"}'),
            )
            await post_turn(server_a, "where", "u1", "Capital of Norway?")
            await post_turn(server_b, "where", "u1", "And its second city?")
            turn2 = mock.received[1]
    assert said(turn2)[-3:] == [
        ("user", "Capital of Norway?"),
        ("assistant", "Oslo, Norway"),
        ("user", "And its second city?"),
    ]


def worker_config(url: str) -> Config:
    return Config(
        distributed=DistributedConfig(redis_url=url, block=0.1, claim_idle=1.0, retry_delay=0.0),
        runner=RunnerConfig(drain_timeout=2.0),
    )


async def test_two_workers_carry_a_tool_agent_conversation(redis_server: RedisServer) -> None:
    cfg = worker_config(redis_server.url)
    loop = tool_agent(tools=ToolRegistry(), system="Be brief.")

    @af.agent
    async def chat(ctx: af.Context, event: af.Event) -> str:
        # A worker's result must be JSON: the text, not the transcript's Message objects.
        text: str = (await ctx.run(loop)).unwrap()["text"]
        return text

    agents = {"chat": chat}
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm() as mock,
            open_provider(mock_llm_config(mock, retry=RetryConfig(enabled=False))) as provider,
            RemoteRunner(cfg) as remote,
        ):
            mock.script(MockReply(text="Hello Ada."), MockReply(text="Your name is Ada."))
            turns = ["My name is Ada.", "What is my name?"]
            for name, text in zip(("worker-a", "worker-b"), turns, strict=True):
                async with redis_store(redis_server.url) as store, trio.open_nursery() as nursery:
                    start = functools.partial(
                        run_worker, cfg, agents, consumer=name, llm=LLMClient(provider),
                        sessions=store,
                    )  # fmt: skip
                    worker = await nursery.start(start)
                    result = await remote.call(in_session("chat", session="u1", query=text))
                    assert result.outcome is af.Outcome.SUCCEEDED, result
                    worker.shutdown()
            turn2 = mock.received[1]
    assert said(turn2) == [
        ("system", "Be brief."),
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
    ]


async def test_workers_retry_a_conflicted_increment_until_every_one_counts(
    redis_server: RedisServer,
) -> None:
    """Read-modify-write of one counter from two workers: a clash fails the later event
    (nothing written), the worker offers it again, and the count ends exact."""

    @af.agent
    async def increment(ctx: af.Context, event: af.Event) -> int:
        n = int(ctx.state.get("n", 0)) + 1
        ctx.state.set("n", n)
        await trio.sleep(0.005)  # hold the version: the two workers' events overlap
        return n

    count = 20
    cfg = attrs.evolve(
        worker_config(redis_server.url),
        distributed=attrs.evolve(worker_config(redis_server.url).distributed, max_deliveries=1000),
        runner=RunnerConfig(drain_timeout=2.0, max_concurrent_events=4),
    )
    with trio.fail_after(60):
        async with (
            redis_store(redis_server.url) as one,
            redis_store(redis_server.url) as two,
            trio.open_nursery() as nursery,
            RemoteRunner(cfg) as remote,
        ):
            workers = []
            for name, store in (("a", one), ("b", two)):
                start = functools.partial(
                    run_worker, cfg, {"inc": increment}, consumer=name, sessions=store
                )
                workers.append(await nursery.start(start))
            handles = await remote.emit_many([in_session("inc") for _ in range(count)])
            results = [await h.result() for h in handles]
            final = await one.load("s1")
            conflicts = one.statistics().conflicts + two.statistics().conflicts
            for worker in workers:
                worker.shutdown()
    assert all(r.outcome is af.Outcome.SUCCEEDED for r in results)
    assert sorted(r.output for r in results) == list(range(1, count + 1))
    assert final.state["n"] == count and conflicts > 0


WORKER = """
import os
import sys

import trio

import agentflow_trio as af
from agentflow_trio.config import Config, DistributedConfig, RunnerConfig
from agentflow_trio.distributed import RedisSessionStore, open_redis_client, run_worker
from agentflow_trio.llm.types import user


async def note(ctx: af.Context, event: af.Event) -> int:
    n = event.data["n"]
    ctx.state.set(f"seen:{n}", True)
    ctx.remember(user(str(n)), limit=1000)
    await trio.sleep(0.001)  # hold the version a moment: events of two processes overlap
    return os.getpid()


async def main(url: str, name: str) -> None:
    cfg = Config(
        distributed=DistributedConfig(redis_url=url, block=0.1, claim_idle=1.0, retry_delay=0),
        runner=RunnerConfig(drain_timeout=2.0, max_concurrent_events=16),
    )
    async with open_redis_client(url) as redis:
        store = RedisSessionStore(redis)
        await run_worker(cfg, {"note": note}, consumer=name, handle_signals=True, sessions=store)


trio.run(main, sys.argv[1], sys.argv[2])
"""


def spawn(script: Path, url: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(script), url, name], env=env, stdout=out, stderr=out
        )


async def test_worker_processes_share_a_session_without_losing_a_write(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    script = tmp_path / "session_worker.py"
    script.write_text(textwrap.dedent(WORKER))
    log = tmp_path / "workers.log"
    workers = [spawn(script, redis_server.url, f"w{i}", log) for i in range(2)]
    count = 200
    try:
        with trio.fail_after(60):
            async with RemoteRunner(worker_config(redis_server.url)) as remote:
                handles = await remote.emit_many([in_session("note", n=n) for n in range(count)])
                results = [await h.result() for h in handles]
            async with redis_store(redis_server.url) as store:
                state = (await store.load("s1")).state
    finally:
        for process in workers:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in workers:
            process.wait(30)
    assert all(r.outcome is af.Outcome.SUCCEEDED for r in results)
    assert {r.output for r in results} == {w.pid for w in workers}  # both processes wrote
    assert {k for k in state if k.startswith("seen:")} == {f"seen:{n}" for n in range(count)}
    history = [int(m["content"]) for m in state[HISTORY_KEY]["messages"]]
    assert sorted(history) == list(range(count))  # every turn kept once, none lost
