"""Error mapping at the HTTP edge, the stream decoders, and bad answers from a real mock.

Mock tests: loopback only, port 0, the real clock, every body under ``trio.fail_after``.
They call a transport directly (no retry layer), so each bad answer shows as itself.
"""

from __future__ import annotations

import email.utils
import inspect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.config import LLMConfig
from agentflow_trio.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    LLMConnectError,
    LLMError,
    LLMReadError,
    LLMTimeoutError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    TransportError,
)
from agentflow_trio.llm import ChatRequest, EmbeddingRequest, Provider, open_transport, user
from agentflow_trio.llm.http import (
    EXCEPTION_MAP,
    HTTPX_ERRORS,
    NDJSONDecoder,
    SSEDecoder,
    map_exception,
    parse_retry_after,
    status_error,
)
from agentflow_trio.mockllm import MockLLM, MockReply, open_mock_llm
from agentflow_trio.testing import mock_llm_config

TIMEOUT = 10
REQUEST = ChatRequest((user("hello"),))


# -- the map ----------------------------------------------------------------------------


def _httpx2_exception_classes() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    todo = [v for v in vars(httpx2).values() if inspect.isclass(v) and issubclass(v, Exception)]
    while todo:
        cls = todo.pop()
        if cls in found or not cls.__module__.startswith("httpx2"):
            continue
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_no_httpx2_exception_is_left_unmapped() -> None:
    classes = _httpx2_exception_classes()
    assert len(classes) > 25  # the walk found the tree, not nothing
    unmapped = sorted(c.__name__ for c in classes if c not in EXCEPTION_MAP)
    assert unmapped == []
    assert all(issubclass(c, HTTPX_ERRORS) for c in classes)


def _instance(cls: type[Exception]) -> Exception:
    if issubclass(cls, httpx2.HTTPStatusError):
        request = httpx2.Request("POST", "http://x/")
        response = httpx2.Response(503, content=b"down", request=request)
        return cls("bad status", request=request, response=response)
    try:
        return cls("message")
    except TypeError:
        return cls()  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", sorted(_httpx2_exception_classes(), key=lambda c: c.__name__))
def test_each_class_maps_to_its_target(cls: type[Exception]) -> None:
    mapped = map_exception(_instance(cls), "dep")
    assert isinstance(mapped, EXCEPTION_MAP[cls])
    if isinstance(mapped, LLMError):
        assert mapped.deployment == "dep"


def test_most_specific_targets() -> None:
    assert type(map_exception(httpx2.ConnectError("x"))) is LLMConnectError
    assert type(map_exception(httpx2.ConnectTimeout("x"))) is LLMTimeoutError
    assert type(map_exception(httpx2.PoolTimeout("x"))) is LLMTimeoutError
    assert type(map_exception(httpx2.ReadError("x"))) is LLMReadError
    assert type(map_exception(httpx2.RemoteProtocolError("x"))) is LLMReadError
    assert type(map_exception(httpx2.DecodingError("x"))) is ResponseFormatError
    bad_url = map_exception(httpx2.UnsupportedProtocol("x"))
    assert isinstance(bad_url, ConfigError) and bad_url.key == "llm.base_url"
    status = map_exception(_instance(httpx2.HTTPStatusError))
    assert isinstance(status, ServerError) and status.status == 503 and status.excerpt == "down"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (422, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
        (409, APIStatusError),
    ],
)
def test_status_errors(status: int, kind: type[APIStatusError]) -> None:
    error = status_error(status, httpx2.Headers(), b"x" * 1000, "dep")
    assert type(error) is kind
    assert error.status == status and error.deployment == "dep"
    assert error.excerpt == "x" * 200


