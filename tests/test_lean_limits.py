"""Size bounds on responses (issue 17): head, body as received, body once decoded, streams.

Each test is a regression test for one way a server could make a client hold unbounded
memory or wait for ``request_timeout``. Rules of this module: the lean client runs on
in-memory streams against a scripted server under the autojump clock (exact and instant;
a scripted server stops after a few MiB, so the code before the bounds ends in a timeout,
not in an exhausted machine); the httpx2 session needs real sockets: a trio server on
127.0.0.1 port 0 in the test's nursery, the real clock, an absolute ``trio.fail_after``.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from _lean_memory import Answer, scripted, sending, serve_answers

from agentflow_trio.config import LLMConfig
from agentflow_trio.errors import LLMReadError, ResponseFormatError, ResponseTooLargeError
from agentflow_trio.llm import ChatRequest, open_provider, user
from agentflow_trio.llm._lean import LeanSession, PoolSettings
from agentflow_trio.llm._lean import exceptions as lean_exceptions
from agentflow_trio.llm._lines import SSEDecoder
from agentflow_trio.llm._open_session import open_http_session
from agentflow_trio.llm._session import HTTPPoolStatistics
from agentflow_trio.llm.http import HTTPSession, build_client
from agentflow_trio.llm.openai import OpenAIProvider

URL = "http://fake.test/v1/chat/completions"
KIB = 1024
MIB = 1024 * KIB
SENT_AT_MOST = 8 * MIB  # what an "endless" scripted server sends before it hangs
CHAT = b'{"choices": [{"message": {"role": "assistant", "content": "ok"}}]}'


def head(status: int = 200, *headers: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status} X", *headers]) + "\r\n\r\n").encode()


def reply(body: bytes = CHAT, *headers: str, status: int = 200) -> bytes:
    fields = ("content-type: application/json", f"content-length: {len(body)}", *headers)
    return head(status, *fields) + body


def bomb(decoded: int) -> bytes:
    """A gzip body of ``decoded`` zero bytes (about 1000 times smaller)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    parts = [packer.compress(block) for _ in range(decoded // MIB)]
    return b"".join(parts) + packer.compress(bytes(decoded % MIB)) + packer.flush()


async def endless(stream: trio.abc.Stream, first: bytes, piece: bytes) -> None:
    """Send ``first``, then ``piece`` again and again (up to SENT_AT_MOST), then hang."""
    await stream.send_all(first)
    sent = len(first)
    while sent < SENT_AT_MOST:
        await stream.send_all(piece)
        sent += len(piece)
    await trio.sleep_forever()


def freed(stats: HTTPPoolStatistics) -> bool:
    """No slot held, no connection open (a refused answer's connection is closed)."""
    return stats.requests == stats.active == stats.connections == 0


# -- the lean client: bodies ---------------------------------------------------------------


async def test_gzip_bomb_stops_at_the_bound(autojump_clock: trio.testing.MockClock) -> None:
    gz = bomb(16 * MIB)
    assert len(gz) < 32 * KIB
    raw = reply(gz, "content-encoding: gzip")
    async with scripted(sending(raw), max_response_bytes=MIB) as session:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLargeError) as info:
                await session.post_json(URL, b"{}")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 * MIB  # not the 16 MiB the bomb inflates to
        error = info.value
        assert (error.limit, error.key, error.deployment) == (MIB, "llm.max_response_bytes", "fake")
        assert "decoded body larger than 1048576 bytes (max_response_bytes" in str(error)
        assert freed(session.pool_statistics())


async def test_default_bound_stops_a_gzip_bomb(autojump_clock: trio.testing.MockClock) -> None:
    raw = reply(bomb(80 * MIB), "content-encoding: gzip")  # 80 KiB on the wire
    async with scripted(sending(raw)) as session:
        assert session.pools.settings.max_response_bytes == 64 * MIB
        with pytest.raises(ResponseTooLargeError) as info:
            await session.post_json(URL, b"{}")
        assert info.value.limit == 64 * MIB
        assert freed(session.pool_statistics())


async def test_endless_chunked_body_fails_fast(autojump_clock: trio.testing.MockClock) -> None:
    piece = b"ffff\r\n" + b"a" * 0xFFFF + b"\r\n"
    start = trio.current_time()
    first = head(200, "content-type: application/json", "transfer-encoding: chunked")

    async def answer(stream: trio.abc.Stream) -> None:
        await endless(stream, first, piece)

    async with scripted(answer, max_response_bytes=MIB, request_timeout=60) as session:
        with pytest.raises(ResponseTooLargeError, match="response body larger") as info:
            await session.post_json(URL, b"{}")
        assert trio.current_time() == start  # at once, not at request_timeout
        assert isinstance(info.value.__cause__, lean_exceptions.ResponseTooLarge)
        assert freed(session.pool_statistics())


async def test_endless_trailers_fail_fast(autojump_clock: trio.testing.MockClock) -> None:
    first = head(200, "content-type: application/json", "transfer-encoding: chunked")
    first += b"2\r\n{}\r\n0\r\nx-trailer: "

    async def answer(stream: trio.abc.Stream) -> None:
        await endless(stream, first, b"a" * 65536)

    async with scripted(answer, max_response_bytes=MIB) as session:
        with pytest.raises(ResponseTooLargeError):
            await session.post_json(URL, b"{}")
        assert freed(session.pool_statistics())


async def test_declared_length_over_the_bound_fails_before_the_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    raw = head(200, "content-type: application/json", "content-length: 99999999999")
    async with scripted(sending(raw), max_response_bytes=MIB) as session:
        with pytest.raises(ResponseTooLargeError, match="Content-Length 99999999999"):
            await session.post_json(URL, b"{}")
        assert freed(session.pool_statistics())


async def test_a_body_of_exactly_the_bound_passes(autojump_clock: trio.testing.MockClock) -> None:
    body = b'{"a": "' + b"x" * (4096 - 9) + b'"}'
    assert len(body) == 4096
    gz = gzip.compress(body)
    async with scripted(
        sending(reply(body)), sending(reply(gz, "content-encoding: gzip")), max_response_bytes=4096
    ) as session:
        assert (await session.post_json(URL, b"{}"))["a"].startswith("x")
        assert (await session.post_json(URL, b"{}"))["a"].startswith("x")


# -- the lean client: heads -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "piece"),
    [
        (b"HTTP/1.1 200 OK\r\nx-flood: ", b"a" * 65536),  # one endless header
        (b"HTTP/1.1 200 OK\r\n", b"x-h: 1\r\n" * 8192),  # endless headers
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 2048),  # endless interim responses
        (b"HTTP/1.1 200 ", b"a" * 65536),  # an endless reason phrase
    ],
    ids=["header", "headers", "1xx", "reason"],
)
async def test_header_flood_fails_fast(
    autojump_clock: trio.testing.MockClock, first: bytes, piece: bytes
) -> None:
    async def answer(stream: trio.abc.Stream) -> None:
        await endless(stream, first, piece)

    start = trio.current_time()
    async with scripted(answer) as session:
        tracemalloc.start()
        try:
            with pytest.raises(ResponseTooLargeError) as info:
                await session.post_json(URL, b"{}")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 * MIB  # 64 KiB of 8-byte headers are 8192 (name, value) tuples
        assert trio.current_time() == start
        error = info.value
        assert (error.limit, error.key) == (64 * KIB, "llm.max_header_bytes")
        assert "response head larger than 65536 bytes (max_header_bytes = 65536)" in str(error)
        assert freed(session.pool_statistics())


