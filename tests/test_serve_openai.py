"""``serve``'s OpenAI-compatible face, judged by the official ``openai`` SDK.

Rules: the server and the mock LLM bind 127.0.0.1 port 0 and are cancelled by the test
that started them; every test uses the real clock under an absolute ``trio.fail_after``.
The SDK's client is synchronous and runs in a worker thread (``trio.to_thread``) with its
own timeout, so a hung server fails the test instead of hanging it; its retries are off
unless a test is about them. Raw requests (guards, headers) go through httpx2. Order is
proven by the mock's own behaviour (a ``stall`` fault holds the reply until the client
leaves), never by timing.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import httpx2
import openai
import pytest
import trio

import agentflow_trio as af
from agentflow_trio.config import RetryConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.mockllm import Fault, MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.progress import TextDelta, current_sink
from agentflow_trio.runner import Runner
from agentflow_trio.server import make_app, serve
from agentflow_trio.state import SessionStore
from agentflow_trio.testing import mock_llm_config
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

TIMEOUT = 10
REPLY = "It is eighteen degrees in Oslo and sunny all day."
OSLO_CALL = MockReply(tool_calls=(MockToolCall("weather", {"city": "Oslo"}, id="w1"),))
NEVER_ASKED = MockReply(text="never asked for")
STALLED = MockReply(text=REPLY, fault=Fault("stall", after_chunks=2))
"""The role chunk and the first piece of ``REPLY``, then nothing until the client leaves."""
QUESTION: Any = [
    {"role": "system", "content": "You answer about the weather."},
    {"role": "user", "content": "Weather in Oslo?"},
]
T = TypeVar("T")


@tool
async def weather(city: str) -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temp_c": 18}


@af.agent
async def hello(ctx: af.Context, event: af.Event) -> str:
    return "Hello, " + str(event.data["messages"][-1]["content"])


@af.agent
async def echo(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    return {"data": dict(event.data), "metadata": dict(event.metadata)}


@af.agent
async def oracle(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    return {"answer": "forty-two", "sources": ["hhgttg"]}


@af.agent
async def boom(ctx: af.Context, event: af.Event) -> None:
    raise RuntimeError("the agent broke")


@af.agent
async def half(ctx: af.Context, event: af.Event) -> None:
    sink = current_sink()
    assert sink is not None
    await sink.send(TextDelta("I was saying", "m"))
    raise RuntimeError("broke mid-answer")


@af.agent
async def forever(ctx: af.Context, event: af.Event) -> None:
    await trio.sleep_forever()


def started_forever() -> tuple[af.Agent, trio.Event]:
    """An agent that never answers, and the trio.Event it sets once it runs."""
    started = trio.Event()

    @af.agent
    async def waits(ctx: af.Context, event: af.Event) -> None:
        started.set()
        await trio.sleep_forever()

    return waits, started


AGENTS: dict[str, af.Agent] = {
    "ask": tool_agent(tools=ToolRegistry([weather])),
    "hello": hello,
    "echo": echo,
    "oracle": oracle,
    "boom": boom,
    "half": half,
}


@attrs.frozen
class Served:
    """A served runner: the mock LLM it talks to, the runner, a raw HTTP client, the URL."""

    mock: MockLLM
    runner: Runner
    http: httpx2.AsyncClient
    base_url: str

    def sdk(self, api_key: str = "unused", **options: Any) -> openai.OpenAI:
        """The official client, pointed at the face (no retries unless given)."""
        options.setdefault("max_retries", 0)
        return openai.OpenAI(
            base_url=self.base_url + "/v1", api_key=api_key, timeout=TIMEOUT, **options
        )


@asynccontextmanager
async def served(
    agents: Mapping[str, af.Agent] = AGENTS,
    config: af.Config | None = None,
    *,
    sessions: SessionStore | None = None,
    **app_options: Any,
) -> AsyncIterator[Served]:
    async with (
        open_mock_llm(stream_chunks=6) as mock,
        open_provider(mock_llm_config(mock, retry=RetryConfig(enabled=False))) as provider,
        Runner(config, agents=dict(agents), llm=LLMClient(provider), sessions=sessions) as runner,
        trio.open_nursery() as nursery,
    ):
        app = make_app(runner, **app_options)
        port = await nursery.start(functools.partial(serve, app, port=0))
        base = f"http://127.0.0.1:{port}"
        async with httpx2.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
            yield Served(mock, runner, http, base)
        nursery.cancel_scope.cancel()


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread (the SDK's sync client blocks)."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def ended(runner: Runner) -> trio.MemoryReceiveChannel[af.AgentResult]:
    """The results of the runner's events, as they end (the after_event hook)."""
    send, receive = trio.open_memory_channel[af.AgentResult](16)
    runner.hooks.after_event.append(lambda event, result: send.send_nowait(result))
    return receive


