"""Sessions through the runner: load before the agent, commit a success, merge concurrent
events, drop a failure's changes; conversation history (``ctx.history``, ``tool_agent``)
across turns, through ``serve`` over HTTP against the mock LLM.

Rules: the runner-level cases run under the autojump clock (virtual time); the HTTP and
mock-LLM cases bind 127.0.0.1 port 0 and put an absolute ``trio.fail_after`` around
their body. Concurrency is made certain with gates and ``wait_all_tasks_blocked``, never
with sleeps.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx2
import pytest
import trio
import trio.testing

import agentflow_trio as af
from agentflow_trio.config import RetryConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.llm.types import Message, ToolCall, assistant, tool_message, user
from agentflow_trio.mockllm import MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.server import make_app, serve
from agentflow_trio.state import (
    HISTORY_KEY,
    SessionBackend,
    SessionConflict,
    SessionDataError,
    SessionSnapshot,
    SessionStore,
    State,
)
from agentflow_trio.testing import mock_llm_config
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

TIMEOUT = 15


def in_session(event_type: str, session: str = "s1", **data: Any) -> af.Event:
    return af.Event(event_type, data, {"session_id": session})


@af.agent
async def read(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    return dict(ctx.state)


# --------------------------------------------------------------------------- commit or drop


async def test_only_a_succeeded_event_commits_its_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @af.agent
    async def write(ctx: af.Context, event: af.Event) -> None:
        ctx.state.set("k", event.data["v"])
        ctx.remember(user(str(event.data["v"])))
        if event.data.get("fail"):
            raise RuntimeError("after writing")
        if event.data.get("hang"):
            await trio.sleep_forever()

    store = SessionStore(max_entries=10, ttl=600)
    agents = {"write": write, "read": read, "limited": af.agent(write.fn, name="limited")}
    async with af.Runner(agents=agents, sessions=store) as runner:
        assert (await runner.call(in_session("write", v=1))).outcome is af.Outcome.SUCCEEDED
        failed = await runner.call(in_session("write", v=2, fail=True))
        timed_out = await runner.call(in_session("write", v=3, hang=True), timeout=5)
        handle = await runner.emit(in_session("write", v=4, hang=True))
        await trio.testing.wait_all_tasks_blocked()
        handle.cancel()
        cancelled = await handle.result()
        state = (await runner.call(in_session("read"))).output
    assert [failed.outcome, timed_out.outcome, cancelled.outcome] == [
        af.Outcome.FAILED,
        af.Outcome.TIMED_OUT,
        af.Outcome.CANCELLED,
    ]
    assert state["k"] == 1  # none of the three unfinished events' writes were kept
    assert [m["content"] for m in state[HISTORY_KEY]["messages"]] == ["1"]


async def test_concurrent_events_of_one_session_keep_each_others_writes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()

    @af.agent
    async def note(ctx: af.Context, event: af.Event) -> None:
        name = event.data["name"]
        ctx.state.set(f"seen:{name}", True)
        ctx.remember(user(name))
        await gate.wait()  # every event has loaded the same version before any commits

    store = SessionStore(max_entries=10, ttl=600)
    async with af.Runner(agents={"note": note, "read": read}, sessions=store) as runner:
        store.put("s1", State({"seen:old": True}))
        handles = [await runner.emit(in_session("note", name=f"e{i}")) for i in range(5)]
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        results = [await h.result() for h in handles]
        state = (await runner.call(in_session("read"))).output
    assert all(r.outcome is af.Outcome.SUCCEEDED for r in results)
    assert {k for k in state if k.startswith("seen:")} == {"seen:old"} | {
        f"seen:e{i}" for i in range(5)
    }
    assert sorted(m["content"] for m in state[HISTORY_KEY]["messages"]) == [
        f"e{i}" for i in range(5)
    ]
    assert store.statistics().merges == 4


async def test_the_later_of_two_clashing_events_fails_with_session_conflict(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()

    @af.agent
    async def increment(ctx: af.Context, event: af.Event) -> int:
        n = int(ctx.state.get("n", 0)) + 1
        ctx.state.set("n", n)
        await gate.wait()
        return n

    store = SessionStore(max_entries=10, ttl=600)
    async with af.Runner(agents={"inc": increment, "read": read}, sessions=store) as runner:
        handles = [await runner.emit(in_session("inc")) for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        results = [await h.result() for h in handles]
        state = (await runner.call(in_session("read"))).output
    won = [r for r in results if r.outcome is af.Outcome.SUCCEEDED]
    lost = [r for r in results if r.outcome is af.Outcome.FAILED]
    assert len(won) == 1 and len(lost) == 2
    assert state["n"] == 1 == won[0].output  # the count is exactly what succeeded
    for r in lost:
        assert r.error is not None and r.error.type == "SessionConflict"
        assert "'n'" in r.error.message
        assert r.output == 1  # the agent's output is kept; its write is not


@attrs.define
class BrokenStore:
    """A backend whose load or save raises (a Redis outage, say)."""

    fail_on: str
    saved: int = 0

    async def load(self, session_id: Any) -> SessionSnapshot:
        if self.fail_on == "load":
            raise ConnectionError("the store is down")
        return SessionSnapshot(session_id, State(), 0)

    async def save(self, snapshot: SessionSnapshot) -> int:
        raise SessionConflict(snapshot.session_id, ["k"])


async def test_a_store_error_ends_the_event_failed(autojump_clock: trio.testing.MockClock) -> None:
    ran: list[str] = []

    @af.agent
    async def write(ctx: af.Context, event: af.Event) -> str:
        ran.append(ctx.session_id)
        ctx.state.set("k", 1)
        return "done"

    for fail_on in ("load", "save"):
        store = BrokenStore(fail_on)
        assert isinstance(store, SessionBackend)
        async with af.Runner(agents={"write": write}, sessions=store) as runner:
            result = await runner.call(in_session("write", session=fail_on))
        assert result.outcome is af.Outcome.FAILED and result.error is not None
        if fail_on == "load":
            assert result.error.type == "ConnectionError" and result.output is None
        else:
            assert result.error.type == "SessionConflict" and result.output == "done"
    assert ran == ["save"]  # the agent never ran without its session


async def test_events_without_a_session_id_do_without(
    autojump_clock: trio.testing.MockClock,
) -> None:
    @af.agent
    async def write(ctx: af.Context, event: af.Event) -> Any:
        ctx.state.set("k", 1)
        return ctx.session_id

    store = SessionStore(max_entries=10, ttl=600)
    async with af.Runner(agents={"write": write}, sessions=store) as runner:
        result = await runner.call(af.Event("write"))
    assert result.output is None and len(store) == 0


# --------------------------------------------------------------------------- ctx.history


async def test_history_round_trips_messages_and_tool_calls(
    autojump_clock: trio.testing.MockClock,
) -> None:
    call = ToolCall("c1", "search", {"q": "trio"}, '{"q": "trio"}')
    failed = tool_message("c1", '{"error": "down"}', is_error=True)
    turn = (user("find trio", name="ada"), assistant(None, (call,)), tool_message("c1", "hits"))
    turn = (*turn, failed)

    @af.agent
    async def chat(ctx: af.Context, event: af.Event) -> tuple[Message, ...]:
        seen = ctx.history
        if event.data.get("say"):
            ctx.remember(*turn, assistant("found it"))
        return seen

    store = SessionStore(max_entries=10, ttl=600)
    async with af.Runner(agents={"chat": chat}, sessions=store) as runner:
        first = await runner.call(in_session("chat", say=True))
        second = await runner.call(in_session("chat"))
        other = await runner.call(in_session("chat", session="other"))
    assert first.output == () and other.output == ()
    assert second.output == (*turn, assistant("found it"))
    assert [m.is_error for m in second.output[2:4]] == [False, True]  # the flag is kept


async def test_a_malformed_history_fails_the_event(autojump_clock: trio.testing.MockClock) -> None:
    @af.agent
    async def chat(ctx: af.Context, event: af.Event) -> tuple[Message, ...]:
        return ctx.history

    store = SessionStore(max_entries=10, ttl=600)
    bad_message = {"messages": [{"role": 7}], "appended": 1, "limit": 5}
    bad_flag = {"messages": [{"role": "tool", "content": "x", "is_error": "yes"}]}
    bad_flag |= {"appended": 1, "limit": 5}
    async with af.Runner(agents={"chat": chat}, sessions=store) as runner:
        results = []
        for value in ("not a history", bad_message, bad_flag):
            store.put("s1", State({HISTORY_KEY: value}))
            results.append(await runner.call(in_session("chat")))
    for result in results:
        assert result.outcome is af.Outcome.FAILED and result.error is not None
        assert result.error.type == SessionDataError.__name__


# --------------------------------------------------------------------------- over serve


def lookup_tools() -> ToolRegistry:
    registry = ToolRegistry()

    @tool
    async def lookup(name: str) -> dict[str, Any]:
        """Look a person up."""
        return {"name": name, "city": "Oslo"}

    registry.register(lookup)
    return registry


@asynccontextmanager
async def chat_server(
    mock: MockLLM, agents: Mapping[str, Any], sessions: SessionBackend
) -> AsyncIterator[httpx2.AsyncClient]:
    """``serve`` over a runner whose model is ``mock`` and whose sessions are ``sessions``."""
    cfg = mock_llm_config(mock, retry=RetryConfig(enabled=False))
    async with (
        open_provider(cfg) as provider,
        af.Runner(agents=agents, llm=LLMClient(provider), sessions=sessions) as runner,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(functools.partial(serve, make_app(runner), port=0))
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as c:
            yield c
        nursery.cancel_scope.cancel()


async def post_turn(client: httpx2.AsyncClient, agent: str, session: str, text: str) -> Any:
    body = {"type": agent, "data": {"query": text}, "metadata": {"session_id": session}}
    reply = await client.post("/v1/events", json=body)
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["outcome"] == "succeeded", result
    return result["output"]


def said(request: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The (role, content) pairs of a request the mock received."""
    return [(m["role"], m.get("content")) for m in request["messages"]]


