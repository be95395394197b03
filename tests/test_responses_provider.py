"""The Responses provider (``provider = "openai_responses"``) against the real mock LLM.

Rules of this module: loopback only, port 0, the real clock (real sockets), every test body
under an absolute ``trio.fail_after``. What the provider sent is read from the mock's
received bodies (the mock checks them as the real API would); the agent-level scenarios
(`tool_agent`, ``complete(..., output_type=T)``) run on both the ``openai`` provider and
this one and must end the same way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import agentflow_trio as af
from agentflow_trio.config import DeploymentConfig, LLMConfig, RetryConfig, RouterConfig
from agentflow_trio.errors import (
    BadRequestError,
    IncompleteStreamError,
    NotFoundError,
    OutputRefusedError,
    RateLimitError,
    ServerError,
    StreamEndedEarlyError,
)
from agentflow_trio.llm import (
    ChatRequest,
    LLMClient,
    Provider,
    collect_stream,
    open_llm_client,
    open_provider,
)
from agentflow_trio.llm._accumulate import GuardedChunks
from agentflow_trio.llm._lines import MAX_MALFORMED
from agentflow_trio.llm.provider import open_transport
from agentflow_trio.llm.responses import ResponsesProvider
from agentflow_trio.llm.types import (
    EmbeddingRequest,
    ToolCall,
    ToolSpec,
    assistant,
    system,
    tool_message,
    user,
)
from agentflow_trio.mockllm import Fault, MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

TIMEOUT = 10
NO_RETRY = RetryConfig(enabled=False)
PROVIDERS = pytest.mark.parametrize("provider", ["openai", "openai_responses"])
TRANSPORTS = pytest.mark.parametrize("transport", ["lean", "httpx2"])
TEXT = "Hello from the Responses mock."


def config(mock: MockLLM, provider: str = "openai_responses", **fields: Any) -> LLMConfig:
    """An ``[llm]`` section for ``provider`` pointing at ``mock`` (no retries)."""
    fields.setdefault("api_key", "sk-test")
    fields.setdefault("retry", NO_RETRY)
    return LLMConfig(provider=provider, base_url=mock.url + "/v1", **fields)


@asynccontextmanager
async def responses(**fields: Any) -> AsyncIterator[tuple[MockLLM, Provider]]:
    """The mock and a bare Responses provider on it (``fields``: `LLMConfig` fields)."""
    faults = fields.pop("faults", {})
    async with (
        open_mock_llm(reply_text=TEXT, faults=faults) as mock,
        open_transport(config(mock, **fields)) as provider,
    ):
        yield mock, provider


# -- the wire over HTTP -----------------------------------------------------------------------


@TRANSPORTS
async def test_complete_and_stream_say_the_same(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with responses(transport=transport) as (mock, provider):
            assert isinstance(provider, ResponsesProvider) and provider.native_output
            request = ChatRequest((system("Be brief."), user("hi")), max_tokens=40)
            plain = await provider.complete(request)
            async with provider.stream(request) as chunks:
                streamed = await collect_stream(chunks)
    for answer in (plain, streamed):
        assert answer.text == TEXT
        assert answer.finish_reason == "stop"
        assert answer.response_id.startswith("resp_")
        assert answer.usage is not None and answer.usage.completion_tokens > 0
        assert answer.model == "gpt-4o-mini"
    assert plain.response_id != streamed.response_id
    sent, sent_stream = mock.received
    assert sent["instructions"] == "Be brief."
    assert sent["input"] == [{"role": "user", "content": "hi"}]
    assert sent["max_output_tokens"] == 40 and "stream" not in sent
    assert sent_stream["stream"] is True


async def test_a_function_call_turn() -> None:
    search = ToolSpec("search", "Search.", {"type": "object", "properties": {"q": {}}})
    with trio.fail_after(TIMEOUT):
        async with responses() as (mock, provider):
            mock.script(MockReply(tool_calls=(MockToolCall("search", {"q": "trio"}, id="call_a"),)))
            first = await provider.complete(
                ChatRequest((user("find trio"),), tools=(search,), tool_choice="search")
            )
            assert first.finish_reason == "tool_calls"
            assert first.tool_calls == (ToolCall.parse("call_a", "search", '{"q":"trio"}'),)
            turn = (
                user("find trio"),
                assistant(None, first.tool_calls, first.items),
                tool_message("call_a", '{"hits": 2}'),
            )
            async with provider.stream(ChatRequest(turn, tools=(search,))) as chunks:
                second = await collect_stream(chunks)
    assert second.finish_reason == "stop" and second.text
    asked, answered = mock.received
    assert asked["tools"][0]["name"] == "search"
    assert asked["tool_choice"] == {"type": "function", "name": "search"}
    assert answered["input"][1:] == [
        {
            "type": "function_call",
            "call_id": "call_a",
            "name": "search",
            "arguments": '{"q":"trio"}',
        },
        {"type": "function_call_output", "call_id": "call_a", "output": '{"hits": 2}'},
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_reasoning_and_previous_response_id_pass_through(stream: bool) -> None:
    extra = {"reasoning": {"effort": "low", "summary": "auto"}, "store": False}
    with trio.fail_after(TIMEOUT):
        async with responses() as (mock, provider):
            mock.script(MockReply(text="first", thinking="Think about it."))
            first = await provider.complete(ChatRequest((user("one"),), extra=extra))
            follow = ChatRequest(
                (user("two"),), extra={**extra, "previous_response_id": first.response_id}
            )
            if stream:
                async with provider.stream(follow) as chunks:
                    second = await collect_stream(chunks)
            else:
                second = await provider.complete(follow)
    assert [i.data for i in first.items] == first.raw["output"]  # type: ignore[index]
    reasoning, said = first.items
    assert reasoning.provider == "openai_responses" and reasoning.data["type"] == "reasoning"
    assert "Think about it." in json.dumps(reasoning.data) and said.data["type"] == "message"
    assert [i.data["type"] for i in second.items] == ["reasoning", "message"]
    sent = mock.received[1]
    assert sent["previous_response_id"] == first.response_id and sent["store"] is False
    assert sent["reasoning"] == {"effort": "low", "summary": "auto"}


async def test_a_reasoning_tool_turn_goes_back_verbatim() -> None:
    search = ToolSpec("search", "Search.", {"type": "object", "properties": {"q": {}}})
    with trio.fail_after(TIMEOUT):
        async with responses() as (mock, provider):
            mock.script(
                MockReply(
                    tool_calls=(MockToolCall("search", {"q": "trio"}, id="call_r"),),
                    thinking="Search first.",
                )
            )
            async with provider.stream(ChatRequest((user("find"),), tools=(search,))) as chunks:
                first = await collect_stream(chunks)
            turn = (
                user("find"),
                assistant(first.text or None, first.tool_calls, first.items),
                tool_message("call_r", "2 hits"),
            )
            await provider.complete(ChatRequest(turn, tools=(search,)))
    output = [i.data for i in first.items]
    assert [i["type"] for i in output] == ["reasoning", "function_call"]
    assert output[1]["id"].startswith("fc") and output[1]["call_id"] == "call_r"
    assert mock.received[1]["input"] == [
        {"role": "user", "content": "find"},
        *output,  # the call keeps its item id, paired with the reasoning before it
        {"type": "function_call_output", "call_id": "call_r", "output": "2 hits"},
    ]


async def test_embeddings_come_from_the_embeddings_route() -> None:
    with trio.fail_after(TIMEOUT):
        async with responses() as (mock, provider):
            got = await provider.embed(EmbeddingRequest(("a", "b")))
    assert len(got.vectors) == 2 and got.vectors[0]
    assert mock.stats().by_path.get("/v1/embeddings") == 1


# -- errors ----------------------------------------------------------------------------------


async def test_http_errors_are_typed() -> None:
    with trio.fail_after(TIMEOUT):
        async with responses() as (mock, provider):
            mock.script(
                MockReply(status=429, headers={"retry-after": "3"}),
                MockReply(status=500),
                MockReply(status=400),
            )
            request = ChatRequest((user("hi"),))
            with pytest.raises(RateLimitError) as limited:
                await provider.complete(request)
            assert limited.value.retry_after == 3.0
            with pytest.raises(ServerError):
                await provider.complete(request)
            with pytest.raises(BadRequestError):
                await provider.complete(request)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault("stream_error", after_chunks=3), ServerError),
        (Fault("no_done"), StreamEndedEarlyError),
        (Fault("cut", after_chunks=3), IncompleteStreamError),
    ],
)
async def test_a_stream_that_does_not_complete_is_an_error(
    fault: Fault, error: type[Exception]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with responses() as (mock, provider):
            mock.script(MockReply(text=TEXT, fault=fault))
            with pytest.raises(error):
                async with provider.stream(ChatRequest((user("hi"),))) as chunks:
                    await collect_stream(chunks)


async def test_garbage_events_are_skipped_and_counted() -> None:
    with trio.fail_after(TIMEOUT):
        async with responses() as (mock, provider):
            mock.script(MockReply(text=TEXT, fault=Fault("malformed", after_chunks=4, count=2)))
            async with provider.stream(ChatRequest((user("hi"),))) as chunks:
                answer = await collect_stream(chunks)
                assert isinstance(chunks, GuardedChunks)
                assert chunks.malformed == 2 <= MAX_MALFORMED
    assert answer.text == TEXT and answer.finish_reason == "stop"


# -- the same agent scenarios on openai and openai_responses ------------------------------


def sent_tool_results(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(call id, decoded result) of each tool result in a request body, either wire."""
    if "messages" in body:
        return [
            (m["tool_call_id"], json.loads(m["content"]))
            for m in body["messages"]
            if m["role"] == "tool"
        ]
    return [
        (i["call_id"], json.loads(i["output"]))
        for i in body["input"]
        if i.get("type") == "function_call_output"
    ]