def collect(client: openai.OpenAI, **request: Any) -> list[Any]:
    """Every chunk of a streamed completion, in order."""
    with client.chat.completions.create(stream=True, **request) as chunks:
        return list(chunks)


# ------------------------------------------------------------------ answers


async def test_the_sdk_gets_a_tool_agents_answer_with_its_usage() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            s.mock.script(OSLO_CALL, MockReply(text=REPLY))
            client = s.sdk()
            completion = await in_thread(
                client.chat.completions.create, model="ask", messages=QUESTION
            )
            stats, sent = s.mock.stats(), list(s.mock.received)

    assert completion.object == "chat.completion"
    assert completion.model == "ask" and completion.id.startswith("chatcmpl-")
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and choice.message.content == REPLY
    assert choice.finish_reason == "stop" and choice.index == 0
    # The request's messages reached the model as sent, then the tool round trip.
    assert [(m["role"], m["content"]) for m in sent[0]["messages"]] == [
        (m["role"], m["content"]) for m in QUESTION
    ]
    assert sent[1]["messages"][-1]["role"] == "tool"
    usage = completion.usage
    assert usage is not None and stats.requests == 2
    assert usage.prompt_tokens == stats.prompt_tokens > 0
    assert usage.completion_tokens == stats.completion_tokens > 0
    assert usage.total_tokens == stats.prompt_tokens + stats.completion_tokens


async def test_the_content_is_the_text_the_answer_or_compact_json() -> None:
    messages: Any = [{"role": "user", "content": "Ada"}]
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            client = s.sdk()
            create = functools.partial(client.chat.completions.create, messages=messages)
            text = await in_thread(create, model="hello")
            answer = await in_thread(create, model="oracle")
            echoed = await in_thread(
                create,
                model="echo",
                temperature=0.25,
                max_tokens=64,
                store=False,
                user="u-7",
                metadata={"session_id": "s-1"},
            )

    assert text.choices[0].message.content == "Hello, Ada"
    assert answer.choices[0].message.content == "forty-two"
    content = echoed.choices[0].message.content
    assert content is not None and " " not in content  # compact
    assert json.loads(content) == {
        "data": {"messages": messages, "temperature": 0.25, "max_tokens": 64},
        "metadata": {"session_id": "s-1", "user": "u-7"},
    }
    assert text.usage is not None and text.usage.total_tokens == 0  # no model call


async def test_a_stream_sends_the_models_text_as_deltas_in_order_then_stop_usage_and_done() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            s.mock.script(OSLO_CALL, MockReply(text=REPLY))
            request = {"model": "ask", "messages": QUESTION}
            chunks = await in_thread(
                collect, s.sdk(), stream_options={"include_usage": True}, **request
            )
            stats = s.mock.stats()
            s.mock.script(OSLO_CALL, MockReply(text=REPLY))
            raw = {**request, "stream": True}
            async with s.http.stream("POST", "/v1/chat/completions", json=raw) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                lines = [line async for line in r.aiter_lines() if line]

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].model == "ask"
    *answer, usage_chunk = chunks
    assert answer[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in answer if c.choices[0].delta.content]
    assert "".join(pieces) == REPLY and len(pieces) > 1  # streamed, in order
    assert [c.choices[0].finish_reason for c in answer] == [None] * (len(answer) - 1) + ["stop"]
    assert all(c.usage is None for c in answer)
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == stats.prompt_tokens
    assert usage_chunk.usage.completion_tokens == stats.completion_tokens
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert '"usage"' not in "".join(lines)  # no include_usage: no usage field at all


