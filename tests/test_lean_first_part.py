"""A big first read is parsed in steps (issue 23, time to first chunk): `Connection.receive_head`
parses the head and keeps the body back, its first event (or ~½ KiB) is handed out on its own,
then the rest. Unit tests of the parsing on in-memory streams (no timing involved): every
byte arrives, in order, the bounds still hold, and the connection is reusable after.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from agentflow_trio.llm._lean.connection import Connection
from agentflow_trio.llm._lean.exceptions import ResponseTooLarge

EVENT = b'data: {"choices": [{"delta": {"content": "%03d"}}]}\n\n'
EVENTS = [EVENT % i for i in range(64)]


def chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


async def connected(
    answer: bytes, **bounds: int
) -> tuple[Connection, trio.testing.MemoryReceiveStream]:
    """A connection whose server has sent ``answer`` in one piece, ready to be read."""
    client, server = trio.testing.memory_stream_pair()
    conn = Connection(client, opened_at=0.0, expires_at=1e9, tls=False, **bounds)
    conn.begin()
    await conn.send(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    await server.send_all(answer)
    return conn, server


async def test_a_burst_of_events_comes_out_first_part_small_then_the_rest() -> None:
    conn, _ = await connected(SSE_HEAD + chunked(EVENTS))
    await conn.receive_head()
    assert conn.status == 200 and conn.content_type == b"text/event-stream"
    first = conn.part_nowait()
    assert first == EVENTS[0]  # the first event on its own (it ends within the step)
    rest = []
    while (part := await conn.receive_part()) is not None:
        rest.append(part)
    assert first + b"".join(rest) == b"".join(EVENTS)
    assert conn.complete and conn.reusable


async def test_a_first_event_longer_than_the_step_comes_out_in_half_a_kib() -> None:
    long_event = b'data: {"choices": [{"delta": {"content": "%s"}}]}\n\n' % (b"x" * 600)
    conn, _ = await connected(SSE_HEAD + chunked([long_event, *EVENTS]))
    await conn.receive_head()
    first = conn.part_nowait()
    assert first is not None and long_event.startswith(first) and len(first) <= 512
    rest = []
    while (part := await conn.receive_part()) is not None:
        rest.append(part)
    assert first + b"".join(rest) == long_event + b"".join(EVENTS)


async def test_a_big_body_read_whole_after_the_head_is_intact() -> None:
    body = bytes(range(256)) * 40
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    conn, _ = await connected(head % len(body) + body)
    await conn.receive_head()
    assert await conn.receive_all() == body
    assert conn.reusable


async def test_an_interim_head_then_the_answer_in_one_read() -> None:
    conn, _ = await connected(b"HTTP/1.1 100 Continue\r\n\r\n" + SSE_HEAD + chunked(EVENTS))
    await conn.receive_head()
    assert conn.status == 200
    parts = []
    while (part := await conn.receive_part()) is not None:
        parts.append(part)
    assert b"".join(parts) == b"".join(EVENTS)


async def test_the_size_bound_holds_for_the_bytes_kept_back() -> None:
    conn, _ = await connected(
        SSE_HEAD + chunked(EVENTS), max_header_bytes=200, max_response_bytes=3000
    )
    with pytest.raises(ResponseTooLarge):
        await conn.receive_head()
        while await conn.receive_part() is not None:
            pass
    assert not conn.reusable


async def test_a_small_answer_is_parsed_in_one_step() -> None:
    conn, _ = await connected(SSE_HEAD + chunked(EVENTS[:2]))
    await conn.receive_head()
    assert conn.part_nowait() == EVENTS[0] + EVENTS[1]
    assert conn.complete


async def test_a_malformed_held_back_burst_is_a_typed_error_of_the_stream() -> None:
    # The burst's framing breaks after the first event: the piece `receive_head` held back
    # is parsed by `part_nowait` inside `BodyChunks`, whose error must be the stream's
    # typed one (LLMReadError), never the transport's own ProtocolFailed.
    from agentflow_trio.errors import LLMReadError
    from agentflow_trio.llm._lean.chunks import BodyChunks
    from agentflow_trio.llm._lines import SSEDecoder

    body = chunked(EVENTS[:1]) + b"zz\r\n" + b"x" * 4000
    conn, _ = await connected(SSE_HEAD + body[: -len(b"0\r\n\r\n")])
    await conn.receive_head()
    chunks = BodyChunks(conn, SSEDecoder(), lambda payload: payload, "dep", 5.0)
    with pytest.raises(LLMReadError, match="malformed HTTP response"):
        async for _ in chunks:
            pass
    assert not conn.reusable
