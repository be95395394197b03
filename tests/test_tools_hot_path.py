"""The tool loop's hot path (issue #23): what it no longer does twice, and what it keeps.

`ToolRegistry.specs` gives the same tuple while nothing changed (a wire's cache of encoded
specs is keyed on it), a new one when a tool or its schema changes; `call_many` checks an
asynchronous tool's arguments once; a call with no timeout still ends ``ok`` or as its
tool did, and a call with one still times out; the tool loop copies a reply's calls only
when ids are missing or repeated (virtual time, autojump clock).
"""

from __future__ import annotations

from typing import Any

import trio

import agentflow_trio as af
from agentflow_trio.llm import FakeProvider
from agentflow_trio.llm.types import ChatResponse, ToolCall
from agentflow_trio.tools import ToolRegistry, call_many, tool, tool_agent


@tool
async def slow(seconds: float) -> dict[str, Any]:
    """Sleep, then answer."""
    await trio.sleep(seconds)
    return {"slept": seconds}


@tool
def quick(n: int) -> int:
    """Answer at once."""
    return n + 1


def test_specs_are_one_tuple_until_something_changes() -> None:
    @tool
    def later(n: int) -> int:
        """Answer later."""
        return n

    registry = ToolRegistry([slow])
    first = registry.specs()
    assert registry.specs() is first
    registry.register(later)
    second = registry.specs()
    assert second is not first
    assert [s.name for s in second] == ["slow", "later"]
    later.description = "Answer at once, now documented."
    third = registry.specs()
    assert third is not second
    assert third[1].description == "Answer at once, now documented."
    registry.unregister("slow")
    assert [s.name for s in registry.specs()] == ["later"]


class _Counting:
    """A validator wrapper that counts its checks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.checks = 0

    def check(self, args: Any) -> Any:
        self.checks += 1
        return self.inner.check(args)


async def test_call_many_checks_an_async_tools_arguments_once(autojump_clock: Any) -> None:
    registry = ToolRegistry([slow, quick])
    counters = {name: _Counting(v) for name, v in registry._validators.items()}
    registry._validators.update(counters)
    calls = [("slow", {"seconds": 1}), ("slow", {"seconds": 2}), ("quick", {"n": 1})]
    start = trio.current_time()
    results = await call_many(registry, None, calls)
    assert [r.outcome for r in results] == ["ok", "ok", "ok"]
    assert trio.current_time() - start == 2  # the two slow calls ran at once
    assert counters["slow"].checks == 2
    assert counters["quick"].checks == 1
    bad = await call_many(registry, None, [("slow", {"seconds": "x"})])
    assert bad[0].outcome == "error"
    assert counters["slow"].checks == 3


async def test_durations_count_from_the_start_not_the_wait_for_a_slot(autojump_clock: Any) -> None:
    registry = ToolRegistry([slow])
    calls = [("slow", {"seconds": 1}), ("slow", {"seconds": 1}), ("slow", {"seconds": 1})]
    results = await call_many(registry, None, calls, max_parallel=1)
    assert [r.duration for r in results] == [1, 1, 1]


async def test_no_timeout_and_a_timeout_both_settle(autojump_clock: Any) -> None:
    registry = ToolRegistry([slow])
    untimed = await registry.call(None, "slow", {"seconds": 50})
    assert untimed.outcome == "ok" and untimed.output == {"slept": 50}
    timed = await registry.call(None, "slow", {"seconds": 50}, timeout=3)
    assert timed.outcome == "timed_out" and timed.duration == 3
    assert timed.error is not None and timed.error["timeout"] == 3


async def _loop_requests(reply: ChatResponse) -> list[Any]:
    registry = ToolRegistry([quick])
    fake = FakeProvider.scripted([reply, "done"])
    async with af.Runner(agents={"ask": tool_agent(tools=registry)}, llm=fake) as runner:
        result = await runner.call(af.Event("ask", {"query": "hi"}))
    assert result.succeeded
    return list(fake.requests)


async def test_the_loop_keeps_unique_ids_and_remakes_repeated_ones(autojump_clock: Any) -> None:
    unique = (ToolCall("a", "quick", {"n": 1}), ToolCall("b", "quick", {"n": 2}))
    requests = await _loop_requests(ChatResponse("", unique, "tool_calls"))
    assert [c.id for c in requests[1].messages[-3].tool_calls] == ["a", "b"]
    repeated = (ToolCall("a", "quick", {"n": 1}), ToolCall("a", "quick", {"n": 2}))
    requests = await _loop_requests(ChatResponse("", repeated, "tool_calls"))
    assistant, *answers = requests[1].messages[-3:]
    ids = [c.id for c in assistant.tool_calls]
    assert ids[0] == "a" and ids[1] not in ("a", "")
    assert [m.tool_call_id for m in answers] == ids
