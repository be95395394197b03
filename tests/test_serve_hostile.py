"""``serve`` against hostile and careless clients (issue 17): cross-site requests, unknown
agents, guessable ids, clients that leave, output JSON cannot carry, ambiguous framing,
DNS rebinding and connection bursts.

Rules (as tests/test_serve.py): the server binds 127.0.0.1 port 0 and is cancelled by the
test that started it; the real clock under an absolute ``trio.fail_after``; requests go
through httpx2, or a raw socket where the point is what a well-behaved client never sends.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import os
import socket
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx2
import pytest
import trio
from _sockets import read_all

import agentflow_trio as af
from agentflow_trio.events import AgentResult, Event
from agentflow_trio.observability.metrics import RunnerMetrics
from agentflow_trio.runner import Runner
from agentflow_trio.server import make_app, serve
from agentflow_trio.server.app import DEFAULT_BACKLOG, MAX_DEPTH

TIMEOUT = 20


@asynccontextmanager
async def served(runner: Runner, **options: Any) -> AsyncIterator[tuple[httpx2.AsyncClient, int]]:
    backlog = options.pop("backlog", None)
    metrics = RunnerMetrics(process=False)
    metrics.attach(runner)
    app = make_app(runner, metrics=metrics, **options)
    extra = {} if backlog is None else {"backlog": backlog}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve, app, port=0, **extra))
        base = f"http://127.0.0.1:{port}"
        async with httpx2.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
            yield client, port
        nursery.cancel_scope.cancel()


async def raw_exchange(port: int, data: bytes, seconds: float = 3.0) -> tuple[bytes, bool]:
    """Send ``data`` on a fresh connection; what came back within ``seconds``, and whether
    the server closed the connection."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(data)
        return await read_all(stream, seconds)