async def test_a_head_of_exactly_the_bound_passes(autojump_clock: trio.testing.MockClock) -> None:
    base = reply(CHAT, "x-pad: ")
    padding = 2048 - len(base)
    exact = reply(CHAT, "x-pad: " + "p" * padding)
    over = reply(CHAT, "x-pad: " + "p" * (padding + 1))
    assert exact.index(b"\r\n\r\n") + 4 == 2048 - len(CHAT)
    limit = 2048 - len(CHAT)
    async with scripted(sending(exact), sending(over), max_header_bytes=limit) as session:
        assert (await session.post_json(URL, b"{}"))["choices"]
        with pytest.raises(ResponseTooLargeError):
            await session.post_json(URL, b"{}")


# -- the lean client: streams ---------------------------------------------------------------

EVENT = b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'
SSE_HEAD = head(200, "content-type: text/event-stream")


def _text(item: Any) -> str | None:
    return str(item["choices"][0]["delta"]["content"])


async def _read_stream(session: LeanSession, **decoder: Any) -> int:
    seen = 0
    async with session.open_stream(
        URL, b"{}", SSEDecoder(**decoder), _text, ("text/event-stream",)
    ) as items:
        async for _ in items:
            seen += 1
    return seen


async def test_an_endless_stream_stops_at_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def answer(stream: trio.abc.Stream) -> None:
        await endless(stream, SSE_HEAD, EVENT * 256)

    async with scripted(answer, max_response_bytes=MIB) as session:
        with pytest.raises(ResponseTooLargeError, match="response body larger"):
            await _read_stream(session)
        assert freed(session.pool_statistics())


async def test_one_endless_sse_event_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async def answer(stream: trio.abc.Stream) -> None:
        await endless(stream, SSE_HEAD, b'data: "x"\n' * 4096)  # data lines, never a blank one

    async with scripted(answer) as session:
        with pytest.raises(ResponseFormatError, match="stream event longer than 65536"):
            await _read_stream(session, max_line=64 * KIB)
        assert freed(session.pool_statistics())


