"""The lean HTTP/1.1 transport: pool, framing, errors, streams and cancellation.

Rules of this module: pool timing (timeouts, idle expiry, lifetime, queueing) runs on
in-memory streams against a scripted server under the autojump clock (exact, instant).
Tests on real sockets (the mock LLM, hypercorn serving a tiny ASGI app) bind 127.0.0.1
port 0, use the real clock and wrap their body in an absolute ``trio.fail_after``.
"""

from __future__ import annotations

import ast
import gzip
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httptools
import httpx2
import hypercorn
import hypercorn.trio
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import agentflow_trio.llm
from agentflow_trio.config import LLMConfig
from agentflow_trio.errors import (
    AuthenticationError,
    ConfigError,
    LLMConnectError,
    LLMReadError,
    LLMTimeoutError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    TransportError,
)
from agentflow_trio.llm import (
    ChatRequest,
    EmbeddingRequest,
    PoolStatistics,
    ProviderStack,
    collect_stream,
    open_provider,
    user,
)
from agentflow_trio.llm._lean import (
    HTTPX_ERRORS,
    SESSION_ERRORS,
    LeanHTTPError,
    LeanSession,
    LeanTransport,
    PoolSet,
    PoolSettings,
)
from agentflow_trio.llm._lean import exceptions as lean_exceptions
from agentflow_trio.llm._lean.mapping import to_httpx, to_llm_error
from agentflow_trio.llm._lines import SSEDecoder
from agentflow_trio.llm._open_session import open_http_session
from agentflow_trio.llm.http import HTTPSession, map_exception
from agentflow_trio.llm.ollama import OllamaProvider
from agentflow_trio.llm.openai import OpenAIProvider, openai_headers
from agentflow_trio.mockllm import MockLLM, MockReply, open_mock_llm

TIMEOUT = 30
URL = "http://fake.test/v1/chat/completions"
REQUEST = ChatRequest((user("hello"),))
JSON_HEADERS = {"content-type": "application/json"}


# -- a scripted server on in-memory streams ---------------------------------------------

Answer = Callable[[trio.abc.Stream, int], Awaitable[bool]]
"""Writes the answer to request number n (from 0) on a stream; False closes the stream."""


def reply(
    body: bytes = b'{"ok": true}',
    *,
    status: int = 200,
    headers: tuple[tuple[str, str], ...] = (),
    content_type: str = "application/json",
) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"content-type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if not any(name.lower() == "transfer-encoding" for name, _ in headers):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def answering(*responses: bytes, keep: bool = True) -> Answer:
    """Answer request n with responses[n] (the last one for later requests)."""

    async def answer(stream: trio.abc.Stream, n: int) -> bool:
        await stream.send_all(responses[min(n, len(responses) - 1)])
        return keep

    return answer


class _Requests:
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.done: list[bytes] = []
        self._body = b""

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append(self._body)
        self._body = b""


class FakeServer:
    """Accepts "connections" (memory stream pairs) and answers with ``answer``."""

    def __init__(self, nursery: trio.Nursery, answer: Answer) -> None:
        self.nursery = nursery
        self.answer = answer
        self.connections = 0
        self.closed_by_client = 0
        self.bodies: list[bytes] = []
        self.connect_delay = 0.0

    async def connect(self) -> trio.abc.Stream:
        await trio.sleep(self.connect_delay)
        client, server = trio.testing.memory_stream_pair()
        self.connections += 1
        self.nursery.start_soon(self._serve, server)
        return client

    async def _serve(self, stream: trio.abc.Stream) -> None:
        requests = _Requests()
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    self.closed_by_client += 1
                    return
                requests.parser.feed_data(bytes(data))
                while requests.done:
                    self.bodies.append(requests.done.pop(0))
                    if not await self.answer(stream, len(self.bodies) - 1):
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


def fake_session(server: FakeServer, **pool: Any) -> LeanSession:
    pools = PoolSet(PoolSettings(**pool), connector=lambda origin, context: server.connect)
    return LeanSession(pools, JSON_HEADERS, "fake")


@asynccontextmanager
async def scripted(answer: Answer, **pool: Any) -> AsyncIterator[tuple[FakeServer, LeanSession]]:
    async with trio.open_nursery() as nursery:
        server = FakeServer(nursery, answer)
        session = fake_session(server, **pool)
        try:
            yield server, session
        finally:
            await session.aclose()
            nursery.cancel_scope.cancel()


def settled(stats: PoolStatistics | None) -> bool:
    assert stats is not None
    return stats.requests == stats.queued == stats.active == 0 and stats.connections == stats.idle


# -- keep-alive and the pool's settings (autojump clock) ---------------------------------


async def test_sequential_calls_reuse_one_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted(answering(reply())) as (server, session):
        for _ in range(5):
            assert await session.post_json(URL, b"{}") == {"ok": True}
        stats = session.pool_statistics()
        assert (server.connections, stats.opened, stats.idle) == (1, 1, 1)
        assert settled(stats)


