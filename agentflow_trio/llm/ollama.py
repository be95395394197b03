"""The Ollama adapter: ``/api/chat`` (NDJSON streaming) and ``/api/embed`` over httpx2.

Ollama sends tool-call arguments as JSON objects and without ids; the adapter keeps the
object, re-encodes it as ``raw_arguments`` and names calls ``call_0``, ``call_1``, ... in
reply order. ``temperature``, ``max_tokens`` and ``stop`` travel in ``options``
(``num_predict`` for max_tokens); a ``response_format`` becomes ``format`` (the JSON schema
of a ``json_schema`` one, ``"json"`` for ``json_object``). Ollama has no ``tool_choice``: it
is not sent. An ``{"error": ...}`` line in a stream raises `ServerError`;
a stream is guarded as OpenAI's (``_accumulate``): garbage lines are skipped and counted, a
stream that stops before its ``"done": true`` line raises an `IncompleteStreamError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, final

from .. import _json
from ..errors import ServerError
from ._accumulate import ChunkDecoder, GuardedChunks, passthrough
from ._lines import MAX_MALFORMED, NDJSONDecoder, excerpt
from ._open_session import open_http_session
from ._openai_wire import shape_error, tools
from ._session import Session
from ._userinfo import move_userinfo
from .types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    Usage,
)

if TYPE_CHECKING:
    from ..config import LLMConfig

__all__ = ["DEFAULT_OLLAMA_URL", "OllamaProvider", "open_ollama"]

DEFAULT_OLLAMA_URL: Final = "http://localhost:11434"
_NDJSON: Final = ("application/x-ndjson", "application/json")
_SHAPE_ERRORS: Final = (KeyError, IndexError, TypeError, AttributeError, ValueError)


@final
class OllamaProvider:
    """A `Provider` speaking Ollama's native API. Build one with `open_ollama`.

    ``native_output``: the wire has a JSON-schema ``format`` (structured output's native
    mode).
    """

    native_output: Final = True

    def __init__(self, session: Session, *, base_url: str, model: str) -> None:
        self.session = session
        self._chat_url = f"{base_url}/api/chat"
        self._embed_url = f"{base_url}/api/embed"
        self._model = model

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One chat completion (``"stream": false``)."""
        data = await self.session.post_json(self._chat_url, self._body(request, stream=False))
        deployment = self.session.deployment
        _raise_error(data, deployment)
        try:
            message = data["message"]
            calls = _tool_calls(message.get("tool_calls"))
            return ChatResponse(
                message.get("content") or "",
                calls,
                "tool_calls" if calls else data.get("done_reason"),
                _usage(data),
                data.get("model") or "",
                data,
            )
        except _SHAPE_ERRORS as exc:
            raise shape_error(data, deployment, exc) from exc

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        """A streamed chat completion (NDJSON); the connection is released on exit."""
        body = self._body(request, stream=True)
        deployment = self.session.deployment
        decoder = ChunkDecoder(
            NDJSONDecoder(max_malformed=MAX_MALFORMED), _StreamParser(deployment)
        )
        async with self.session.open_stream(
            self._chat_url, body, decoder, passthrough, _NDJSON
        ) as chunks:
            yield GuardedChunks(chunks, decoder, deployment)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeddings for ``request.inputs``, in input order."""
        body = _json.dumps({"model": request.model or self._model, "input": request.inputs})
        data = await self.session.post_json(self._embed_url, body)
        deployment = self.session.deployment
        _raise_error(data, deployment)
        try:
            vectors = tuple(tuple(v) for v in data["embeddings"])
            tokens = data.get("prompt_eval_count") or 0
            return EmbeddingResponse(vectors, Usage(tokens, 0, tokens), data.get("model") or "")
        except _SHAPE_ERRORS as exc:
            raise shape_error(data, deployment, exc) from exc

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent."""
        await self.session.aclose()

    def _body(self, request: ChatRequest, *, stream: bool) -> bytes:
        body: dict[str, Any] = {
            "model": request.model or self._model,
            "messages": [_message(m) for m in request.messages],
            "stream": stream,
        }
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.stop is not None:
            options["stop"] = [request.stop] if isinstance(request.stop, str) else request.stop
        if options:
            body["options"] = options
        if request.tools:
            body["tools"] = tools(request.tools)
        if request.response_format is not None:
            fmt = _format(request.response_format)
            if fmt is not None:
                body["format"] = fmt
        if request.extra:
            body.update(request.extra)
        return _json.dumps(body)


@asynccontextmanager
async def open_ollama(llm: LLMConfig) -> AsyncIterator[OllamaProvider]:
    """An `OllamaProvider` for ``llm`` (base URL default ``http://localhost:11434``)."""
    headers = {"content-type": "application/json"}
    if llm.api_key:
        headers["authorization"] = f"Bearer {llm.api_key}"
    headers.update(llm.headers)
    base = move_userinfo((llm.base_url or DEFAULT_OLLAMA_URL).rstrip("/"), headers)
    async with open_http_session(
        llm, headers=headers, deployment=llm.model, base_url=base
    ) as session:
        yield OllamaProvider(session, base_url=base, model=llm.model)


def _format(response_format: Mapping[str, Any]) -> Any:
    kind = response_format.get("type")
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or "json"
    if kind == "json_object":
        return "json"
    return None


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content or ""}
    if m.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls
        ]
    if m.name is not None and m.role == "tool":
        out["tool_name"] = m.name
    return out


def _tool_calls(calls: Any, start: int = 0) -> tuple[ToolCall, ...]:
    if not calls:
        return ()
    out = []
    for i, call in enumerate(calls, start):
        function = call["function"]
        arguments = function.get("arguments")
        raw = arguments if isinstance(arguments, str) else _json.dumps_str(arguments or {})
        out.append(ToolCall.parse(call.get("id") or f"call_{i}", function["name"], raw))
    return tuple(out)


def _usage(data: Any) -> Usage | None:
    if "prompt_eval_count" not in data and "eval_count" not in data:
        return None
    prompt = data.get("prompt_eval_count") or 0
    completion = data.get("eval_count") or 0
    return Usage(prompt, completion, prompt + completion)


def _raise_error(data: Any, deployment: str) -> None:
    if isinstance(data, dict) and "error" in data:
        raise ServerError(
            f"{deployment}: error: {excerpt(str(data['error']))}",
            status=500,
            excerpt=excerpt(_json.dumps(data)),
            deployment=deployment,
        )


class _StreamParser:
    """NDJSON lines of one stream to chunks; numbers tool calls across lines."""

    __slots__ = ("_calls", "_deployment")

    def __init__(self, deployment: str) -> None:
        self._deployment = deployment
        self._calls = 0

    def __call__(self, data: Any) -> StreamChunk | None:
        _raise_error(data, self._deployment)
        try:
            message = data.get("message") or {}
            text = message.get("content") or ""
            calls = _tool_calls(message.get("tool_calls"), self._calls)
            deltas = tuple(
                ToolCallDelta(i, c.id, c.name, c.raw_arguments)
                for i, c in enumerate(calls, self._calls)
            )
            self._calls += len(calls)
            if data.get("done") is True:
                finish = "tool_calls" if self._calls else data.get("done_reason") or "stop"
                return StreamChunk(text, deltas, finish, _usage(data))
            if not text and not deltas:
                return None
            return StreamChunk(text, deltas)
        except _SHAPE_ERRORS as exc:
            raise shape_error(data, self._deployment, exc) from exc