async def test_an_agent_that_does_not_stream_answers_in_one_delta() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            chunks = await in_thread(
                collect, s.sdk(), model="hello", messages=[{"role": "user", "content": "Bo"}]
            )
    contents = [c.choices[0].delta.content for c in chunks]
    assert contents == ["", "Hello, Bo", None]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_a_session_keeps_the_conversation_unless_the_client_resends_it() -> None:
    """Only-new-turn requests build the conversation in the session; a request that
    resends earlier turns is the conversation itself: the model sees it once, and the
    session neither adds to it nor keeps it."""
    session = {"session_id": "ada"}

    def said(*turns: tuple[str, str]) -> list[dict[str, str]]:
        return [{"role": role, "content": text} for role, text in turns]

    def seen(mock: MockLLM) -> list[tuple[str, str | None]]:
        return [(m["role"], m.get("content")) for m in mock.received[-1]["messages"]]

    with trio.fail_after(TIMEOUT):
        async with served(sessions=SessionStore(100, 600.0)) as s:
            sdk = s.sdk()
            ask = functools.partial(in_thread, sdk.chat.completions.create, model="ask")
            s.mock.script(MockReply(text="Hello Ada."), MockReply(text="You are Ada."))
            await ask(messages=said(("user", "I am Ada.")), metadata=session)
            await ask(messages=said(("user", "Who am I?")), metadata=session)
            remembered = [
                ("user", "I am Ada."),
                ("assistant", "Hello Ada."),
                ("user", "Who am I?"),
            ]
            assert seen(s.mock) == remembered  # the session's history, then the new turn

            resent = [*remembered, ("assistant", "You are Ada."), ("user", "Sure?")]
            s.mock.script(MockReply(text="Sure."))
            answer = await ask(messages=said(*resent), metadata=session)
            assert answer.choices[0].message.content == "Sure."
            assert seen(s.mock) == resent  # once, as sent: no history before it

            s.mock.script(MockReply(text="Yes."))
            await ask(messages=said(("user", "Still?")), metadata=session)
            # The resent turn was not remembered: the history is the first two turns.
            assert seen(s.mock) == [*remembered, ("assistant", "You are Ada."), ("user", "Still?")]


async def test_models_are_the_agents() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            client = s.sdk()
            models = await in_thread(client.models.list)
            one = await in_thread(client.models.retrieve, "ask")
            with pytest.raises(openai.NotFoundError) as missing:
                await in_thread(client.models.retrieve, "nobody")
            agents = sorted(s.runner.agents)
    assert [m.id for m in models.data] == agents
    assert {(m.object, m.owned_by) for m in models.data} == {("model", "agentflow_trio")}
    assert one.id == "ask" and one.created == models.data[0].created
    assert missing.value.code == "model_not_found"


# ------------------------------------------------------------------ errors


async def test_an_unknown_model_and_bad_bodies_are_typed_sdk_errors() -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            client = s.sdk()
            create = functools.partial(client.chat.completions.create, messages=messages)
            with pytest.raises(openai.NotFoundError) as unknown:
                await in_thread(create, model="gpt-4o")
            bad = []
            fields: dict[str, Any]
            for fields in (
                {"n": 2},
                {"logprobs": True},
                {"extra_body": {"colour": "blue"}},
                {"messages": []},
                {"messages": [{"content": "no role"}]},
                {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
                {"metadata": {"k": "v" * 513}},
            ):
                with pytest.raises(openai.BadRequestError) as refused:
                    await in_thread(create, **{"model": "hello", **fields})
                bad.append(refused.value)
            accepted = s.runner.statistics().accepted

    assert unknown.value.status_code == 404 and unknown.value.code == "model_not_found"
    assert "'gpt-4o' does not exist" in unknown.value.message
    assert [e.param for e in bad] == [
        "n",
        "logprobs",
        "colour",
        "messages",
        "messages[0]",
        "messages[0]",
        "metadata.k",
    ]
    assert {e.type for e in bad} == {"invalid_request_error"}
    assert "Unrecognized request argument supplied: colour" in bad[2].message
    assert accepted == 0  # none of them became an event


async def test_a_failed_agent_is_a_500_the_sdk_does_not_retry() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            results = ended(s.runner)
            client = s.sdk(max_retries=2)  # the server says not to
            with pytest.raises(openai.InternalServerError) as failed:
                await in_thread(
                    client.chat.completions.create,
                    model="boom",
                    messages=[{"role": "user", "content": "x"}],
                )
            await results.receive()
            completed = s.runner.statistics().completed
    assert failed.value.status_code == 500 and failed.value.code == "agent_failed"
    assert "RuntimeError: the agent broke" in failed.value.message
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert completed == 1  # run once


async def test_a_usage_limit_is_a_429_insufficient_quota() -> None:
    config = af.Config.from_mapping({"limits": {"max_requests": 1}})
    with trio.fail_after(TIMEOUT):
        async with served(config=config) as s:
            s.mock.script(OSLO_CALL, NEVER_ASKED)
            with pytest.raises(openai.RateLimitError) as limited:
                await in_thread(
                    s.sdk(max_retries=2).chat.completions.create, model="ask", messages=QUESTION
                )
            requests = s.mock.stats().requests
    assert limited.value.code == "usage_limit_exceeded"
    assert limited.value.type == "insufficient_quota"
    assert requests == 1  # not retried, the second model call never sent


async def test_a_timed_out_event_is_a_504() -> None:
    config = af.Config.from_mapping({"runner": {"event_timeout": 0.05}})
    with trio.fail_after(TIMEOUT):
        async with served({"forever": forever}, config) as s:
            with pytest.raises(openai.InternalServerError) as timed_out:
                await in_thread(
                    s.sdk().chat.completions.create,
                    model="forever",
                    messages=[{"role": "user", "content": "x"}],
                )
    assert timed_out.value.status_code == 504 and timed_out.value.code == "timed_out"


async def test_a_full_runner_is_a_503_to_retry() -> None:
    config = af.Config.from_mapping(
        {"runner": {"max_concurrent_events": 1, "event_buffer_size": 0}}
    )
    body = {"model": "forever", "messages": [{"role": "user", "content": "x"}]}
    agent, started = started_forever()
    with trio.fail_after(TIMEOUT):
        async with served({"forever": agent}, config) as s, trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(s.http.post, "/v1/chat/completions", json=body))
            await started.wait()
            refused = await s.http.post("/v1/chat/completions", json=body)
            nursery.cancel_scope.cancel()
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"


