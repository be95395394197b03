"""Hostile servers against the lean client: generated responses on a real loopback socket.

Hypothesis builds a response (interim ``1xx`` heads, status line, header set, framing by
Content-Length, chunks of generated sizes or the end of the connection, a content coding,
a JSON or event-stream body), optionally spoils it (truncation, inserted garbage, a
non-HTTP start, a bad chunk size, duplicate or absurd Content-Length, Content-Length with
Transfer-Encoding, a header, interim or body flood that never ends) and picks how the
server ends (close or hang). A trio server on 127.0.0.1 port 0, in the example's own
nursery, writes those bytes. For every example:

* the call returns exactly what an oracle expects from the unspoiled response (the JSON,
  the stream's payloads, the status error, `ResponseTooLargeError` when a bound is
  crossed, ...), or, for a spoiled one, that or a typed error of our tree;
* the memory traced during the call stays under `MEMORY` (the bounds are small here:
  64 KiB body, 8 KiB head; an endless server sends up to 16 MiB);
* the pool is settled afterwards (no slot held, no connection checked out) and a second
  call on the same session gets a correct answer (after a spoiled answer: or a typed
  error, since a server lying about its framing may still be sending when its connection
  is reused).

Real sockets, so the real clock: every example runs under an absolute ``trio.fail_after``;
``request_timeout`` is short because a server that hangs is one of the cases.
"""

from __future__ import annotations

import gzip
import itertools
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

import attrs
import orjson
import pytest
import trio
from _sockets import RequestCounter
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agentflow_trio.errors import (
    AgentFlowError,
    APIStatusError,
    LLMReadError,
    LLMTimeoutError,
    ResponseFormatError,
    ResponseTooLargeError,
)
from agentflow_trio.llm._lean import LeanSession, PoolSet, PoolSettings
from agentflow_trio.llm._lines import SSEDecoder

KIB = 1024
MAX_BODY = 64 * KIB
MAX_HEAD = 8 * KIB
REQUEST_TIMEOUT = 0.25
SERVER_CAP = 16 * 2**20  # an endless server stops here (then hangs)
MEMORY = 2 * 2**20  # traced peak allowed per call: a few times the bounds
EXAMPLE_TIMEOUT = 10
GOOD = b'{"ok": true}'
GOOD_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
    % (len(GOOD), GOOD)
)
PATH = "/v1/chat/completions"

Expect = Literal[
    "ok",
    "status",
    "too_large",
    "format",
    "timeout",
    "any",
    "status_or_too_large",
    "format_or_too_large",
]


# -- the generated response -----------------------------------------------------------------


@attrs.frozen
class Case:
    """One generated response and how the server sends it."""

    mode: Literal["json", "stream"]
    version: bytes
    interim: tuple[bytes, ...]
    status: int
    reason: bytes
    content_type: bytes | None
    headers: tuple[tuple[bytes, bytes], ...]
    framing: Literal["length", "chunked", "close"]
    chunk_sizes: tuple[int, ...]
    chunk_extras: bool
    coding: Literal["identity", "gzip", "deflate", "br", "bomb"]
    payloads: tuple[Any, ...]
    pad: int
    spoil: tuple[Any, ...] | None
    end: Literal["close", "hang"]
    splits: tuple[int, ...]


def _body(case: Case) -> bytes:
    pad = case.pad + (4 * MAX_BODY if case.coding == "bomb" else 0)  # a bomb: padded inside
    if case.mode == "json":
        obj = {"items": list(case.payloads), "pad": "x" * pad}
        return orjson.dumps(obj)
    events = [b"data: %b\n\n" % orjson.dumps(p) for p in case.payloads]
    events.append(b": %b\n\n" % (b"x" * pad))  # a comment: padding the stream
    return b"".join(events) + b"data: [DONE]\n\n"


def _encoded(case: Case, body: bytes) -> bytes:
    if case.coding == "gzip":
        return gzip.compress(body, 1)
    if case.coding == "deflate":
        return zlib.compress(body, 1)
    if case.coding == "bomb":
        return gzip.compress(body, 9)  # decodes past the bound (see _body)
    return body


def _chunked(data: bytes, sizes: tuple[int, ...], extras: bool) -> bytes:
    out = []
    cut = 0
    for size in itertools.cycle(sizes):
        if cut >= len(data):
            break
        part = data[cut : cut + size]
        cut += size
        out.append(b"%x%b\r\n%b\r\n" % (len(part), b";ext=1" if extras else b"", part))
    out.append(b"0\r\nx-trailer: t\r\n\r\n" if extras else b"0\r\n\r\n")
    return b"".join(out)


