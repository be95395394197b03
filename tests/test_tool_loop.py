"""The tool-calling agent loop.

End to end over real HTTP against the built-in mock LLM (real clock, loopback, port 0,
an absolute ``fail_after`` on each test), and with `FakeProvider` under the autojump clock
for the exact cases: max_steps, timeouts, unknown tools, bad arguments.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from _mock_agent import call_on_mock

import agentflow_trio as af
from agentflow_trio.llm import FakeProvider
from agentflow_trio.llm.types import ChatRequest, ChatResponse, Message, ToolCall
from agentflow_trio.mockllm import MockReply, MockToolCall
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

TIMEOUT = 10


def make_tools(barrier_size: int = 0) -> tuple[ToolRegistry, list[str]]:
    """search and weather; with a barrier, each waits until ``barrier_size`` calls run."""
    log: list[str] = []
    arrived = 0
    all_in = trio.Event()

    async def barrier() -> None:
        nonlocal arrived
        arrived += 1
        if arrived >= barrier_size:
            all_in.set()
        await all_in.wait()

    @tool
    async def search(q: str, limit: int = 3) -> dict[str, Any]:
        """Search the web.

        Args:
            q: The query.
            limit: How many hits.
        """
        log.append(f"search:{q}")
        if barrier_size:
            await barrier()
        return {"hits": [f"{q} {i}" for i in range(limit)]}

    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        log.append(f"weather:{city}")
        if barrier_size:
            await barrier()
        return {"city": city, "temp_c": 18}

    @tool
    async def slow(seconds: float) -> dict[str, Any]:
        """Takes its time."""
        await trio.sleep(seconds)
        return {"done": True}

    @tool
    async def explode() -> dict[str, Any]:
        """Always fails."""
        raise RuntimeError("tool blew up")

    return ToolRegistry([search, weather, slow, explode]), log


@pytest.mark.parametrize("dialect", ["openai", "azure", "ollama"])
async def test_end_to_end_over_http_against_the_mock_llm(dialect: str) -> None:
    registry, log = make_tools(barrier_size=2)  # both tools must be running at once
    agent = tool_agent(tools=registry, system="You are helpful.", max_parallel_tools=4)
    with trio.fail_after(TIMEOUT):
        result, mock = await call_on_mock(
            agent,
            af.Event("ask", {"query": "trio? weather?"}),
            MockReply(
                tool_calls=(
                    MockToolCall("search", {"q": "trio"}, id="call_s"),
                    MockToolCall("weather", {"city": "Paris"}, id="call_w"),
                )
            ),
            MockReply(text="Trio is nice and Paris is 18C."),
            dialect=dialect,
        )

    assert result.succeeded, result.error
    assert result.output["text"] == "Trio is nice and Paris is 18C."
    assert result.output["steps"] == 2
    assert sorted(log) == ["search:trio", "weather:Paris"]  # ran, and concurrently

    first, second = mock.received[0], mock.received[1]
    sent_tools = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(sent_tools) == {"search", "weather", "slow", "explode"}
    assert sent_tools["search"]["parameters"] == dict(registry.get("search").parameters)
    assert sent_tools["search"]["description"] == "Search the web."
    assert first["messages"][0] == {"role": "system", "content": "You are helpful."}

    messages = second["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    calls = messages[2]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["search", "weather"]
    tool_msgs = messages[3:]
    assert json.loads(tool_msgs[0]["content"]) == {"hits": ["trio 0", "trio 1", "trio 2"]}
    assert json.loads(tool_msgs[1]["content"]) == {"city": "Paris", "temp_c": 18}
    if dialect != "ollama":  # Ollama's wire format carries no call ids
        assert [c["id"] for c in calls] == ["call_s", "call_w"]
        assert [m["tool_call_id"] for m in tool_msgs] == ["call_s", "call_w"]
    results = result.output["tool_results"]
    assert [r.outcome for r in results] == ["ok", "ok"]


async def test_bad_calls_over_http_each_get_an_error_tool_message() -> None:
    registry, _ = make_tools()
    agent = tool_agent(tools=registry)
    with trio.fail_after(TIMEOUT):
        result, mock = await call_on_mock(
            agent,
            af.Event("ask", {"query": "go"}),
            MockReply(
                tool_calls=(
                    MockToolCall("search", {"q": 42}, id="c_type"),
                    MockToolCall("weather", {}, id="c_missing"),
                    MockToolCall("weather", {"city": "X", "zip": 1}, id="c_extra"),
                    MockToolCall("teleport", {"to": "Mars"}, id="c_unknown"),
                    MockToolCall("explode", {}, id="c_raise"),
                )
            ),
            MockReply(text="Sorry, I could not do it."),
        )
    assert result.succeeded and result.output["text"] == "Sorry, I could not do it."
    tool_msgs = [m for m in mock.received[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == [
        "c_type",
        "c_missing",
        "c_extra",
        "c_unknown",
        "c_raise",
    ]
    errors = [json.loads(m["content"])["error"] for m in tool_msgs]
    assert [(e["type"], e.get("field")) for e in errors] == [
        ("invalid_arguments", "q"),
        ("invalid_arguments", "city"),
        ("invalid_arguments", "zip"),
        ("unknown_tool", None),
        ("tool_error", None),
    ]
    assert errors[0]["expected"] == "string"
    assert "search" in errors[3]["message"] and errors[4]["exception"] == "RuntimeError"


# --------------------------------------------------------------------------- FakeProvider


def calls(*specs: tuple[str, str, dict[str, Any] | str]) -> ChatResponse:
    made = tuple(
        ToolCall.parse(i, n, a if isinstance(a, str) else json.dumps(a)) for i, n, a in specs
    )
    return ChatResponse("", made, "tool_calls")


def tool_messages(request: ChatRequest) -> list[Message]:
    return [m for m in request.messages if m.role == "tool"]


async def run(agent: af.Agent, llm: Any, data: dict[str, Any] | None = None) -> af.AgentResult:
    async with af.Runner(agents={"ask": agent}, llm=llm) as runner:
        return await runner.call(af.Event("ask", data or {"query": "hi"}))


async def test_max_steps_exceeded_fails_and_keeps_the_transcript(autojump_clock: Any) -> None:
    registry, log = make_tools()
    looping = FakeProvider(lambda req: calls((f"c{len(req.messages)}", "weather", {"city": "A"})))
    result = await run(tool_agent(tools=registry, max_steps=3), looping)
    assert result.outcome is af.Outcome.FAILED
    assert result.error is not None and result.error.type == "MaxStepsExceeded"
    assert "max_steps" in result.error.message
    assert len(looping.requests) == 3 and len(log) == 2  # the last calls were not run
    transcript = result.output["transcript"]
    assert [m.role for m in transcript] == ["user"] + ["assistant", "tool"] * 3
    last = result.output["tool_results"][-1]
    assert last.outcome == "cancelled" and "max_steps" in last.error["message"]
    assert transcript[-1].tool_call_id == transcript[-2].tool_calls[0].id  # still answered


async def test_a_timed_out_tool_still_yields_a_tool_message(autojump_clock: Any) -> None:
    registry, _ = make_tools()
    fake = FakeProvider.scripted(
        [calls(("c1", "slow", {"seconds": 60}), ("c2", "weather", {"city": "B"})), "done"]
    )
    start = trio.current_time()
    result = await run(tool_agent(tools=registry, tool_timeout=2), fake)
    assert trio.current_time() - start == pytest.approx(2)
    assert result.succeeded and result.output["text"] == "done"
    answered = tool_messages(fake.requests[1])
    assert [m.tool_call_id for m in answered] == ["c1", "c2"]
    assert json.loads(answered[0].content or "")["error"]["type"] == "timed_out"
    assert json.loads(answered[1].content or "") == {"city": "B", "temp_c": 18}


async def test_unknown_tool_gets_an_error_tool_message(autojump_clock: Any) -> None:
    registry, _ = make_tools()
    fake = FakeProvider.scripted([calls(("c1", "teleport", {})), "ok then"])
    result = await run(tool_agent(tools=registry), fake)
    assert result.succeeded
    (answer,) = tool_messages(fake.requests[1])
    error = json.loads(answer.content or "")["error"]
    assert error["type"] == "unknown_tool"
    assert error["known"] == ["search", "weather", "slow", "explode"]


async def test_bad_json_arguments_get_an_error_tool_message(autojump_clock: Any) -> None:
    registry, log = make_tools()
    fake = FakeProvider.scripted([calls(("c1", "search", '{"q": "x"')), "fine"])
    result = await run(tool_agent(tools=registry), fake)
    assert result.succeeded and log == []
    (answer,) = tool_messages(fake.requests[1])
    assert json.loads(answer.content or "")["error"]["type"] == "invalid_arguments"


async def test_tools_run_in_parallel_and_answers_keep_call_order(autojump_clock: Any) -> None:
    registry, _ = make_tools()
    fake = FakeProvider.scripted(
        [calls(("a", "slow", {"seconds": 3}), ("b", "slow", {"seconds": 1})), "done"]
    )
    start = trio.current_time()
    result = await run(tool_agent(tools=registry), fake)
    assert trio.current_time() - start == pytest.approx(3)  # not 4
    assert [m.tool_call_id for m in tool_messages(fake.requests[1])] == ["a", "b"]
    assert result.output["steps"] == 2

    fake = FakeProvider.scripted(
        [calls(("a", "slow", {"seconds": 3}), ("b", "slow", {"seconds": 1})), "done"]
    )
    start = trio.current_time()
    await run(tool_agent(tools=registry, max_parallel_tools=1), fake)
    assert trio.current_time() - start == pytest.approx(4)  # one at a time


async def test_cancel_siblings_policy_reaches_the_fan_out(autojump_clock: Any) -> None:
    registry, _ = make_tools()
    fake = FakeProvider.scripted(
        [calls(("a", "explode", {}), ("b", "slow", {"seconds": 5})), "done"]
    )
    result = await run(tool_agent(tools=registry, on_error="cancel_siblings"), fake)
    assert [r.outcome for r in result.output["tool_results"]] == ["error", "cancelled"]
    assert len(tool_messages(fake.requests[1])) == 2


async def test_missing_ids_are_made_and_paired(autojump_clock: Any) -> None:
    registry, _ = make_tools()
    no_ids = ChatResponse("", (ToolCall("", "weather", {"city": "C"}),), "tool_calls")
    fake = FakeProvider.scripted([no_ids, "done"])
    await run(tool_agent(tools=registry), fake)
    assistant, answer = fake.requests[1].messages[-2:]
    assert assistant.tool_calls[0].id and answer.tool_call_id == assistant.tool_calls[0].id


async def test_model_failure_and_missing_llm_are_failed_results(autojump_clock: Any) -> None:
    registry, _ = make_tools()
    broken = FakeProvider.scripted([af.LLMError("provider down")])
    result = await run(tool_agent(tools=registry, system="sys"), broken)
    assert result.outcome is af.Outcome.FAILED
    assert result.error is not None and result.error.type == "LLMError"
    assert [m.role for m in result.output["transcript"]] == ["system", "user"]
    no_llm = await run(tool_agent(tools=registry), None)
    assert no_llm.outcome is af.Outcome.FAILED and no_llm.error is not None
    assert no_llm.error.type == "NoLLM"


async def test_messages_from_the_event_and_request_fields(autojump_clock: Any) -> None:
    registry, _ = make_tools()
    fake = FakeProvider.scripted(["hello"])
    agent = tool_agent(tools=registry, request_fields={"temperature": 0.0}, name="helper")
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "yes"}]
    result = await run(agent, fake, {"messages": [*history, {"role": "user", "content": "now"}]})
    assert result.succeeded and result.agent == "helper"
    request = fake.requests[0]
    assert [m.content for m in request.messages] == ["earlier", "yes", "now"]
    assert request.temperature == 0.0
    assert [t.name for t in request.tools] == registry.names()
    with pytest.raises(ValueError):
        tool_agent(tools=registry, max_steps=0)


# ------------------------------------------------------------------ history sent as JSON


def test_json_history_is_rebuilt_into_messages_and_tool_calls() -> None:
    from agentflow_trio.tools.loop import default_messages

    history: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "two "}, {"text": "parts"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"q": "x"}'},
                },
                {"id": "c2", "name": "weather", "arguments": {"city": "Rome"}},  # our shape
                {"id": "c3", "function": {"name": "search", "arguments": "{not json"}},
            ],
        },
        {"role": "tool", "content": "{}", "tool_call_id": "c1", "name": "search"},
        {"role": "tool", "content": '{"error": {}}', "tool_call_id": "c2", "is_error": True},
    ]
    messages = default_messages(af.Event("ask", {"messages": history}))
    assert messages[0] == Message("user", "two parts")
    calls = messages[1].tool_calls
    assert calls[0] == ToolCall("c1", "search", {"q": "x"}, '{"q": "x"}')
    assert calls[1] == ToolCall("c2", "weather", {"city": "Rome"})
    assert calls[1].arguments_json() == '{"city":"Rome"}'
    assert calls[2].parse_error is not None and calls[2].raw_arguments == "{not json"
    assert messages[2] == Message("tool", "{}", "search", (), "c1")
    assert messages[3].is_error and not messages[2].is_error
    # What serve answers with (a Message's fields) rebuilds to the same messages.
    import attrs

    echoed = [attrs.asdict(m, recurse=True) for m in messages]
    assert default_messages(af.Event("ask", {"messages": echoed})) == messages


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ("hello", "messages must be a list of messages, not str"),
        ([{"role": "user", "content": "a"}, {"content": "b"}], 'messages[1] needs "role"'),
        ([["user", "hi"]], "messages[0] must be an object, not list"),
        ([{"role": "tool", "content": "{}"}], 'messages[0] is a tool message without "tool_call'),
        (
            [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}],
            'messages[0].tool_calls[0] needs "id"',
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}],
            'messages[0].tool_calls[0] needs a function "name"',
        ),
        (
            [{"role": "assistant", "tool_calls": [{"id": "c", "name": "f", "arguments": [1]}]}],
            "messages[0].tool_calls[0] arguments must be JSON text or an object, not list",
        ),
        ([{"role": "assistant", "tool_calls": {"id": "c"}}], "messages[0].tool_calls must be"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "messages[0].content[0] is not a text part ('image_url')",
        ),
        ([{"role": "user", "content": 7}], "messages[0].content must be a string"),
        (
            [{"role": "tool", "content": "x", "tool_call_id": "c", "is_error": 1}],
            "messages[0].is_error must be true or false",
        ),
        ([{"role": "user", "content": "a", "name": 3}], "messages[0].name must be a string"),
        ([{"role": "user", "content": "a"}] * 5000, "holds 5000 messages; at most 4096"),
    ],
)
def test_bad_json_history_names_the_message(messages: Any, reason: str) -> None:
    from agentflow_trio.tools.loop import default_messages

    with pytest.raises(ValueError) as caught:
        default_messages(af.Event("ask", {"messages": messages}))
    assert reason in str(caught.value)


async def test_a_bad_history_fails_the_event_without_a_model_call(autojump_clock: Any) -> None:
    registry, _ = make_tools()
    fake = FakeProvider.scripted(["never"])
    result = await run(tool_agent(tools=registry), fake, {"messages": [{"content": "x"}]})
    assert result.outcome is af.Outcome.FAILED and result.error is not None
    assert result.error.type == "ValueError" and "messages[0]" in result.error.message
    assert fake.requests == []


async def test_a_paused_turn_is_sent_back_so_the_model_goes_on(autojump_clock: Any) -> None:
    registry, log = make_tools()
    fake = FakeProvider.scripted(
        [
            ChatResponse("Searching the web, ", (), "pause_turn"),
            ChatResponse("found it.", (), "stop"),
        ]
    )
    result = await run(tool_agent(tools=registry), fake)
    assert result.outcome is af.Outcome.SUCCEEDED
    assert result.output["text"] == "Searching the web, found it."
    assert len(fake.requests) == 2 and not log
    # The second request ends with the paused assistant turn, as the API asks.
    last = fake.requests[1].messages[-1]
    assert (last.role, last.content) == ("assistant", "Searching the web, ")


async def test_a_paused_turn_at_max_steps_is_the_answer_so_far(autojump_clock: Any) -> None:
    registry, _ = make_tools()
    fake = FakeProvider.scripted([ChatResponse("half", (), "pause_turn")])
    result = await run(tool_agent(tools=registry, max_steps=1), fake)
    assert result.outcome is af.Outcome.SUCCEEDED and result.output["text"] == "half"