async def test_request_head_is_built_once_and_complete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[bytes] = []

    async def answer(stream: trio.abc.Stream, n: int) -> bool:
        await stream.send_all(reply())
        return True

    async with trio.open_nursery() as nursery:
        server = FakeServer(nursery, answer)
        original = server.connect

        async def recording() -> trio.abc.Stream:
            stream = await original()
            real_send = stream.send_all

            async def send_all(data: bytes | bytearray | memoryview) -> None:
                seen.append(bytes(data))
                await real_send(data)

            stream.send_all = send_all  # type: ignore[method-assign]
            return stream

        pools = PoolSet(PoolSettings(), connector=lambda origin, context: recording)
        session = LeanSession(pools, {"authorization": "Bearer k", **JSON_HEADERS}, "fake")
        await session.post_json(URL + "?api-version=1", b'{"a": 1}')
        await session.aclose()
        nursery.cancel_scope.cancel()
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?api-version=1 HTTP/1.1"
    assert b"host: fake.test" in lines and b"authorization: Bearer k" in lines
    assert b"content-length: 8" in lines and body == b'{"a": 1}'
    assert server.bodies == [b'{"a": 1}']


async def test_concurrency_is_bounded_and_excess_calls_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(stream: trio.abc.Stream, n: int) -> bool:
        await trio.sleep(1)
        await stream.send_all(reply())
        return True

    async with scripted(slow, max_connections=2) as (server, session):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(session.post_json, URL, b"{}")
            await trio.testing.wait_all_tasks_blocked()
            stats = session.pool_statistics()
            assert (stats.active, stats.queued, stats.requests) == (2, 3, 5)
        assert server.connections == 2
        assert settled(session.pool_statistics())


async def test_waiting_for_a_slot_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def never(stream: trio.abc.Stream, n: int) -> bool:
        await trio.sleep_forever()
        return True

    async with scripted(never, max_connections=1, connection_timeout=0.5) as (_, session):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.post_json, URL, b"{}")
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            with pytest.raises(LLMTimeoutError) as info:
                await session.post_json(URL, b"{}")
            assert trio.current_time() - start == pytest.approx(0.5)
            assert isinstance(info.value.__cause__, lean_exceptions.PoolTimeout)
            nursery.cancel_scope.cancel()
        assert settled(session.pool_statistics())


async def test_connect_timeout_and_refusal(autojump_clock: trio.testing.MockClock) -> None:
    async with scripted(answering(reply()), connection_timeout=2) as (server, session):
        server.connect_delay = 10
        with pytest.raises(LLMTimeoutError) as timed_out:
            await session.post_json(URL, b"{}")
        assert isinstance(timed_out.value.__cause__, lean_exceptions.ConnectTimeout)
        assert settled(session.pool_statistics())

    async def refuse() -> trio.abc.Stream:
        raise ConnectionRefusedError(111, "Connection refused")

    pools = PoolSet(PoolSettings(), connector=lambda origin, context: refuse)
    session = LeanSession(pools, JSON_HEADERS, "fake")
    with pytest.raises(LLMConnectError, match="refused") as refused:
        await session.post_json(URL, b"{}")
    assert refused.value.deployment == "fake"
    assert settled(session.pool_statistics())


async def test_request_timeout_closes_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def late(stream: trio.abc.Stream, n: int) -> bool:
        if n == 0:
            await trio.sleep(100)
        await stream.send_all(reply())
        return True

    async with scripted(late, request_timeout=3) as (server, session):
        start = trio.current_time()
        with pytest.raises(LLMTimeoutError) as info:
            await session.post_json(URL, b"{}")
        assert trio.current_time() - start == pytest.approx(3)
        assert isinstance(info.value.__cause__, lean_exceptions.ReadTimeout)
        assert session.pool_statistics().connections == 0
        assert await session.post_json(URL, b"{}") == {"ok": True}
        assert server.connections == 2


async def test_an_enclosing_deadline_applies_instead_of_request_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def never(stream: trio.abc.Stream, n: int) -> bool:
        await trio.sleep_forever()
        return True

    async with scripted(never, request_timeout=60) as (_, session):
        with trio.move_on_after(2) as scope:
            await session.post_json(URL, b"{}")
        assert scope.cancelled_caught  # the caller's own deadline, not an LLMTimeoutError
        assert settled(session.pool_statistics())
        assert session.pool_statistics().connections == 0


async def test_idle_connections_expire_above_the_floor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(stream: trio.abc.Stream, n: int) -> bool:
        await trio.sleep(0.1)
        await stream.send_all(reply())
        return True

    for floor, opened_after in ((0, 4), (1, 3)):
        pool = {"idle_timeout": 10, "min_connections": floor, "max_connections": 4}
        async with scripted(slow, **pool) as (server, session):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(session.post_json, URL, b"{}")
            assert session.pool_statistics().idle == 3
            await trio.sleep(11)
            await session.post_json(URL, b"{}")
            stats = session.pool_statistics()
            assert stats.opened == server.connections == opened_after
            assert stats.connections == 1  # expired ones closed, the floor (or a new one) kept