async def test_a_gzip_bomb_stream_stops_at_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    events = packer.compress(EVENT * 200_000) + packer.flush(zlib.Z_SYNC_FLUSH)  # 10 MiB
    body = b"%x\r\n%b\r\n" % (len(events), events)
    raw = head(
        200,
        "content-type: text/event-stream",
        "content-encoding: gzip",
        "transfer-encoding: chunked",
    )
    async with scripted(sending(raw + body), max_response_bytes=MIB) as session:
        with pytest.raises(ResponseTooLargeError, match="decoded body"):
            await _read_stream(session)
        assert freed(session.pool_statistics())


# -- Retry-After through the whole stack (lean session, autojump) ---------------------------


async def test_retry_after_of_31_years_waits_max_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limited = reply(b'{"error": {"message": "slow down"}}', "retry-after: 1000000000", status=429)
    async with scripted(sending(limited), sending(reply())) as session:
        adapter = OpenAIProvider(session, chat_url=URL, embeddings_url=URL, model="m")
        llm = LLMConfig(provider="openai", base_url="http://fake.test/v1")
        assert llm.retry.max_delay == 30.0
        async with open_provider(llm, transport=adapter) as provider:
            start = trio.current_time()
            response = await provider.complete(ChatRequest((user("hi"),)))  # no deadline
            assert response.text == "ok"
            assert trio.current_time() - start == pytest.approx(30.0)
            assert provider.retry is not None and provider.retry.gate is not None
            assert provider.retry.gate.paused_until == pytest.approx(start + 30.0)


# -- the httpx2 session (real sockets) ------------------------------------------------------

TIMEOUT = 20


@asynccontextmanager
async def loopback(answer: Answer) -> AsyncIterator[str]:
    """A server on 127.0.0.1 port 0 answering every request with ``answer``; its URL."""
    async with trio.open_nursery() as nursery:

        async def handle(stream: trio.SocketStream) -> None:
            await serve_answers(stream, lambda: answer)

        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}/v1/chat/completions"
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def httpx2_session(**fields: Any) -> AsyncIterator[HTTPSession]:
    llm = LLMConfig(provider="openai", transport="httpx2", request_timeout=10.0)
    client, backend = build_client(llm, {"content-type": "application/json"})
    session = HTTPSession(client, backend, "fake", **fields)
    try:
        yield session
    finally:
        await session.aclose()


def settled(stats: HTTPPoolStatistics) -> bool:
    return stats.requests == stats.active == 0


async def test_httpx2_session_bounds_a_gzip_bomb() -> None:
    raw = reply(bomb(16 * MIB), "content-encoding: gzip")
    with trio.fail_after(TIMEOUT):
        async with loopback(sending(raw)) as url, httpx2_session(max_response_bytes=MIB) as s:
            with pytest.raises(ResponseTooLargeError, match="decoded body") as info:
                await s.post_json(url, b"{}")
            assert info.value.limit == MIB and info.value.deployment == "fake"
            assert settled(s.pool_statistics()) and s.pool_statistics().connections == 0


async def test_httpx2_session_bounds_raw_and_declared_bodies() -> None:
    chunked = head(200, "content-type: application/json", "transfer-encoding: chunked")

    async def answer(stream: trio.abc.Stream) -> None:
        await endless(stream, chunked, b"ffff\r\n" + b"a" * 0xFFFF + b"\r\n")

    declared = head(200, "content-type: application/json", "content-length: 99999999999")
    with trio.fail_after(TIMEOUT):
        async with loopback(answer) as url, httpx2_session(max_response_bytes=MIB) as s:
            with pytest.raises(ResponseTooLargeError, match="response body larger"):
                await s.post_json(url, b"{}")
            assert settled(s.pool_statistics())
        async with loopback(sending(declared)) as url, httpx2_session(max_response_bytes=MIB) as s:
            with pytest.raises(ResponseTooLargeError, match="Content-Length 99999999999"):
                await s.post_json(url, b"{}")
            assert settled(s.pool_statistics())


async def test_httpx2_session_names_the_head_bound() -> None:
    async def answer(stream: trio.abc.Stream) -> None:
        await endless(stream, b"HTTP/1.1 200 OK\r\nx-flood: ", b"a" * 65536)

    with trio.fail_after(TIMEOUT):
        async with loopback(answer) as url, httpx2_session() as s:
            with pytest.raises(ResponseTooLargeError, match="head larger than 102400") as info:
                await s.post_json(url, b"{}")
            assert info.value.limit == 100 * KIB
            assert settled(s.pool_statistics())


