"""The lean session hands out a stream's first chunk before it parses the rest of the
burst it came in (issue #23: time to first chunk), and the chunks stay whole and in order.
In-memory streams (one ``send_all`` is one piece for the client); no timing asserted.
"""

from __future__ import annotations

from typing import Any

import orjson
import trio
from _lean_memory import scripted, sending

from agentflow_trio.llm._lines import SSEDecoder

URL = "http://model.test/v1/chat/completions"
SSE = ("text/event-stream",)


def _response(events: list[bytes]) -> bytes:
    body = b"".join(events)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n"
    return head % len(body) + body


async def test_the_first_chunk_comes_before_the_rest_of_its_burst_is_parsed() -> None:
    events = [b"data: " + orjson.dumps({"n": n}) + b"\n\n" for n in range(20)]
    parsed: list[Any] = []

    def parse(payload: Any) -> Any:
        parsed.append(payload)
        return payload["n"]

    with trio.fail_after(10):
        async with scripted(sending(_response([*events, b"data: [DONE]\n\n"]))) as session:
            for _ in range(2):  # a fresh connection, then a reused one
                parsed.clear()
                async with session.open_stream(URL, b"{}", SSEDecoder(), parse, SSE) as chunks:
                    first = await chunks.__anext__()
                    assert first == 0 and len(parsed) == 1  # nothing else parsed yet
                    rest = [n async for n in chunks]
                assert rest == list(range(1, 20))
                assert session.pool_statistics().idle == 1  # read to its end: kept


async def test_a_first_piece_of_one_event_or_a_partial_event_is_decoded_whole() -> None:
    cases = [
        [b'data: {"n":0}\n\ndata: [DONE]\n\n'],
        [b'data: {"n":0}\n', b'\ndata: {"n":1}\n\ndata: [DONE]\n\n'],
        [b': comment\n\ndata: {"n":0}\n\ndata: {"n":1}\n\ndata: [DONE]\n\n'],
    ]
    for events in cases:
        want = [n for n in (0, 1) if b'"n":%d' % n in b"".join(events)]
        async with scripted(sending(_response(events))) as session:
            async with session.open_stream(
                URL, b"{}", SSEDecoder(), lambda p: p["n"], SSE
            ) as chunks:
                assert [n async for n in chunks] == want