def registry() -> tuple[ToolRegistry, list[str]]:
    log: list[str] = []

    @tool
    async def search(q: str) -> dict[str, Any]:
        """Search the web."""
        log.append(f"search:{q}")
        return {"hits": [f"{q} 0", f"{q} 1"]}

    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        log.append(f"weather:{city}")
        return {"city": city, "temp_c": 18}

    return ToolRegistry([search, weather]), log


@PROVIDERS
async def test_tool_agent_runs_parallel_calls_and_answers(provider: str) -> None:
    tools, log = registry()
    agent = tool_agent(tools=tools, system="You are helpful.", max_parallel_tools=4)
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm() as mock,
            open_provider(config(mock, provider)) as llm,
        ):
            mock.script(
                MockReply(
                    tool_calls=(
                        MockToolCall("search", {"q": "trio"}, id="call_s"),
                        MockToolCall("weather", {"city": "Paris"}, id="call_w"),
                    ),
                    thinking="Search, then the weather.",
                ),
                MockReply(text="Trio is nice and Paris is 18C."),
            )
            async with af.Runner(agents={"ask": agent}, llm=LLMClient(llm)) as runner:
                result = await runner.call(af.Event("ask", {"query": "trio? weather?"}))
    assert result.succeeded, result.error
    assert result.output["text"] == "Trio is nice and Paris is 18C."
    assert result.output["steps"] == 2
    assert sorted(log) == ["search:trio", "weather:Paris"]
    assert sent_tool_results(mock.received[1]) == [
        ("call_s", {"hits": ["trio 0", "trio 1"]}),
        ("call_w", {"city": "Paris", "temp_c": 18}),
    ]
    if provider == "openai_responses":  # the reasoning item went back in place
        items = mock.received[1]["input"]
        kinds = [i.get("type", i.get("role")) for i in items]
        assert kinds == [
            "user",
            "reasoning",
            "function_call",
            "function_call",
            *["function_call_output"] * 2,
        ]
        assert "Search, then the weather." in json.dumps(items[1])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_store_false_sends_reasoning_back_encrypted(stream: bool) -> None:
    """With ``store: false`` nothing is kept server-side: the provider asks for the
    reasoning's ``encrypted_content`` and sends it back; the mock, like the API, refuses a
    reasoning item without it."""
    tools, log = registry()
    include = ["message.output_text.logprobs"]
    extra = {"store": False, "reasoning": {"effort": "low"}, "include": include}
    agent = tool_agent(tools=tools, request_fields={"extra": extra})
    event = af.Event("ask", {"query": "weather?"})
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, open_llm_client(config(mock)) as llm:
            call = MockToolCall("weather", {"city": "Paris"}, id="call_w")
            mock.script(
                MockReply(tool_calls=(call,), thinking="Ask the tool."), MockReply(text="18C.")
            )
            async with af.Runner(agents={"ask": agent}, llm=llm) as runner:
                if stream:
                    async with runner.stream(event) as items:
                        result = [item async for item in items][-1].result  # type: ignore[union-attr]
                else:
                    result = await runner.call(event)
            first, second = mock.received
    assert result.succeeded, result.error
    assert result.output["text"] == "18C." and log == ["weather:Paris"]
    assert first["include"] == [*include, "reasoning.encrypted_content"]
    assert include == ["message.output_text.logprobs"]  # the caller's list is not changed
    (reasoning,) = [i for i in second["input"] if i.get("type") == "reasoning"]
    assert reasoning["encrypted_content"] and "Ask the tool." in json.dumps(reasoning)