@attrs.frozen
class Wire:
    """The bytes to send, and the sizes the oracle needs."""

    data: bytes
    head_size: int  # interim heads + the final head
    declared: int | None
    decoded: int


def build(case: Case) -> Wire:
    body = _body(case)
    coded = _encoded(case, body)
    decoded = len(body)
    lines = [b"%b %d %b" % (case.version, case.status, case.reason)]
    if case.content_type is not None:
        lines.append(b"content-type: " + case.content_type)
    if case.coding != "identity":
        coding = "gzip" if case.coding == "bomb" else case.coding
        lines.append(b"content-encoding: " + coding.encode())
    declared = None
    if case.framing == "length":
        declared = len(coded)
        lines.append(b"content-length: %d" % declared)
    elif case.framing == "chunked":
        lines.append(b"transfer-encoding: chunked")
        coded = _chunked(coded, case.chunk_sizes, case.chunk_extras)
    lines += [name + b": " + value for name, value in case.headers]
    final = b"\r\n".join(lines) + b"\r\n\r\n"
    interim = b"".join(case.interim)
    return Wire(interim + final + coded, len(interim) + len(final), declared, decoded)


def oracle(case: Case, wire: Wire) -> Expect:
    """What the unspoiled response must give (spoiled ones: "any", floods: "too_large")."""
    if case.spoil is not None:
        kind = case.spoil[0]
        if kind in ("head_flood", "endless_body"):
            return "too_large"
        if kind == "absurd_length" and case.spoil[2] and case.status in NORMAL:
            # The head declares more than max_response_bytes (with chunked: a framing error).
            return "too_large" if case.framing != "chunked" else "any"
        return "any"
    if wire.head_size > MAX_HEAD:
        return "too_large"
    if case.version == b"HTTP/1.0" and case.framing == "chunked":
        return "any"
    if case.status not in NORMAL:
        return "any"  # 204, 304, 101 ...: no body or a protocol switch
    if wire.declared is not None and wire.declared > MAX_BODY:
        return "too_large"
    wire_over = len(wire.data) > MAX_HEAD + MAX_BODY
    decoded_over = case.coding != "identity" and wire.decoded > MAX_BODY
    if case.mode == "stream":
        ctype = (case.content_type or b"").split(b";")[0].strip()
        if case.status >= 400 or ctype != b"text/event-stream":
            # Only the start of the body is read (an excerpt): the wire bound may trip or not.
            if wire_over:
                return "status_or_too_large" if case.status >= 400 else "format_or_too_large"
            return "status" if case.status >= 400 else "format"
        if case.coding == "br":
            return "format"  # refused before the body is read
        return "too_large" if wire_over or decoded_over else "ok"
    if wire_over:
        return "too_large"
    if case.end == "hang" and case.framing == "close":
        return "timeout"
    if case.coding == "br":
        return "format"
    if decoded_over:
        return "too_large"
    if case.status >= 400:
        return "status"
    if case.content_type is not None and b"json" not in case.content_type:
        return "format"
    return "ok"


# -- strategies -----------------------------------------------------------------------------

_TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
_SPECIAL = st.sampled_from(
    [
        (b"connection", b"close"),
        (b"connection", b"keep-alive"),
        (b"retry-after", b"1000000000"),
        (b"retry-after", b"nan"),
        (b"retry-after-ms", b"-5"),
        (b"x-big", b"v" * 3000),
    ]
)
_RESERVED = {
    b"content-length",
    b"transfer-encoding",
    b"content-encoding",
    b"content-type",
    b"upgrade",
}
_HEADER = st.one_of(
    st.tuples(_TOKEN.map(str.encode), _VALUE.map(lambda v: v.strip().encode())).filter(
        lambda h: h[0] not in _RESERVED
    ),
    _SPECIAL,
)
_PAYLOAD = st.dictionaries(
    _TOKEN, st.one_of(st.integers(-(2**40), 2**40), _VALUE, st.booleans()), max_size=4
)
_INTERIM = st.sampled_from(
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n"]
)
_GARBAGE = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.sampled_from([b"\r\n", b"\x00", b"HTTP/1.1 200 OK\r\n\r\n", b"0\r\n\r\n", b"\xff\xfe"]),
)
NORMAL = (200, 201, 400, 401, 404, 418, 429, 500, 503)
_STATUS = st.sampled_from([200] * 12 + list(NORMAL) + [101, 204, 302, 304, 999])