def strict_json(text: str | bytes) -> Any:
    """Parse as RFC 8259 JSON: ``NaN`` and ``Infinity`` are errors."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@af.agent
async def echo(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    return {"echo": dict(event.data)}


AGENTS = {"echo": echo}


# -- content type (cross-site requests) --------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ('Application/JSON; Charset="UTF-8"', 200),
        ("application/vnd.agentflow+json", 200),
        ("text/plain", 415),
        ("text/plain; charset=utf-8", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/json; charset=latin-1", 415),
        ("application/jsonx", 415),
        (None, 415),
    ],
)
async def test_only_a_json_content_type_is_accepted(content_type: str | None, status: int) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner) as (client, _):
            reply = await client.post("/v1/events", content=b'{"type": "echo"}', headers=headers)
            assert reply.status_code == status
            body = strict_json(reply.content)
            if status == 415:
                assert "JSON" in body["error"] or "json" in body["error"]
                assert runner.statistics().accepted == 0
            else:
                assert body["outcome"] == "succeeded"


# -- unknown agents ------------------------------------------------------------------------


async def test_an_unknown_agent_is_404_and_adds_no_metric_label() -> None:
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner) as (client, _):
            for i in range(20):
                reply = await client.post("/v1/events", json={"type": f"made-up-{i}"})
                assert reply.status_code == 404
                error = strict_json(reply.content)["error"]
                assert f"no agent named 'made-up-{i}'" in error and "known: echo" in error
            assert runner.statistics().accepted == 0
            await client.post("/v1/events", json={"type": "echo"})
            metrics = (await client.get("/metrics")).text
    assert "made-up" not in metrics
    assert 'agent_requests_total{agent_name="echo",status="succeeded"} 1.0' in metrics


# -- event ids -----------------------------------------------------------------------------


async def test_event_ids_are_random_and_unguessable() -> None:
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner) as (client, _):
            ids = []
            for _ in range(20):
                reply = await client.post("/v1/events?async=1", json={"type": "echo"})
                ids.append(reply.json()["id"])
            sync = (await client.post("/v1/events", json={"type": "echo"})).json()["id"]
    ids.append(sync)
    assert len(set(ids)) == len(ids)
    assert all(len(i) >= 22 for i in ids)  # 16 random bytes, urlsafe base64
    prefixes = {i[:6] for i in ids}
    assert len(prefixes) == len(ids)  # no shared prefix, no counter at the end


# -- a client that goes away -----------------------------------------------------------------


async def test_a_client_that_disconnects_cancels_its_event() -> None:
    started = trio.Event()
    ended: list[AgentResult] = []
    finished = trio.Event()

    @af.agent
    async def lengthy(ctx: af.Context, event: af.Event) -> str:
        started.set()
        await trio.sleep(3600)  # would hold its worker slot (and spend model calls) for an hour
        return "too late"

    def record(event: Event, result: AgentResult) -> None:
        ended.append(result)
        finished.set()

    body = b'{"type": "lengthy"}'
    request = (
        b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%b" % (len(body), body)
    )
    with trio.fail_after(TIMEOUT):
        async with Runner(agents={"lengthy": lengthy}) as runner, served(runner) as (_, port):
            runner.hooks.after_event.append(record)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(request)
            await started.wait()
            await stream.aclose()  # gone before the answer
            await finished.wait()
            stats = runner.statistics()
    assert [r.outcome.value for r in ended] == ["cancelled"]
    assert stats.cancelled == 1 and stats.running_agents == 0 and stats.in_flight == 0


# -- output JSON cannot carry ----------------------------------------------------------------


def _deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("output", "named"),
    [
        ({"score": math.nan}, "result.output.score is nan"),
        ({"items": [1, math.inf]}, "result.output.items[1] is inf"),
        (-math.inf, "result.output is -inf"),
        ({"blob": b"\xff\x00"}, "result.output.blob is of type bytes"),
        ({"x": _Opaque()}, "result.output.x is of type _Opaque"),
        ({1: "one"}, "result.output has a key of type int"),
        (_deep(1000), f"nested deeper than {MAX_DEPTH} levels"),
    ],
)
async def test_output_json_cannot_carry_is_a_500_with_a_json_body(output: Any, named: str) -> None:
    @af.agent
    async def odd(ctx: af.Context, event: af.Event) -> Any:
        return output

    with trio.fail_after(TIMEOUT):
        async with Runner(agents={"odd": odd}) as runner, served(runner) as (client, _):
            reply = await client.post("/v1/events", json={"type": "odd"})
            finished = trio.Event()
            runner.hooks.after_event.append(lambda event, result: finished.set())
            accepted = await client.post("/v1/events?async=1", json={"type": "odd"})
            event_id = accepted.json()["id"]
            await finished.wait()
            later = await client.get(f"/v1/events/{event_id}")
    for answer in (reply, later):
        assert answer.status_code == 500
        assert answer.headers["content-type"] == "application/json"
        body = strict_json(answer.content)
        assert named in body["error"] and "cannot be sent as JSON" in body["error"]
        assert body["agent"] == "odd" and body["outcome"] == "succeeded" and body["id"]
    assert strict_json(later.content)["id"] == event_id


class Colour(enum.Enum):
    RED = "red"


@attrs.frozen
class Answer:
    text: str
    sources: list[str]


@pytest.mark.parametrize(
    ("output", "wire"),
    [
        ({"tags": frozenset({"a"})}, {"tags": ["a"]}),
        (Answer("hi", ["doc"]), {"text": "hi", "sources": ["doc"]}),
        ((1, 2.5, None, True), [1, 2.5, None, True]),
        ({"colour": Colour.RED}, {"colour": "red"}),
        (2**70, 2**70),
        (_deep(MAX_DEPTH - 2), _deep(MAX_DEPTH - 2)),
    ],
)
async def test_output_json_can_carry_goes_out_as_strict_json(output: Any, wire: Any) -> None:
    @af.agent
    async def fine(ctx: af.Context, event: af.Event) -> Any:
        return output

    with trio.fail_after(TIMEOUT):
        async with Runner(agents={"fine": fine}) as runner, served(runner) as (client, _):
            reply = await client.post("/v1/events", json={"type": "fine"})
    assert reply.status_code == 200
    assert strict_json(reply.content)["output"] == wire


# -- ambiguous framing -----------------------------------------------------------------------


async def test_content_length_with_transfer_encoding_is_400_and_closes() -> None:
    body = b'{"type": "echo"}'
    request = (
        b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n"
        % (len(body), len(body), body)
    )
    follow = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner) as (_, port):
            raw, closed = await raw_exchange(port, request + follow)
            assert runner.statistics().accepted == 0
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"connection: close" in head.lower()
    assert closed and raw.count(b"HTTP/1.1 ") == 1  # the request behind it is not read
    length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
                 .split(b":")[1])  # fmt: skip
    assert "ambiguous framing" in strict_json(rest[:length])["error"]


# -- Host (DNS rebinding) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed", "status"),
    [
        ("127.0.0.1", (), 200),
        ("localhost:8080", (), 200),
        ("[::1]:8080", (), 200),
        ("evil.example", (), 421),
        ("evil.example:8080", (), 421),
        ("runner.internal", ("runner.internal",), 200),
        ("runner.internal:443", ("runner.internal",), 200),
        ("anything.example", ("*",), 200),
    ],
)
async def test_a_foreign_host_on_a_loopback_socket_is_421(
    host: str, allowed: tuple[str, ...], status: int
) -> None:
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner:
            async with served(runner, allowed_hosts=allowed) as (client, _):
                post = await client.post(
                    "/v1/events", json={"type": "echo"}, headers={"host": host}
                )
                health = await client.get("/healthz", headers={"host": host})
                assert runner.statistics().accepted == (1 if status == 200 else 0)
    assert post.status_code == status and health.status_code == status
    if status == 421:
        assert "allowed_hosts" in strict_json(post.content)["error"]


# -- listen backlog and a burst of connections -----------------------------------------------


def _listen_backlog(port: int) -> int:
    """The backlog of this process's socket listening on ``port`` (Linux ``TCP_INFO``:
    for a listener, ``tcpi_sacked`` is the maximum accept queue)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with sock:
            try:
                if sock.type != socket.SOCK_STREAM or sock.getsockname()[1] != port:
                    continue
                if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    continue
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            except (OSError, IndexError, TypeError):
                continue
            return int(struct.unpack_from("8B6I", info)[8 + 5])
    raise LookupError(f"no listening socket on port {port}")


