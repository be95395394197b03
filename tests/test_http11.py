"""``_http11``: the small HTTP/1.1 server under the mock LLM, the dashboard and the debug
server, against hostile clients: header floods, slow heads, silent and stalled clients.

Rules: a real trio TCP server on 127.0.0.1 port 0 and raw client sockets, the real clock
with small timeouts (MockClock does not drive real sockets), and an absolute
``trio.fail_after`` around every test body.
"""

from __future__ import annotations

import functools
import json
import math
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from _sockets import read_all

from agentflow_trio._http11 import (
    DEFAULT_MAX_HEADER_BYTES,
    LINGER_BYTES,
    RECEIVE_SIZE,
    Request,
    ResponseWriter,
    is_loopback_host,
    serve_http_connection,
)

TIMEOUT = 15


class _Counting(trio.abc.HalfCloseableStream):
    """The server's side of a connection, counting the bytes the server read."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.received = 0
        self.closed_at: float | None = None
        self.ended = trio.Event()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.stream.receive_some(max_bytes)
        self.received += len(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        self.closed_at = trio.current_time()
        self.ended.set()
        await self.stream.aclose()


class Served:
    def __init__(self) -> None:
        self.port = 0
        self.connections: list[_Counting] = []
        self.requests: list[Request] = []


@asynccontextmanager
async def served(**limits: Any) -> AsyncIterator[Served]:
    state = Served()
    max_body = limits.pop("max_body_bytes", 1024)

    async def handler(request: Request, writer: ResponseWriter) -> None:
        state.requests.append(request)
        if request.path == "/slow":  # slower than every timeout: a handler is never cut
            await trio.sleep(0.6)
        if request.path == "/huge":
            await writer.send(200, b"h" * (64 * 2**20))
            return
        if request.body_too_large:
            await writer.send(413, b'{"error":"too large"}')
            return
        await writer.send(200, b'{"ok":true,"size":%d}' % len(request.body))

    async def connection(stream: trio.SocketStream) -> None:
        counting = _Counting(stream)
        state.connections.append(counting)
        await serve_http_connection(counting, handler, max_body_bytes=max_body, **limits)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, connection, 0, host="127.0.0.1")
        )
        state.port = listeners[0].socket.getsockname()[1]
        yield state
        nursery.cancel_scope.cancel()


def status_and_json(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_a_head_over_max_header_bytes_is_431_and_closes() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(max_header_bytes=1024) as server:
            for head in (
                b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 4096,  # never finished
                b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 2000 + b"\r\n\r\n",  # whole
                b"GET /" + b"p" * 4096 + b" HTTP/1.1\r\nhost: x\r\n\r\n",  # a long URL
            ):
                async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                    await client.send_all(head)
                    raw, closed = await read_all(client)
                assert closed and raw.startswith(b"HTTP/1.1 431 ")
                assert b"connection: close" in raw
                _, body = status_and_json(raw)
                assert "max_header_bytes" in body["error"]["message"]
                assert "1024" in body["error"]["message"]
            assert server.requests == []  # the handler never saw them


async def test_a_header_flood_is_cut_off_after_a_bounded_read() -> None:
    line = b"x-flood: " + b"f" * 1000 + b"\r\n"
    with trio.fail_after(TIMEOUT):
        async with served() as server:
            sent = 0
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                await client.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
                try:
                    while sent < 32 * 2**20:
                        await client.send_all(line * 64)
                        sent += len(line) * 64
                except trio.BrokenResourceError:
                    pass
            assert sent < 32 * 2**20  # the server ended the connection
            bound = DEFAULT_MAX_HEADER_BYTES + RECEIVE_SIZE + LINGER_BYTES + RECEIVE_SIZE
            assert server.connections[0].received <= bound


async def test_heads_within_the_limit_and_pipelined_requests_pass() -> None:
    body = b"b" * 900
    first = b"POST /one HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    second = b"GET /two HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 700 + b"\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        async with served(max_header_bytes=1024) as server:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                await client.send_all(first + second[:300])  # the next head starts mid-read
                await trio.sleep(0.05)
                await client.send_all(second[300:])
                await client.send_eof()
                raw, _ = await read_all(client)
    assert raw.count(b"HTTP/1.1 200 ") == 2, raw
    assert [r.path for r in server.requests] == ["/one", "/two"]


async def test_a_slow_head_gets_408_after_header_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(header_timeout=0.3) as server:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                await client.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
                raw, closed = await read_all(client)
            assert closed and raw.startswith(b"HTTP/1.1 408 ")
            assert "header_timeout" in status_and_json(raw)[1]["error"]["message"]

            # dripping a byte at a time does not reset the clock: the whole head is bounded
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                start = trio.current_time()
                try:
                    for byte in b"GET / HTTP/1.1\r\nhost: localhost\r\nx-slow: 1234567890":
                        await client.send_all(bytes([byte]))
                        await trio.sleep(0.05)
                except trio.BrokenResourceError:
                    pass
                raw, closed = await read_all(client)
            assert closed and raw.startswith(b"HTTP/1.1 408 ")
            assert trio.current_time() - start < 2.5


async def test_a_silent_connection_is_closed_quietly() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(header_timeout=0.3) as server:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                raw, closed = await read_all(client)
    assert closed and raw == b""


async def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(idle_timeout=0.3) as server:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                await client.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                start = trio.current_time()
                raw, closed = await read_all(client)
    assert closed and raw.startswith(b"HTTP/1.1 200 ") and raw.count(b"HTTP/1.1") == 1
    assert 0.25 < trio.current_time() - start < 3


async def test_a_slow_handler_is_not_a_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(header_timeout=0.2, idle_timeout=0.2) as server:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                await client.send_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
                raw, closed = await read_all(client)
    assert raw.startswith(b"HTTP/1.1 200 ") and closed  # answered, then idle: closed


async def test_a_client_that_takes_no_response_is_dropped_after_idle_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(idle_timeout=0.3) as server:
            client = await trio.open_tcp_stream("127.0.0.1", server.port)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            async with client:
                await client.send_all(b"GET /huge HTTP/1.1\r\nhost: x\r\n\r\n")
                start = trio.current_time()
                await trio.testing.wait_all_tasks_blocked()
                await server.connections[0].ended.wait()  # the answer was never read
            closed_at = server.connections[0].closed_at
            assert closed_at is not None and closed_at - start < 5


async def test_a_stalled_body_gets_408_after_idle_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(idle_timeout=0.3) as server:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                await client.send_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
                await client.send_all(b"0123456789")
                raw, closed = await read_all(client)
    assert closed and raw.startswith(b"HTTP/1.1 408 ")
    assert "idle_timeout" in status_and_json(raw)[1]["error"]["message"]
    assert server.requests == []


async def test_a_body_over_max_body_bytes_is_handed_over_flagged_then_closed() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(max_body_bytes=100) as server:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                body = b"z" * 5000
                await client.send_all(
                    b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%b"
                    % (len(body), body)
                )
                raw, closed = await read_all(client)
    assert closed and raw.startswith(b"HTTP/1.1 413 ")
    assert [r.body_too_large for r in server.requests] == [True]


async def test_a_malformed_request_gets_400_with_a_json_body() -> None:
    with trio.fail_after(TIMEOUT):
        async with served() as server:
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as client:
                await client.send_all(b'GE"T / HTTP/1.1\r\n\r\n')
                raw, closed = await read_all(client)
    status, body = status_and_json(raw)
    assert closed and status == 400 and "malformed" in body["error"]["message"]


@pytest.mark.parametrize(
    "limits",
    [
        {"header_timeout": math.nan},
        {"idle_timeout": 0},
        {"idle_timeout": -1.0},
        {"max_header_bytes": 0},
        {"max_body_bytes": -1},
    ],
)
async def test_bad_bounds_are_refused(limits: dict[str, Any]) -> None:
    left, _right = trio.testing.memory_stream_pair()

    async def never(request: Request, writer: ResponseWriter) -> None:
        raise AssertionError("not reached")

    options = {"max_body_bytes": 10, **limits}
    with trio.fail_after(TIMEOUT), pytest.raises(ValueError, match=r"max_|_timeout"):
        await serve_http_connection(left, never, **options)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        (None, True),
        (b"localhost", True),
        (b"LOCALHOST:6060", True),
        ("app.localhost:8080", True),
        (b"127.0.0.1:6060", True),
        (b"127.3.2.1", True),
        (b"[::1]:6060", True),
        (b"[::1]", True),
        (b"localhost.", True),
        (b"evil.example", False),
        (b"evil.example:6060", False),
        (b"localhost.evil.example", False),
        (b"10.0.0.1:6060", False),
        (b"[2001:db8::1]:80", False),
        (b"", False),
    ],
)
def test_is_loopback_host(host: bytes | str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