def _spoils(draw: st.DrawFn) -> tuple[Any, ...] | None:
    kind = draw(
        st.sampled_from(
            [None] * 12
            + [
                "truncate",
                "garbage",
                "replace_start",
                "bad_chunk",
                "duplicate_length",
                "length_and_chunked",
                "absurd_length",
                "head_flood",
                "endless_body",
            ]
        )
    )
    if kind is None:
        return None
    if kind in ("truncate", "garbage"):
        return (kind, draw(st.floats(0, 1)), draw(_GARBAGE))
    if kind == "replace_start":
        start = st.sampled_from(
            [
                b"SMTP ready\r\n\r\n",
                b"HTTP/2.0 200 OK\r\n\r\n",
                b"HTTP/1.1 abc\r\n\r\n",
                b"\x16\x03",
            ]
        )
        return (kind, draw(st.one_of(start, _GARBAGE)))
    if kind == "bad_chunk":
        size = st.sampled_from([b"zz", b"-1", b"f" * 20, b"7fffffffffffffff", b"1 1", b""])
        return (kind, draw(size))
    if kind == "duplicate_length":
        return (kind, draw(st.sampled_from([0, 1, 5, 10**6])))
    if kind == "absurd_length":
        value, too_big = draw(
            st.sampled_from(
                [
                    (b"1000000000000", True),
                    (b"99999999999999999999999", False),
                    (b"-1", False),
                    (b"1e3", False),
                    (b"0x10", False),
                    (b" 12", False),
                ]
            )
        )
        return (kind, value, too_big)
    if kind == "head_flood":
        return (kind, draw(st.sampled_from(["one_header", "many_headers", "interim", "reason"])))
    return (kind,)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    mode = draw(st.sampled_from(["json", "json", "stream"]))
    wanted = b"text/event-stream" if mode == "stream" else b"application/json"
    return Case(
        mode=mode,
        version=draw(st.sampled_from([b"HTTP/1.1"] * 5 + [b"HTTP/1.0"])),
        interim=tuple(draw(st.lists(_INTERIM, max_size=3))),
        status=draw(_STATUS),
        reason=draw(st.sampled_from([b"OK", b"", b"Whatever It Says", b"x" * 200])),
        content_type=draw(st.sampled_from([wanted] * 6 + [None, b"text/html", wanted + b"; x=1"])),
        headers=tuple(draw(st.lists(_HEADER, max_size=6))),
        framing=draw(st.sampled_from(["length", "chunked", "close"])),
        chunk_sizes=tuple(draw(st.lists(st.integers(1, 5000), min_size=1, max_size=4))),
        chunk_extras=draw(st.booleans()),
        coding=draw(st.sampled_from(["identity"] * 4 + ["gzip", "deflate", "br", "bomb"])),
        payloads=tuple(draw(st.lists(_PAYLOAD, max_size=4))),
        pad=draw(
            st.one_of(
                st.just(0),
                st.integers(0, 2000),
                st.integers(MAX_BODY - 600, MAX_BODY + 200),
                st.just(4 * MAX_BODY),
            )
        ),
        spoil=_spoils(draw),
        end=draw(st.sampled_from(["close"] * 4 + ["hang"])),
        splits=tuple(draw(st.lists(st.integers(0, 2000), max_size=3))),
    )


# -- the server -----------------------------------------------------------------------------


