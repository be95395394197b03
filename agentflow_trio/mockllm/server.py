"""An OpenAI-compatible mock LLM HTTP server on trio, lean enough never to be the bottleneck.

It speaks five wires on one port:

- OpenAI: ``POST /v1/chat/completions`` (plain and ``"stream": true`` server-sent events,
  tool calls, ``stream_options.include_usage``), ``POST /v1/embeddings`` (float or base64),
  ``GET /v1/models``. The same paths without ``/v1`` are accepted too.
- Azure OpenAI: ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``
  and ``.../embeddings?api-version=...``; 400 without ``api-version``, 401 without an
  ``api-key`` header.
- Ollama: ``POST /api/chat`` (NDJSON stream by default, ``"stream": false`` for one object)
  and ``POST /api/embed``.
- Anthropic Messages: ``POST /v1/messages`` (and ``/messages``): system prompt, text /
  tool_use / tool_result / thinking blocks, ``tools`` and ``tool_choice``, ``max_tokens``
  required (400 ``invalid_request_error`` without), signed ``thinking`` blocks (with
  thinking enabled, the assistant turn before a tool result must send its thinking block
  back unchanged, as the real API requires), usage with cache creation/read tokens, and
  the SSE event sequence (``message_start`` ... ``message_stop``, ``ping``, ``event:
  error``); errors in Anthropic's shape (429 ``rate_limit_error`` with ``retry-after`` and
  ``anthropic-ratelimit-requests-*``, 529 ``overloaded_error``, 500 ``api_error``).
  ``x-api-key`` and ``anthropic-version`` are accepted, not checked (as OpenAI's key);
  ``POST /v1/messages/count_tokens`` answers the prompt's ``input_tokens``.
- OpenAI Responses: ``POST /v1/responses`` (and ``/responses``): ``input`` as a string or
  items (messages, ``function_call``, ``function_call_output``, ``reasoning``),
  ``instructions``, function ``tools``, ``tool_choice``, ``text.format`` (JSON schema),
  ``store`` and ``previous_response_id`` echoed; ``response`` objects with ``message``,
  ``function_call`` and ``reasoning`` items and their usage; the numbered SSE events
  (``response.created`` ... ``response.completed``, ``error`` + ``response.failed``).

Control endpoints (never faulted, never counted in the request statistics): ``GET /stats``,
``POST /mock/script`` (a JSON list of replies, fields as :class:`MockReply`), ``POST
/mock/reset`` (statistics, script and received bodies).

Faults and timing come from :class:`MockLLMConfig` and apply to every model endpoint: first a
malformed request is refused (400, 404, 405, 413, Azure 400/401) at once, then ``latency``
(+- ``jitter``) is slept, then the model's `Fault` rules (``MockLLMConfig.faults``) may
inject one, then ``error_rate`` answers 500 and ``rate_limit_rate`` answers 429 (with
``Retry-After`` and ``retry-after-ms``); otherwise the next scripted reply for that model,
if any, is consumed (chat-like requests only, any wire) and sent, with its own fault if it
has one. `Fault` documents every kind (429 with or without Retry-After, 5xx, reset, no
response, slow first token, cut or stalled streams, a garbage event, no ``[DONE]``,
context length, content filter) and when a rule applies (``times``, ``start``,
``window``); :meth:`MockLLM.stats` counts them per kind and per model.

Guarantees: every request is counted exactly once in :meth:`MockLLM.stats` before its
response is written; each connection is one task in the server's nursery; a client that
goes away mid-stream ends only its connection (counted in ``disconnects``); leaving
:func:`open_mock_llm` leaves no task running.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, final

import attrs
import trio

from agentflow_trio._http11 import serve_http_connection
from agentflow_trio.mockllm._handler import RECEIVED_LIMIT, MockApp
from agentflow_trio.mockllm._values import (
    MockLLMConfig,
    MockLLMStats,
    MockReply,
    MockToolCall,
    check_config,
)

__all__ = [
    "RECEIVED_LIMIT",
    "MockLLM",
    "MockLLMConfig",
    "MockLLMStats",
    "MockReply",
    "MockToolCall",
    "open_mock_llm",
]

_DEFAULT_CONFIG = MockLLMConfig()  # frozen: safe to share as a default

for _value in (MockLLMConfig, MockLLMStats, MockReply, MockToolCall):
    _value.__module__ = __name__  # tracebacks and reprs name the public module


@final
class MockLLM:
    """The mock LLM server. Start it with ``await nursery.start(mock.serve)`` (the port is
    returned) or :func:`open_mock_llm`; it serves until cancelled.

    ``config`` may be replaced while serving (for example ``attrs.evolve(mock.config,
    error_rate=0.5)``); each request reads it once. ``received`` keeps the last
    ``RECEIVED_LIMIT`` JSON request bodies sent to the model endpoints, oldest first.
    """

    def __init__(self, config: MockLLMConfig = _DEFAULT_CONFIG) -> None:
        self._app = MockApp(config)
        self._address: tuple[str, int] | None = None

    @property
    def config(self) -> MockLLMConfig:
        """The configuration the next request will read."""
        return self._app.config

    @config.setter
    def config(self, config: MockLLMConfig) -> None:
        if not isinstance(config, MockLLMConfig):
            raise TypeError(f"config must be a MockLLMConfig, not {type(config).__name__}")
        self._app.config = config

    @property
    def received(self) -> collections.deque[Any]:
        """Recent JSON request bodies of the model endpoints (bounded, oldest first)."""
        return self._app.received

    @property
    def port(self) -> int:
        """The bound TCP port. Raises ``RuntimeError`` unless :meth:`serve` is running."""
        return self._bound()[1]

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` as reachable from this machine; OpenAI's base_url is
        ``url + "/v1"``. Raises ``RuntimeError`` unless :meth:`serve` is running."""
        host, port = self._bound()
        return f"http://{host}:{port}"

    def script(self, *replies: MockReply) -> None:
        """Queue ``replies``; each chat request that is not faulted takes the oldest one."""
        self._app.script.extend(replies)

    def stats(self) -> MockLLMStats:
        """A snapshot of the counters."""
        return self._app.counters.snapshot()

    def reset_stats(self) -> None:
        """Zero every counter (``open_connections`` keeps counting the open ones)."""
        self._app.reset_stats()

    def reset(self) -> None:
        """Zero the counters, drop queued replies, forget received bodies and restart the
        fault rules' counts and clocks (``/mock/reset``)."""
        self._app.reset()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind ``config.host:config.port``, report the port to ``task_status``, serve until
        cancelled.

        Each connection runs as its own task in this call's nursery; all are cancelled with
        it. With port 0 and a host that resolves to several addresses only the first is kept
        (each would get a different port). Raises ``ConfigError`` for a non-loopback host
        without ``allow_remote``, ``OSError`` if the address cannot be bound, and
        ``RuntimeError`` if this mock is already serving, all before ``task_status.started``.
        """
        if self._address is not None:
            raise RuntimeError("this MockLLM is already serving")
        config = self.config
        check_config(config)
        listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        try:
            if config.port == 0:
                for extra in listeners[1:]:
                    await trio.aclose_forcefully(extra)
                del listeners[1:]
            self._address = _connect_address(listeners[0].socket.getsockname())
            task_status.started(self._address[1])
            await trio.serve_listeners(self._serve_connection, listeners)
        finally:
            self._address = None
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    def _bound(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("the mock LLM is not serving: start serve() first")
        return self._address

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        app = self._app
        app.counters.connections += 1
        app.counters.open_connections += 1
        try:
            await serve_http_connection(
                stream,
                functools.partial(app.dispatch, stream=stream),
                max_body_bytes=app.config.max_body_bytes,
            )
        finally:
            app.counters.open_connections -= 1


def _connect_address(sockname: Any) -> tuple[str, int]:
    """Where a local client reaches a listener bound to ``sockname`` (wildcards -> loopback)."""
    host, port = sockname[0], sockname[1]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return (f"[{host}]" if ":" in host else host), port


@asynccontextmanager
async def open_mock_llm(
    config: MockLLMConfig | None = None, **overrides: Any
) -> AsyncIterator[MockLLM]:
    """Run a :class:`MockLLM` for the duration of the ``async with`` block.

    ``overrides`` are applied with ``attrs.evolve`` to ``config`` (default
    ``MockLLMConfig()``), so ``open_mock_llm(latency=0.05)`` works. The server is listening
    when the block starts; leaving the block (normally, by an error, or by cancellation)
    stops it and leaves no task running. An error raised in the block comes out as itself,
    not wrapped in an exception group.
    """
    mock = MockLLM(attrs.evolve(config or MockLLMConfig(), **overrides))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(mock.serve)
            try:
                yield mock
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