async def test_store_false_without_encrypted_content_is_refused_like_the_api() -> None:
    turn = (
        user("find"),
        assistant(None, (ToolCall("call_r", "search", {}, "{}"),), ()),
        tool_message("call_r", "2 hits"),
    )
    with trio.fail_after(TIMEOUT):
        async with responses() as (mock, provider):
            mock.script(
                MockReply(tool_calls=(MockToolCall("search", {}, id="call_r"),), thinking="t")
            )
            first = await provider.complete(
                ChatRequest(turn[:1], extra={"store": True, "reasoning": {"effort": "low"}})
            )
            stored = (turn[0], assistant(None, first.tool_calls, first.items), turn[2])
            await provider.complete(ChatRequest(stored, extra={"store": True}))  # found by id
            with pytest.raises(NotFoundError, match="not persisted when `store` is set to false"):
                await provider.complete(ChatRequest(stored, extra={"store": False}))
    assert "encrypted_content" not in json.dumps(mock.received[0])
    assert "include" not in mock.received[0]


@attrs.frozen
class City:
    name: str
    population: int


GOOD = {"name": "Paris", "population": 2_100_000}
BAD = {"name": "Paris", "population": "lots"}


def answer(value: Any, mode: str) -> MockReply:
    if mode == "tool":
        return MockReply(tool_calls=(MockToolCall("final_result", value, id="call_out"),))
    return MockReply(text=json.dumps(value))


