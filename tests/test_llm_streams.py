"""A streamed answer is whole or a typed error saying how much arrived; garbage is skipped.

Against the mock LLM's faults, on both HTTP clients (lean and httpx2), through the bare
provider (no retry, no breaker: what the wire gives is what is checked). Rules of this
module: loopback only, port 0, the real clock (real sockets), every trio test body under
an absolute ``trio.fail_after``; waits that must time out are a few tenths of a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.errors import (
    IncompleteStreamError,
    LLMReadError,
    LLMTimeoutError,
    ResponseFormatError,
    StreamCutError,
    StreamEndedEarlyError,
    StreamStalledError,
    TransportError,
)
from agentflow_trio.llm import ChatRequest, ChatResponse, Provider, open_transport, user
from agentflow_trio.llm._accumulate import StreamAccumulator
from agentflow_trio.llm._lines import MAX_MALFORMED, NDJSONDecoder, SSEDecoder
from agentflow_trio.mockllm import Fault, MockLLM, MockReply, open_mock_llm
from agentflow_trio.mockllm._payloads import split_text
from agentflow_trio.testing import mock_llm_config

TIMEOUT = 10
TEXT = "one two three four five"
PIECES = split_text(TEXT, 5)  # the text of each content chunk the mock streams
REQUEST = ChatRequest((user("hello"),))
TRANSPORTS = pytest.mark.parametrize("transport", ["lean", "httpx2"])
SSE = "text/event-stream"


@asynccontextmanager
async def provider(
    transport: str, faults: dict[str, Any] | None = None, dialect: str = "openai", **llm: Any
) -> AsyncIterator[tuple[MockLLM, Provider]]:
    """The mock (``faults`` by model) and a bare provider for model ``gpt-b`` on it."""
    async with open_mock_llm(reply_text=TEXT, faults=faults or {}) as mock:
        llm.setdefault("request_timeout", 5.0)
        config = mock_llm_config(
            mock,
            dialect,  # type: ignore[arg-type]
            model="gpt-b",
            deployment="gpt-b",
            transport=transport,
            **llm,
        )
        async with open_transport(config) as bottom:
            yield mock, bottom


async def stream_all(bottom: Provider) -> tuple[ChatResponse, Any]:
    """The whole streamed answer, and the iterator (for its counters)."""
    acc = StreamAccumulator()
    async with bottom.stream(REQUEST) as chunks:
        async for chunk in chunks:
            acc.add(chunk)
    return acc.response(), chunks


async def failing(bottom: Provider, kind: type[BaseException]) -> Any:
    with pytest.raises(kind) as info:
        await stream_all(bottom)
    return info.value


# -- a whole answer -----------------------------------------------------------------------


@TRANSPORTS
async def test_a_clean_end_after_finish_reason_without_done_is_whole(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with provider(transport, {"gpt-b": "no_done"}) as (mock, bottom):
            for _ in range(2):  # and the connection is reused after it
                answer, chunks = await stream_all(bottom)
                assert answer.text == TEXT and answer.finish_reason == "stop"
                assert answer.usage is not None and answer.usage.completion_tokens == 5
                assert chunks.malformed == 0 and chunks.finished
            assert mock.stats().faults == {"no_done": 2}
            assert mock.stats().connections == 1


@TRANSPORTS
async def test_a_malformed_event_mid_stream_is_skipped_and_counted(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with provider(transport, {"gpt-b": "malformed:after_chunks=2"}) as (_, bottom):
            answer, chunks = await stream_all(bottom)
            assert answer.text == TEXT and answer.usage is not None
            assert chunks.malformed == 1
            assert chunks.delivered_chunks == 7  # 5 pieces, finish_reason, usage
            assert chunks.delivered_chars == len(TEXT)


@TRANSPORTS
async def test_malformed_events_up_to_the_bound_are_skipped(transport: str) -> None:
    faults = {"gpt-b": Fault("malformed", after_chunks=0, count=MAX_MALFORMED)}
    with trio.fail_after(TIMEOUT):
        async with provider(transport, faults) as (_, bottom):
            answer, chunks = await stream_all(bottom)
            assert answer.text == TEXT and chunks.malformed == MAX_MALFORMED


@TRANSPORTS
async def test_garbage_beyond_the_bound_or_only_garbage_fails(transport: str) -> None:
    faults = {"gpt-b": Fault("malformed", after_chunks=1, count=MAX_MALFORMED + 1)}
    with trio.fail_after(TIMEOUT):
        async with provider(transport, faults) as (mock, bottom):
            error = await failing(bottom, ResponseFormatError)
            assert not isinstance(error, IncompleteStreamError)
            assert f"{MAX_MALFORMED + 1} malformed" in str(error) and "garbage" in error.excerpt
            mock.config = attrs.evolve(mock.config, faults={})
            for body in ("data: {x\n\ndata: {y\n\n", "data: nope\n\ndata: [DONE]\n\n"):
                mock.script(MockReply(body=body, content_type=SSE))
                error = await failing(bottom, ResponseFormatError)
                assert "no valid payload" in str(error)
                assert not isinstance(error, IncompleteStreamError)


@TRANSPORTS
async def test_a_cut_or_stall_after_finish_reason_keeps_the_answer(transport: str) -> None:
    # Events: 5 pieces, finish_reason, usage, [DONE]: 7 is everything but [DONE].
    faults = {"gpt-b": Fault("cut", after_chunks=7)}
    with trio.fail_after(TIMEOUT):
        async with provider(transport, faults, request_timeout=0.3) as (mock, bottom):
            answer, chunks = await stream_all(bottom)
            assert answer.text == TEXT and answer.usage is not None
            mock.config = attrs.evolve(mock.config, faults={"gpt-b": "stall:after_chunks=6"})
            answer, chunks = await stream_all(bottom)  # after finish_reason, before usage
            assert answer.text == TEXT and answer.finish_reason == "stop"
            assert answer.usage is None and chunks.delivered_chunks == 6


# -- an unfinished answer is a typed error ------------------------------------------------


@TRANSPORTS
async def test_a_cut_stream_says_how_much_was_delivered(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with provider(transport, {"gpt-b": "cut:after_chunks=2"}) as (mock, bottom):
            error = await failing(bottom, StreamCutError)
            assert isinstance(error, LLMReadError) and isinstance(error, IncompleteStreamError)
            assert error.delivered_chunks == 2
            assert error.delivered_chars == len(PIECES[0] + PIECES[1])
            assert error.deployment == "gpt-b" and isinstance(error.__cause__, LLMReadError)
            assert "cut after 2 chunks" in str(error)
            mock.config = attrs.evolve(mock.config, faults={"gpt-b": "cut:after_chunks=0"})
            error = await failing(bottom, StreamCutError)
            assert error.delivered_chunks == error.delivered_chars == 0


@TRANSPORTS
async def test_a_stalled_stream_says_how_much_was_delivered(transport: str) -> None:
    with trio.fail_after(TIMEOUT):
        faults = {"gpt-b": "stall:after_chunks=3"}
        async with provider(transport, faults, request_timeout=0.3) as (_, bottom):
            start = trio.current_time()
            error = await failing(bottom, StreamStalledError)
            assert trio.current_time() - start < 3  # request_timeout, not the mock's patience
            assert isinstance(error, LLMTimeoutError)
            assert error.delivered_chunks == 3
            assert error.delivered_chars == len("".join(PIECES[:3]))


@TRANSPORTS
async def test_a_body_ending_before_finish_reason(transport: str) -> None:
    body = (
        'data: {"choices": [{"delta": {"content": "Par"}, "finish_reason": null}]}\n\n'
        'data: {"choices": [{"delta": {"content": "is"}, "finish_reason": null}]}\n\n'
    )
    with trio.fail_after(TIMEOUT):
        async with provider(transport) as (mock, bottom):
            mock.script(MockReply(body=body, content_type=SSE))
            error = await failing(bottom, StreamEndedEarlyError)
            assert isinstance(error, ResponseFormatError) and "[DONE]" in str(error)
            assert error.delivered_chunks == 2 and error.delivered_chars == 5


@TRANSPORTS
async def test_slow_first_token_within_and_beyond_request_timeout(transport: str) -> None:
    faults = {"gpt-b": Fault("slow_first_token", seconds=0.4)}
    with trio.fail_after(TIMEOUT):
        async with provider(transport, faults, request_timeout=2.0) as (_, bottom):
            answer, _ = await stream_all(bottom)
            assert answer.text == TEXT
        async with provider(transport, faults, request_timeout=0.2) as (_, bottom):
            error = await failing(bottom, StreamStalledError)  # the head came, no chunk
            assert error.delivered_chunks == 0


@TRANSPORTS
async def test_no_response_and_reset_fail_the_opening(transport: str) -> None:
    faults = {"gpt-b": ("reset:times=1", "no_response")}
    with trio.fail_after(TIMEOUT):
        async with provider(transport, faults, request_timeout=0.3) as (mock, bottom):
            for kind in (TransportError, LLMTimeoutError):
                error = await failing(bottom, kind)
                assert not isinstance(error, IncompleteStreamError)  # nothing was streamed
            assert mock.stats().faults == {"reset": 1, "no_response": 1}


@TRANSPORTS
async def test_two_deployments_on_one_mock(transport: str) -> None:
    async with open_mock_llm(reply_text=TEXT, faults={"gpt-b": "cut:after_chunks=1"}) as mock:
        with trio.fail_after(TIMEOUT):
            configs = [
                mock_llm_config(mock, model=model, transport=transport)
                for model in ("gpt-a", "gpt-b")
            ]
            async with open_transport(configs[0]) as a, open_transport(configs[1]) as b:
                answer, _ = await stream_all(a)
                assert answer.text == TEXT
                await failing(b, StreamCutError)
            assert mock.stats().by_model == {"gpt-a": 1, "gpt-b": 1}


# -- the other wires ----------------------------------------------------------------------


@TRANSPORTS
async def test_azure_streams_are_guarded_too(transport: str) -> None:
    faults = {"gpt-b": ("no_done:times=1", "malformed:times=1", "cut:after_chunks=1")}
    with trio.fail_after(TIMEOUT):
        async with provider(transport, faults, dialect="azure") as (_, bottom):
            assert (await stream_all(bottom))[0].text == TEXT
            answer, chunks = await stream_all(bottom)
            assert answer.text == TEXT and chunks.malformed == 1
            error = await failing(bottom, StreamCutError)
            assert error.delivered_chunks == 1


@TRANSPORTS
async def test_ollama_streams_are_guarded_too(transport: str) -> None:
    faults = {"gpt-b": ("malformed:times=1", "cut:after_chunks=2")}
    with trio.fail_after(TIMEOUT):
        async with provider(transport, faults, dialect="ollama") as (mock, bottom):
            answer, chunks = await stream_all(bottom)
            assert answer.text == TEXT and chunks.malformed == 1
            assert answer.usage is not None
            error = await failing(bottom, StreamCutError)
            assert error.delivered_chunks == 2
            mock.config = attrs.evolve(mock.config, faults={})
            body = '{"message": {"content": "hi"}, "done": false}\n'
            mock.script(MockReply(body=body, content_type="application/x-ndjson"))
            error = await failing(bottom, StreamEndedEarlyError)
            assert '"done": true' in str(error) and error.delivered_chunks == 1


# -- the decoders -------------------------------------------------------------------------

EVENTS = [b'data: {"n": %d}\n\n' % n for n in range(4)]
GARBAGE = b"data: {oops\n\n"


def test_decoders_stay_strict_by_default() -> None:
    with pytest.raises(ResponseFormatError, match="malformed JSON"):
        SSEDecoder().feed(GARBAGE)
    with pytest.raises(ResponseFormatError, match="malformed JSON"):
        NDJSONDecoder().feed(b"{oops\n")


def test_sse_decoder_skips_up_to_the_bound_in_a_row() -> None:
    decoder = SSEDecoder(max_malformed=2)
    body = EVENTS[0] + GARBAGE * 2 + EVENTS[1] + GARBAGE * 2 + EVENTS[2] + b"data: [DONE]\n\n"
    assert decoder.feed(body) == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert decoder.done and decoder.malformed == 4
    with pytest.raises(ResponseFormatError, match="3 malformed payloads in a row"):
        SSEDecoder(max_malformed=2).feed(EVENTS[0] + GARBAGE * 3)


def test_sse_decoder_counts_a_pieces_valid_payloads_before_judging() -> None:
    # `_bulk` counts a piece's valid payloads once, at its ends and before anything that
    # reads the counts: the terminator's check, the malformed policy, the line decoder.
    decoder = SSEDecoder(max_malformed=1)
    assert decoder.feed(GARBAGE + EVENTS[0] + b"data: [DONE]\n\n") == [{"n": 0}]
    assert decoder.done and decoder.malformed == 1
    multi_line = b'data: {"n":\ndata: 9}\n\n'
    decoder = SSEDecoder(max_malformed=1)
    body = EVENTS[0] + GARBAGE + EVENTS[1] + multi_line + GARBAGE + EVENTS[2]
    assert decoder.feed(body) == [{"n": 0}, {"n": 1}, {"n": 9}, {"n": 2}]
    assert decoder.feed(GARBAGE + b"data: [DONE]\n\n") == []
    assert decoder.done and decoder.malformed == 3


def test_decoders_refuse_a_stream_of_nothing_but_garbage() -> None:
    with pytest.raises(ResponseFormatError, match="no valid payload"):
        SSEDecoder(max_malformed=5).feed(GARBAGE * 2 + b"data: [DONE]\n\n")
    decoder = SSEDecoder(max_malformed=5)
    decoder.feed(GARBAGE)
    with pytest.raises(ResponseFormatError, match="no valid payload"):
        decoder.end()
    ndjson = NDJSONDecoder(max_malformed=5)
    assert ndjson.feed(b'{oops\n{"a": 1}\n{"done": true}\n') == [{"a": 1}, {"done": True}]
    assert ndjson.done and ndjson.malformed == 1
    only_garbage = NDJSONDecoder(max_malformed=5)
    only_garbage.feed(b"{oops\n")
    with pytest.raises(ResponseFormatError, match="no valid payload"):
        only_garbage.end()


def test_end_is_finish_without_the_terminator_check() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(EVENTS[0]) == [{"n": 0}]
    assert decoder.end() == []
    decoder = SSEDecoder()
    decoder.feed(b'data: {"n": 9}')  # the last event, its blank line never came
    assert decoder.end() == [{"n": 9}] and not decoder.done


@settings(deadline=None, max_examples=100)
@given(
    st.lists(st.booleans(), min_size=1, max_size=12),
    st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_skipping_is_chunking_independent(garbage: list[bool], cuts: list[int]) -> None:
    body = b"".join(GARBAGE if bad else EVENTS[i % 4] for i, bad in enumerate(garbage))
    body += b"data: [DONE]\n\n"
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    valid = [{"n": i % 4} for i, bad in enumerate(garbage) if not bad]
    decoder = SSEDecoder(max_malformed=len(garbage))
    try:
        out = [item for piece in pieces for item in decoder.feed(piece)]
    except ResponseFormatError:
        assert not valid  # only garbage: refused
        return
    assert out == valid and decoder.done and decoder.malformed == sum(garbage)


_SSE_EVENTS = [
    b'data: {"n": 0}\n\n',
    b'event: delta\ndata: {"n": 1}\n\n',  # a named event (Anthropic, Responses)
    b'data:{"n": 2}\n\n',  # no space after the colon
    b'data: {"n":\ndata: 3}\n\n',  # multi-line data, joined with a newline
    b": keep-alive\n\n",  # a comment: no payload
    b'id: 7\ndata: {"n": 4}\nretry: 10\n\n',
]


@settings(deadline=None, max_examples=200)
@given(
    st.lists(st.integers(min_value=0, max_value=len(_SSE_EVENTS) - 1), max_size=12),
    st.lists(st.integers(min_value=0, max_value=600), max_size=10),
    st.booleans(),
)
def test_sse_payloads_do_not_depend_on_where_the_pieces_end(
    picks: list[int], cuts: list[int], crlf: bool
) -> None:
    body = b"".join(_SSE_EVENTS[i] for i in picks) + b"data: [DONE]\n\n"
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    expected = [{"n": 3} if i == 3 else {"n": [0, 1, 2, 3, None, 4][i]} for i in picks if i != 4]
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    for split in (pieces, [body], [body[i : i + 1] for i in range(len(body))]):
        decoder = SSEDecoder()
        out = [item for piece in split for item in decoder.feed(piece)]
        assert out == expected and decoder.done
