"""The runner against careless and hostile input (issue 17), under the autojump clock.

Each test names what used to kill the runner, hang it or pass silently: a NaN or
negative timeout, an agent raising any BaseException (a hand-made ``trio.Cancelled``
included), a nested ``ctx.runner.call`` with every worker busy, an ``async def`` hook.
What is bad is refused to its caller at once; an agent's error ends its event
``failed``; the runner carries on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import agentflow_trio as af
from agentflow_trio.config import Config, RunnerConfig
from agentflow_trio.errors import NestingTooDeep
from agentflow_trio.testing import RunnerFactory

pytest_plugins = ["agentflow_trio.testing.plugin"]  # runner_factory: recorded, virtual time


@af.agent
async def echo(ctx: af.Context, event: af.Event) -> Any:
    await trio.sleep(event.data.get("sleep", 0))
    return dict(event.data)


# --------------------------------------------------------------------------- timeouts

BAD_TIMEOUTS = [math.nan, -1.0, 0, -math.inf, "5", True, [1.0]]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
async def test_a_bad_emit_timeout_is_refused_to_the_caller_at_once(
    runner_factory: RunnerFactory, timeout: Any
) -> None:
    async with runner_factory({"echo": echo}) as runner:
        with pytest.raises(af.ConfigError, match="timeout") as info:
            await runner.emit(af.Event("echo"), timeout=timeout)
        assert isinstance(info.value, ValueError)
        with pytest.raises(af.ConfigError, match="timeout"):
            runner.emit_nowait(af.Event("echo"), timeout=timeout)
        with pytest.raises(af.ConfigError, match="timeout"):
            await runner.call(af.Event("echo"), timeout=timeout)
        # Nothing was accepted, and the runner still works.
        assert runner.statistics().accepted == 0
        assert (await runner.call(af.Event("echo"), timeout=1)).succeeded


async def test_an_infinite_emit_timeout_means_no_timeout(runner_factory: RunnerFactory) -> None:
    async with runner_factory({"echo": echo}, event_timeout="1s") as runner:
        t0 = trio.current_time()
        result = await runner.call(af.Event("echo", {"sleep": 1e6}), timeout=math.inf)
    assert result.succeeded
    assert trio.current_time() - t0 == 1e6


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_a_bad_agent_timeout_is_refused_when_the_agent_is_made(timeout: Any) -> None:
    with pytest.raises(af.ConfigError, match="timeout"):
        af.agent(timeout=timeout)(echo.fn)
    with pytest.raises(af.ConfigError, match="timeout"):
        af.Agent(echo.fn, timeout=timeout)
    made = af.agent(timeout=math.inf)(echo.fn)
    with pytest.raises(af.ConfigError, match="timeout"):
        made.timeout = timeout
    assert made.timeout == math.inf


@pytest.mark.parametrize("field", ["event_timeout", "drain_timeout"])
def test_a_runner_config_built_without_validation_is_checked_by_the_runner(field: str) -> None:
    with attrs.validators.disabled():
        config = Config(runner=RunnerConfig(**{field: math.nan}))
    with pytest.raises(af.ConfigError, match=field):
        af.Runner(config, {"echo": echo})


async def test_an_event_that_is_not_an_event_is_refused_at_once(
    runner_factory: RunnerFactory,
) -> None:
    async with runner_factory({"echo": echo}) as runner:
        for bad in ("echo", {"type": "echo"}, af.Event(["unhashable"])):  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="Event"):
                await runner.emit(bad)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="Event"):
                runner.emit_nowait(bad)  # type: ignore[arg-type]
        assert (await runner.call(af.Event("echo"))).succeeded


# --------------------------------------------------------------------------- agent errors


@contextmanager
def nothing_escapes() -> Iterator[None]:
    """Fail (rather than pass silently) when a ``trio.Cancelled`` leaves the runner: it
    would end the test body early, and pytest-trio would swallow it."""
    try:
        yield
    except trio.Cancelled as exc:
        pytest.fail(f"a Cancelled escaped the runner: {exc!r}")


class Custom(BaseException):
    """A BaseException that is neither Exception nor one of Python's own."""


def _hand_made_cancelled() -> BaseException:
    return trio.Cancelled._create()  # type: ignore[attr-defined]


async def _cancelled_from_another_scope() -> BaseException:
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            return exc
    raise AssertionError("the scope was cancelled")


