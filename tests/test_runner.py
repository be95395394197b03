"""Runner behaviours, one at a time, under the autojump clock (virtual time)."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import agentflow_trio as af
from agentflow_trio.testing import RunnerFactory

pytest_plugins = ["agentflow_trio.testing.plugin"]  # runner_factory: recorded, virtual time


@af.agent
async def echo(ctx: af.Context, event: af.Event) -> Any:
    await trio.sleep(event.data.get("sleep", 0))
    return dict(event.data)


@af.agent
async def boom(ctx: af.Context, event: af.Event) -> Any:
    raise ValueError("the agent broke")


AGENTS = {"echo": echo, "boom": boom}


async def test_call_returns_result_with_event_id_and_agent(runner_factory: RunnerFactory) -> None:
    async with runner_factory(AGENTS) as runner:
        event = af.Event("echo", {"x": 1})
        result = await runner.call(event)
    assert result.outcome is af.Outcome.SUCCEEDED
    assert result.output == {"x": 1}
    assert result.event_id == event.id
    assert result.agent == "echo"
    assert result.unwrap() == {"x": 1}


async def test_agent_exception_becomes_failed_with_traceback(runner_factory: RunnerFactory) -> None:
    async with runner_factory(AGENTS) as runner:
        result = await runner.call(af.Event("boom"))
        after = await runner.call(af.Event("echo", {"still": "alive"}))
    assert result.outcome is af.Outcome.FAILED
    assert result.error is not None
    assert result.error.type == "ValueError"
    assert "the agent broke" in result.error.message
    assert "raise ValueError" in result.error.traceback
    assert after.succeeded
    with pytest.raises(af.AgentFailed) as info:
        result.unwrap()
    assert info.value.result is result


async def test_unknown_event_type_fails_naming_known_agents(runner_factory: RunnerFactory) -> None:
    async with runner_factory(AGENTS) as runner:
        result = await runner.call(af.Event("nope"))
    assert result.outcome is af.Outcome.FAILED
    assert result.error is not None and result.error.type == "UnknownAgent"
    assert "boom, echo" in result.error.message


async def test_timeout_from_config_agent_and_emit(runner_factory: RunnerFactory) -> None:
    slow = af.agent(timeout=2)(echo.fn)
    async with runner_factory({"echo": echo, "slow": slow}, event_timeout="5s") as r:
        t0 = trio.current_time()
        by_config = await r.call(af.Event("echo", {"sleep": 10}))
        assert trio.current_time() - t0 == pytest.approx(5)
        t0 = trio.current_time()
        by_agent = await r.call(af.Event("slow", {"sleep": 10}))
        assert trio.current_time() - t0 == pytest.approx(2)
        t0 = trio.current_time()
        by_emit = await r.call(af.Event("slow", {"sleep": 10}), timeout=1)
        assert trio.current_time() - t0 == pytest.approx(1)
    for result in (by_config, by_agent, by_emit):
        assert result.outcome is af.Outcome.TIMED_OUT
        assert result.error is not None and "timeout" in result.error.message


async def test_emit_nowait_raises_queue_full_at_admission_bound(
    runner_factory: RunnerFactory,
) -> None:
    async with runner_factory(
        AGENTS, max_concurrent_events=2, event_buffer_size=10, worker_pool_size=1
    ) as runner:
        first = runner.emit_nowait(af.Event("echo", {"sleep": 1}))
        second = runner.emit_nowait(af.Event("echo", {"sleep": 1}))
        with pytest.raises(af.QueueFull, match="max_concurrent_events"):
            runner.emit_nowait(af.Event("echo"))
        assert isinstance(af.QueueFull("x"), trio.WouldBlock)
        assert runner.statistics().refused == 1
        await first.result()
        await second.result()
        third = runner.emit_nowait(af.Event("echo"))
    assert third.done


async def test_emit_nowait_raises_queue_full_when_buffer_full(
    runner_factory: RunnerFactory,
) -> None:
    async with runner_factory(
        AGENTS, max_concurrent_events=100, event_buffer_size=1, worker_pool_size=1
    ) as runner:
        runner.emit_nowait(af.Event("echo", {"sleep": 1}))
        await trio.testing.wait_all_tasks_blocked()  # the worker took it and sleeps
        runner.emit_nowait(af.Event("echo", {"sleep": 1}))  # fills the one-slot buffer
        with pytest.raises(af.QueueFull, match="event_buffer_size"):
            runner.emit_nowait(af.Event("echo"))


async def test_emit_waits_for_room_backpressure(runner_factory: RunnerFactory) -> None:
    async with runner_factory(
        AGENTS, max_concurrent_events=1, event_buffer_size=0, worker_pool_size=1
    ) as runner:
        await runner.emit(af.Event("echo", {"sleep": 3}))
        t0 = trio.current_time()
        handle = await runner.emit(af.Event("echo"))  # waits until the first one ends
        assert trio.current_time() - t0 == pytest.approx(3)
        assert (await handle.result()).succeeded


async def test_emit_cancelled_while_waiting_is_not_accepted(runner_factory: RunnerFactory) -> None:
    async with runner_factory(AGENTS, max_concurrent_events=1, worker_pool_size=1) as runner:
        await runner.emit(af.Event("echo", {"sleep": 5}))
        with trio.move_on_after(1):
            await runner.emit(af.Event("echo"))
        assert runner.statistics().accepted == 1
        assert runner.statistics().in_flight == 1


async def test_emit_after_close_raises_runner_closed(runner_factory: RunnerFactory) -> None:
    runner = runner_factory(AGENTS)
    with pytest.raises(af.RunnerClosed):
        runner.emit_nowait(af.Event("echo"))
    async with runner:
        pass
    with pytest.raises(af.RunnerClosed):
        await runner.emit(af.Event("echo"))
    with pytest.raises(af.RunnerClosed):
        runner.emit_nowait(af.Event("echo"))
    with pytest.raises(RuntimeError, match="only once"):
        async with runner:
            pass


async def test_waiting_emitter_gets_runner_closed_on_shutdown(
    runner_factory: RunnerFactory,
) -> None:
    outcome: list[str] = []

    async def late(runner: af.Runner) -> None:
        try:
            await runner.emit(af.Event("echo"))
            outcome.append("accepted")
        except af.RunnerClosed:
            outcome.append("closed")

    async with trio.open_nursery() as nursery:
        settings = {"max_concurrent_events": 1, "worker_pool_size": 1, "drain_timeout": "1s"}
        async with runner_factory(AGENTS, **settings) as runner:
            await runner.emit(af.Event("echo", {"sleep": 100}))
            nursery.start_soon(late, runner)
            await trio.testing.wait_all_tasks_blocked()
    assert outcome == ["closed"]


async def test_caller_cancellation_cancels_the_event(runner_factory: RunnerFactory) -> None:
    seen: list[af.AgentResult] = []
    hooks = af.Hooks(after_event=[lambda e, r: seen.append(r)])
    async with runner_factory(AGENTS, hooks=hooks) as runner:
        with trio.move_on_after(1):
            await runner.call(af.Event("echo", {"sleep": 10}))
        await trio.testing.wait_all_tasks_blocked()
        assert runner.statistics().in_flight == 0
    assert [r.outcome for r in seen] == [af.Outcome.CANCELLED]
    assert seen[0].error is not None and "caller" in seen[0].error.message


async def test_handle_cancel_while_queued_resolves_at_once(runner_factory: RunnerFactory) -> None:
    async with runner_factory(AGENTS, worker_pool_size=1) as runner:
        busy = await runner.emit(af.Event("echo", {"sleep": 5}))
        queued = await runner.emit(af.Event("echo"))
        queued.cancel()
        assert queued.done
        assert queued.result_nowait().outcome is af.Outcome.CANCELLED
        assert not busy.done
        with pytest.raises(trio.WouldBlock):
            busy.result_nowait()
    stats = runner.statistics()
    assert (stats.succeeded, stats.cancelled, stats.in_flight) == (1, 1, 0)


async def test_shutdown_drains_then_cancels(runner_factory: RunnerFactory) -> None:
    async with runner_factory(AGENTS, drain_timeout="3s", worker_pool_size=1) as runner:
        quick = await runner.emit(af.Event("echo", {"sleep": 1}))
        slow = await runner.emit(af.Event("echo", {"sleep": 100}))
        queued = await runner.emit(af.Event("echo"))
        t0 = trio.current_time()
    assert trio.current_time() - t0 == pytest.approx(3)
    assert quick.result_nowait().succeeded
    assert slow.result_nowait().outcome is af.Outcome.CANCELLED
    assert queued.result_nowait().outcome is af.Outcome.CANCELLED
    assert runner.statistics().in_flight == 0


async def test_body_error_propagates_unwrapped_without_draining(
    runner_factory: RunnerFactory,
) -> None:
    with pytest.raises(KeyError):
        async with runner_factory(AGENTS, drain_timeout="1h") as runner:
            handle = await runner.emit(af.Event("echo", {"sleep": 100}))
            raise KeyError("mine")
    assert handle.result_nowait().outcome is af.Outcome.CANCELLED


async def test_outer_cancellation_during_drain_still_resolves(
    runner_factory: RunnerFactory,
) -> None:
    with trio.move_on_after(2):
        async with runner_factory(AGENTS, drain_timeout="1h") as runner:
            handle = await runner.emit(af.Event("echo", {"sleep": 100}))
    assert handle.result_nowait().outcome is af.Outcome.CANCELLED


async def test_failing_hooks_are_reported_not_swallowed(
    runner_factory: RunnerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_before(event: af.Event) -> None:
        if event.data.get("break_before"):
            raise RuntimeError("before hook broke")

    def bad_after(event: af.Event, result: af.AgentResult) -> None:
        raise RuntimeError("after hook broke")

    hooks = af.Hooks(before_event=[bad_before], after_event=[bad_after])
    with caplog.at_level(logging.ERROR, logger="agentflow_trio"):
        async with runner_factory(AGENTS, hooks=hooks) as runner:
            blocked = await runner.call(af.Event("echo", {"break_before": True}))
            fine = await runner.call(af.Event("echo", {"x": 1}))
    assert blocked.outcome is af.Outcome.FAILED
    assert blocked.error is not None and "before hook broke" in blocked.error.message
    assert fine.succeeded  # a failing after-hook does not change the result
    assert runner.statistics().hook_failures == 3  # before once, after twice
    assert "after hook broke" in caplog.text


async def test_agent_hooks_and_on_error(runner_factory: RunnerFactory) -> None:
    calls: list[tuple[str, ...]] = []
    hooks = af.Hooks(
        before_agent=[lambda name, e: calls.append(("before", name))],
        after_agent=[lambda name, e, r: calls.append(("after", name, r.outcome.value))],
        on_error=[lambda e, exc: calls.append(("error", type(exc).__name__))],
    )
    async with runner_factory(AGENTS, hooks=hooks) as runner:
        await runner.call(af.Event("echo"))
        await runner.call(af.Event("boom"))
    assert calls == [
        ("before", "echo"),
        ("after", "echo", "succeeded"),
        ("before", "boom"),
        ("error", "ValueError"),
        ("after", "boom", "failed"),
    ]


async def test_plain_functions_and_returned_results(runner_factory: RunnerFactory) -> None:
    async def plain(ctx: af.Context, event: af.Event) -> af.AgentResult:
        return af.AgentResult.failed("said no", output={"why": "policy"})

    async with runner_factory({"plain": plain}) as runner:
        result = await runner.call(af.Event("plain"))
    assert result.outcome is af.Outcome.FAILED
    assert result.output == {"why": "policy"}
    assert result.agent == "plain"


async def test_session_state_persists_between_events(runner_factory: RunnerFactory) -> None:
    @af.agent
    async def counter(ctx: af.Context, event: af.Event) -> int:
        n = int(ctx.state.get("n", 0)) + 1
        ctx.state.set("n", n)
        return n

    sessions = af.SessionStore(max_entries=10, ttl=60)
    async with runner_factory({"count": counter}, sessions=sessions) as runner:
        s1 = [await runner.call(af.Event("count", metadata={"session_id": "a"})) for _ in range(3)]
        other = await runner.call(af.Event("count", metadata={"session_id": "b"}))
        await trio.sleep(61)
        expired = await runner.call(af.Event("count", metadata={"session_id": "a"}))
    assert [r.output for r in s1] == [1, 2, 3]
    assert other.output == 1
    assert expired.output == 1


async def test_statistics_snapshot(runner_factory: RunnerFactory) -> None:
    async with runner_factory(AGENTS, worker_pool_size=2) as runner:
        handles = [await runner.emit(af.Event("echo", {"sleep": 1})) for _ in range(5)]
        await trio.testing.wait_all_tasks_blocked()
        live = runner.statistics()
        assert live.running_agents == 2
        assert live.running_events == 2
        assert live.in_flight == 5
        assert live.queued == 3
        for h in handles:
            await h.result()
    final = runner.statistics()
    assert final.completed == final.succeeded == 5
    assert final.closed


async def test_emit_is_a_checkpoint_and_result_too(runner_factory: RunnerFactory) -> None:
    async with runner_factory(AGENTS) as runner:
        with trio.testing.assert_checkpoints():
            handle = await runner.emit(af.Event("echo"))
        await handle.result()
        with trio.testing.assert_checkpoints():
            await handle.result()


async def test_ctx_tools_is_the_registry_bound_to_the_event(runner_factory: RunnerFactory) -> None:
    registry = af.ToolRegistry()

    @registry.register
    @af.tool
    async def search(ctx: af.Context, q: str) -> dict[str, Any]:
        """Search for q."""
        return {"q": q, "event": ctx.event.id}

    @af.agent
    async def uses_tools(ctx: af.Context, event: af.Event) -> Any:
        hits = await ctx.tools.call_many([("search", {"q": "trio"}), ("search", {"q": 3})])
        return [(h.outcome, h.output) for h in hits]

    async with runner_factory({"x": uses_tools}, tools=registry) as runner:
        event = af.Event("x")
        result = await runner.call(event)
    assert result.succeeded, result.error
    (ok, good), (bad, _) = result.output
    assert (ok, good) == ("ok", {"q": "trio", "event": event.id})
    assert bad == "error"  # a wrong argument type is a structured error, not a failure


async def test_memory_guard_sheds_load_with_overloaded(runner_factory: RunnerFactory) -> None:
    from agentflow_trio.observability.runtime import MemoryGuard

    rss = [100]
    guard = MemoryGuard(1000, interval=1.0, rss=lambda: rss[0])
    async with runner_factory(AGENTS, memory_guard=guard) as runner:
        assert (await runner.call(af.Event("echo"))).succeeded
        rss[0] = 5000
        await trio.sleep(1.5)  # the guard samples every second
        with pytest.raises(af.Overloaded, match="memory limit"):
            runner.emit_nowait(af.Event("echo"))
        with pytest.raises(af.Overloaded):
            await runner.emit(af.Event("echo"))
        rss[0] = 100
        await trio.sleep(1.5)
        assert (await runner.call(af.Event("echo"))).succeeded
    assert runner.statistics().refused == 2


async def test_runtime_gc_settings_live_as_long_as_the_runner(
    runner_factory: RunnerFactory,
) -> None:
    import gc

    before = gc.get_threshold()
    config = af.Config.from_mapping({"runtime": {"gc_thresholds": [12345, 11, 12]}})
    async with runner_factory(AGENTS, config=config):
        assert gc.get_threshold() == (12345, 11, 12)
    assert gc.get_threshold() == before


async def test_enable_profiling_starts_the_debug_server_in_the_runner() -> None:
    import httpx2

    config = af.Config.from_mapping({"monitoring": {"enable_profiling": True, "profile_port": 0}})
    with trio.fail_after(20):
        async with af.Runner(config, agents=AGENTS) as runner:
            await (await runner.emit(af.Event("echo"))).result()  # queued: a worker starts
            assert runner.debug_port
            url = f"http://127.0.0.1:{runner.debug_port}/debug/tasks"
            async with httpx2.AsyncClient() as client:
                tree = (await client.get(url)).text
    assert "_worker" in tree  # the live task tree shows the runner's workers


# --------------------------------------------------------------------------- services


async def test_services_reach_every_context(autojump_clock: Any) -> None:
    fake, registry, hooks = af.FakeProvider(), af.ToolRegistry(), af.Hooks()
    seen: list[tuple[Any, ...]] = []

    @af.agent
    async def look(ctx: af.Context, event: af.Event) -> None:
        seen.append((ctx.llm, ctx.tools.registry, ctx.mcp, ctx.metrics))

    services = af.Services(llm=fake, tools=registry, hooks=hooks)
    async with af.Runner(agents={"x": look}, services=services) as runner:
        assert (await runner.call(af.Event("x"))).succeeded
    # A bare provider is wrapped in an LLMClient: every model call is metered.
    assert isinstance(services.llm, af.LLMClient) and services.llm.provider is fake
    assert seen == [(services.llm, registry, None, None)]
    assert runner.services is services
    assert (runner.hooks, runner.llm, runner.tools) == (hooks, services.llm, registry)


def test_service_keywords_build_one_services_value() -> None:
    fake, registry, store = af.FakeProvider(), af.ToolRegistry(), af.SessionStore(10, 60)
    client = af.LLMClient(fake)
    keyworded = af.Runner(llm=client, tools=registry)
    assert keyworded.services == af.Services(llm=client, tools=registry, hooks=keyworded.hooks)
    base = af.Services(llm=client, tools=registry)
    mixed = af.Runner(services=base, tools=None, sessions=store)  # None: not given
    assert mixed.services == attrs.evolve(base, sessions=store)
    assert af.Runner().services.llm is None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        base.llm = None  # type: ignore[misc]
    with pytest.raises(TypeError, match="toolz"):
        af.Runner(toolz=registry)  # type: ignore[call-arg]


async def test_runner_factory_takes_services(runner_factory: RunnerFactory) -> None:
    hooks = af.Hooks()
    async with runner_factory(AGENTS, services=af.Services(hooks=hooks)) as runner:
        assert (await runner.call(af.Event("echo"))).succeeded
    assert runner.hooks is hooks and hooks.after_event  # the recorder is in the given hooks


# --------------------------------------------------------------------------- nursery owner


def _guard(rss: Any) -> Any:
    from agentflow_trio.observability.runtime import MemoryGuard

    return MemoryGuard(1000, interval=1.0, rss=rss)


async def test_a_failed_start_comes_out_bare_and_closes_the_runner(autojump_clock: Any) -> None:
    def broken() -> int:
        raise OSError("no /proc here")

    runner = af.Runner(agents=AGENTS, memory_guard=_guard(broken))
    with pytest.raises(OSError, match="no /proc"):
        async with runner:
            pytest.fail("the body must not run")
    assert runner.statistics().closed
    with pytest.raises(af.RunnerClosed):
        runner.emit_nowait(af.Event("echo"))


async def test_a_lone_task_error_comes_out_bare(autojump_clock: Any) -> None:
    samples = [100]

    def rss() -> int:
        if not samples:
            raise OSError("rss went away")
        return samples.pop()

    with pytest.raises(OSError, match="rss went away"):  # not an ExceptionGroup
        async with af.Runner(agents=AGENTS, memory_guard=_guard(rss)) as runner:
            assert (await runner.call(af.Event("echo"))).succeeded
            await trio.sleep_forever()  # cancelled when the guard's task fails
    assert runner.statistics().closed


async def test_a_runner_is_entered_once(autojump_clock: Any) -> None:
    runner = af.Runner(agents=AGENTS)
    async with runner:
        pass
    with pytest.raises(RuntimeError, match="entered only once"):
        async with runner:
            pass
