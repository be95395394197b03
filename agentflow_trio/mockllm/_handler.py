"""The mock LLM's request handling: routing, faults, the five wires, the control API.

:class:`MockApp` holds the state a :class:`~agentflow_trio.mockllm.MockLLM` serves
(configuration, script, counters, received bodies, fault clocks) and answers one parsed
request at a time; it never owns a task. Every model-endpoint response goes through
``_send`` or ``_send_stream``, which count its status before writing it: the statistics are
exact. `Fault` rules (``_faults``) are injected here: the plain kinds instead of a reply
(``_inject``), the others by shaping the reply as it is sent. Every chat-like wire (OpenAI
and Azure chat, Ollama, Anthropic Messages, OpenAI Responses) goes through one flow
(``_generate``): the Anthropic and Responses requests are translated into the chat shape at
the edge (``_anthropic``, ``_responses``) and the neutral `Completion` back out.
"""

from __future__ import annotations

import collections
import itertools
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final, final

import attrs
import trio

from agentflow_trio import _json
from agentflow_trio._http11 import Request, ResponseWriter
from agentflow_trio.mockllm import _anthropic, _examples, _payloads, _responses
from agentflow_trio.mockllm._faults import (
    PLAIN_KINDS,
    FaultBook,
)
from agentflow_trio.mockllm._payloads import Completion, ToolCallOut
from agentflow_trio.mockllm._respond import (
    ANTHROPIC,
    AZURE,
    JSON,
    NDJSON,
    OLLAMA,
    OPENAI,
    RESPONSES,
    SSE,
    Call,
    Responder,
    retry_headers,
)
from agentflow_trio.mockllm._values import (
    KEY_LIMIT,
    MAX_EMBEDDING_DIM,
    OTHER,
    Counters,
    MockLLMConfig,
    MockReply,
    fault_from_json,
    reply_from_json,
)

__all__ = ["RECEIVED_LIMIT", "MockApp"]

RECEIVED_LIMIT: Final = 256
"""How many recent request bodies :attr:`MockApp.received` keeps."""

_Handler = Callable[["MockApp", ResponseWriter, Any, Call], Awaitable[None]]


@attrs.frozen
class _Route:
    method: bytes
    handler: _Handler
    dialect: str