@PROVIDERS
@pytest.mark.parametrize("mode", ["native", "tool", "prompted"])
async def test_output_type_after_one_re_ask(provider: str, mode: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, open_llm_client(config(mock, provider)) as llm:
            mock.script(answer(BAD, mode), answer(GOOD, mode))
            city = await llm.complete("Capital of France?", output_type=City, output_mode=mode)
    assert city == City(**GOOD)
    first, again = mock.received
    if mode == "native":
        wanted = first.get("text", {}).get("format") or first["response_format"]["json_schema"]
        assert wanted["name"] == "City" and wanted["schema"]["required"] == ["name", "population"]
    assert "population" in json.dumps(again)  # the problem went back to the model


@PROVIDERS
async def test_auto_mode_is_native_and_the_unscripted_mock_fits_it(provider: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, open_llm_client(config(mock, provider)) as llm:
            assert llm.native_output
            city = await llm.complete("Capital?", output_type=City)
    assert isinstance(city, City)
    [sent] = mock.received
    assert ("text" in sent) == (provider == "openai_responses")


@PROVIDERS
async def test_a_refusal_raises_at_once(provider: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, open_llm_client(config(mock, provider)) as llm:
            mock.script(MockReply(refusal="I can't help with that."))
            with pytest.raises(OutputRefusedError, match="can't help"):
                await llm.complete("Capital?", output_type=City)
    assert len(mock.received) == 1


@PROVIDERS
async def test_stream_output_ends_with_the_value(provider: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, open_llm_client(config(mock, provider)) as llm:
            mock.script(answer(GOOD, "native"))
            async with llm.stream_output("Capital?", output_type=City) as out:
                partials = [p async for p in out]
                city = await out.result()
    assert city == City(**GOOD) and partials


# -- a router group mixing the two OpenAI wires -------------------------------------------


def mixed(mock: MockLLM, first: str) -> LLMConfig:
    """Group ``smart``: ``resp`` (Responses, model ``resp-mock``) and ``chat`` (Chat
    Completions, ``chat-mock``); ``first`` weighs a million times more, so goes first."""
    common: dict[str, Any] = {
        "group": "smart",
        "retry": RetryConfig(max_attempts=2, base_delay=0.05, max_delay=0.2),
        "base_url": mock.url + "/v1",
        "api_key": "sk-test",
    }
    weights = {"resp": 1, "chat": 1, first: 1_000_000}
    return LLMConfig(
        deployments={
            "resp": DeploymentConfig(
                provider="openai_responses", model="resp-mock", weight=weights["resp"], **common
            ),
            "chat": DeploymentConfig(
                provider="openai", model="chat-mock", weight=weights["chat"], **common
            ),
        },
        router=RouterConfig(first_token_timeout=1.0, stream_idle_timeout=1.0),
    )


@pytest.mark.parametrize(("first", "other"), [("resp", "chat"), ("chat", "resp")])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_mixed_group_fails_over_between_the_wires(
    first: str, other: str, stream: bool
) -> None:
    request = ChatRequest((system("Be brief."), user("hello")), model="smart")
    faults = {f"{first}-mock": (Fault("server_error", status=503),)}
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm(reply_text=TEXT, faults=faults) as mock,
            open_provider(mixed(mock, first)) as stack,
        ):
            if stream:
                async with stack.stream(request) as chunks:
                    answer = await collect_stream(chunks)
            else:
                answer = await stack.complete(request)
            alone = mixed(mock, first).deployment_configs()[other]
            async with open_provider(alone) as direct:
                expected = await direct.complete(request.with_model(None))
    assert (answer.text, answer.deployment, answer.model) == (TEXT, other, f"{other}-mock")
    assert answer.usage == expected.usage  # the answering wire's usage alone
    failed, answered = mock.received[0], mock.received[1]
    assert ("input" in failed) == (first == "resp")
    assert ("input" in answered) == (other == "resp")


async def test_our_body_is_what_the_openai_sdk_sends_and_it_reads_our_answer() -> None:
    openai = pytest.importorskip("openai")
    search = ToolSpec("search", "Search.", {"type": "object", "properties": {"q": {}}})
    call = ToolCall.parse("call_q", "search", '{"q":"trio"}')
    turn = (
        system("Be brief."),
        user("find"),
        assistant(None, (call,)),
        tool_message("call_q", "2"),
    )
    with trio.fail_after(TIMEOUT):
        async with responses(model="gpt-4o-mini") as (mock, provider):
            sdk = openai.AsyncOpenAI(
                base_url=mock.url + "/v1", api_key="sk-test", max_retries=0, timeout=TIMEOUT
            )
            async with sdk:
                theirs = await sdk.responses.create(
                    model="gpt-4o-mini",
                    instructions="Be brief.",
                    input=[
                        {"role": "user", "content": "find"},
                        {
                            "type": "function_call",
                            "call_id": "call_q",
                            "name": "search",
                            "arguments": '{"q":"trio"}',
                        },
                        {"type": "function_call_output", "call_id": "call_q", "output": "2"},
                    ],
                    tools=[
                        {
                            "type": "function",
                            "name": "search",
                            "description": "Search.",
                            "parameters": {"type": "object", "properties": {"q": {}}},
                            "strict": False,
                        }
                    ],
                    tool_choice="auto",
                    max_output_tokens=30,
                )
                ours = await provider.complete(
                    ChatRequest(turn, tools=(search,), tool_choice="auto", max_tokens=30)
                )
    sdk_body, our_body = mock.received
    assert our_body == sdk_body
    assert ours.text == theirs.output_text
    assert ours.usage is not None and theirs.usage is not None
    assert ours.usage.prompt_tokens == theirs.usage.input_tokens


async def test_a_group_of_both_openai_wires_is_native_and_with_anthropic_is_not() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            both = mixed(mock, "resp")
            async with open_llm_client(both) as llm:
                assert llm.native_output
            claude = DeploymentConfig(
                provider="anthropic", model="claude-mock", base_url=mock.url, group="smart"
            )
            three = attrs.evolve(both, deployments={**both.deployments, "claude": claude})
            async with open_llm_client(three) as llm:
                assert not llm.native_output  # the Messages API has no JSON-schema format