async def test_failing_before_any_text_is_an_http_error_after_is_an_error_chunk() -> None:
    messages: Any = [{"role": "user", "content": "x"}]
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            client = s.sdk()
            with pytest.raises(openai.InternalServerError) as before:
                await in_thread(collect, client, model="boom", messages=messages)

            def read_until_error() -> tuple[list[Any], openai.APIError]:
                seen: list[Any] = []
                with client.chat.completions.create(
                    model="half", messages=messages, stream=True
                ) as chunks:
                    try:
                        for chunk in chunks:
                            seen.append(chunk)
                    except openai.APIError as exc:
                        return seen, exc
                raise AssertionError("the stream ended without its error")

            seen, after = await in_thread(read_until_error)
    assert before.value.code == "agent_failed"
    assert [c.choices[0].delta.content for c in seen] == ["", "I was saying"]
    assert "broke mid-answer" in after.message
    assert isinstance(after.body, dict) and after.body["code"] == "agent_failed"


# ------------------------------------------------------------------ leaving


async def test_a_streaming_client_that_leaves_cancels_the_event() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            results = ended(s.runner)
            s.mock.script(STALLED)

            def first_text_then_leave() -> str:
                with s.sdk().chat.completions.create(
                    model="ask", messages=QUESTION, stream=True
                ) as chunks:
                    for chunk in chunks:
                        if chunk.choices[0].delta.content:
                            return chunk.choices[0].delta.content
                raise AssertionError("no text came")

            first = await in_thread(first_text_then_leave)
            result = await results.receive()
            requests = s.mock.stats().requests
    assert first and REPLY.startswith(first) and first != REPLY
    assert result.outcome is af.Outcome.CANCELLED and requests == 1


async def test_a_client_that_hangs_up_before_the_answer_cancels_the_event() -> None:
    body = b'{"model": "forever", "messages": [{"role": "user", "content": "hi"}]}'
    agent, started = started_forever()
    with trio.fail_after(TIMEOUT):
        async with served({"forever": agent}) as s:
            results = ended(s.runner)
            request = (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            ) % (len(body), body)
            stream = await trio.open_tcp_stream("127.0.0.1", s.http.base_url.port or 0)
            await stream.send_all(request)
            await started.wait()
            await stream.aclose()
            result = await results.receive()
    assert result.outcome is af.Outcome.CANCELLED


# ------------------------------------------------------------------ guards and the key