async def test_no_idle_connection_kept_with_idle_timeout_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted(answering(reply()), idle_timeout=0) as (server, session):
        for _ in range(3):
            await session.post_json(URL, b"{}")
        assert server.connections == 3
        assert session.pool_statistics().connections == 0


async def test_connections_retire_after_their_lifetime(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted(answering(reply()), max_connection_lifetime=5) as (server, session):
        await session.post_json(URL, b"{}")
        await trio.sleep(4)
        await session.post_json(URL, b"{}")
        assert server.connections == 1
        await trio.sleep(2)
        await session.post_json(URL, b"{}")
        assert server.connections == 2
        assert session.pool_statistics().connections == 1


async def test_min_connections_are_pre_opened_and_used(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(stream: trio.abc.Stream, n: int) -> bool:
        await trio.sleep(0.1)
        await stream.send_all(reply())
        return True

    async with scripted(slow, min_connections=3) as (server, session):
        await session.warm_up(3, URL, 5)
        assert (server.connections, session.pool_statistics().idle) == (3, 3)
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(session.post_json, URL, b"{}")
        assert server.connections == 3 and len(server.bodies) == 3


# -- stale connections, Connection: close, framing --------------------------------------


async def test_a_kept_alive_connection_closed_by_the_server_is_retried_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The server answers, then closes the connection without saying so: the next request
    # finds it closed when writing, and goes out once more on a new connection.
    async with scripted(answering(reply(), keep=False)) as (server, session):
        await session.post_json(URL, b'{"n": 1}')
        await trio.testing.wait_all_tasks_blocked()
        assert await session.post_json(URL, b'{"n": 2}') == {"ok": True}
        assert server.connections == 2
        assert server.bodies == [b'{"n": 1}', b'{"n": 2}']  # each request processed once


async def test_a_request_that_was_sent_is_never_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def answer_once(stream: trio.abc.Stream, n: int) -> bool:
        if n == 0:
            await stream.send_all(reply())
            return True
        return False  # read the request, then hang up without an answer

    async with scripted(answer_once) as (server, session):
        await session.post_json(URL, b"{}")
        with pytest.raises(LLMReadError, match="without answering"):
            await session.post_json(URL, b"{}")  # reused connection
        with pytest.raises(LLMReadError, match="without answering"):
            await session.post_json(URL, b"{}")  # fresh connection
        assert len(server.bodies) == 3 and server.connections == 2
        assert settled(session.pool_statistics())


async def test_connection_close_is_honoured(autojump_clock: trio.testing.MockClock) -> None:
    closing = reply(headers=(("Connection", "close"),))
    async with scripted(answering(closing)) as (server, session):
        for _ in range(3):
            await session.post_json(URL, b"{}")
        await trio.testing.wait_all_tasks_blocked()
        assert server.connections == server.closed_by_client == 3
        assert session.pool_statistics().connections == 0


async def test_http10_answer_is_not_kept(autojump_clock: trio.testing.MockClock) -> None:
    old = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    async with scripted(answering(old)) as (server, session):
        await session.post_json(URL, b"{}")
        await session.post_json(URL, b"{}")
        assert server.connections == 2


@pytest.mark.parametrize(
    ("raw", "reused"),
    [
        (reply(b'{"x": [1, 2]}'), True),
        (
            reply(headers=(("Transfer-Encoding", "chunked"),), body=chunked(b'{"x"', b": [1, 2]}")),
            True,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + reply(b'{"x": [1, 2]}'), True),
        (b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + reply(b'{"x": [1, 2]}'), True),
        (reply(b'{"x": [1, 2]}') + b"HTTP/1.1 200 OK\r\n", False),  # bytes after the answer
        # a whole answer nobody asked for after it: its body is not part of this one
        (reply(b'{"x": [1, 2]}') + reply(b'{"y": 0}'), False),
        (
            reply(b'{"x": [1, 2]}', headers=(("content-encoding", "gzip"),))
            .replace(
                b"content-length: 13", b"content-length: %d" % len(gzip.compress(b'{"x": [1, 2]}'))
            )
            .replace(b'{"x": [1, 2]}', gzip.compress(b'{"x": [1, 2]}')),
            True,
        ),
    ],
    ids=[
        "length",
        "chunked",
        "100-continue",
        "103-early-hints",
        "extra-bytes",
        "extra-answer",
        "gzip",
    ],
)
async def test_response_framing(
    raw: bytes, reused: bool, autojump_clock: trio.testing.MockClock
) -> None:
    async with scripted(answering(raw)) as (server, session):
        assert await session.post_json(URL, b"{}") == {"x": [1, 2]}
        assert await session.post_json(URL, b"{}") == {"x": [1, 2]}
        assert server.connections == (1 if reused else 2)


async def test_body_delimited_by_close(autojump_clock: trio.testing.MockClock) -> None:
    raw = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"x": 1}'
    async with scripted(answering(raw, keep=False)) as (server, session):
        assert await session.post_json(URL, b"{}") == {"x": 1}
        assert await session.post_json(URL, b"{}") == {"x": 1}
        assert server.connections == 2


@settings(deadline=None, max_examples=40)
@given(
    body=st.binary(min_size=0, max_size=300).map(lambda b: b'{"data": "%s"}' % b.hex().encode()),
    pieces=st.integers(1, 6),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
)
def test_any_split_of_a_chunked_answer_reads_the_same(
    body: bytes, pieces: int, cuts: list[int]
) -> None:
    size = max(1, len(body) // pieces)
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    raw = reply(chunked(*parts), headers=(("Transfer-Encoding", "chunked"),))
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    segments = [raw[a:b] for a, b in itertools.pairwise(points) if b > a]

    async def answer(stream: trio.abc.Stream, n: int) -> bool:
        for segment in segments:
            await stream.send_all(segment)
            await trio.sleep(0.001)
        return True

    async def main() -> None:
        async with scripted(answer) as (server, session):
            for _ in range(2):
                assert await session.post_json(URL, b"{}") == {"data": body[10:-2].decode()}
            assert server.connections == 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- failures mid-response, status mapping ------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (reply(b"x" * 100)[:-50], "mid-response"),
        (
            reply(chunked(b"x" * 10, b"y" * 10), headers=(("Transfer-Encoding", "chunked"),))[:-12],
            "mid-response",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-ty", "in the response head"),
        (b"", "without answering"),
    ],
    ids=["length", "chunked", "head", "nothing"],
)
async def test_a_dropped_connection_is_a_read_error(
    raw: bytes, match: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with scripted(answering(raw, keep=False)) as (_, session):
        with pytest.raises(LLMReadError, match=match) as info:
            await session.post_json(URL, b"{}")
        assert isinstance(info.value.__cause__, lean_exceptions.ReadFailed)
        assert settled(session.pool_statistics())
        assert session.pool_statistics().connections == 0


async def test_garbage_is_a_protocol_error(autojump_clock: trio.testing.MockClock) -> None:
    async with scripted(answering(b"SMTP ready\r\n\r\n")) as (_, session):
        with pytest.raises(LLMReadError, match="malformed HTTP response") as info:
            await session.post_json(URL, b"{}")
        assert isinstance(info.value.__cause__, lean_exceptions.ProtocolFailed)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "BadRequestError"),
        (401, "AuthenticationError"),
        (404, "NotFoundError"),
        (429, "RateLimitError"),
        (500, "ServerError"),
        (503, "ServerError"),
        (418, "APIStatusError"),
    ],
)
async def test_status_errors(
    status: int, kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    page = b'{"error": {"message": "nope %d"}}' % status
    raw = reply(page, status=status, headers=(("Retry-After", "3"),))
    async with scripted(answering(raw, reply())) as (server, session):
        with pytest.raises(Exception) as info:
            await session.post_json(URL, b"{}")
        error = info.value
        assert type(error).__name__ == kind
        assert error.status == status and f"nope {status}" in error.excerpt  # type: ignore[attr-defined]
        assert error.retry_after == 3.0  # type: ignore[attr-defined]
        await session.post_json(URL, b"{}")  # the connection stays usable after an error status
        assert server.connections == 1


async def test_bodies_that_are_not_json(autojump_clock: trio.testing.MockClock) -> None:
    html = reply(b"<p>hi</p>", content_type="text/html")
    async with scripted(answering(html, reply(b'{"a": '))) as (_, session):
        with pytest.raises(ResponseFormatError, match="text/html") as info:
            await session.post_json(URL, b"{}")
        assert info.value.excerpt == "<p>hi</p>" and info.value.deployment == "fake"
        with pytest.raises(ResponseFormatError, match="malformed JSON"):
            await session.post_json(URL, b"{}")


async def test_misuse_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    async with scripted(answering(reply())) as (server, session):
        with pytest.raises(ConfigError):
            await session.post_json("ftp://fake.test/x", b"{}")
        with pytest.raises(ConfigError, match="headers"):
            LeanSession(PoolSet(PoolSettings()), {"x-evil": "a\r\nhost: b"}, "fake")
        await session.aclose()
        with pytest.raises(TransportError, match="closed"):
            await session.post_json(URL, b"{}")
        assert server.connections == 0


# -- streams on the scripted server ---------------------------------------------------------


def sse(*texts: str, done: bool = True) -> list[bytes]:
    events = [
        b'data: {"choices": [{"delta": {"content": "%s"}, "finish_reason": null}]}\n\n' % t.encode()
        for t in texts
    ]
    return events + ([b"data: [DONE]\n\n"] if done else [])


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def sse_answer(
    events: list[bytes], *, pause: float = 0.01, stall_after: int | None = None
) -> Answer:
    async def answer(stream: trio.abc.Stream, n: int) -> bool:
        await stream.send_all(SSE_HEAD)
        for i, event in enumerate(events):
            if i == stall_after:
                await trio.sleep_forever()
            await stream.send_all(b"%x\r\n%b\r\n" % (len(event), event))
            await trio.sleep(pause)
        await stream.send_all(b"0\r\n\r\n")
        return True

    return answer


def _text(item: Any) -> str | None:
    return str(item["choices"][0]["delta"]["content"])


async def _stream(session: LeanSession, limit: int | None = None) -> list[str]:
    out: list[str] = []
    async with session.open_stream(
        URL, b"{}", SSEDecoder(), _text, ("text/event-stream",)
    ) as items:
        async for text in items:
            out.append(text)
            if limit is not None and len(out) >= limit:
                break
    return out


async def test_stream_parts_arrive_as_they_come_and_the_connection_is_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted(sse_answer(sse("a", "b", "c"))) as (server, session):
        assert await _stream(session) == ["a", "b", "c"]
        assert await _stream(session) == ["a", "b", "c"]
        assert server.connections == 1
        assert settled(session.pool_statistics())


async def test_leaving_a_stream_early_closes_its_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted(sse_answer(sse("a", "b", "c"), pause=1)) as (server, session):
        assert await _stream(session, limit=1) == ["a"]
        stats = session.pool_statistics()
        assert settled(stats) and stats.connections == 0
        assert await _stream(session) == ["a", "b", "c"]
        assert server.connections == 2


async def test_a_stalled_stream_times_out_between_parts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answer = sse_answer(sse("a", "b", "c"), pause=2, stall_after=2)
    async with scripted(answer, request_timeout=5) as (_, session):
        got: list[str] = []
        start = trio.current_time()
        with pytest.raises(LLMTimeoutError):
            async with session.open_stream(
                URL, b"{}", SSEDecoder(), _text, ("text/event-stream",)
            ) as items:
                async for text in items:
                    got.append(text)
        # Each gap (2 s) is within request_timeout; the stall after "b" (sent at 2 s) is not.
        assert got == ["a", "b"]
        assert trio.current_time() - start == pytest.approx(2 + 5)
        assert settled(session.pool_statistics())


async def test_stream_errors(autojump_clock: trio.testing.MockClock) -> None:
    async with scripted(sse_answer(sse("a", done=False))) as (_, session):
        with pytest.raises(ResponseFormatError, match="DONE"):
            await _stream(session)
    error = reply(b'{"error": "busy"}', status=503)
    async with scripted(answering(error)) as (_, session):
        with pytest.raises(ServerError, match="busy"):
            await _stream(session)
    async with scripted(answering(reply())) as (_, session):
        with pytest.raises(ResponseFormatError, match="application/json"):
            await _stream(session)


async def test_cancelled_mid_response_closes_and_releases(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hung_up = trio.Event()

    async def half(stream: trio.abc.Stream, n: int) -> bool:
        await stream.send_all(reply(b"x" * 100)[:-50])
        if not await stream.receive_some(100):
            hung_up.set()
        return False

    async with scripted(half) as (_, session):
        with trio.move_on_after(1):
            await session.post_json(URL, b"{}")
        await hung_up.wait()  # the client closed its half-read connection
        stats = session.pool_statistics()
        assert settled(stats) and stats.connections == 0


# -- the error maps and the selection --------------------------------------------------------


def _lean_error_classes() -> list[type[LeanHTTPError]]:
    found: list[type[LeanHTTPError]] = []
    todo: list[type[LeanHTTPError]] = [LeanHTTPError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_lean_error_is_mapped_at_both_edges() -> None:
    classes = _lean_error_classes()
    assert set(classes) == set(SESSION_ERRORS) == set(HTTPX_ERRORS)
    for cls in classes:
        llm_error = to_llm_error(cls("boom"), "dep")
        assert isinstance(llm_error, SESSION_ERRORS[cls]) and "boom" in str(llm_error)
        httpx_error = to_httpx(cls("boom"))
        assert type(httpx_error) is HTTPX_ERRORS[cls]
        # Through httpx2, the agentflow mapping lands on the same family.
        via_httpx = map_exception(httpx_error, "dep")
        assert isinstance(via_httpx, TransportError | ConfigError | ResponseFormatError)
        assert isinstance(llm_error, type(via_httpx)) or isinstance(via_httpx, type(llm_error))


@attrs.frozen
class _ProxiedConfig(LLMConfig):
    proxy: str = "http://proxy.invalid:3128"


async def test_the_transport_is_selectable(caplog: pytest.LogCaptureFixture) -> None:
    llm = LLMConfig(provider="openai", base_url="http://127.0.0.1:9/v1")
    options: dict[str, Any] = {"headers": JSON_HEADERS, "deployment": "d", "base_url": llm.base_url}
    async with open_http_session(llm, http_transport="lean", **options) as session:
        assert isinstance(session, LeanSession)
    async with open_http_session(llm, **options) as session:
        assert isinstance(session, LeanSession)  # [llm] transport defaults to "lean"
    httpx2_llm = LLMConfig(provider="openai", base_url=llm.base_url, transport="httpx2")
    async with open_http_session(httpx2_llm, **options) as session:
        assert isinstance(session, HTTPSession)
    with pytest.raises(ConfigError, match="transport"):
        async with open_http_session(llm, http_transport="curl", **options):
            pass
    with caplog.at_level(logging.INFO, logger="agentflow_trio.llm"):
        async with open_http_session(_ProxiedConfig(), http_transport="lean", **options) as s:
            assert isinstance(s, HTTPSession)
    assert "proxy" in caplog.text and "httpx2" in caplog.text


def test_the_two_clients_do_not_import_each_other() -> None:
    """Both implement the ``llm._session`` seam; only ``llm._open_session`` knows both."""
    llm_dir = Path(agentflow_trio.llm.__file__).parent

    def imported(path: Path) -> set[str]:
        nodes = ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        return {n.module or "" for n in nodes if isinstance(n, ast.ImportFrom)}

    assert not any("_lean" in module for module in imported(llm_dir / "http.py"))
    for path in (llm_dir / "_lean").glob("*.py"):
        assert not any(m.endswith("http") for m in imported(path)), path.name


# -- against the mock LLM (real sockets) ---------------------------------------------------


@asynccontextmanager
async def lean_provider(llm: LLMConfig) -> AsyncIterator[ProviderStack]:
    """The full default stack (retry, breaker) over the OpenAI adapter on a lean session."""
    async with open_http_session(
        llm,
        headers=openai_headers(llm),
        deployment=llm.model,
        base_url=llm.base_url,
        http_transport="lean",
    ) as session:
        adapter = OpenAIProvider(
            session,
            chat_url=f"{llm.base_url}/chat/completions",
            embeddings_url=f"{llm.base_url}/embeddings",
            model=llm.model,
        )
        async with open_provider(llm, transport=adapter) as provider:
            yield provider


def _mock_config(mock: MockLLM, **llm: Any) -> LLMConfig:
    return LLMConfig(provider="openai", base_url=mock.url + "/v1", api_key="sk-test", **llm)


async def test_every_call_kind_on_the_mock_over_one_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(stream_chunks=4) as mock, lean_provider(_mock_config(mock)) as p:
            for _ in range(3):
                assert (await p.complete(REQUEST)).text == mock.config.reply_text
                assert len((await p.embed(EmbeddingRequest(("a", "b")))).vectors) == 2
                async with p.stream(REQUEST) as chunks:
                    answer = await collect_stream(chunks)
                assert answer.text == mock.config.reply_text and answer.usage is not None
            assert mock.stats().connections == 1
            assert mock.received[-1]["stream"] is True
            assert settled(p.statistics().pool)


async def test_ollama_ndjson_stream_on_the_mock() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            llm = LLMConfig(provider="ollama", base_url=mock.url, model="llama3")
            async with open_http_session(
                llm,
                headers=JSON_HEADERS,
                deployment="llama3",
                base_url=mock.url,
                http_transport="lean",
            ) as session:
                ollama = OllamaProvider(session, base_url=mock.url, model="llama3")
                async with ollama.stream(REQUEST) as chunks:
                    answer = await collect_stream(chunks)
                assert answer.text == mock.config.reply_text
                assert (await ollama.complete(REQUEST)).text == mock.config.reply_text
            assert mock.stats().connections == 1


async def test_connection_close_from_the_mock() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, lean_provider(_mock_config(mock)) as provider:
            mock.script(*[MockReply(headers={"Connection": "close"})] * 3)
            for _ in range(3):
                await provider.complete(REQUEST)
            assert mock.stats().connections == 3
            await provider.complete(REQUEST)
            await provider.complete(REQUEST)
            assert mock.stats().connections == 4


async def _stream_all(provider: ProviderStack) -> list[Any]:
    async with provider.stream(REQUEST) as chunks:
        return [chunk async for chunk in chunks]


async def test_bad_answers_from_the_mock_are_typed() -> None:
    page = "<html><body>" + "Service Unavailable " * 40 + "</body></html>"
    no_retry = {"retry": {"enabled": False}, "circuit_breaker": {"enabled": False}}
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(stream_chunks=6) as mock:
            llm = _mock_config(
                mock, **{k: type(getattr(LLMConfig(), k))(**v) for k, v in no_retry.items()}
            )
            async with lean_provider(llm) as provider:
                cases: list[tuple[MockReply, bool, type[Exception], str]] = [
                    (MockReply(body='{"choices": ['), False, ResponseFormatError, "malformed"),
                    (
                        MockReply(body="<p>x</p>", content_type="text/html"),
                        False,
                        ResponseFormatError,
                        "text/html",
                    ),
                    (
                        MockReply(status=503, body=page, content_type="text/html"),
                        False,
                        ServerError,
                        "503",
                    ),
                    (
                        MockReply(status=503, body=page, content_type="text/html"),
                        True,
                        ServerError,
                        "503",
                    ),
                    (
                        MockReply(status=429, headers={"Retry-After": "7"}),
                        False,
                        RateLimitError,
                        "429",
                    ),
                    (MockReply(status=401), False, AuthenticationError, "401"),
                    (MockReply(status=404), True, NotFoundError, "404"),
                    (
                        MockReply(text="one two three four five six", truncate_stream=True),
                        True,
                        LLMReadError,
                        "mid-response",
                    ),
                    (
                        MockReply(body='{"choices": []}' * 10, truncate_stream=True),
                        False,
                        LLMReadError,
                        "mid-response",
                    ),
                    (MockReply(body='{"unexpected": true}'), False, ResponseFormatError, "shape"),
                ]
                for scripted_reply, streamed, kind, match in cases:
                    mock.script(scripted_reply)
                    with pytest.raises(kind, match=match) as info:
                        await (_stream_all(provider) if streamed else provider.complete(REQUEST))
                    assert getattr(info.value, "deployment", "x")
                    if kind is RateLimitError:
                        assert info.value.retry_after == 7.0  # type: ignore[attr-defined]
                    if kind is ServerError:
                        assert len(info.value.excerpt) == 200  # type: ignore[attr-defined]
                assert (await provider.complete(REQUEST)).text == mock.config.reply_text
                assert settled(provider.statistics().pool)


async def test_timeouts_and_unreachable_servers_on_real_sockets() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            llm = _mock_config(mock, request_timeout=0.2)
            async with open_http_session(
                llm,
                headers=JSON_HEADERS,
                deployment="d",
                base_url=llm.base_url,
                http_transport="lean",
            ) as session:
                mock.script(MockReply(delay=1.0))
                body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
                with pytest.raises(LLMTimeoutError):
                    await session.post_json(llm.base_url + "/chat/completions", body)
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()
        llm = LLMConfig(base_url=f"http://127.0.0.1:{port}/v1")
        async with open_http_session(
            llm, headers=JSON_HEADERS, deployment="d", base_url=llm.base_url, http_transport="lean"
        ) as session:
            with pytest.raises(LLMConnectError):
                await session.post_json(llm.base_url + "/embeddings", b"{}")
            assert settled(session.pool_statistics())


# The cancellation tests of the LLM issue run on both transports: see
# tests/test_llm_cancellation.py (parametrized by [llm] transport).


# -- a second, independent server: hypercorn serving a tiny ASGI app --------------------


class App:
    """A tiny ASGI app; ``clients`` collects (host, port) per request: one port per connection."""

    def __init__(self) -> None:
        self.clients: list[tuple[str, int]] = []
        self.received: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.clients.append(tuple(scope["client"]))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.received.append(len(body))
        path: str = scope["path"]
        query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if p)

        async def start(status: int = 200, *headers: tuple[bytes, bytes]) -> None:
            await send({"type": "http.response.start", "status": status, "headers": list(headers)})

        async def part(data: bytes, more: bool = True) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": more})

        json = (b"content-type", b"application/json")
        if path == "/json":
            data = b'{"size": %d}' % len(body)
            await start(200, json, (b"content-length", b"%d" % len(data)))
            await part(data, False)
        elif path == "/chunked":  # no length: hypercorn sends chunks as they come
            await start(200, json)
            for piece in (b'{"size"', b": ", b"%d" % len(body), b"}"):
                await part(piece)
                await trio.sleep(0.001)
            await part(b"", False)
        elif path == "/close":
            await start(200, json, (b"connection", b"close"))
            await part(b'{"size": 0}', False)
        elif path == "/drop":
            await start(200, json, (b"content-length", b"1000"))
            await part(b'{"size": ' + b"1" * 100)
            raise RuntimeError("dropping the connection mid-response")
        elif path == "/large":
            size = int(query["mb"]) * 2**20
            await start(200, json, (b"content-length", b"%d" % (size + 20)))
            await part(b'{"blob": "')
            for _ in range(size // 2**20):
                await part(b"z" * 2**20)
            await part(b'", "x": 1}', False)
        elif path == "/sse":
            await start(200, (b"content-type", b"text/event-stream"))
            for i in range(int(query.get("n", "5"))):
                await part(b'data: {"choices": [{"delta": {"content": "%d"}}]}\n\n' % i)
                await trio.sleep(0.002)
            await part(b"data: [DONE]\n\n", False)
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            data = b'{"error": {"message": "status %d"}}' % status
            await start(
                status, json, (b"retry-after", b"2"), (b"content-length", b"%d" % len(data))
            )
            await part(data, False)
        else:
            await start(404, json)
            await part(b"{}", False)


@asynccontextmanager
async def serve_hypercorn(app: App, **options: Any) -> AsyncIterator[str]:
    config = hypercorn.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.1
    for key, value in options.items():
        setattr(config, key, value)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        )
        try:
            yield str(binds[0])
        finally:
            stop.set()


@asynccontextmanager
async def hypercorn_session(app: App, **options: Any) -> AsyncIterator[tuple[str, LeanSession]]:
    async with serve_hypercorn(app, **options) as url:
        pools = PoolSet(PoolSettings(request_timeout=10))
        session = LeanSession(pools, JSON_HEADERS, "hypercorn")
        try:
            yield url, session
        finally:
            await session.aclose()


async def test_hypercorn_chunked_keep_alive_and_close() -> None:
    app = App()
    with trio.fail_after(TIMEOUT):
        async with hypercorn_session(app) as (url, session):
            for path in ("/json", "/chunked", "/json", "/chunked"):
                assert await session.post_json(url + path, b"{}") == {"size": 2}
            assert len(set(app.clients)) == 1  # four requests, one connection
            for _ in range(2):
                await session.post_json(url + "/close", b"{}")
            await session.post_json(url + "/json", b"{}")
            assert len(set(app.clients)) == 3  # /close ends its connection each time
            assert settled(session.pool_statistics())


async def test_hypercorn_drop_mid_response_and_status_errors() -> None:
    app = App()
    with trio.fail_after(TIMEOUT):
        async with hypercorn_session(app) as (url, session):
            with pytest.raises(LLMReadError, match="mid-response"):
                await session.post_json(url + "/drop", b"{}")
            for status, kind in (
                (400, "BadRequestError"),
                (429, "RateLimitError"),
                (502, "ServerError"),
            ):
                with pytest.raises(Exception) as info:
                    await session.post_json(url + f"/status/{status}", b"{}")
                assert type(info.value).__name__ == kind
                assert info.value.retry_after == 2.0  # type: ignore[attr-defined]
                assert f"status {status}" in info.value.excerpt  # type: ignore[attr-defined]
            assert await session.post_json(url + "/json", b"{}") == {"size": 2}
            assert len(set(app.clients)) == 2  # the drop cost one connection, errors none
            assert settled(session.pool_statistics())


async def test_hypercorn_large_bodies_both_ways() -> None:
    app = App()
    upload = b'{"blob": "' + b"u" * (6 * 2**20) + b'"}'
    with trio.fail_after(TIMEOUT):
        async with hypercorn_session(app) as (url, session):
            assert await session.post_json(url + "/json", upload) == {"size": len(upload)}
            answer = await session.post_json(url + "/large?mb=5", b"{}")
            assert len(answer["blob"]) == 5 * 2**20 and answer["x"] == 1
            assert await session.post_json(url + "/chunked", upload) == {"size": len(upload)}
            assert len(set(app.clients)) == 1


async def test_hypercorn_sse_stream() -> None:
    app = App()
    with trio.fail_after(TIMEOUT):
        async with hypercorn_session(app) as (url, session):
            for _ in range(2):
                async with session.open_stream(
                    url + "/sse?n=20", b"{}", SSEDecoder(), _text, ("text/event-stream",)
                ) as items:
                    assert [t async for t in items] == [str(i) for i in range(20)]
            assert len(set(app.clients)) == 1
            assert settled(session.pool_statistics())


async def test_hypercorn_closing_an_idle_connection_is_transparent() -> None:
    app = App()
    with trio.fail_after(TIMEOUT):
        async with hypercorn_session(app, keep_alive_timeout=0.05) as (url, session):
            await session.post_json(url + "/json", b"{}")
            await trio.sleep(0.3)  # hypercorn closes the idle connection meanwhile
            assert await session.post_json(url + "/json", b"{}") == {"size": 2}
            assert len(set(app.clients)) == 2 and len(app.received) == 2
            assert session.pool_statistics().opened == 2


async def test_httpx2_client_on_the_lean_transport() -> None:
    app = App()
    with trio.fail_after(TIMEOUT):
        async with serve_hypercorn(app) as url:
            transport = LeanTransport(PoolSettings(max_connections=4))
            async with httpx2.AsyncClient(transport=transport, base_url=url) as client:
                response = await client.post("/json", content=b'{"a": 1}')
                assert response.status_code == 200 and response.json() == {"size": 8}
                assert response.http_version == "HTTP/1.1"
                response = await client.get("/chunked")
                assert response.json() == {"size": 0}
                async with client.stream("POST", "/sse?n=3") as streamed:
                    lines = [line async for line in streamed.aiter_lines() if line]
                assert lines[-1] == "data: [DONE]" and len(lines) == 4
                head = await client.head("/json")
                assert head.status_code == 200 and head.content == b""
                assert (await client.get("/status/404")).status_code == 404
                with pytest.raises(httpx2.ReadError) as info:
                    await client.get("/drop")
                assert isinstance(map_exception(info.value, "d"), LLMReadError)
                assert (await client.post("/json", content=b"xyz")).json() == {"size": 3}
            stats = transport.pools.statistics()
            assert settled(stats)
            # json, chunked, sse, 404, json reuse one connection; HEAD and the drop cost one each.
            assert len(set(app.clients)) == 3
        with pytest.raises(httpx2.ConnectError):
            async with httpx2.AsyncClient(transport=LeanTransport()) as client:
                await client.get(url + "/json")


async def test_lean_transport_falls_back_for_proxies_and_http2(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="agentflow_trio.llm.lean"):
        proxied = LeanTransport(proxy="http://127.0.0.1:9")
        http2 = LeanTransport(http2=True)
    assert isinstance(proxied.fallback, httpx2.AsyncHTTPTransport)
    assert isinstance(http2.fallback, httpx2.AsyncHTTPTransport)
    assert LeanTransport().fallback is None
    assert "proxy" in caplog.text and "HTTP/2" in caplog.text
    await proxied.aclose()
    await http2.aclose()