def _spoiled(case: Case, wire: Wire) -> tuple[bytes, bytes | None]:
    """The bytes to send, and a piece to repeat after them (endless cases) or None."""
    data = wire.data
    if case.spoil is None:
        return data, None
    kind = case.spoil[0]
    cut = data.index(b"\r\n\r\n", wire.head_size - 4)  # the end of the final head
    if kind == "truncate":
        return data[: int(case.spoil[1] * (len(data) - 1))], None
    if kind == "garbage":
        at = int(case.spoil[1] * len(data))
        return data[:at] + case.spoil[2] + data[at:], None
    if kind == "replace_start":
        return case.spoil[1] + data[len(case.spoil[1]) :], None
    if kind == "bad_chunk":
        if case.framing != "chunked":
            return data, None
        start = wire.head_size
        end = data.index(b"\r\n", start)
        return data[:start] + case.spoil[1] + data[end:], None
    if kind == "duplicate_length":
        return data[:cut] + b"\r\ncontent-length: %d" % case.spoil[1] + data[cut:], None
    if kind == "length_and_chunked":
        extra = b"\r\ncontent-length: 3" if case.framing == "chunked" else b""
        extra += b"\r\ntransfer-encoding: chunked" if case.framing != "chunked" else b""
        return data[:cut] + extra + data[cut:], None
    if kind == "absurd_length":
        if wire.declared is not None:  # replace the true length
            true = b"\r\ncontent-length: %d\r\n" % wire.declared
            absurd = b"\r\ncontent-length: %b\r\n" % case.spoil[1]
            return data[: cut + 2].replace(true, absurd, 1) + data[cut + 2 :], None
        return data[:cut] + b"\r\ncontent-length: " + case.spoil[1] + data[cut:], None
    if kind == "head_flood":
        flood = case.spoil[1]
        if flood == "one_header":
            return b"HTTP/1.1 200 OK\r\nx-flood: ", b"a" * 4096
        if flood == "many_headers":
            return b"HTTP/1.1 200 OK\r\n", b"x-h: 1\r\n" * 512
        if flood == "interim":
            return b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 128
        return b"HTTP/1.1 200 ", b"r" * 4096
    # endless_body: a body that never ends, by chunks or by connection
    ctype = b"text/event-stream" if case.mode == "stream" else b"application/json"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: %b\r\n" % ctype
    if case.framing == "chunked":
        return head + b"transfer-encoding: chunked\r\n\r\n", b"1000\r\n" + b"a" * 4096 + b"\r\n"
    return head + b"\r\n", b"a" * 4096


async def _answer(stream: trio.SocketStream, data: bytes, piece: bytes | None, case: Case) -> bool:
    # Send data in the generated pieces, then the endless piece. True: keep the connection
    # open and serve it on ("hang": a client waiting for more bytes waits in vain).
    points = sorted({s % (len(data) + 1) for s in case.splits} | {0, len(data)})
    view = memoryview(data)  # slices without copies: the traced memory is the client's
    for a, b in itertools.pairwise(points):
        if b > a:
            await stream.send_all(view[a:b])
    if piece is not None:
        sent = len(data)
        while sent < SERVER_CAP:
            await stream.send_all(piece)
            sent += len(piece)
        await trio.sleep_forever()
    return case.end == "hang"


async def _serve(
    stream: trio.SocketStream,
    script: Callable[[], bytes | None],
    case: Case,
    hostile: tuple[bytes, bytes | None],
) -> None:
    requests = RequestCounter()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            requests.parser.feed_data(bytes(data))
            while requests.done:
                requests.done -= 1
                answer = script()
                if answer is not None:
                    await stream.send_all(answer)
                elif not await _answer(stream, *hostile, case):  # the hostile answer
                    return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


@asynccontextmanager
async def hostile(case: Case) -> AsyncIterator[tuple[LeanSession, str]]:
    """A loopback server answering the first request with ``case``, later ones with GOOD."""
    count = itertools.count()
    answer = _spoiled(case, build(case))  # built now: not traced as the client's memory

    def script() -> bytes | None:
        return None if next(count) == 0 else GOOD_REPLY

    async with trio.open_nursery() as nursery:

        async def handle(stream: trio.SocketStream) -> None:
            await _serve(stream, script, case, answer)

        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        settings_ = PoolSettings(
            max_connections=2,
            connection_timeout=2.0,
            request_timeout=REQUEST_TIMEOUT,
            max_response_bytes=MAX_BODY,
            max_header_bytes=MAX_HEAD,
        )
        session = LeanSession(PoolSet(settings_), {"content-type": "application/json"}, "dep")
        try:
            yield session, f"http://127.0.0.1:{port}{PATH}"
        finally:
            await session.aclose()
            nursery.cancel_scope.cancel()


# -- the property ---------------------------------------------------------------------------


async def _call(session: LeanSession, url: str, mode: str) -> Any:
    if mode == "json":
        return await session.post_json(url, b"{}")
    items: list[Any] = []
    async with session.open_stream(
        url, b"{}", SSEDecoder(), lambda item: item, ("text/event-stream",)
    ) as stream:
        async for item in stream:
            items.append(item)
    return items


def _expected_value(case: Case) -> Any:
    if case.mode == "json":
        return {"items": list(case.payloads), "pad": "x" * case.pad}
    return list(case.payloads)