def test_retry_after_forms() -> None:
    assert parse_retry_after(httpx2.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert parse_retry_after(httpx2.Headers({"Retry-After": "7"})) == 7.0
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(httpx2.Headers({"retry-after": when}), now=1_000_000) == 30.0
    assert parse_retry_after(httpx2.Headers({"retry-after": when}), now=2_000_000) == 0.0
    assert parse_retry_after(httpx2.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx2.Headers({"retry-after": "-3"})) is None
    assert parse_retry_after(httpx2.Headers()) is None


def test_without_retry_after_the_exhausted_limits_reset_is_read() -> None:
    anthropic = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2001-09-09T01:47:10Z",  # 1_000_000_030
        "anthropic-ratelimit-tokens-remaining": "5000",  # not exhausted: not waited for
        "anthropic-ratelimit-tokens-reset": "2001-09-09T01:50:00Z",
    }
    assert parse_retry_after(httpx2.Headers(anthropic), now=1_000_000_000) == 30.0
    both = anthropic | {"anthropic-ratelimit-tokens-remaining": "0"}  # the later one
    assert parse_retry_after(httpx2.Headers(both), now=1_000_000_000) == 200.0
    assert parse_retry_after(httpx2.Headers(anthropic | {"retry-after": "3"})) == 3.0
    openai = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m2.5s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "20ms",
    }
    assert parse_retry_after(httpx2.Headers(openai)) == 62.5
    assert parse_retry_after(httpx2.Headers(openai | {"x-ratelimit-remaining-requests": "9"}))
    for garbage in ("soon", "1x", "-1s", "9" * 70 + "s", "1e3s", ""):
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": garbage}
        assert parse_retry_after(httpx2.Headers(headers)) is None, garbage
    for garbage in ("yesterday", "2001-13-40T00:00:00Z", "9" * 80):
        headers = {
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": garbage,
        }
        assert parse_retry_after(httpx2.Headers(headers), now=1e9) is None, garbage
    past = anthropic | {"anthropic-ratelimit-requests-reset": "1990-01-01T00:00:00+00:00"}
    assert parse_retry_after(httpx2.Headers(past), now=1_000_000_000) == 0.0
    far = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "999999h"}
    assert parse_retry_after(httpx2.Headers(far)) == 86_400.0  # MAX_RETRY_AFTER


# -- decoders ---------------------------------------------------------------------------

SSE_BODY = (
    b": keep-alive comment\r\n"
    b'data: {"n": 1}\r\n\r\n'
    b'data: {"n":\ndata: 2}\n\n'
    b"event: ignored\n"
    b'data: {"n": 3}\n\n'
    b"data: [DONE]\n\n"
)
NDJSON_BODY = b'{"n": 1}\n\n{"n": 2}\r\n{"n": 3, "done": true}\n'


def _cut(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(body)) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(body)]:
        pieces.append(body[start:point])
        start = point
    return pieces