async def test_tool_agent_remembers_a_conversation_across_turns_through_serve() -> None:
    agents = {"chat": tool_agent(tools=lookup_tools(), system="Be brief.")}
    store = SessionStore(max_entries=10, ttl=600)
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, chat_server(mock, agents, store) as client:
            mock.script(
                MockReply(tool_calls=[MockToolCall("lookup", {"name": "Ada"}, id="c1")]),
                MockReply(text="Ada lives in Oslo."),
                MockReply(text="You asked about Ada."),
                MockReply(text="Who?"),
            )
            first = await post_turn(client, "chat", "u1", "Where does Ada live?")
            second = await post_turn(client, "chat", "u1", "Whom did I ask about?")
            await post_turn(client, "chat", "u2", "Whom did I ask about?")
            turn2, fresh = mock.received[2], mock.received[3]
    assert first["text"] == "Ada lives in Oslo." and second["text"] == "You asked about Ada."
    assert said(turn2) == [
        ("system", "Be brief."),
        ("user", "Where does Ada live?"),
        ("assistant", None),  # the tool call, answered below
        ("tool", '{"name":"Ada","city":"Oslo"}'),
        ("assistant", "Ada lives in Oslo."),
        ("user", "Whom did I ask about?"),
    ]
    assert turn2["messages"][2]["tool_calls"][0]["id"] == "c1"
    assert said(fresh) == [("system", "Be brief."), ("user", "Whom did I ask about?")]


