"""The mock LLM's request handling: routing, faults, the three dialects, the control API.

:class:`MockApp` holds the state a :class:`~agentflow_trio.mockllm.MockLLM` serves
(configuration, script, counters, received bodies) and answers one parsed request at a
time; it never owns a task. Every model-endpoint response goes through ``_send`` or
``_send_stream``, which count its status before writing it: the statistics are exact.
"""

from __future__ import annotations

import collections
import itertools
import math
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import attrs
import trio

from agentflow_trio import _json
from agentflow_trio._http11 import Request, ResponseWriter
from agentflow_trio.mockllm import _payloads
from agentflow_trio.mockllm._payloads import Completion, ToolCallOut
from agentflow_trio.mockllm._values import (
    MAX_EMBEDDING_DIM,
    Counters,
    MockLLMConfig,
    MockReply,
    reply_from_json,
)

__all__ = ["RECEIVED_LIMIT", "MockApp"]

RECEIVED_LIMIT: Final = 256
"""How many recent request bodies :attr:`MockApp.received` keeps."""

_PATH_LIMIT: Final = 256  # distinct paths kept in by_path; the rest count under "<other>"
_OPENAI, _AZURE, _OLLAMA = "openai", "azure", "ollama"
_JSON = b"application/json"
_SSE = b"text/event-stream"
_NDJSON = b"application/x-ndjson"

_Handler = Callable[["MockApp", ResponseWriter, Any, str, str], Awaitable[None]]


@attrs.frozen
class _Route:
    method: bytes
    handler: _Handler
    dialect: str


