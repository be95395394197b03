"""``server._http``, the HTTP/1.1 server ``serve`` runs, talked to over raw sockets.

Rules: the server binds 127.0.0.1 port 0 and is cancelled by the test that started it;
every test runs on the real clock under an absolute ``trio.fail_after``; responses are
parsed with httptools (the bytes on the wire, not a client library's view of them);
nothing asserts a duration.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import httptools
import orjson
import pytest
import trio

from agentflow_trio.server import _http

TIMEOUT = 10
MAX_BODY = 100


class Recorder:
    """A small ASGI app; it notes the client disconnects it hears of."""

    def __init__(self) -> None:
        self.disconnected = trio.Event()
        self.waiting = trio.Event()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("the app broke")
        if path == "/wait":
            self.waiting.set()
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
            return
        body = b""
        if path != "/ignore":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        start = {"type": "http.response.start", "status": 200, "headers": []}
        if path == "/stream":
            await send(start)
            for piece in (b"one,", b"two,", b"three"):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        answer = orjson.dumps(
            {
                "method": scope["method"],
                "path": path,
                "query": scope["query_string"].decode(),
                "body": body.decode(),
                "version": scope["http_version"],
                "server": list(scope["server"]),
            }
        )
        start["headers"] = [(b"content-type", b"application/json")]
        await send(start)
        await send({"type": "http.response.body", "body": answer})


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[int]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        serving = functools.partial(_http.serve_listeners, app, listeners, max_body_bytes=MAX_BODY)
        await nursery.start(serving)
        yield port
        nursery.cancel_scope.cancel()


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True

    def json(self) -> Any:
        return orjson.loads(self.body)


class Client:
    """One raw connection; reads whole responses (pipelined ones in order)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.pending = b""

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def response(self) -> Response:
        response = Response()
        parser = httptools.HttpResponseParser(response)
        data, self.pending = self.pending, b""
        while True:
            if data:
                with suppress(httptools.HttpParserUpgrade):
                    parser.feed_data(data)
                if response.done:
                    response.status = parser.get_status_code()
                    return response
            data = await self.stream.receive_some(65536)
            if not data:  # a close-delimited body ends here
                parser.feed_data(b"")
                response.status = parser.get_status_code()
                return response

    async def head_only(self) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await self.stream.receive_some(65536)
        return data

    async def closed(self) -> bool:
        """Whether the server ends the connection (reads to EOF, dropping bytes)."""
        while True:
            try:
                if not await self.stream.receive_some(65536):
                    return True
            except trio.BrokenResourceError:
                return True