async def test_tool_agent_keeps_the_last_n_messages_or_none() -> None:
    agents = {
        "short": tool_agent(tools=ToolRegistry(), name="short", history=2),
        "off": tool_agent(tools=ToolRegistry(), name="off", history=None),
    }
    store = SessionStore(max_entries=10, ttl=600)
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, chat_server(mock, agents, store) as client:
            mock.script(*(MockReply(text=f"a{i}") for i in range(5)))
            for i in range(3):
                await post_turn(client, "short", "s", f"q{i}")
            await post_turn(client, "off", "o", "q-a")
            await post_turn(client, "off", "o", "q-b")
            third, off2 = mock.received[2], mock.received[4]
    assert said(third) == [("user", "q1"), ("assistant", "a1"), ("user", "q2")]
    assert said(off2) == [("user", "q-b")]
    assert HISTORY_KEY not in (store.get("o") or {})


@attrs.frozen
class City:
    name: str
    country: str


@af.agent
async def where(ctx: af.Context, event: af.Event) -> dict[str, str]:
    """A structured-output agent that carries its conversation (the README's example)."""
    question = user(event.data["query"])
    city = await ctx.llm.complete([*ctx.history, question], output_type=City)
    ctx.remember(question, assistant(f"{city.name}, {city.country}"))
    return attrs.asdict(city)


async def test_a_structured_output_agent_sees_the_earlier_turns() -> None:
    store = SessionStore(max_entries=10, ttl=600)
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, chat_server(mock, {"where": where}, store) as client:
            mock.script(
                MockReply(text='{"name": "Oslo", "country": "Norway"}'),
                MockReply(text='{"name": "Bergen", "country": "Norway"}'),
            )
            first = await post_turn(client, "where", "u1", "Capital of Norway?")
            second = await post_turn(client, "where", "u1", "And its second city?")
            turn2 = mock.received[1]
    assert first == {"name": "Oslo", "country": "Norway"}
    assert second == {"name": "Bergen", "country": "Norway"}
    assert said(turn2)[-3:] == [
        ("user", "Capital of Norway?"),
        ("assistant", "Oslo, Norway"),
        ("user", "And its second city?"),
    ]


@pytest.mark.parametrize("history", [0, -1, True])
def test_tool_agent_refuses_a_bad_history_bound(history: Any) -> None:
    with pytest.raises(ValueError):
        tool_agent(tools=ToolRegistry(), history=history)
