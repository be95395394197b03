"""The mock LLM injects every fault class on demand: per model name, per scripted reply.

Rules of this module (as trio-websocket's tests): loopback only, port 0, the real clock
(real sockets), every trio test body under an absolute ``trio.fail_after``. Streams are
read by hand (httpx2, raw sockets) so that what the mock sends is what is checked; the
official ``openai`` SDK shows a few faults look like the real service's. Timing
assertions have wide margins (a fault's delay is 0.3-0.5 s; "at once" is under half of it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx2
import openai
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from test_mock_llm import mock_in_thread, sse_events, streamed_text

from agentflow_trio.errors import ConfigError
from agentflow_trio.mockllm import Fault, MockLLM, MockReply, open_mock_llm
from agentflow_trio.mockllm._faults import KINDS
from agentflow_trio.mockllm._payloads import split_text

TIMEOUT = 10
CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello there"}]
TEXT = "one two three four five"
SLOW = 0.5  # seconds: a fault's delay; "at once" means well under half of it
PIECES = split_text(TEXT, 5)  # the content of each streamed chunk (stream_chunks=5)


def chat(model: str = "gpt-a", *, stream: bool = False, usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": HELLO}
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    return body


@asynccontextmanager
async def serving(**overrides: Any) -> AsyncIterator[tuple[MockLLM, httpx2.AsyncClient]]:
    overrides.setdefault("reply_text", TEXT)
    async with (
        open_mock_llm(**overrides) as mock,
        httpx2.AsyncClient(base_url=mock.url, timeout=TIMEOUT) as client,
    ):
        yield mock, client


async def raw_post(port: int, body: dict[str, Any], path: str = CHAT) -> trio.SocketStream:
    """Open a connection and send one POST; the caller reads and closes."""
    data = json.dumps(body).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    await stream.send_all(head.encode() + b"content-length: %d\r\n\r\n" % len(data) + data)
    return stream


async def read_events(response: httpx2.Response) -> tuple[list[Any], BaseException | None]:
    """The ``data:`` payloads of a streamed response (garbage kept as text) and the error
    that ended the reading, if any."""
    events: list[Any] = []
    try:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                try:
                    events.append(json.loads(data))
                except ValueError:
                    events.append(data)
    except httpx2.HTTPError as exc:
        return events, exc
    return events, None


async def wait_closed(mock: MockLLM) -> None:
    """Until the mock has no open connection (bounded by the test's fail_after)."""
    while mock.stats().open_connections:  # noqa: ASYNC110 (a socket closing: nothing to wait on)
        await trio.sleep(0.01)


# -- the value ----------------------------------------------------------------------------


def test_every_kind_is_constructible_and_documented() -> None:
    doc = Fault.__doc__ or ""
    for kind in KINDS:
        assert Fault(kind).kind == kind
        assert f"\n    {kind} " in doc, kind


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"kind": "explode"}, "unknown fault kind"),
        ({"kind": "reset", "after_chunks": 2}, "takes no after_chunks"),
        ({"kind": "rate_limit", "status": 503}, "takes no status"),
        ({"kind": "server_error", "status": 404}, "5xx"),
        ({"kind": "cut", "after_chunks": -1}, "after_chunks"),
        ({"kind": "malformed", "count": 0}, "count"),
        ({"kind": "server_error", "times": 0}, "times"),
        ({"kind": "server_error", "window": float("nan")}, "window"),
        ({"kind": "slow_first_token", "seconds": -1.0}, "seconds"),
    ],
)
def test_bad_faults_are_refused(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Fault(**kwargs)


@given(
    st.sampled_from(sorted(KINDS)).flatmap(
        lambda kind: st.builds(
            Fault,
            st.just(kind),
            **{
                name: strategy
                for name, strategy in {
                    "status": st.integers(500, 599),
                    "retry_after": st.none() | st.sampled_from([0.0, 0.5, 2.0]),
                    "after_chunks": st.integers(0, 9),
                    "count": st.integers(1, 20),
                    "seconds": st.none() | st.sampled_from([0.25, 3.0]),
                }.items()
                if name in KINDS[kind]
            },
            times=st.none() | st.integers(1, 5),
            start=st.sampled_from([0.0, 1.5]),
            window=st.none() | st.sampled_from([0.5, 10.0]),
        )
    )
)
def test_text_form_round_trips(fault: Fault) -> None:
    assert Fault.parse(fault.spec()) == fault


def test_text_form_and_config_forms() -> None:
    assert Fault.parse("server_error:status=503, window=2") == Fault(
        "server_error", status=503, window=2.0
    )
    assert Fault.parse("rate_limit:retry_after=none") == Fault("rate_limit", retry_after=None)
    assert Fault("reset").spec() == "reset"
    for bad in ("cut:after_chunks", "cut:after_chunks=x", "cut:kind=reset", "cut:nope=1"):
        with pytest.raises(ValueError):
            Fault.parse(bad)
    mock = MockLLM()
    config = attrs.evolve(
        mock.config,
        faults={"a": "reset", "b": Fault("no_done"), "c": ["rate_limit:times=1", Fault("cut")]},
    )
    assert config.faults == {
        "a": (Fault("reset"),),
        "b": (Fault("no_done"),),
        "c": (Fault("rate_limit", times=1), Fault("cut")),
    }
    for faults in ({"a": "explode"}, {"": "reset"}, {"a": 3}, ["reset"]):
        with pytest.raises(ConfigError) as info:
            attrs.evolve(mock.config, faults=faults)
        assert info.value.key == "faults"


# -- error answers ------------------------------------------------------------------------


async def test_rate_limit_with_and_without_retry_after() -> None:
    faults = {"gpt-b": Fault("rate_limit", retry_after=1.5), "gpt-c": "rate_limit:retry_after=none"}
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            answer = await client.post(CHAT, json=chat("gpt-b"))
            assert answer.status_code == 429
            assert answer.headers["retry-after"] == "2"
            assert answer.headers["retry-after-ms"] == "1500"
            assert answer.json()["error"]["code"] == "rate_limit_exceeded"
            bare = await client.post(CHAT, json=chat("gpt-c"))
            assert bare.status_code == 429
            assert "retry-after" not in bare.headers and "retry-after-ms" not in bare.headers
            assert (await client.post(CHAT, json=chat("gpt-a"))).status_code == 200
            stats = mock.stats()
            assert stats.faults == {"rate_limit": 2}
            assert stats.faults_by_model == {
                "gpt-b": {"rate_limit": 1},
                "gpt-c": {"rate_limit": 1},
            }
            assert stats.by_model == {"gpt-a": 1, "gpt-b": 1, "gpt-c": 1}
            assert stats.by_status == {429: 2, 200: 1}
            assert stats.rate_limited == 0  # that one counts the random rate_limit_rate


async def test_server_error_once_then_healthy() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(faults={"gpt-b": Fault("server_error", times=1)}) as (mock, client):
            statuses = [(await client.post(CHAT, json=chat("gpt-b"))).status_code for _ in range(3)]
            assert statuses == [500, 200, 200]
            assert mock.stats().faults_by_model == {"gpt-b": {"server_error": 1}}
            mock.reset()  # the rule's count starts again
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 500


async def test_503_persistent_for_one_model_only() -> None:
    faults = {"gpt-b": Fault("server_error", status=503)}
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            for _ in range(3):
                failed = await client.post(CHAT, json=chat("gpt-b"))
                assert failed.status_code == 503
                assert failed.json()["error"]["type"] == "server_error"
                assert (await client.post(CHAT, json=chat("gpt-a"))).status_code == 200
            embed = await client.post("/v1/embeddings", json={"model": "gpt-b", "input": "x"})
            assert embed.status_code == 503
            assert (await client.get("/v1/models")).status_code == 200  # never faulted
            stats = mock.stats()
            assert stats.by_model == {"gpt-a": 3, "gpt-b": 4}
            assert stats.faults == {"server_error": 4}


async def test_context_length_and_content_filter_bodies() -> None:
    faults = {"small": Fault("context_length"), "strict": Fault("content_filter")}
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            small = await client.post(CHAT, json=chat("small", stream=True))
            assert small.status_code == 400
            error = small.json()["error"]
            assert error["code"] == "context_length_exceeded"
            assert error["type"] == "invalid_request_error" and error["param"] == "messages"
            assert "maximum context length" in error["message"]
            strict = await client.post(CHAT, json=chat("strict"))
            assert strict.status_code == 400
            error = strict.json()["error"]
            assert error["code"] == "content_filter"
            assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
            assert error["innererror"]["content_filter_result"]["violence"]["filtered"]
            ollama = await client.post("/api/chat", json={"model": "small", "messages": HELLO})
            assert ollama.status_code == 400 and "context length" in ollama.json()["error"]
            assert mock.stats().faults == {"context_length": 2, "content_filter": 1}


# -- the connection -----------------------------------------------------------------------


async def test_reset_before_any_response_byte() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(faults={"gpt-b": "reset"}) as (mock, client):
            stream = await raw_post(mock.port, chat("gpt-b"))
            with pytest.raises(trio.BrokenResourceError):  # ECONNRESET, not an answer
                async with stream:
                    while await stream.receive_some(65536):
                        raise AssertionError("the mock answered")
            with pytest.raises(httpx2.TransportError):
                await client.post(CHAT, json=chat("gpt-b"))
            assert (await client.post(CHAT, json=chat("gpt-a"))).status_code == 200
            assert mock.stats().faults == {"reset": 2}
            assert 200 in mock.stats().by_status and len(mock.stats().by_status) == 1


async def test_no_response_until_the_client_leaves_or_seconds() -> None:
    faults = {"gpt-b": Fault("no_response"), "gpt-c": Fault("no_response", seconds=0.2)}
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            stream = await raw_post(mock.port, chat("gpt-b"))
            with trio.move_on_after(SLOW) as silent:
                await stream.receive_some(65536)
            assert silent.cancelled_caught  # nothing came, and the connection stayed open
            assert mock.stats().open_connections == 1
            await stream.aclose()
            await wait_closed(mock)  # the client left: so does the mock
            stream = await raw_post(mock.port, chat("gpt-c"))
            async with stream:
                assert await stream.receive_some(65536) == b""  # closed after 0.2 s, no answer
            with pytest.raises(httpx2.ReadTimeout):
                await client.post(CHAT, json=chat("gpt-b"), timeout=0.2)
            assert mock.stats().faults == {"no_response": 3}
            assert mock.stats().by_status == {}


# -- streams ------------------------------------------------------------------------------


async def test_slow_first_token_sends_the_head_at_once() -> None:
    faults = {"gpt-b": Fault("slow_first_token", seconds=SLOW)}
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            start = trio.current_time()
            async with client.stream("POST", CHAT, json=chat("gpt-b", stream=True)) as response:
                head_at = trio.current_time() - start
                events, error = await read_events(response)
                first_at = trio.current_time() - start
            assert error is None and head_at < SLOW / 2 <= SLOW <= first_at
            assert streamed_text(events[:-1]) == TEXT and events[-1] == "[DONE]"
            start = trio.current_time()
            plain = await client.post(CHAT, json=chat("gpt-b"))
            assert plain.status_code == 200 and trio.current_time() - start >= SLOW
            assert mock.stats().faults == {"slow_first_token": 2}


async def test_cut_after_n_chunks_closes_inside_the_body() -> None:
    faults = {"gpt-b": Fault("cut", after_chunks=2), "gpt-0": Fault("cut", after_chunks=0)}
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            async with client.stream("POST", CHAT, json=chat("gpt-b", stream=True)) as response:
                assert response.status_code == 200
                events, error = await read_events(response)
            assert isinstance(error, httpx2.RemoteProtocolError)
            assert len(events) == 2 and streamed_text(events) == "".join(PIECES[:2])
            async with client.stream("POST", CHAT, json=chat("gpt-0", stream=True)) as response:
                events, error = await read_events(response)
            assert events == [] and isinstance(error, httpx2.RemoteProtocolError)
            with pytest.raises(httpx2.RemoteProtocolError):
                await client.post(CHAT, json=chat("gpt-b"))  # plain: half the body
            await wait_closed(mock)
            assert mock.stats().faults_by_model == {"gpt-b": {"cut": 2}, "gpt-0": {"cut": 1}}


async def test_stall_after_n_chunks_keeps_the_connection_open() -> None:
    faults = {"gpt-b": Fault("stall", after_chunks=1), "gpt-c": Fault("stall", seconds=0.2)}
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            timeout = httpx2.Timeout(TIMEOUT, read=SLOW)
            body = chat("gpt-b", stream=True)
            async with client.stream("POST", CHAT, json=body, timeout=timeout) as response:
                events, error = await read_events(response)
            assert isinstance(error, httpx2.ReadTimeout)
            assert streamed_text(events) == PIECES[0]
            await wait_closed(mock)  # our client closed; the mock's side let go
            body = chat("gpt-c", stream=True)
            async with client.stream("POST", CHAT, json=body) as response:
                events, error = await read_events(response)
            assert isinstance(error, httpx2.RemoteProtocolError) and len(events) == 1
            with pytest.raises(httpx2.ReadTimeout):
                await client.post(CHAT, json=chat("gpt-b"), timeout=timeout)
            assert mock.stats().faults == {"stall": 3}


async def test_malformed_events_in_the_middle() -> None:
    faults = {"gpt-b": Fault("malformed", after_chunks=2), "gpt-c": "malformed:count=3"}
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            answer = await client.post(CHAT, json=chat("gpt-b", stream=True))
            events = answer.text.split("\n\n")
            assert events[2].startswith("data: {") and "garbage" in events[2]
            with pytest.raises(ValueError):
                json.loads(events[2][len("data: ") :])
            good = sse_events("\n\n".join(events[:2] + events[3:]))
            assert streamed_text(good[:-1]) == TEXT and good[-1] == "[DONE]"
            answer = await client.post(CHAT, json=chat("gpt-c", stream=True))
            assert answer.text.count("garbage") == 3
            plain = await client.post(CHAT, json=chat("gpt-b"))
            assert plain.status_code == 200
            with pytest.raises(ValueError):
                plain.json()
            ollama = await client.post("/api/chat", json={"model": "gpt-b", "messages": HELLO})
            lines = ollama.text.splitlines()
            assert "garbage" in lines[2] and json.loads(lines[-1])["done"] is True
            assert mock.stats().faults == {"malformed": 4}


async def test_no_done_ends_cleanly_after_finish_reason_and_usage() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(faults={"gpt-b": "no_done"}) as (mock, client):
            answer = await client.post(CHAT, json=chat("gpt-b", stream=True))
            assert answer.status_code == 200  # the chunked body ended properly
            events = sse_events(answer.text)
            assert "[DONE]" not in events
            assert events[-2]["choices"][0]["finish_reason"] == "stop"
            assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 5
            assert streamed_text(events) == TEXT
            assert mock.stats().faults == {"no_done": 1}


# -- when ---------------------------------------------------------------------------------


async def test_down_for_a_window_then_healthy() -> None:
    faults = {
        "gpt-b": Fault("server_error", status=503, window=SLOW),
        "gpt-r": Fault("reset", window=SLOW),
    }
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            start = trio.current_time()
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 503
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 503
            with pytest.raises(httpx2.TransportError):
                await client.post(CHAT, json=chat("gpt-r"))
            await trio.sleep_until(start + SLOW * 1.2)
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 200
            assert (await client.post(CHAT, json=chat("gpt-r"))).status_code == 200
            assert mock.stats().faults == {"server_error": 2, "reset": 1}


async def test_start_window_and_rules_in_order() -> None:
    faults = {
        "gpt-b": Fault("server_error", start=0.3, window=0.3),
        "*": (Fault("rate_limit", times=1), Fault("server_error", times=1)),
    }
    with trio.fail_after(TIMEOUT):
        async with serving(faults=faults) as (mock, client):
            start = trio.current_time()
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 200
            await trio.sleep_until(start + 0.35)
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 500
            await trio.sleep_until(start + 0.7)
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 200
            others = [(await client.post(CHAT, json=chat(m))).status_code for m in "xyzw"]
            assert others == [429, 500, 200, 200]  # "*": one clock and count for all
            assert mock.stats().faults_by_model == {
                "gpt-b": {"server_error": 1},
                "x": {"rate_limit": 1},
                "y": {"server_error": 1},
            }


async def test_faults_can_be_replaced_while_serving() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 200
            mock.config = attrs.evolve(mock.config, faults={"gpt-b": "server_error:status=502"})
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 502
            posted = await client.post("/mock/faults", json={"gpt-b": ["rate_limit", "reset"]})
            assert posted.json() == {"faults": {"gpt-b": ["rate_limit", "reset"]}}
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 429
            assert (await client.get("/mock/faults")).json()["faults"]["gpt-b"][0] == "rate_limit"
            bad = await client.post("/mock/faults", json={"gpt-b": "explode"})
            assert bad.status_code == 400 and "unknown fault kind" in bad.text
            assert (await client.post("/mock/faults", json=[])).status_code == 400
            assert (await client.put("/mock/faults")).status_code == 405
            assert (await client.post("/mock/faults", json={})).json() == {"faults": {}}
            assert (await client.post(CHAT, json=chat("gpt-b"))).status_code == 200


# -- scripted replies ---------------------------------------------------------------------


async def test_a_scripted_reply_carries_its_fault_once() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving() as (mock, client):
            mock.script(
                MockReply(text="a b c d", fault=Fault("cut", after_chunks=1, times=5)),
                MockReply(fault=Fault("rate_limit", retry_after=None)),
            )
            async with client.stream("POST", CHAT, json=chat(stream=True)) as response:
                events, error = await read_events(response)
            assert isinstance(error, httpx2.RemoteProtocolError)
            assert streamed_text(events) == split_text("a b c d", 5)[0]
            assert (await client.post(CHAT, json=chat())).status_code == 429
            assert (await client.post(CHAT, json=chat())).status_code == 200  # script spent
            script = [{"text": "x y", "fault": "no_done"}, {"fault": {"kind": "stall"}}]
            assert (await client.post("/mock/script", json=script)).json() == {"queued": 2}
            answer = await client.post(CHAT, json=chat(stream=True))
            assert "[DONE]" not in answer.text and "x y" in streamed_text(sse_events(answer.text))
            bad = await client.post("/mock/script", json=[{"fault": {"kind": "nope"}}])
            assert bad.status_code == 400
            stats = mock.stats()
            assert stats.scripted == 3 and stats.faults == {"cut": 1, "rate_limit": 1, "no_done": 1}


async def test_scripted_replies_for_one_model() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(faults={"gpt-a": "server_error:times=1"}) as (mock, client):
            mock.script(MockReply(text="for b", model="gpt-b"), MockReply(text="for anyone"))
            first = await client.post(CHAT, json=chat("gpt-a"))
            assert first.status_code == 500  # the model's rule first: no reply consumed
            answer = await client.post(CHAT, json=chat("gpt-a"))
            assert answer.json()["choices"][0]["message"]["content"] == "for anyone"
            assert (await client.post(CHAT, json=chat("gpt-a"))).json()["choices"][0]["message"][
                "content"
            ] == TEXT
            answer = await client.post(CHAT, json=chat("gpt-b"))
            assert answer.json()["choices"][0]["message"]["content"] == "for b"


async def test_azure_faults_follow_the_deployment() -> None:
    with trio.fail_after(TIMEOUT):
        async with serving(faults={"dep-b": Fault("server_error", status=503)}) as (mock, client):
            path = "/openai/deployments/{}/chat/completions?api-version=2024-06-01"
            for deployment, status in (("dep-a", 200), ("dep-b", 503)):
                answer = await client.post(
                    path.format(deployment), json={"messages": HELLO}, headers={"api-key": "k"}
                )
                assert answer.status_code == status
            assert mock.stats().by_model == {"dep-a": 1, "dep-b": 1}


# -- the official SDK sees the real service's errors --------------------------------------


def test_openai_sdk_sees_each_fault_as_the_real_service() -> None:
    faults = {
        "limited": "rate_limit:retry_after=0.1",
        "down": "server_error:status=503",
        "small": "context_length",
        "strict": "content_filter",
        "gone": "reset",
        "partial": "no_done",
        "cut": "cut:after_chunks=2",
    }
    with (
        mock_in_thread(faults=faults, reply_text=TEXT) as (mock, _),
        openai.OpenAI(
            base_url=mock.url + "/v1", api_key="x", max_retries=0, timeout=TIMEOUT
        ) as sdk,
    ):

        def create(model: str, **extra: Any) -> Any:
            return sdk.chat.completions.create(model=model, messages=HELLO, **extra)

        with pytest.raises(openai.RateLimitError) as limited:
            create("limited")
        assert limited.value.response.headers["retry-after-ms"] == "100"
        with pytest.raises(openai.InternalServerError) as down:
            create("down")
        assert down.value.status_code == 503
        with pytest.raises(openai.BadRequestError) as small:
            create("small")
        assert small.value.code == "context_length_exceeded"
        with pytest.raises(openai.BadRequestError) as strict:
            create("strict")
        assert strict.value.code == "content_filter"
        with pytest.raises(openai.APIConnectionError):
            create("gone")
        chunks = list(create("partial", stream=True, stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
        with pytest.raises(openai.APIConnectionError):
            list(create("cut", stream=True))