@final
class MockApp:
    """State and request handling of one mock server (see the module docstring)."""

    def __init__(self, config: MockLLMConfig) -> None:
        self.config = config
        self.received: collections.deque[Any] = collections.deque(maxlen=RECEIVED_LIMIT)
        self.script: collections.deque[MockReply] = collections.deque()
        self.counters = Counters()
        self._rng = random.Random(config.seed)
        self._ids = itertools.count(1)

    def reset_stats(self) -> None:
        """Zero the counters; ``open_connections`` keeps counting the open ones."""
        self.counters = Counters(self.counters.open_connections)

    def reset(self) -> None:
        """Zero the counters, drop queued replies and forget received bodies."""
        self.reset_stats()
        self.script.clear()
        self.received.clear()

    # -- dispatch --

    async def dispatch(self, request: Request, writer: ResponseWriter) -> None:
        control = _CONTROL.get(request.path)
        if control is not None:
            await control(self, request, writer)
            return
        counters = self.counters
        counters.requests += 1
        path = request.path
        if path in counters.by_path or len(counters.by_path) < _PATH_LIMIT:
            counters.by_path[path] = counters.by_path.get(path, 0) + 1
        else:
            counters.by_path["<other>"] = counters.by_path.get("<other>", 0) + 1
        route = _ROUTES.get(path)
        deployment = ""
        if route is None and path.startswith("/openai/deployments/"):
            route, deployment = _azure_route(path)
        if route is None:
            message = f"Unknown request URL: {request.method.decode()} {path}."
            await self._error(writer, _OPENAI, 404, message, "invalid_request_error", "unknown_url")
            return
        await self._model_request(request, writer, route, deployment)

    async def _model_request(
        self, request: Request, writer: ResponseWriter, route: _Route, deployment: str
    ) -> None:
        dialect = route.dialect
        if request.body_too_large:
            message = f"Request body exceeds {self.config.max_body_bytes} bytes."
            await self._error(writer, dialect, 413, message, "invalid_request_error", "too_large")
            return
        if request.method != route.method:
            message = f"Method {request.method.decode()} not allowed; use {route.method.decode()}."
            await self._error(writer, dialect, 405, message, "invalid_request_error", "bad_method")
            return
        if dialect == _AZURE and not await self._azure_checks(request, writer):
            return
        body: Any = None
        if route.method == b"POST":
            body = await self._parse_json(request, writer, dialect)
            if body is None:
                return
            self.received.append(body)
        config = self.config
        delay = config.latency
        if config.jitter:
            delay += self._rng.uniform(-config.jitter, config.jitter)
        if delay > 0:
            await trio.sleep(delay)
        if (config.error_rate or config.rate_limit_rate) and await self._fault(writer, dialect):
            return
        await route.handler(self, writer, body, deployment, dialect)

    async def _azure_checks(self, request: Request, writer: ResponseWriter) -> bool:
        if not urllib.parse.parse_qs(request.query).get("api-version"):
            message = (
                "The api-version query parameter (?api-version=) is required for all requests."
            )
            await self._error(
                writer, _AZURE, 400, message, "invalid_request_error", "MissingApiVersionParameter"
            )
            return False
        if not request.headers.get(b"api-key"):
            message = (
                "Access denied due to missing subscription key. Make sure to include the "
                "subscription key when making requests to an API (header 'api-key')."
            )
            await self._error(writer, _AZURE, 401, message, "authentication_error", "401")
            return False
        return True

    async def _parse_json(self, request: Request, writer: ResponseWriter, dialect: str) -> Any:
        """The request's JSON object, or None after answering 400."""
        try:
            body = _json.loads(request.body)
        except ValueError as exc:
            message = f"We could not parse the JSON body of your request: {exc}"
            await self._error(
                writer, dialect, 400, message, "invalid_request_error", "invalid_json"
            )
            return None
        if not isinstance(body, dict):
            message = f"The JSON body must be an object, not {type(body).__name__}."
            await self._error(
                writer, dialect, 400, message, "invalid_request_error", "invalid_json"
            )
            return None
        return body

    async def _fault(self, writer: ResponseWriter, dialect: str) -> bool:
        """Maybe answer an injected 500 or 429; True if a fault was sent."""
        config = self.config
        roll = self._rng.random()
        if roll < config.error_rate:
            self.counters.errors += 1
            message = "The mock LLM injected a server error."
            await self._error(writer, dialect, 500, message, "server_error", "mock_error")
            return True
        if roll < config.error_rate + config.rate_limit_rate:
            self.counters.rate_limited += 1
            message = f"Rate limit reached (mock). Please try again in {config.retry_after:g}s."
            await self._error(
                writer,
                dialect,
                429,
                message,
                "requests",
                "rate_limit_exceeded",
                self._retry_headers(),
            )
            return True
        return False

    def _retry_headers(self) -> list[tuple[str, str]]:
        seconds = self.config.retry_after
        return [
            ("retry-after", str(math.ceil(seconds))),
            ("retry-after-ms", str(round(seconds * 1000))),
        ]

    # -- sending (every model response passes here, so by_status is exact) --

    async def _send(
        self,
        writer: ResponseWriter,
        status: int,
        body: bytes,
        *,
        content_type: bytes = _JSON,
        headers: list[tuple[str, str]] | None = None,
        truncate: bool = False,
    ) -> None:
        by_status = self.counters.by_status
        by_status[status] = by_status.get(status, 0) + 1
        await writer.send(
            status, body, content_type=content_type, headers=headers or (), truncate=truncate
        )

    async def _send_stream(
        self,
        writer: ResponseWriter,
        status: int,
        parts: list[bytes],
        *,
        content_type: bytes,
        headers: list[tuple[str, str]] | None,
        truncate: bool,
    ) -> None:
        by_status = self.counters.by_status
        by_status[status] = by_status.get(status, 0) + 1
        try:
            await writer.send_chunked(
                status,
                parts,
                content_type=content_type,
                headers=headers or (),
                delay=self.config.stream_delay,
                truncate_after=max(1, len(parts) // 2) if truncate else None,
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.counters.disconnects += 1
            raise

    async def _error(
        self,
        writer: ResponseWriter,
        dialect: str,
        status: int,
        message: str,
        kind: str,
        code: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if dialect == _OLLAMA:
            body = _payloads.ollama_error(message)
        elif dialect == _AZURE:
            body = _payloads.azure_error(code, message)
        else:
            body = _payloads.openai_error(message, kind, code)
        await self._send(writer, status, _json.dumps(body), headers=headers)

    # -- endpoints --

    async def _chat(self, writer: ResponseWriter, body: Any, deployment: str, dialect: str) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            message = "'messages' must be a list of message objects."
            await self._error(
                writer, dialect, 400, message, "invalid_request_error", "invalid_messages"
            )
            return
        reply = self.script.popleft() if self.script else None
        if reply is not None:
            self.counters.scripted += 1
            if reply.delay > 0:
                await trio.sleep(reply.delay)
            if reply.body is not None or not 200 <= reply.status < 300:
                await self._send_scripted(writer, reply, dialect)
                return
        completion = self._completion(body, messages, reply, deployment)
        counters = self.counters
        counters.chat += 1
        counters.prompt_tokens += completion.prompt_tokens
        counters.completion_tokens += completion.completion_tokens
        status = 200 if reply is None else reply.status
        headers = None if reply is None else list(reply.headers.items())
        truncate = reply is not None and reply.truncate_stream
        stream = body.get("stream", dialect == _OLLAMA)
        if not stream:
            payload = (
                _payloads.ollama_chat(completion)
                if dialect == _OLLAMA
                else _payloads.chat_completion(completion)
            )
            content_type = _content_type(reply, _JSON)
            await self._send(
                writer,
                status,
                _json.dumps(payload),
                content_type=content_type,
                headers=headers,
                truncate=truncate,
            )
            return
        counters.streams += 1
        if dialect == _OLLAMA:
            parts = _payloads.ollama_stream_lines(completion, self.config.stream_chunks)
            content_type = _content_type(reply, _NDJSON)
        else:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            parts = _payloads.chat_stream_events(completion, self.config.stream_chunks, usage)
            content_type = _content_type(reply, _SSE)
        await self._send_stream(
            writer, status, parts, content_type=content_type, headers=headers, truncate=truncate
        )

    def _completion(
        self, body: Any, messages: list[Any], reply: MockReply | None, deployment: str
    ) -> Completion:
        config = self.config
        text: str | None
        calls: tuple[ToolCallOut, ...] = ()
        if reply is not None and (reply.text is not None or reply.tool_calls):
            text = reply.text
            calls = tuple(
                ToolCallOut(call.id or f"call_mock{next(self._ids)}", call.name, call.arguments)
                for call in reply.tool_calls
            )
        else:
            text = _payloads.tool_results_text(messages) or config.reply_text
        completion_words = len(text.split()) if text else 0
        completion_words += sum(len(call.arguments_json().split()) + 1 for call in calls)
        model = body.get("model")
        return Completion(
            id=f"chatcmpl-mock{next(self._ids)}",
            created=int(time.time()),
            model=model if isinstance(model, str) else (deployment or config.model),
            text=text,
            tool_calls=calls,
            prompt_tokens=_payloads.count_prompt_words(messages),
            completion_tokens=max(completion_words, 1),
        )

    async def _send_scripted(self, writer: ResponseWriter, reply: MockReply, dialect: str) -> None:
        """A scripted reply with a raw body or an error status."""
        headers = list(reply.headers.items())
        if reply.body is not None:
            raw = reply.body.encode() if isinstance(reply.body, str) else reply.body
            await self._send(
                writer,
                reply.status,
                raw,
                content_type=_content_type(reply, _JSON),
                headers=headers,
                truncate=reply.truncate_stream,
            )
            return
        if reply.status == 429 and not any(name.lower() == "retry-after" for name in reply.headers):
            headers.extend(self._retry_headers())
        message = f"Scripted error {reply.status} from the mock LLM."
        await self._error(
            writer,
            dialect,
            reply.status,
            message,
            _error_kind(reply.status),
            str(reply.status),
            headers,
        )

    async def _embeddings(
        self, writer: ResponseWriter, body: Any, deployment: str, dialect: str
    ) -> None:
        inputs = _embedding_inputs(body.get("input"))
        dim = body.get("dimensions", self.config.embedding_dim)
        encoding = body.get("encoding_format", "float")
        problem = None
        if inputs is None:
            problem = "'input' must be a string or a list of strings (or token lists)."
        elif not (isinstance(dim, int) and 1 <= dim <= MAX_EMBEDDING_DIM):
            problem = f"'dimensions' must be an integer in 1..{MAX_EMBEDDING_DIM}."
        elif encoding not in ("float", "base64"):
            problem = "'encoding_format' must be 'float' or 'base64'."
        if problem is not None or inputs is None:
            await self._error(
                writer, dialect, 400, str(problem), "invalid_request_error", "invalid_input"
            )
            return
        vectors = [_payloads.embedding_vector(text, dim) for text in inputs]
        words = sum(len(text.split()) for text in inputs)
        self.counters.embeddings += 1
        self.counters.prompt_tokens += words
        model = body.get("model")
        model = model if isinstance(model, str) else (deployment or self.config.model)
        payload: dict[str, Any]
        if dialect == _OLLAMA:
            payload = {
                "model": model,
                "embeddings": vectors,
                "total_duration": 0,
                "load_duration": 0,
                "prompt_eval_count": words,
            }
        else:
            data = [
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": _payloads.encode_embedding(vector, encoding),
                }
                for index, vector in enumerate(vectors)
            ]
            usage = {"prompt_tokens": words, "total_tokens": words}
            payload = {"object": "list", "data": data, "model": model, "usage": usage}
        await self._send(writer, 200, _json.dumps(payload))

    async def _models(
        self, writer: ResponseWriter, body: Any, deployment: str, dialect: str
    ) -> None:
        model = {
            "id": self.config.model,
            "object": "model",
            "created": 0,
            "owned_by": "agentflow-mock",
        }
        await self._send(writer, 200, _json.dumps({"object": "list", "data": [model]}))

    # -- control endpoints --

    async def _control_stats(self, request: Request, writer: ResponseWriter) -> None:
        if request.method != b"GET":
            await writer.send(405, b'{"error":{"message":"use GET /stats"}}')
            return
        await writer.send(200, _json.dumps(self.counters.snapshot().to_json()))

    async def _control_script(self, request: Request, writer: ResponseWriter) -> None:
        if request.method != b"POST" or request.body_too_large:
            await writer.send(
                405 if not request.body_too_large else 413,
                b'{"error":{"message":"POST a JSON list of replies"}}',
            )
            return
        try:
            data = _json.loads(request.body)
            replies = [
                reply_from_json(item) for item in (data if isinstance(data, list) else [data])
            ]
        except (TypeError, ValueError, KeyError) as exc:
            body = _json.dumps(
                _payloads.openai_error(f"bad script: {exc}", "invalid_request_error")
            )
            await writer.send(400, body)
            return
        self.script.extend(replies)
        await writer.send(200, _json.dumps({"queued": len(self.script)}))

    async def _control_reset(self, request: Request, writer: ResponseWriter) -> None:
        if request.method != b"POST":
            await writer.send(405, b'{"error":{"message":"use POST /mock/reset"}}')
            return
        self.reset()
        await writer.send(200, b'{"reset":true}')


# -- module helpers ---------------------------------------------------------------------


def _content_type(reply: MockReply | None, default: bytes) -> bytes:
    if reply is None or reply.content_type is None:
        return default
    return reply.content_type.encode("latin-1", "replace")


def _error_kind(status: int) -> str:
    if status == 429:
        return "requests"
    if status in (401, 403):
        return "authentication_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _embedding_inputs(value: Any) -> list[str] | None:
    """The texts to embed: a string, a list of strings, or token lists (embedded as text)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, int) for item in value):
        return [" ".join(map(str, value))]
    texts = []
    for item in value:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list) and all(isinstance(token, int) for token in item):
            texts.append(" ".join(map(str, item)))
        else:
            return None
    return texts


_ROUTES: Final[dict[str, _Route]] = {}
for _prefix in ("/v1", ""):
    _ROUTES[f"{_prefix}/chat/completions"] = _Route(b"POST", MockApp._chat, _OPENAI)
    _ROUTES[f"{_prefix}/embeddings"] = _Route(b"POST", MockApp._embeddings, _OPENAI)
    _ROUTES[f"{_prefix}/models"] = _Route(b"GET", MockApp._models, _OPENAI)
_ROUTES["/api/chat"] = _Route(b"POST", MockApp._chat, _OLLAMA)
_ROUTES["/api/embed"] = _Route(b"POST", MockApp._embeddings, _OLLAMA)

_AZURE_ROUTES: Final = {
    "chat/completions": _Route(b"POST", MockApp._chat, _AZURE),
    "embeddings": _Route(b"POST", MockApp._embeddings, _AZURE),
}

_CONTROL: Final[dict[str, Callable[[MockApp, Request, ResponseWriter], Awaitable[None]]]] = {
    "/stats": MockApp._control_stats,
    "/mock/script": MockApp._control_script,
    "/mock/reset": MockApp._control_reset,
}


def _azure_route(path: str) -> tuple[_Route | None, str]:
    """``/openai/deployments/{deployment}/{operation}`` -> (route or None, deployment)."""
    deployment, _, operation = path[len("/openai/deployments/") :].partition("/")
    route = _AZURE_ROUTES.get(operation)
    return (route, deployment) if deployment else (None, "")