async def test_an_http10_stream_ends_with_done_and_the_connection_closes() -> None:
    # HTTP/1.0 (nginx's default upstream protocol) has no chunks: the server must close
    # the connection after [DONE], or the client waits for the end of the body forever.
    body = {"model": "ask", "messages": QUESTION, "stream": True}
    raw = json.dumps(body).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    ) % (len(raw), raw)
    with trio.fail_after(TIMEOUT):
        async with served() as s:
            results = ended(s.runner)
            s.mock.script(OSLO_CALL, MockReply(text=REPLY))
            answer = b""
            async with await trio.open_tcp_stream("127.0.0.1", s.http.base_url.port) as stream:
                await stream.send_all(request)
                while data := await stream.receive_some(65536):  # until the server closes
                    answer += data
            result = await results.receive()

    head, _, sse = answer.partition(b"\r\n\r\n")
    assert head.lower().startswith(b"http/1.1 200") and b"connection: close" in head.lower()
    lines = [line for line in sse.decode().split("\n") if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    chunks = [
        openai.types.chat.ChatCompletionChunk.model_validate_json(line[len("data: ") :])
        for line in lines[:-1]
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert result.outcome is af.Outcome.SUCCEEDED


async def test_the_guards_of_v1_events_answer_in_openais_shape() -> None:
    ok = {"model": "hello", "messages": [{"role": "user", "content": "x"}]}
    with trio.fail_after(TIMEOUT):
        async with served(max_body_bytes=200) as s:
            plain = await s.http.post(
                "/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"}
            )
            big = await s.http.post(
                "/v1/chat/completions",
                json={**ok, "messages": [{"role": "user", "content": "y" * 300}]},
            )
            rebound = await s.http.post(
                "/v1/chat/completions", json=ok, headers={"host": "evil.example"}
            )
            get = await s.http.get("/v1/chat/completions")
            accepted = s.runner.statistics().accepted
    assert plain.status_code == 415 and big.status_code == 413 and rebound.status_code == 421
    assert get.status_code == 405 and get.headers["allow"] == "POST"
    for answer in (plain, big, get):
        error = answer.json()["error"]
        assert error.keys() == {"message", "type", "param", "code"}
    assert accepted == 0


async def test_an_api_key_guards_every_endpoint_but_healthz() -> None:
    key = "sk-agentflow-5ecret"
    messages: Any = [{"role": "user", "content": "Cy"}]
    with trio.fail_after(TIMEOUT):
        async with served(api_key=key) as s:
            answer = await in_thread(
                s.sdk(api_key=key).chat.completions.create, model="hello", messages=messages
            )
            with pytest.raises(openai.AuthenticationError) as wrong:
                await in_thread(s.sdk(api_key=key + "x").models.list)
            bare = {
                path: await s.http.get(path)
                for path in ("/v1/models", "/v1/events/x", "/metrics", "/healthz")
            }
            events = await s.http.post("/v1/events", json={"type": "hello"})
            basic = await s.http.get("/v1/models", headers={"authorization": f"Basic {key}"})
            app = make_app(s.runner, api_key=key)
            app_text = repr(app) + repr(vars(app))

    assert answer.choices[0].message.content == "Hello, Cy"
    assert wrong.value.status_code == 401 and wrong.value.code == "invalid_api_key"
    assert bare.pop("/healthz").status_code == 200
    for refused in (*bare.values(), events, basic):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert key not in refused.text
    assert key not in app_text


async def test_an_empty_api_key_is_refused() -> None:
    async with Runner(agents={"hello": hello}) as runner:
        with pytest.raises(ValueError, match="api_key"):
            make_app(runner, api_key="")


@pytest.mark.parametrize(
    ("output", "content"),
    [
        ("plain text", "plain text"),
        ({"text": "t", "answer": "a"}, "t"),
        ({"answer": "a", "n": 1}, "a"),
        ({"text": 3}, '{"text":3}'),
        ([1, {"b": None}], '[1,{"b":null}]'),
        (None, "null"),
    ],
)
def test_answer_text(output: Any, content: str) -> None:
    from agentflow_trio.server._openai_face import answer_text

    assert answer_text(output) == content


def test_answer_text_refuses_what_json_cannot_carry() -> None:
    from agentflow_trio.server._openai_face import answer_text
    from agentflow_trio.server._wire import NotJSON

    with pytest.raises(NotJSON, match=r"output\.x is nan"):
        answer_text({"x": float("nan")})