def _decode(decoder: Any, pieces: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for piece in pieces:
        out.extend(decoder.feed(piece))
    out.extend(decoder.finish())
    return out


@settings(deadline=None, max_examples=150)
@given(st.lists(st.integers(min_value=0, max_value=len(SSE_BODY)), max_size=12))
def test_sse_decoder_is_chunking_independent(cuts: list[int]) -> None:
    decoder = SSEDecoder()
    assert _decode(decoder, _cut(SSE_BODY, cuts)) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert decoder.done


@settings(deadline=None, max_examples=150)
@given(st.lists(st.integers(min_value=0, max_value=len(NDJSON_BODY)), max_size=12))
def test_ndjson_decoder_is_chunking_independent(cuts: list[int]) -> None:
    decoder = NDJSONDecoder()
    out = _decode(decoder, _cut(NDJSON_BODY, cuts))
    assert [item["n"] for item in out] == [1, 2, 3] and decoder.done


def test_decoders_refuse_truncated_streams() -> None:
    sse = SSEDecoder()
    sse.feed(b'data: {"n": 1}\n\n')
    with pytest.raises(ResponseFormatError, match="DONE"):
        sse.finish()
    ndjson = NDJSONDecoder()
    ndjson.feed(b'{"n": 1}\n')
    with pytest.raises(ResponseFormatError, match="done"):
        ndjson.finish()


def test_decoders_bound_line_length() -> None:
    for decoder in (SSEDecoder(max_line=64), NDJSONDecoder(max_line=64)):
        decoder.feed(b"data: " + b"x" * 40)
        with pytest.raises(ResponseFormatError, match="longer than 64"):
            decoder.feed(b"y" * 40)


def test_decoders_refuse_malformed_json() -> None:
    with pytest.raises(ResponseFormatError) as info:
        SSEDecoder().feed(b"data: {oops\n\n")
    assert "{oops" in info.value.excerpt
    with pytest.raises(ResponseFormatError):
        NDJSONDecoder().feed(b"{oops\n")


# -- bad answers from the real mock -----------------------------------------------------


@asynccontextmanager
async def transport(
    provider: str = "openai", mock_config: dict[str, Any] | None = None, **llm: Any
) -> AsyncIterator[tuple[MockLLM, Provider]]:
    async with open_mock_llm(**(mock_config or {})) as mock:
        config = mock_llm_config(mock, provider, api_key="k", **llm)  # type: ignore[arg-type]
        async with open_transport(config) as bottom:
            yield mock, bottom


async def _stream_all(provider: Provider) -> list[Any]:
    async with provider.stream(REQUEST) as chunks:
        return [chunk async for chunk in chunks]


async def test_malformed_json_body() -> None:
    with trio.fail_after(TIMEOUT):
        async with transport() as (mock, provider):
            mock.script(MockReply(body='{"choices": [', content_type="application/json"))
            with pytest.raises(ResponseFormatError) as info:
                await provider.complete(REQUEST)
            assert info.value.excerpt == '{"choices": [' and info.value.deployment


async def test_json_of_the_wrong_shape() -> None:
    with trio.fail_after(TIMEOUT):
        async with transport() as (mock, provider):
            mock.script(MockReply(body='{"unexpected": true}'))
            with pytest.raises(ResponseFormatError, match="shape") as info:
                await provider.complete(REQUEST)
            assert "unexpected" in info.value.excerpt


async def test_wrong_content_type() -> None:
    with trio.fail_after(TIMEOUT):
        async with transport() as (mock, provider):
            mock.script(MockReply(body="<p>hello</p>", content_type="text/html"))
            with pytest.raises(ResponseFormatError, match="text/html") as info:
                await provider.complete(REQUEST)
            assert info.value.excerpt == "<p>hello</p>"
            mock.script(MockReply(body='{"a": 1}', content_type="application/json"))
            with pytest.raises(ResponseFormatError, match="application/json"):
                await _stream_all(provider)


async def test_server_error_with_html_body() -> None:
    page = "<html><body>" + "Service Unavailable " * 40 + "</body></html>"
    with trio.fail_after(TIMEOUT):
        async with transport() as (mock, provider):
            for streamed in (False, True):
                mock.script(MockReply(status=503, body=page, content_type="text/html"))
                with pytest.raises(ServerError) as info:
                    await (_stream_all(provider) if streamed else provider.complete(REQUEST))
                error = info.value
                assert error.status == 503 and error.retryable
                assert error.excerpt.startswith("<html><body>Service Unavailable")
                assert len(error.excerpt) == 200


async def test_rate_limited_with_retry_after() -> None:
    with trio.fail_after(TIMEOUT):
        async with transport() as (mock, provider):
            mock.script(MockReply(status=429, headers={"Retry-After": "7"}))
            with pytest.raises(RateLimitError) as info:
                await provider.complete(REQUEST)
            assert info.value.status == 429 and info.value.retry_after == 7.0
            assert "Scripted error 429" in info.value.excerpt


async def test_truncated_stream_cut_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with transport(mock_config={"stream_chunks": 6}) as (mock, provider):
            mock.script(MockReply(text="one two three four five six", truncate_stream=True))
            with pytest.raises(LLMReadError):
                await _stream_all(provider)


async def test_stream_ending_without_done() -> None:
    body = 'data: {"choices": [{"delta": {"content": "hi"}, "finish_reason": null}]}\n\n'
    with trio.fail_after(TIMEOUT):
        async with transport() as (mock, provider):
            mock.script(MockReply(body=body, content_type="text/event-stream"))
            with pytest.raises(ResponseFormatError, match="DONE"):
                await _stream_all(provider)


async def test_ndjson_stream_ending_without_done() -> None:
    with trio.fail_after(TIMEOUT):
        async with transport("ollama") as (mock, provider):
            body = '{"message": {"content": "hi"}, "done": false}\n'
            mock.script(MockReply(body=body, content_type="application/x-ndjson"))
            with pytest.raises(ResponseFormatError, match="done"):
                await _stream_all(provider)


async def test_error_inside_a_stream() -> None:
    body = 'data: {"error": {"message": "overloaded"}}\n\ndata: [DONE]\n\n'
    with trio.fail_after(TIMEOUT):
        async with transport() as (mock, provider):
            mock.script(MockReply(body=body, content_type="text/event-stream"))
            with pytest.raises(ServerError, match="overloaded"):
                await _stream_all(provider)


async def test_truncated_plain_body() -> None:
    with trio.fail_after(TIMEOUT):
        async with transport() as (mock, provider):
            mock.script(MockReply(body='{"choices": []}' * 10, truncate_stream=True))
            with pytest.raises(LLMReadError):
                await provider.complete(REQUEST)


async def test_ollama_error_status() -> None:
    with trio.fail_after(TIMEOUT):
        async with transport("ollama") as (mock, provider):
            mock.script(MockReply(status=404))
            with pytest.raises(NotFoundError) as info:
                await provider.complete(REQUEST)
            assert "error" in info.value.excerpt


async def test_read_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        # The __cause__ check is about the httpx2 mapping; the lean transport's timeouts are
        # tested in test_lean_transport.py.
        async with transport(request_timeout=0.2, transport="httpx2") as (mock, provider):
            mock.script(MockReply(delay=1.0))
            with pytest.raises(LLMTimeoutError) as info:
                await provider.complete(REQUEST)
            assert isinstance(info.value.__cause__, httpx2.ReadTimeout)


async def test_connection_refused() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    config = LLMConfig(
        provider="openai", base_url=f"http://127.0.0.1:{port}/v1", transport="httpx2"
    )
    with trio.fail_after(TIMEOUT):
        async with open_transport(config) as provider:
            with pytest.raises(LLMConnectError) as info:
                await provider.embed(EmbeddingRequest(("x",)))
            assert isinstance(info.value, TransportError)
            assert isinstance(info.value.__cause__, httpx2.ConnectError)


async def test_bad_base_url_is_a_config_error() -> None:
    config = LLMConfig(provider="openai", base_url="ftp://127.0.0.1/v1")
    with trio.fail_after(TIMEOUT):
        async with open_transport(config) as provider:
            with pytest.raises(ConfigError):
                await provider.complete(REQUEST)


def test_retry_after_date_defaults_to_the_wall_clock() -> None:
    soon = email.utils.formatdate(time.time() + 60, usegmt=True)
    value = parse_retry_after(httpx2.Headers({"retry-after": soon}))
    assert value is not None and 0 < value <= 60


GARBAGE_DELAYS = (
    *("nan", "NaN", "inf", "-inf", "infinity", "-1", "-0.5", "1e3", "1_000", "0x10"),
    *("5s", "12abc", "+5", ".5", "5.", "", " ", "Wed, 99 Foo 2024", "\x00", "9" * 400),
)


@pytest.mark.parametrize("value", GARBAGE_DELAYS)
def test_garbage_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) is None
    assert parse_retry_after({"retry-after-ms": value}) is None


def test_absurd_retry_after_is_clamped() -> None:
    from agentflow_trio.llm.http import MAX_RETRY_AFTER

    assert MAX_RETRY_AFTER == 86_400.0
    assert parse_retry_after({"retry-after": "1000000000"}) == MAX_RETRY_AFTER
    assert parse_retry_after({"retry-after-ms": "1000000000000"}) == MAX_RETRY_AFTER
    far = email.utils.formatdate(4_000_000_000, usegmt=True)  # year 2096
    assert parse_retry_after({"retry-after": far}, now=1_000_000) == MAX_RETRY_AFTER
    past = email.utils.formatdate(1_000, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=1_000_000) == 0.0
    assert parse_retry_after({"retry-after": " 12 "}) == 12.0
    assert parse_retry_after({"retry-after-ms": "250.5"}) == 0.2505
    error = status_error(429, {"retry-after": "1000000000"}, b"", "dep")
    assert error.retry_after == MAX_RETRY_AFTER
