"""`RawSocketStream`: the lean client's plain-TCP stream, on real sockets on 127.0.0.1.

Each test starts a trio TCP server on port 0, uses the real clock and wraps its body in an
absolute ``trio.fail_after`` so a hang fails instead of stalling the suite.
"""

from __future__ import annotations

import errno
import hashlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from agentflow_trio.llm._lean._socket import RawSocketStream, open_raw_stream, raw_stream
from agentflow_trio.llm._lean.connection import Connection
from agentflow_trio.llm._lean.pool import tcp_connector
from agentflow_trio.llm._lean.url import Origin

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[int]:
    """Serve ``handler`` on 127.0.0.1 port 0; yield the port; cancel on exit."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def _connect(port: int) -> RawSocketStream:
    return raw_stream(await trio.open_tcp_stream("127.0.0.1", port))


async def _echo(stream: trio.SocketStream) -> None:
    async for chunk in stream:
        await stream.send_all(chunk)


async def test_takes_over_the_socket_and_round_trips_bytes() -> None:
    with trio.fail_after(10):
        async with _server(_echo) as port:
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            stream = raw_stream(tcp)
            assert tcp.socket.fileno() == -1  # exactly one owner of the descriptor
            assert stream.socket.fileno() >= 0
            await stream.send_all(b"hello")
            received = b""
            while len(received) < 5:
                received += await stream.receive_some(2)
                assert len(received) <= 5
            assert received == b"hello"
            await stream.aclose()


async def test_large_body_waits_for_a_slow_reader_and_loses_nothing() -> None:
    """A body far larger than the socket buffers takes the would-block path of send_all."""
    body = bytes(range(256)) * (16 * 1024)  # 4 MiB
    digest: list[str] = []

    async def slow_reader(stream: trio.SocketStream) -> None:
        hasher = hashlib.sha256()
        size = 0
        while size < len(body):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            hasher.update(chunk)
            size += len(chunk)
            await trio.sleep(0.0005)
        digest.append(hasher.hexdigest())
        await stream.send_all(b"done")

    with trio.fail_after(30):
        async with _server(slow_reader) as port:
            stream = await _connect(port)
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            await stream.send_all(memoryview(body))
            assert await stream.receive_some() == b"done"
            await stream.aclose()
    assert digest == [hashlib.sha256(body).hexdigest()]


async def test_clean_end_of_stream_reads_as_empty_bytes() -> None:
    async def close_at_once(stream: trio.SocketStream) -> None:
        await stream.aclose()

    with trio.fail_after(10):
        async with _server(close_at_once) as port:
            stream = await _connect(port)
            assert await stream.receive_some() == b""
            await stream.aclose()


async def test_peer_reset_is_a_broken_resource_with_the_os_error_as_cause() -> None:
    async def reset(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        # SO_LINGER with a zero timeout: close sends RST instead of FIN.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    with trio.fail_after(10):
        async with _server(reset) as port:
            stream = await _connect(port)
            await stream.send_all(b"x")
            with pytest.raises(trio.BrokenResourceError) as on_receive:
                await stream.receive_some()  # the RST arrives while it waits
            assert isinstance(on_receive.value.__cause__, ConnectionResetError)
            with pytest.raises(trio.BrokenResourceError) as on_send:
                await stream.send_all(b"y")
            assert isinstance(on_send.value.__cause__, OSError)
            await stream.aclose()


async def test_use_after_close_is_a_closed_resource_and_close_is_idempotent() -> None:
    with trio.fail_after(10):
        async with _server(_echo) as port:
            stream = await _connect(port)
            await stream.aclose()
            await stream.aclose()
            assert stream.socket.fileno() == -1
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(b"x")
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive_some()
            with pytest.raises(trio.ClosedResourceError):
                await stream.wait_send_all_might_not_block()


async def test_close_wakes_a_task_blocked_in_receive() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    raised: list[BaseException] = []

    async def receive(stream: RawSocketStream) -> None:
        try:
            await stream.receive_some()
        except trio.ClosedResourceError as exc:
            raised.append(exc)

    with trio.fail_after(10):
        async with _server(silent) as port:
            stream = await _connect(port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, stream)
                await trio.testing.wait_all_tasks_blocked()
                await stream.aclose()
    assert len(raised) == 1


async def test_cancellation_of_receive_and_of_an_already_cancelled_send() -> None:
    received: list[bytes] = []
    ended = trio.Event()

    async def record(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            received.append(chunk)
        ended.set()

    with trio.fail_after(10):
        async with _server(record) as port:
            stream = await _connect(port)
            with trio.move_on_after(0.05) as scope:
                await stream.receive_some()  # nothing ever arrives
            assert scope.cancelled_caught
            with trio.CancelScope() as cancelled:
                cancelled.cancel()
                await stream.send_all(b"never")
            assert cancelled.cancelled_caught
            await stream.send_all(b"after")  # the stream survives both cancellations
            await stream.aclose()
            await ended.wait()  # the server read to end of stream
    assert b"".join(received) == b"after"


async def test_receive_some_rejects_a_non_positive_size() -> None:
    with trio.fail_after(10):
        async with _server(_echo) as port:
            stream = await _connect(port)
            with pytest.raises(ValueError, match="max_bytes"):
                await stream.receive_some(0)
            await stream.aclose()


async def test_the_connector_uses_the_raw_stream_for_plain_http_only() -> None:
    with trio.fail_after(10):
        async with _server(_echo) as port:
            connect = tcp_connector(Origin("http", "127.0.0.1", port), None)
            stream = await connect()
            assert isinstance(stream, RawSocketStream)
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
            await stream.aclose()


async def test_a_connection_keeps_no_head_while_idle_and_polls_only_when_asked() -> None:
    """The memory a waiting connection holds: the last response's head goes at the next
    `begin`; `readable` polls per call (nothing kept), and is True after the server's EOF
    and after close."""
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
    ready = trio.Event()

    async def serve_once(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(answer)
        await ready.wait()  # the client has checked the idle connection
        await stream.aclose()

    with trio.fail_after(10):
        async with _server(serve_once) as port:
            stream = await _connect(port)
            conn = Connection(stream, opened_at=0.0, expires_at=1e9, tls=False)
            conn.begin()
            await conn.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            await conn.receive_head()
            assert await conn.receive_all() == b"ok"
            assert conn.headers and conn.reason == b"OK" and conn.content_type == b"text/plain"
            assert not conn.readable()
            conn.begin()  # the next exchange: nothing of the last head is kept
            assert (conn.headers, conn.reason, conn.content_type) == ([], b"", None)
            ready.set()
            await trio.lowlevel.wait_readable(stream.socket)  # the server's EOF arrives
            assert conn.readable()
            await conn.aclose()
            assert conn.readable()  # closed: never carries a request


async def test_open_raw_stream_connects_an_ip_address_directly_with_trios_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_open_tcp_stream(*args: object, **kwargs: object) -> None:
        raise AssertionError("an IP address needs no resolution or happy eyeballs")

    with trio.fail_after(10):
        async with _server(_echo) as port:
            monkeypatch.setattr(trio, "open_tcp_stream", no_open_tcp_stream)
            stream = await open_raw_stream("127.0.0.1", port)
            monkeypatch.undo()
            raw = stream.socket
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert raw.getpeername() == ("127.0.0.1", port)
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
            await stream.aclose()
            by_name = await open_raw_stream("localhost", port)  # trio resolves a name
            await by_name.send_all(b"pong")
            assert await by_name.receive_some() == b"pong"
            await by_name.aclose()


async def test_open_raw_stream_refused_says_so_as_trio_does() -> None:
    with socket.socket() as holder:  # a port nobody listens on
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with trio.fail_after(10), pytest.raises(OSError) as info:
            await open_raw_stream("127.0.0.1", port)
    assert str(info.value) == f"all attempts to connect to 127.0.0.1:{port} failed"
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
    assert f"Error connecting to ('127.0.0.1', {port})" in str(cause)


async def test_open_raw_stream_opens_nothing_for_a_cancelled_caller() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await open_raw_stream("127.0.0.1", 9)
    assert scope.cancelled_caught


async def test_receive_nowait_reads_what_arrived_without_waiting() -> None:
    with trio.fail_after(10):
        async with _server(_echo) as port:
            stream = await _connect(port)
            assert stream.receive_nowait(10) is None  # nothing yet: None, no wait
            await stream.send_all(b"abc")
            await trio.lowlevel.wait_readable(stream.socket)
            assert stream.receive_nowait(2) == b"ab"
            assert stream.receive_nowait(10) == b"c"
            stream.socket.shutdown(socket.SHUT_WR)  # the echo server sees EOF and closes
            await trio.lowlevel.wait_readable(stream.socket)
            assert stream.receive_nowait(10) == b""
            await stream.aclose()
            with pytest.raises(trio.ClosedResourceError):
                stream.receive_nowait(10)


async def test_send_nowait_writes_at_once_over_plain_tcp_only() -> None:
    """`Connection.send_nowait` writes what the kernel takes without a checkpoint (the
    whole of a small request), and nothing over a stream that is not the lean socket or
    a socket that failed: `send` then does the work and reports the error."""
    got = trio.Event()
    received: list[bytes] = []

    async def serve(stream: trio.SocketStream) -> None:
        received.append(await stream.receive_some())
        got.set()

    with trio.fail_after(10):
        async with _server(serve) as port:
            stream = await _connect(port)
            conn = Connection(stream, opened_at=0.0, expires_at=1e9, tls=False)
            conn.begin()
            with trio.testing.assert_no_checkpoints():
                assert conn.send_nowait(b"GET / HTTP/1.1\r\n\r\n") == 18
            await got.wait()
            assert received == [b"GET / HTTP/1.1\r\n\r\n"]
            await conn.aclose()
            assert conn.send_nowait(b"more") == 0  # closed: `send` raises WriteFailed
    left, _ = trio.testing.memory_stream_pair()
    memory = Connection(left, opened_at=0.0, expires_at=1e9, tls=False)
    assert memory.send_nowait(b"GET / HTTP/1.1\r\n\r\n") == 0