def _check(case: Case, expect: Expect, outcome: Any, error: BaseException | None) -> None:
    if error is not None and not isinstance(error, AgentFlowError):
        raise AssertionError(f"untyped error {error!r}") from error
    if expect == "any":
        # Garbage inside the body may leave valid JSON: then that is the faithful answer.
        changed_body = case.spoil is not None and case.spoil[0] == "garbage"
        assert error is not None or outcome == _expected_value(case) or changed_body
        return
    if expect == "ok":
        assert error is None, f"expected the answer, got {error!r}"
        assert outcome == _expected_value(case)
        return
    kinds: dict[str, tuple[type[BaseException], ...]] = {
        "status": (APIStatusError,),
        "too_large": (ResponseTooLargeError,),
        "format": (ResponseFormatError,),
        "timeout": (LLMTimeoutError,),
        "status_or_too_large": (APIStatusError, ResponseTooLargeError),
        "format_or_too_large": (ResponseFormatError,),
    }
    assert isinstance(error, kinds[expect]), f"expected {expect}, got {error!r}"
    if isinstance(error, APIStatusError):
        assert error.status == case.status
    if expect in ("format", "status"):
        assert not isinstance(error, ResponseTooLargeError)


async def _one(case: Case) -> None:
    wire = build(case)
    expect = oracle(case, wire)
    with trio.fail_after(EXAMPLE_TIMEOUT):
        async with hostile(case) as (session, url):
            outcome: Any = None
            error: BaseException | None = None
            tracemalloc.start()
            try:
                outcome = await _call(session, url, case.mode)
            except Exception as exc:
                error = exc
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            _check(case, expect, outcome, error)
            assert peak < MEMORY, f"{peak} bytes traced"
            stats = session.pool_statistics()
            assert stats.requests == stats.active == stats.queued == 0, stats
            assert stats.connections == stats.idle <= 1, stats
            try:  # the pool still serves: a second call gets the good answer
                assert await session.post_json(url, b"{}") == {"ok": True}
            except LLMReadError as exc:
                if expect != "any":  # only the server's close can race our reuse of it
                    assert "without answering" in str(exc), exc
            except AgentFlowError:
                # A lying server (a short Content-Length, bytes after a 204) may still be
                # sending the first answer when the connection is reused: a typed error,
                # never a wrong answer.
                assert expect == "any"
            stats = session.pool_statistics()
            assert stats.requests == stats.active == 0, stats


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=cases())
def test_hostile_servers_get_a_typed_error_or_a_correct_answer(case: Case) -> None:
    event(f"expect {oracle(case, build(case))}")
    event(f"spoil {case.spoil[0] if case.spoil else None}")
    trio.run(_one, case)


# -- a few pinned cases (always run, whatever hypothesis draws) -----------------------------


def _case(**changes: Any) -> Case:
    base = Case(
        mode="json",
        version=b"HTTP/1.1",
        interim=(),
        status=200,
        reason=b"OK",
        content_type=b"application/json",
        headers=(),
        framing="length",
        chunk_sizes=(7,),
        chunk_extras=False,
        coding="identity",
        payloads=({"a": 1},),
        pad=0,
        spoil=None,
        end="close",
        splits=(),
    )
    return attrs.evolve(base, **changes)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        (_case(), "ok"),
        (_case(framing="chunked", chunk_extras=True, interim=(b"HTTP/1.1 100 C\r\n\r\n",)), "ok"),
        (_case(mode="stream", content_type=b"text/event-stream", coding="gzip"), "ok"),
        (_case(coding="bomb"), "too_large"),
        (_case(spoil=("head_flood", "one_header")), "too_large"),
        (_case(spoil=("head_flood", "interim")), "too_large"),
        (_case(spoil=("endless_body",), framing="chunked"), "too_large"),
        (_case(spoil=("endless_body",), framing="close"), "too_large"),
        (_case(spoil=("absurd_length", b"1000000000000", True)), "too_large"),
        (_case(spoil=("duplicate_length", 5)), "any"),
        (_case(spoil=("length_and_chunked",), framing="chunked"), "any"),
        (_case(spoil=("replace_start", b"SMTP ready\r\n\r\n")), "any"),
        (_case(status=429, headers=((b"retry-after", b"1000000000"),)), "status"),
        (_case(framing="close", end="hang"), "timeout"),
        (_case(pad=MAX_BODY + 1), "too_large"),
    ],
)
def test_pinned_hostile_cases(case: Case, expect: Expect) -> None:
    assert oracle(case, build(case)) == expect
    trio.run(_one, case)