ERRORS: dict[str, Callable[[], Any]] = {
    "custom": lambda: Custom("custom base exception"),
    "generator_exit": GeneratorExit,
    "hand_made_cancelled": _hand_made_cancelled,
    "group": lambda: BaseExceptionGroup("several", [Custom("a"), ValueError("b")]),
    "group_with_cancelled": lambda: BaseExceptionGroup("mixed", [_hand_made_cancelled()]),
}


@pytest.mark.parametrize("with_hooks", [False, True], ids=["fast_path", "hooks"])
@pytest.mark.parametrize("kind", [*ERRORS, "cancelled_from_another_scope"])
async def test_an_agent_raising_any_base_exception_fails_its_event_only(
    runner_factory: RunnerFactory, kind: str, with_hooks: bool
) -> None:
    async def raiser(ctx: af.Context, event: af.Event) -> None:
        await trio.sleep(1)
        if kind == "cancelled_from_another_scope":
            raise await _cancelled_from_another_scope()
        raise ERRORS[kind]()

    errors: list[str] = []
    hooks = af.Hooks(on_error=[lambda e, exc: errors.append(type(exc).__name__)] * with_hooks)
    with nothing_escapes():
        async with runner_factory({"raise": raiser, "echo": echo}, hooks=hooks) as runner:
            slow = await runner.emit(af.Event("echo", {"sleep": 3}))
            failed = await runner.call(af.Event("raise"))
            after = await runner.call(af.Event("echo"))
            assert (await slow.result()).succeeded  # the event beside it was not touched
    assert failed.outcome is af.Outcome.FAILED, failed
    assert failed.error is not None and failed.error.traceback
    assert "raise" in failed.error.traceback
    assert after.succeeded
    assert runner.statistics().failed == 1
    if with_hooks and kind in ("custom", "generator_exit", "group"):
        assert len(errors) == 1  # on_error saw it, like any agent error


async def test_a_child_agent_raising_a_base_exception_fails_only_that_child(
    runner_factory: RunnerFactory,
) -> None:
    async def bad(ctx: af.Context, event: af.Event) -> None:
        raise Custom("child")

    both = af.parallel(af.Agent(bad, name="bad"), af.Agent(echo.fn, name="good"))
    async with runner_factory({"both": both}) as runner:
        result = await runner.call(af.Event("both"))
    assert result.outcome is af.Outcome.FAILED
    assert result.error is not None and "bad: failed: Custom: child" in result.error.message
    assert result.output == {"bad": None, "good": {}}


@pytest.mark.parametrize("stop", [SystemExit, KeyboardInterrupt])
async def test_system_exit_and_keyboard_interrupt_still_stop_the_process(
    runner_factory: RunnerFactory, stop: type[BaseException]
) -> None:
    async def stopper(ctx: af.Context, event: af.Event) -> None:
        await trio.sleep(1)
        raise stop()

    handles: list[af.EventHandle] = []
    with nothing_escapes(), pytest.raises(stop):
        async with runner_factory({"stop": stopper, "echo": echo}, check=False) as runner:
            handles.append(await runner.emit(af.Event("echo", {"sleep": 10})))
            handles.append(await runner.emit(af.Event("stop")))
            await trio.sleep_forever()
    echo_result, stop_result = (h.result_nowait() for h in handles)
    assert stop_result.outcome is af.Outcome.FAILED  # the event still ended, once
    assert stop_result.error is not None and stop_result.error.type == stop.__name__
    assert echo_result.outcome is af.Outcome.CANCELLED
    assert runner.statistics().in_flight == 0


async def test_real_cancellation_still_times_out_and_shuts_down(
    runner_factory: RunnerFactory,
) -> None:
    async with runner_factory({"echo": echo}, event_timeout="2s", drain_timeout="1s") as runner:
        timed_out = await runner.call(af.Event("echo", {"sleep": 10}))
        left = await runner.emit(af.Event("echo", {"sleep": 10}))
    assert timed_out.outcome is af.Outcome.TIMED_OUT
    assert left.result_nowait().outcome is af.Outcome.CANCELLED


# --------------------------------------------------------------------------- nested calls


