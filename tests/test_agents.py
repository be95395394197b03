"""Workflow agents and orchestrators, alone and inside a runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import agentflow_trio as af
from agentflow_trio.testing import RunnerFactory

pytest_plugins = ["agentflow_trio.testing.plugin"]  # runner_factory: recorded, virtual time

Call = Callable[..., Awaitable[af.AgentResult]]


def _agent(name: str, value: Any = None, sleep: float = 0, fail: bool = False) -> af.Agent:
    async def fn(ctx: af.Context, event: af.Event) -> Any:
        await trio.sleep(sleep)
        if fail:
            raise RuntimeError(f"{name} failed")
        return value if value is not None else name

    return af.Agent(fn, name=name)


@pytest.fixture
def call(runner_factory: RunnerFactory) -> Call:
    """``await call(agent, **data)``: one event through a fresh (recorded) runner."""

    async def call(agent: af.Agent, *, workers: int = 10, **data: Any) -> af.AgentResult:
        async with runner_factory({"x": agent}, worker_pool_size=workers) as runner:
            return await runner.call(af.Event("x", data))

    return call


def test_agent_decorator_forms() -> None:
    @af.agent
    async def bare(ctx: af.Context, event: af.Event) -> None:
        """Says nothing."""

    @af.agent(name="named", timeout=3)
    async def other(ctx: af.Context, event: af.Event) -> None:
        pass

    assert (bare.name, bare.timeout, bare.description) == ("bare", None, "Says nothing.")
    assert (other.name, other.timeout) == ("named", 3)
    with pytest.raises(TypeError):
        af.Agent(42)  # type: ignore[arg-type]


async def test_sequential_passes_previous_and_shares_state(call: Call) -> None:
    async def first(ctx: af.Context, event: af.Event) -> int:
        ctx.state.set("seen", ["first"])
        return 1

    async def second(ctx: af.Context, event: af.Event) -> int:
        ctx.state.set("seen", [*ctx.state["seen"], "second"])
        return int(ctx.previous) + 1

    async def third(ctx: af.Context, event: af.Event) -> Any:
        return {"previous": ctx.previous, "seen": ctx.state["seen"]}

    result = await call(af.sequential(first, second, third))
    assert result.succeeded
    assert result.output == {"previous": 2, "seen": ["first", "second"]}
    assert result.agent == "sequential"


async def test_sequential_stops_at_first_failure(call: Call) -> None:
    ran: list[str] = []

    async def never(ctx: af.Context, event: af.Event) -> None:
        ran.append("never")

    result = await call(af.sequential(_agent("a"), _agent("b", fail=True), never))
    assert result.outcome is af.Outcome.FAILED
    assert result.agent == "sequential/b"
    assert ran == []


async def test_parallel_runs_concurrently_and_merges_in_declaration_order(call: Call) -> None:
    flow = af.parallel(_agent("slow", sleep=3), _agent("fast", sleep=1), _agent("mid", sleep=2))
    t0 = trio.current_time()
    result = await call(flow)
    assert trio.current_time() - t0 == pytest.approx(3)  # concurrently, not 6
    assert result.succeeded
    assert list(result.output) == ["slow", "fast", "mid"]


async def test_parallel_failure_keeps_others_and_names_failure(call: Call) -> None:
    flow = af.parallel(_agent("ok", sleep=2), _agent("bad", sleep=1, fail=True))
    result = await call(flow)
    assert result.outcome is af.Outcome.FAILED
    assert result.output == {"ok": "ok", "bad": None}
    assert result.error is not None and "bad: failed" in result.error.message
    assert "RuntimeError: bad failed" in result.error.traceback


async def test_parallel_cancel_on_error_cancels_siblings(call: Call) -> None:
    flow = af.parallel(
        _agent("done", sleep=0),
        _agent("bad", sleep=1, fail=True),
        _agent("long", sleep=50),
        on_error="cancel",
    )
    t0 = trio.current_time()
    result = await call(flow)
    assert trio.current_time() - t0 == pytest.approx(1)
    assert result.output["done"] == "done"  # finished results are kept
    assert result.error is not None
    assert "long: cancelled" in result.error.message


async def test_nested_parallel_never_deadlocks_a_one_slot_pool(
    runner_factory: RunnerFactory,
) -> None:
    inner = af.parallel(_agent("a", sleep=1), _agent("b", sleep=1), name="inner")
    outer = af.parallel(inner, _agent("c", sleep=1), name="outer")
    runner = runner_factory({"x": outer}, worker_pool_size=1, track_agents=True)
    async with runner:
        with trio.fail_after(100):
            result = await runner.call(af.Event("x"))
    assert result.succeeded
    assert result.output == {"inner": {"a": "a", "b": "b"}, "c": "c"}
    trace = runner_factory.trace(runner)  # sampled at every agent start
    assert {s.agent for s in trace.samples} >= {"outer", "inner", "a", "b", "c"}
    assert trace.peak_gauge("running_agents") <= 1


async def test_parallel_children_get_forked_state(call: Call) -> None:
    async def writer(ctx: af.Context, event: af.Event) -> Any:
        ctx.state.set("k", "child")
        return ctx.state["k"]

    async def parent(ctx: af.Context, event: af.Event) -> Any:
        ctx.state.set("k", "parent")
        child = await af.parallel(af.Agent(writer, name="w"))(ctx, event)
        return {"child": child.output, "parent": ctx.state["k"]}

    result = await call(af.Agent(parent, name="p"))
    assert result.output == {"child": {"w": "child"}, "parent": "parent"}


async def test_loop_until_predicate_and_max_iterations(call: Call) -> None:
    async def step(ctx: af.Context, event: af.Event) -> int:
        return (ctx.previous or 0) + 1

    until3 = await call(af.loop(step, until=lambda r: r.output >= 3, max_iterations=10))
    capped = await call(af.loop(step, max_iterations=4))
    assert until3.output == 3
    assert capped.output == 4
    failing = await call(af.loop(_agent("bad", fail=True), max_iterations=4))
    assert failing.outcome is af.Outcome.FAILED
    with pytest.raises(ValueError):
        af.loop(step, max_iterations=0)


async def test_route_by_type_key_and_function(call: Call, runner_factory: RunnerFactory) -> None:
    routes = {"billing": _agent("billing"), "support": _agent("support")}
    by_key = af.route(routes, key="team")
    async with runner_factory({"ticket": by_key}) as runner:
        meta = await runner.call(af.Event("ticket", metadata={"team": "billing"}))
        data = await runner.call(af.Event("ticket", {"team": "support"}))
        unknown = await runner.call(af.Event("ticket", {"team": "legal"}))
    assert (meta.output, data.output) == ("billing", "support")
    assert unknown.outcome is af.Outcome.FAILED
    assert unknown.error is not None
    assert "'legal'" in unknown.error.message and "billing, support" in unknown.error.message

    by_fn = af.route(
        routes, key=lambda e: "support" if e.data.get("angry") else None, default=_agent("triage")
    )
    assert (await call(by_fn, angry=True)).output == "support"
    assert (await call(by_fn)).output == "triage"
    by_type = af.route({"x": _agent("typed")})
    assert (await call(by_type)).output == "typed"


async def test_collaborate_merges_and_reports_failures(call: Call) -> None:
    team = af.collaborate(_agent("writer", sleep=1), _agent("critic", sleep=2, fail=True))
    result = await call(team)
    assert result.agent == "collaborate"
    assert result.outcome is af.Outcome.FAILED
    assert result.output == {"writer": "writer", "critic": None}
    assert result.error is not None and "critic" in result.error.message

    joined = af.collaborate(
        _agent("a", value=[1]),
        _agent("b", value=[2]),
        merge=lambda rs: [x for r in rs for x in r.output],
    )
    assert (await call(joined)).output == [1, 2]


async def test_workflow_children_respect_the_timeout(runner_factory: RunnerFactory) -> None:
    flow = af.parallel(_agent("forever", sleep=1000))
    async with runner_factory({"x": flow}, event_timeout="2s") as runner:
        result = await runner.call(af.Event("x"))
    assert result.outcome is af.Outcome.TIMED_OUT


async def test_ctx_run_inline(call: Call) -> None:
    async def parent(ctx: af.Context, event: af.Event) -> Any:
        child = await ctx.run(_agent("child", value=7))
        return child.output * 6

    assert (await call(af.Agent(parent, name="p"))).output == 42