async def test_httpx2_session_bounds_streams() -> None:
    async def answer(stream: trio.abc.Stream) -> None:
        await endless(stream, SSE_HEAD, EVENT * 256)

    with trio.fail_after(TIMEOUT):
        async with loopback(answer) as url, httpx2_session(max_response_bytes=MIB) as s:
            with pytest.raises(ResponseTooLargeError, match="response body larger"):
                async with s.open_stream(
                    url, b"{}", SSEDecoder(), _text, ("text/event-stream",)
                ) as items:
                    async for _ in items:
                        pass
            assert settled(s.pool_statistics())


async def test_httpx2_session_still_reads_gzip_and_plain_answers() -> None:
    answers = [reply(gzip.compress(CHAT), "content-encoding: gzip"), reply()]
    with trio.fail_after(TIMEOUT):
        for raw in answers:
            async with loopback(sending(raw)) as url, httpx2_session() as s:
                assert (await s.post_json(url, b"{}"))["choices"][0]["message"]["content"] == "ok"


# -- an answer refused mid-way never leaves its connection in the pool (found by fuzzing) ---


def counting(*answers: Answer) -> tuple[list[int], tuple[Answer, ...]]:
    """The answers, each also counting the connections it was sent on."""
    seen: list[int] = []

    def wrap(answer: Answer) -> Answer:
        async def counted(stream: trio.abc.Stream) -> None:
            seen.append(id(stream))
            await answer(stream)

        return counted

    return seen, tuple(wrap(a) for a in answers)


async def test_a_protocol_switch_is_not_reused(autojump_clock: trio.testing.MockClock) -> None:
    switch = head(101, "upgrade: websocket", "connection: upgrade")

    async def in_two(stream: trio.abc.Stream) -> None:
        await stream.send_all(switch[:1])
        await trio.sleep(0.1)
        await stream.send_all(switch[1:])

    seen, answers = counting(in_two, sending(reply()))
    async with scripted(*answers) as session:
        with pytest.raises(LLMReadError, match=r"(?i)upgrade"):
            await session.post_json(URL, b"{}")
        assert (await session.post_json(URL, b"{}"))["choices"]
        assert len(set(seen)) == 2  # a new connection, not the stopped parser


async def test_a_body_shorter_than_it_claims_is_not_reused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def lying(stream: trio.abc.Stream) -> None:
        await stream.send_all(reply(b'{"a":', "x-note: the rest follows late")[:-5])
        await stream.send_all(b'{"a":')  # content-length says 5 bytes: a truncated JSON
        await trio.sleep(0.5)
        await stream.send_all(b" 1}HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")

    seen, answers = counting(lying, sending(reply()))
    async with scripted(*answers) as session:
        with pytest.raises(ResponseFormatError, match="malformed JSON"):
            await session.post_json(URL, b"{}")
        await trio.sleep(1)  # the rest has arrived by now
        assert (await session.post_json(URL, b"{}"))["choices"]  # not the smuggled {}
        assert len(set(seen)) == 2


# -- the bounds come from [llm] (both clients) ----------------------------------------------


@attrs.frozen
class _BoundedConfig(LLMConfig):
    """An ``[llm]`` section with the two bounds (the keys ``config`` is adding)."""

    max_response_bytes: int = 4096
    max_header_bytes: int = 1024


def test_pool_settings_read_the_bounds_of_the_llm_section() -> None:
    settings = PoolSettings.from_config(_BoundedConfig())
    assert (settings.max_response_bytes, settings.max_header_bytes) == (4096, 1024)
    defaults = PoolSettings.from_config(LLMConfig())
    assert (defaults.max_response_bytes, defaults.max_header_bytes) == (64 * MIB, 64 * KIB)
    for bad in ({"max_response_bytes": 0}, {"max_header_bytes": -1}):
        with pytest.raises(ValueError, match="must be >= 1"):
            PoolSettings(**bad)


@pytest.mark.parametrize("transport", ["lean", "httpx2"])
async def test_the_configured_bound_applies_to_the_chosen_client(transport: str) -> None:
    body = b'{"pad": "' + b"x" * 8000 + b'"}'
    with trio.fail_after(TIMEOUT):
        async with loopback(sending(reply(body))) as url:
            llm = _BoundedConfig(base_url=url.rsplit("/", 2)[0], transport=transport)
            async with open_http_session(
                llm, headers={}, deployment="dep", base_url=llm.base_url
            ) as session:
                with pytest.raises(ResponseTooLargeError, match="4096") as info:
                    await session.post_json(url, b"{}")
                assert (info.value.limit, info.value.key) == (4096, "llm.max_response_bytes")
                stats = session.pool_statistics()
                assert stats.requests == stats.active == 0