def _somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads TCP_INFO of a listener")


@linux_only
@pytest.mark.parametrize("backlog", [None, 512])
async def test_serve_listens_with_the_backlog_asked_for(backlog: int | None) -> None:
    expected = min(DEFAULT_BACKLOG if backlog is None else backlog, _somaxconn())
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner, served(runner, backlog=backlog) as (_, port):
            assert _listen_backlog(port) == expected
    assert DEFAULT_BACKLOG >= 1024


@linux_only
async def test_serve_runner_passes_the_backlog_on() -> None:
    from agentflow_trio.server import serve_runner

    config = af.Config.from_mapping({"llm": {"provider": "fake"}})
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            start = functools.partial(serve_runner, config, AGENTS, port=0, backlog=300)
            served_runner = await nursery.start(start)
            assert _listen_backlog(served_runner.port) == min(300, _somaxconn())
            nursery.cancel_scope.cancel()


async def test_a_bad_backlog_is_refused() -> None:
    with trio.fail_after(TIMEOUT):
        async with Runner(agents=AGENTS) as runner:
            with pytest.raises(ValueError, match="backlog"):
                await serve(make_app(runner), port=0, backlog=0)


async def test_a_burst_of_connections_is_all_answered() -> None:
    burst = 300
    request = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    answered: list[bool] = []
    with trio.fail_after(TIMEOUT + 10):
        async with Runner(agents=AGENTS) as runner, served(runner) as (_, port):

            async def one() -> None:
                raw, _ = await raw_exchange(port, request, seconds=TIMEOUT)
                answered.append(raw.startswith(b"HTTP/1.1 200"))

            async with trio.open_nursery() as nursery:
                for _ in range(burst):
                    nursery.start_soon(one)
    assert answered.count(True) == burst