@af.agent(name="nest")
async def nest(ctx: af.Context, event: af.Event) -> Any:
    """Sleeps 1 s, then calls itself ``depth`` levels down; returns the chain of outputs."""
    await trio.sleep(1)
    depth = event.data["depth"]
    if depth == 0:
        return [0]
    below = await ctx.runner.call(af.Event("nest", {"depth": depth - 1}))
    return [depth, *below.unwrap()]


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_a_nested_call_runs_under_its_parents_slot_without_deadlock(
    runner_factory: RunnerFactory, depth: int
) -> None:
    inside: list[af.RunnerStatistics] = []  # taken as the innermost call starts

    def snapshot(event: af.Event) -> None:
        if event.type == "nest" and event.data["depth"] == 0:
            inside.append(runner.statistics())

    hooks = af.Hooks(before_event=[snapshot])
    agents = {"nest": nest, "echo": echo}
    async with runner_factory(
        agents, hooks=hooks, worker_pool_size=1, event_timeout="30s", check=False
    ) as runner:
        t0 = trio.current_time()
        top = await runner.emit(af.Event("nest", {"depth": depth}))
        queued = await runner.emit(af.Event("echo"))  # waits for the one worker meanwhile
        result = await top.result()
        took = trio.current_time() - t0
        assert (await queued.result()).succeeded
    assert result.succeeded, result
    assert result.output == list(range(depth, -1, -1))
    assert took == depth + 1  # one second per level: nothing waited for a worker
    (stats,) = inside
    assert stats.in_flight == 2 and stats.queued == 1  # nested calls take no admission slot
    assert stats.running_agents == 1 and stats.running_events == 1
    assert stats.accepted == depth + 2
    end = runner.statistics()
    assert end.accepted == end.succeeded == depth + 2 and end.in_flight == 0


async def test_nested_calls_are_bounded_in_depth(runner_factory: RunnerFactory) -> None:
    deepest: list[BaseException] = []

    @af.agent(name="down")
    async def down(ctx: af.Context, event: af.Event) -> Any:
        try:
            return await ctx.runner.call(af.Event("down"))
        except NestingTooDeep as exc:
            deepest.append(exc)
            raise

    async with runner_factory({"down": down}, worker_pool_size=1, check=False) as runner:
        t0 = trio.current_time()
        result = await runner.call(af.Event("down"))
        assert trio.current_time() == t0  # refused at once, not at a timeout
    (error,) = deepest
    assert error.limit == af.Runner.MAX_NESTING_DEPTH == 8
    assert "nested more than 8 levels" in str(error)
    # Each level returns the level below's result as its own: the failure comes up.
    assert result.outcome is af.Outcome.FAILED
    assert result.error is not None and result.error.type == "NestingTooDeep"
    assert runner.statistics().accepted == runner.statistics().failed == 1 + 8


async def test_a_configured_max_nesting_depth_is_honoured(runner_factory: RunnerFactory) -> None:
    levels: list[int] = []

    @af.agent(name="down")
    async def down(ctx: af.Context, event: af.Event) -> Any:
        levels.append(len(levels) + 1)
        return await ctx.runner.call(af.Event("down"))

    async with runner_factory(
        {"down": down}, worker_pool_size=1, max_nesting_depth=2, check=False
    ) as runner:
        result = await runner.call(af.Event("down"))
    assert levels == [1, 2, 3]  # the event and 2 nested levels; the 3rd nested call raises
    assert result.outcome is af.Outcome.FAILED
    assert result.error is not None and result.error.type == "NestingTooDeep"
    assert "nested more than 2 levels" in result.error.message
    assert "runner.max_nesting_depth" in result.error.message
    assert runner.statistics().accepted == 1 + 2


async def test_a_nested_call_ends_with_its_parent(runner_factory: RunnerFactory) -> None:
    outcomes: list[af.AgentResult] = []

    async def parent(ctx: af.Context, event: af.Event) -> Any:
        await ctx.runner.call(af.Event("echo", {"sleep": 10}))

    hooks = af.Hooks(after_event=[lambda event, result: outcomes.append(result)])
    async with runner_factory(
        {"parent": parent, "echo": echo}, hooks=hooks, worker_pool_size=1, check=False
    ) as runner:
        result = await runner.call(af.Event("parent"), timeout=2)
        assert trio.current_time() == 2
    assert result.outcome is af.Outcome.TIMED_OUT
    nested = outcomes[0]
    assert nested.outcome is af.Outcome.CANCELLED and nested.agent == "echo"
    assert nested.error is not None and "caller" in nested.error.message