def post(path: str, body: bytes = b"{}", version: str = "1.1", extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/{version}\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


async def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(Recorder()) as port:
            client = await Client.open(port)
            await client.send(post("/a?x=1", b'"first"') + post("/b%20c", b'"second"'))
            first, second = await client.response(), await client.response()
            await client.send(post("/again"))
            third = await client.response()
    assert [r.status for r in (first, second, third)] == [200, 200, 200]
    assert (first.json()["path"], first.json()["query"], first.json()["body"]) == (
        "/a",
        "x=1",
        '"first"',
    )
    assert second.json()["path"] == "/b c" and second.json()["body"] == '"second"'
    assert first.json()["server"][0] == "127.0.0.1" and first.json()["version"] == "1.1"
    assert first.headers[b"content-length"] == str(len(first.body)).encode()


async def test_a_chunked_body_and_expect_100_continue_reach_the_app_whole() -> None:
    chunked = (
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    with trio.fail_after(TIMEOUT):
        async with served(Recorder()) as port:
            client = await Client.open(port)
            await client.send(chunked)
            assert (await client.response()).json()["body"] == "abcdefg"
            await client.send(post("/echo", b""))
            head = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
            await client.send(head + b"expect: 100-continue\r\n\r\n")
            empty = await client.response()  # the first of the two, with no body
            interim = await client.head_only()
            assert interim.startswith(b"HTTP/1.1 100 Continue")
            client.pending = interim.split(b"\r\n\r\n", 1)[1]
            await client.send(b"hello")
            answered = await client.response()
    assert empty.json()["body"] == "" and answered.json()["body"] == "hello"


async def test_head_gets_the_head_only() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(Recorder()) as port:
            client = await Client.open(port)
            await client.send(b"HEAD /echo HTTP/1.1\r\nhost: x\r\n\r\n")
            head = await client.head_only()
            await client.send(post("/next"))
            following = await client.response()
    status = head.split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 200 OK" and head.endswith(b"\r\n\r\n")
    assert following.json()["path"] == "/next"  # no stray body bytes came before it


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_a_streamed_answer_is_chunked_over_1_1_and_close_delimited_over_1_0(
    version: str,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with served(Recorder()) as port:
            client = await Client.open(port)
            await client.send(post("/stream", version=version))
            response = await client.response()
            ends = await client.closed() if version == "1.0" else None
    assert response.status == 200 and response.body == b"one,two,three"
    if version == "1.1":
        assert response.headers[b"transfer-encoding"] == b"chunked"
    else:
        assert b"transfer-encoding" not in response.headers and ends
        assert response.headers[b"connection"] == b"close"


async def test_a_body_the_app_leaves_unread_does_not_break_the_next_request() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(Recorder()) as port:
            client = await Client.open(port)
            whole = post("/ignore", b'{"a": "' + b"x" * 50 + b'"}')
            head, body = whole.split(b"\r\n\r\n", 1)
            await client.send(head + b"\r\n\r\n")
            first = await client.response()  # answered before the body came
            await client.send(body + post("/echo", b"2"))
            second = await client.response()
    assert first.status == 200 and second.json()["body"] == "2"


@pytest.mark.parametrize(
    ("request_bytes", "status", "named"),
    [
        (b"GARBAGE\r\n\r\n", 400, "malformed HTTP request"),
        (
            b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n"
            b"transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            400,
            "ambiguous framing",
        ),
        (b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n", 431, "head"),
    ],
)
async def test_bad_requests_are_refused_by_the_server_and_the_connection_closes(
    request_bytes: bytes, status: int, named: str
) -> None:
    with trio.fail_after(TIMEOUT):
        async with served(Recorder()) as port:
            client = await Client.open(port)
            await client.send(request_bytes)
            response = await client.response()
            assert await client.closed()
    assert response.status == status and named in response.json()["error"]


async def test_an_app_error_is_a_500_and_a_client_leaving_reaches_receive() -> None:
    app = Recorder()
    with trio.fail_after(TIMEOUT):
        async with served(app) as port:
            client = await Client.open(port)
            await client.send(post("/boom"))
            broken = await client.response()
            assert await client.closed()
            leaving = await Client.open(port)
            await leaving.send(post("/wait"))
            await app.waiting.wait()
            await leaving.stream.aclose()
            await app.disconnected.wait()  # the app heard http.disconnect
    assert broken.status == 500


async def test_an_idle_kept_alive_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "KEEP_ALIVE_TIMEOUT", 0.05)
    with trio.fail_after(TIMEOUT):
        async with served(Recorder()) as port:
            client = await Client.open(port)
            await client.send(post("/echo"))
            assert (await client.response()).status == 200
            assert await client.closed()  # nothing more sent: the server ends it


async def test_a_body_over_the_bound_is_cut_and_its_answer_closes_the_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with served(Recorder()) as port:
            client = await Client.open(port)
            await client.send(post("/echo", b"y" * (MAX_BODY * 5)))
            response = await client.response()
            assert await client.closed()
    # The app saw one byte over the bound (enough to refuse it), never the whole body.
    assert MAX_BODY < len(response.json()["body"]) < MAX_BODY * 5
    assert response.headers[b"connection"] == b"close"


@pytest.mark.parametrize("callback", [True, False])
async def test_a_client_leaving_cancels_its_event_with_or_without_the_callback(
    callback: bool,
) -> None:
    """``serve``'s app hears of a disconnect through the server's callback (no task per
    request) or, under a server without it, from ``receive()``: both cancel the event."""
    import agentflow_trio as af
    from agentflow_trio.server import make_app

    running = trio.Event()

    @af.agent
    async def lengthy(ctx: af.Context, event: af.Event) -> str:
        running.set()
        await trio.sleep_forever()
        return "never"

    with trio.fail_after(TIMEOUT):
        async with af.Runner(agents={"lengthy": lengthy}) as runner:
            app = make_app(runner)
            ended: list[str] = []
            finished = trio.Event()

            def record(event: af.Event, result: af.AgentResult) -> None:
                ended.append(result.outcome.value)
                finished.set()

            runner.hooks.after_event.append(record)

            async def plain_asgi(scope: Any, receive: Any, send: Any) -> None:
                if not callback:
                    scope.pop("extensions", None)
                await app(scope, receive, send)

            async with served(plain_asgi) as port:
                client = await Client.open(port)
                await client.send(post("/v1/events", b'{"type": "lengthy"}'))
                await running.wait()
                await client.stream.aclose()
                await finished.wait()
    assert ended == ["cancelled"]