@final
class MockApp(Responder):
    """State and request handling of one mock server (see the module docstring)."""

    def __init__(self, config: MockLLMConfig) -> None:
        self.config = config
        self.received: collections.deque[Any] = collections.deque(maxlen=RECEIVED_LIMIT)
        self.script: collections.deque[MockReply] = collections.deque()
        self.counters = Counters()
        self._rng = random.Random(config.seed)
        self._ids = itertools.count(1)
        self.fault_book = FaultBook()

    def reset_stats(self) -> None:
        """Zero the counters; ``open_connections`` keeps counting the open ones."""
        self.counters = Counters(self.counters.open_connections)

    def reset(self) -> None:
        """Zero the counters, drop queued replies, forget received bodies and restart the
        fault rules (counts and clocks)."""
        self.reset_stats()
        self.script.clear()
        self.received.clear()
        self.fault_book.clear()

    # -- dispatch --

    async def dispatch(
        self, request: Request, writer: ResponseWriter, stream: trio.abc.Stream
    ) -> None:
        """Answer ``request`` on ``writer``; ``stream`` is the connection under it (for the
        faults that reset it, leave it silent, or pace its bytes)."""
        control = _CONTROL.get(request.path)
        if control is not None:
            await control(self, request, writer)
            return
        counters = self.counters
        counters.requests += 1
        path = request.path
        if path in counters.by_path or len(counters.by_path) < KEY_LIMIT:
            counters.by_path[path] = counters.by_path.get(path, 0) + 1
        else:
            counters.by_path[OTHER] = counters.by_path.get(OTHER, 0) + 1
        route = _ROUTES.get(path)
        deployment = ""
        if route is None and path.startswith("/openai/deployments/"):
            route, deployment = _azure_route(path)
        if route is None:
            message = f"Unknown request URL: {request.method.decode()} {path}."
            await self._error(writer, OPENAI, 404, message, "invalid_request_error", "unknown_url")
            return
        await self._model_request(request, writer, route, deployment, stream)

    async def _model_request(
        self,
        request: Request,
        writer: ResponseWriter,
        route: _Route,
        deployment: str,
        stream: trio.abc.Stream,
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
        if dialect == AZURE and not await self._azure_checks(request, writer):
            return
        body: Any = None
        if route.method == b"POST":
            body = await self._parse_json(request, writer, dialect)
            if body is None:
                return
            self.received.append(body)
        name = body.get("model") if body is not None else None
        model = name if isinstance(name, str) and name else deployment
        if model:
            model = self.counters.count_model(model)
        config = self.config
        delay = config.latency
        if config.jitter:
            delay += self._rng.uniform(-config.jitter, config.jitter)
        if delay > 0:
            await trio.sleep(delay)
        fault = None
        if config.faults and body is not None:
            fault = self.fault_book.pick(config.faults, model)
        call = Call(deployment, dialect, model, stream, fault)
        if fault is not None and fault.kind in PLAIN_KINDS:
            await self._inject(writer, call, fault)
            return
        if (config.error_rate or config.rate_limit_rate) and await self._fault(writer, dialect):
            return
        await route.handler(self, writer, body, call)

    async def _azure_checks(self, request: Request, writer: ResponseWriter) -> bool:
        if not urllib.parse.parse_qs(request.query).get("api-version"):
            message = (
                "The api-version query parameter (?api-version=) is required for all requests."
            )
            await self._error(
                writer, AZURE, 400, message, "invalid_request_error", "MissingApiVersionParameter"
            )
            return False
        if not request.headers.get(b"api-key"):
            message = (
                "Access denied due to missing subscription key. Make sure to include the "
                "subscription key when making requests to an API (header 'api-key')."
            )
            await self._error(writer, AZURE, 401, message, "authentication_error", "401")
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
            await self._rate_limited(writer, dialect, config.retry_after)
            return True
        return False

    # -- endpoints --

    async def _chat(self, writer: ResponseWriter, body: Any, call: Call) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list):
            message = "'messages' must be a list of message objects."
            await self._error(
                writer, call.dialect, 400, message, "invalid_request_error", "invalid_messages"
            )
            return
        await self._generate(writer, body, call, body, False)

    async def _messages(self, writer: ResponseWriter, body: Any, call: Call) -> None:
        """Anthropic Messages: checked and translated at the edge, then the one flow."""
        problem = _anthropic.problem(body)
        if problem is not None:
            await self._error(writer, ANTHROPIC, 400, problem, "invalid_request_error", "400")
            return
        chat = _anthropic.to_chat(body)
        await self._generate(writer, body, call, chat, _anthropic.wants_thinking(body))

    async def _count_tokens(self, writer: ResponseWriter, body: Any, call: Call) -> None:
        """Anthropic's ``/v1/messages/count_tokens``: the prompt's tokens, as the mock
        counts them for a reply (``max_tokens`` is not part of this request)."""
        problem = _anthropic.problem({"max_tokens": 2**31, **body})
        if problem is not None:
            await self._error(writer, ANTHROPIC, 400, problem, "invalid_request_error", "400")
            return
        words = _payloads.count_prompt_words(_anthropic.to_chat(body)["messages"])
        await self._send_reply(writer, call, call.fault, _json.dumps({"input_tokens": words}))

    async def _responses(self, writer: ResponseWriter, body: Any, call: Call) -> None:
        """OpenAI Responses: checked and translated at the edge, then the one flow."""
        problem = _responses.problem(body)
        if problem is not None:
            status, message = problem
            code = "invalid_input" if status == 400 else "not_found"
            await self._error(writer, RESPONSES, status, message, "invalid_request_error", code)
            return
        chat = _responses.to_chat(body)
        await self._generate(writer, body, call, chat, _responses.wants_reasoning(body))

    async def _generate(
        self, writer: ResponseWriter, body: Any, call: Call, chat: Any, thinking: bool
    ) -> None:
        """Answer one chat-like request of any wire: ``body`` as sent, ``chat`` its
        neutral chat-shaped form (``body`` itself for the chat wires); ``thinking``: the
        request asks for reasoning (a default one is made when none is scripted)."""
        dialect = call.dialect
        reply = self._take_reply(call.model)
        fault = call.fault
        if reply is not None:
            self.counters.scripted += 1
            if reply.delay > 0:
                await trio.sleep(reply.delay)
            fault = fault or reply.fault
            if fault is not None and fault.kind in PLAIN_KINDS:
                await self._inject(writer, call, fault)
                return
            if reply.body is not None or not 200 <= reply.status < 300:
                await self._send_scripted(writer, reply, dialect)
                return
        completion = self._completion(chat, reply, call, thinking)
        counters = self.counters
        counters.chat += 1
        counters.prompt_tokens += completion.prompt_tokens
        counters.completion_tokens += completion.completion_tokens
        status = 200 if reply is None else reply.status
        headers = None if reply is None else list(reply.headers.items())
        truncate = reply is not None and reply.truncate_stream
        if not body.get("stream", dialect == OLLAMA):
            payload = _plain_payload(dialect, completion, body)
            await self._send_reply(
                writer,
                call,
                fault,
                _json.dumps(payload),
                status=status,
                content_type=_content_type(reply, JSON),
                headers=headers,
                truncate=truncate,
            )
            return
        counters.streams += 1
        chunks = self.config.stream_chunks
        failure = None
        if dialect == OLLAMA:
            parts = _payloads.ollama_stream_lines(completion, chunks)
        elif dialect == ANTHROPIC:
            parts = _anthropic.stream_events(completion, chunks)
        elif dialect == RESPONSES:
            parts = _responses.stream_events(completion, body, chunks)

            def failure(at: int) -> list[bytes]:
                return _responses.stream_failure(completion, body, at)
        else:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            parts = _payloads.chat_stream_events(completion, chunks, usage)
        await self._send_stream(
            writer,
            call,
            fault,
            status,
            parts,
            content_type=_content_type(reply, NDJSON if dialect == OLLAMA else SSE),
            headers=headers,
            truncate=truncate,
            failure=failure,
        )

    def _take_reply(self, model: str) -> MockReply | None:
        """The oldest scripted reply for ``model`` (or for any model), removed; or None."""
        script = self.script
        for index, reply in enumerate(script):
            if reply.model is None or reply.model == model:
                del script[index]
                return reply
        return None

    def _completion(
        self, body: Any, reply: MockReply | None, call: Call, thinking: bool
    ) -> Completion:
        """The neutral reply to the chat-shaped ``body``: scripted, shaped by the request
        (forced tool, schema), quoting tool results, or the configured text."""
        config = self.config
        messages = body["messages"]
        prefix = "toolu_mock" if call.dialect == ANTHROPIC else "call_mock"
        text: str | None
        calls: tuple[ToolCallOut, ...] = ()
        if reply is not None and (
            reply.text is not None or reply.tool_calls or reply.refusal is not None
        ):
            text = reply.text
            calls = tuple(
                ToolCallOut(tool.id or f"{prefix}{next(self._ids)}", tool.name, tool.arguments)
                for tool in reply.tool_calls
            )
        elif (forced := _examples.forced_tool(body)) is not None:
            text = None
            name, parameters = forced
            calls = (
                ToolCallOut(
                    f"{prefix}{next(self._ids)}", name, _examples.cached_example(parameters)[0]
                ),
            )
        elif (schema := _examples.reply_schema(body)) is not None:
            text = _examples.cached_example(schema)[1]
        else:
            text = _payloads.tool_results_text(messages) or config.reply_text
        reasoning = reply.thinking if reply is not None else None
        if reasoning is None and thinking:
            default = _anthropic.DEFAULT_THINKING, _responses.DEFAULT_REASONING
            reasoning = default[call.dialect == RESPONSES]
        completion_words = len(text.split()) if text else 0
        completion_words += len(reasoning.split()) if reasoning else 0
        completion_words += sum(len(tool.arguments_json().split()) + 1 for tool in calls)
        model = body.get("model")
        deployment = call.deployment
        return Completion(
            id=f"chatcmpl-mock{next(self._ids)}",
            created=int(time.time()),
            model=model if isinstance(model, str) else (deployment or config.model),
            text=text,
            tool_calls=calls,
            prompt_tokens=_payloads.count_prompt_words(messages),
            completion_tokens=max(completion_words, 1),
            refusal=reply.refusal if reply is not None else None,
            finish=reply.finish_reason if reply is not None else None,
            cached_tokens=reply.cached_tokens if reply is not None else 0,
            thinking=reasoning,
            cache_creation_tokens=reply.cache_creation_tokens if reply is not None else 0,
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
                content_type=_content_type(reply, JSON),
                headers=headers,
                truncate=reply.truncate_stream,
            )
            return
        if reply.status == 429 and not any(name.lower() == "retry-after" for name in reply.headers):
            headers.extend(retry_headers(self.config.retry_after, dialect))
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

    async def _embeddings(self, writer: ResponseWriter, body: Any, call: Call) -> None:
        dialect = call.dialect
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
        deployment = call.deployment
        vectors = [_payloads.embedding_vector(text, dim) for text in inputs]
        words = sum(len(text.split()) for text in inputs)
        self.counters.embeddings += 1
        self.counters.prompt_tokens += words
        model = body.get("model")
        model = model if isinstance(model, str) else (deployment or self.config.model)
        payload: dict[str, Any]
        if dialect == OLLAMA:
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
        await self._send_reply(writer, call, call.fault, _json.dumps(payload))

    async def _models(self, writer: ResponseWriter, body: Any, call: Call) -> None:
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

    async def _control_faults(self, request: Request, writer: ResponseWriter) -> None:
        """``GET``: the fault rules; ``POST`` a JSON object (model -> rule or list of rules,
        in text form or as objects of `Fault` fields): replace them."""
        if request.method == b"POST" and not request.body_too_large:
            try:
                data = _json.loads(request.body)
                if not isinstance(data, dict):
                    raise ValueError("POST a JSON object: model -> fault(s)")
                rules = {
                    model: [fault_from_json(rule) for rule in (v if isinstance(v, list) else [v])]
                    for model, v in data.items()
                }
                self.config = attrs.evolve(self.config, faults=rules)
            except (TypeError, ValueError) as exc:
                body = _json.dumps(
                    _payloads.openai_error(f"bad faults: {exc}", "invalid_request_error")
                )
                await writer.send(400, body)
                return
        elif request.method != b"GET":
            await writer.send(405, b'{"error":{"message":"GET or POST /mock/faults"}}')
            return
        faults = {model: [f.spec() for f in rules] for model, rules in self.config.faults.items()}
        await writer.send(200, _json.dumps({"faults": faults}))


