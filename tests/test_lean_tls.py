"""HTTPS on the lean transport: trust, hostname checks, SNI, keep-alive, pre-opened connections.

Rules of this module: loopback only, port 0, certificates made by the test (``trustme``),
the real clock (real sockets and TLS), every body under an absolute ``trio.fail_after``.
The servers are trio's TLS listeners answering through the project's HTTP/1.1 server core,
and hypercorn with TLS for the idle-close case.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx2
import hypercorn
import hypercorn.trio
import pytest
import trio
import trustme

from agentflow_trio._http11 import Request, ResponseWriter, serve_http_connection
from agentflow_trio.config import LLMConfig
from agentflow_trio.errors import LLMConnectError
from agentflow_trio.llm._lean import (
    LeanSession,
    LeanTransport,
    PoolSet,
    PoolSettings,
    default_ssl_context,
    open_lean_session,
)

TIMEOUT = 20
HEADERS = {"content-type": "application/json"}


class TLSServer:
    """Counts connections and the SNI names clients sent."""

    def __init__(self) -> None:
        self.connections = 0
        self.server_names: list[str | None] = []
        self.port = 0

    async def _answer(self, request: Request, writer: ResponseWriter) -> None:
        await writer.send(200, b'{"ok": true, "size": %d}' % len(request.body))

    async def _connection(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.connections += 1
        with suppress(trio.BrokenResourceError):  # a client that refused our certificate
            await serve_http_connection(stream, self._answer, max_body_bytes=2**20)

    def context(self, cert: trustme.LeafCert) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)

        def remember(_: Any, name: str | None, __: Any) -> None:
            self.server_names.append(name)

        context.sni_callback = remember
        return context


@asynccontextmanager
async def serve_tls(cert: trustme.LeafCert) -> AsyncIterator[TLSServer]:
    server = TLSServer()
    listeners = await trio.open_ssl_over_tcp_listeners(
        0, server.context(cert), host="127.0.0.1", https_compatible=True
    )
    tcp = cast(trio.SocketListener, listeners[0].transport_listener)
    server.port = tcp.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, server._connection, listeners)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def session_for(context: ssl.SSLContext, **pool: Any) -> LeanSession:
    return LeanSession(PoolSet(PoolSettings(**pool), ssl_context=context), HEADERS, "tls")


async def test_a_valid_certificate_is_accepted_with_sni_and_kept_alive() -> None:
    ca = trustme.CA()
    with trio.fail_after(TIMEOUT):
        async with serve_tls(ca.issue_cert("localhost", "127.0.0.1")) as server:
            session = session_for(trusting(ca))
            try:
                for _ in range(3):
                    answer = await session.post_json(f"https://localhost:{server.port}/x", b"{}")
                    assert answer == {"ok": True, "size": 2}
                assert server.connections == 1
                assert server.server_names == ["localhost"]  # SNI: the URL's host
                await session.post_json(f"https://127.0.0.1:{server.port}/x", b"{}")
                assert server.connections == 2  # another origin, its own pool
                assert server.server_names[1] is None  # no SNI for an IP address
            finally:
                await session.aclose()


async def test_a_certificate_for_another_host_is_refused() -> None:
    ca = trustme.CA()
    with trio.fail_after(TIMEOUT):
        async with serve_tls(ca.issue_cert("example.org")) as server:
            session = session_for(trusting(ca))
            try:
                with pytest.raises(LLMConnectError, match="certificate verify failed") as info:
                    await session.post_json(f"https://localhost:{server.port}/x", b"{}")
                chain = []
                error: BaseException | None = info.value
                while error is not None:
                    chain.append(error)
                    error = error.__cause__
                assert any(isinstance(e, ssl.SSLCertVerificationError) for e in chain)
                assert "Hostname mismatch" in str(info.value)
                assert session.pool_statistics().connections == 0
            finally:
                await session.aclose()


async def test_an_untrusted_authority_is_refused() -> None:
    ca, stranger = trustme.CA(), trustme.CA()
    with trio.fail_after(TIMEOUT):
        async with serve_tls(ca.issue_cert("localhost")) as server:
            for context in (trusting(stranger), default_ssl_context()):
                session = session_for(context)
                try:
                    with pytest.raises(LLMConnectError, match="certificate verify failed"):
                        await session.post_json(f"https://localhost:{server.port}/x", b"{}")
                finally:
                    await session.aclose()


def test_the_default_context_verifies() -> None:
    context = default_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context is default_ssl_context()  # built once


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@asynccontextmanager
async def stdlib_tls_server(cert: trustme.LeafCert) -> AsyncIterator[int]:
    """The standard library's HTTPS server in a thread: OpenSSL sends its TLS 1.3 session
    tickets right after the handshake (as nginx and most servers do)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        await trio.to_thread.run_sync(server.shutdown)
        server.server_close()


async def test_pre_opened_tls_connections_are_used() -> None:
    # Session tickets make a pre-opened connection readable before its first request: it
    # must still be used, not mistaken for one the server closed.
    ca = trustme.CA()
    with trio.fail_after(TIMEOUT):
        async with stdlib_tls_server(ca.issue_cert("localhost")) as port:
            url = f"https://localhost:{port}/v1"
            llm = LLMConfig(base_url=url, min_connections=2, max_connections=4)
            async with open_lean_session(
                llm, headers=HEADERS, deployment="tls", base_url=url, ssl_context=trusting(ca)
            ) as session:
                assert session.pool_statistics().idle == 2
                await trio.sleep(0.05)  # let the tickets arrive
                async with trio.open_nursery() as nursery:
                    for _ in range(2):
                        nursery.start_soon(session.post_json, url + "/chat", b"{}")
                for _ in range(3):
                    assert await session.post_json(url + "/chat", b"{}") == {}
                assert session.pool_statistics().opened == 2


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            done = "startup" if message["type"] == "lifespan.startup" else "shutdown"
            await send({"type": f"lifespan.{done}.complete"})
            if done == "shutdown":
                return
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_hypercorn_tls_idle_close_and_the_httpx2_transport(tmp_path: Path) -> None:
    ca = trustme.CA()
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    config = hypercorn.Config()
    config.bind = ["localhost:0"]
    config.certfile = config.keyfile = str(pem)
    config.keep_alive_timeout = 0.05
    config.graceful_timeout = 0.1
    config.accesslog = config.errorlog = None
    stop = trio.Event()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(hypercorn.trio.serve, _hello, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
            )
            port = str(binds[0]).rsplit(":", 1)[1]
            url = f"https://localhost:{port}/x"
            session = session_for(trusting(ca))
            try:
                assert await session.post_json(url, b"{}") == {}
                await trio.sleep(0.3)  # hypercorn closes the idle TLS connection
                assert await session.post_json(url, b"{}") == {}
                assert session.pool_statistics().opened == 2
            finally:
                await session.aclose()
            transport = LeanTransport(ssl_context=trusting(ca))
            async with httpx2.AsyncClient(transport=transport) as client:
                for _ in range(2):
                    response = await client.get(url)
                    assert response.status_code == 200 and response.json() == {}
            assert transport.pools.statistics().opened == 1
            stop.set()