async def test_a_nested_call_may_fan_out_with_one_worker(runner_factory: RunnerFactory) -> None:
    fan = af.parallel(af.Agent(echo.fn, name="a"), af.Agent(echo.fn, name="b"))

    async def parent(ctx: af.Context, event: af.Event) -> Any:
        return (await ctx.runner.call(af.Event("fan", {"sleep": 1}))).unwrap()

    agents = {"parent": parent, "fan": fan}
    async with runner_factory(agents, worker_pool_size=1, check=False) as runner:
        result = await runner.call(af.Event("parent"))
        assert trio.current_time() == 2  # the children take turns on the one slot
        assert runner.statistics().running_agents == 0
    assert result.output == {"a": {"sleep": 1}, "b": {"sleep": 1}}


async def test_a_nested_call_made_while_the_runner_drains_completes(
    runner_factory: RunnerFactory,
) -> None:
    async def parent(ctx: af.Context, event: af.Event) -> Any:
        await trio.sleep(5)
        return (await ctx.runner.call(af.Event("echo", {"sleep": 1}))).unwrap()

    agents = {"parent": parent, "echo": echo}
    async with runner_factory(agents, drain_timeout="10s", check=False) as runner:
        handle = await runner.emit(af.Event("parent"))
    assert trio.current_time() == 6  # left once the parent was done, nested call included
    result = handle.result_nowait()
    assert result.succeeded, result
    assert result.output == {"sleep": 1}
    with pytest.raises(af.RunnerClosed):
        await runner.call(af.Event("echo"))


# --------------------------------------------------------------------------- hooks


async def _async_hook(*args: Any) -> None:
    """A hook written as ``async def``: the runner never awaits hooks."""


@pytest.mark.parametrize(
    "kind",
    ["before_event", "after_event", "before_agent", "after_agent", "on_error", "on_accept"],
)
def test_an_async_hook_is_refused_when_registered(kind: str) -> None:
    with pytest.raises(TypeError, match=kind):
        af.Hooks(**{kind: [_async_hook]})
    hooks = af.Hooks()
    for register in (
        lambda: getattr(hooks, kind).append(_async_hook),
        lambda: getattr(hooks, kind).extend([_async_hook]),
        lambda: getattr(hooks, kind).insert(0, _async_hook),
        lambda: setattr(hooks, kind, [_async_hook]),
    ):
        with pytest.raises(TypeError, match=f"{kind}.*async"):
            register()
    assert getattr(hooks, kind) == []


async def test_a_hook_returning_an_awaitable_is_a_counted_failure(
    runner_factory: RunnerFactory, recwarn: pytest.WarningsRecorder
) -> None:
    hooks = af.Hooks(
        before_event=[lambda event: _async_hook()], after_event=[lambda e, r: _async_hook()]
    )
    async with runner_factory({"echo": echo}, hooks=hooks) as runner:
        result = await runner.call(af.Event("echo"))
    assert result.outcome is af.Outcome.FAILED  # a failing before-hook fails the event
    assert result.error is not None and "awaitable" in result.error.message
    assert runner.statistics().hook_failures == 2
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


@pytest.mark.parametrize("kind", ["on_accept", "before_event", "after_event"])
async def test_a_hook_raising_a_base_exception_is_counted_not_fatal(
    runner_factory: RunnerFactory, kind: str
) -> None:
    def hook(*args: Any) -> None:
        raise Custom(f"{kind} hook")

    hooks = af.Hooks(**{kind: [hook]})
    async with runner_factory({"echo": echo}, hooks=hooks, check=False) as runner:
        first = await runner.call(af.Event("echo"))
        second = await runner.call(af.Event("echo"))
    assert runner.statistics().hook_failures == 2
    expected = af.Outcome.FAILED if kind == "before_event" else af.Outcome.SUCCEEDED
    assert first.outcome is second.outcome is expected


async def test_an_exception_whose_str_fails_is_still_reported(
    runner_factory: RunnerFactory,
) -> None:
    class Evil(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    async def evil(ctx: af.Context, event: af.Event) -> None:
        raise Evil()

    async with runner_factory({"evil": evil}) as runner:
        result = await runner.call(af.Event("evil"))
    assert result.outcome is af.Outcome.FAILED and result.error is not None
    assert result.error.type.endswith("Evil")
    assert result.error.message == "<exception str() failed>"


def test_hooks_that_are_not_hooks_are_refused_when_the_services_are_made() -> None:
    with pytest.raises(TypeError, match="hooks"):
        af.Services(hooks={"after_event": []})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hooks"):
        af.Runner(agents={"echo": echo}, hooks=[print])  # type: ignore[arg-type]