# -- module helpers ---------------------------------------------------------------------


def _content_type(reply: MockReply | None, default: bytes) -> bytes:
    if reply is None or reply.content_type is None:
        return default
    return reply.content_type.encode("latin-1", "replace")


def _plain_payload(dialect: str, completion: Completion, body: Any) -> dict[str, Any]:
    """The non-streamed reply object of ``dialect``."""
    if dialect == OLLAMA:
        return _payloads.ollama_chat(completion)
    if dialect == ANTHROPIC:
        return _anthropic.message(completion)
    if dialect == RESPONSES:
        return _responses.response(completion, body)
    return _payloads.chat_completion(completion)


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
    _ROUTES[f"{_prefix}/chat/completions"] = _Route(b"POST", MockApp._chat, OPENAI)
    _ROUTES[f"{_prefix}/embeddings"] = _Route(b"POST", MockApp._embeddings, OPENAI)
    _ROUTES[f"{_prefix}/models"] = _Route(b"GET", MockApp._models, OPENAI)
    _ROUTES[f"{_prefix}/messages"] = _Route(b"POST", MockApp._messages, ANTHROPIC)
    _ROUTES[f"{_prefix}/messages/count_tokens"] = _Route(b"POST", MockApp._count_tokens, ANTHROPIC)
    _ROUTES[f"{_prefix}/responses"] = _Route(b"POST", MockApp._responses, RESPONSES)
_ROUTES["/api/chat"] = _Route(b"POST", MockApp._chat, OLLAMA)
_ROUTES["/api/embed"] = _Route(b"POST", MockApp._embeddings, OLLAMA)

_AZURE_ROUTES: Final = {
    "chat/completions": _Route(b"POST", MockApp._chat, AZURE),
    "embeddings": _Route(b"POST", MockApp._embeddings, AZURE),
}

_CONTROL: Final[dict[str, Callable[[MockApp, Request, ResponseWriter], Awaitable[None]]]] = {
    "/stats": MockApp._control_stats,
    "/mock/script": MockApp._control_script,
    "/mock/reset": MockApp._control_reset,
    "/mock/faults": MockApp._control_faults,
}


def _azure_route(path: str) -> tuple[_Route | None, str]:
    """``/openai/deployments/{deployment}/{operation}`` -> (route or None, deployment)."""
    deployment, _, operation = path[len("/openai/deployments/") :].partition("/")
    route = _AZURE_ROUTES.get(operation)
    return (route, deployment) if deployment else (None, "")
