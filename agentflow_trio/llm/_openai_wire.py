"""The OpenAI chat-completions and embeddings JSON shapes, shared by OpenAI and Azure.

Pure functions: values to request bodies, response bodies to values. A response that does
not have the expected shape raises `ResponseFormatError` with an excerpt, never a bare
``KeyError``; an ``error`` object inside a stream raises `ServerError`.

What does not change between the calls of a tool loop is encoded once: the ``tools``
list of a tuple of `ToolSpec` values (`_Encoded`), and the messages of a conversation
but its last one, as one piece of JSON (`_Prefixes`: the next call of the loop finds the
longest prefix of its messages sent before, the very same objects, and encodes only what
follows). Messages and specs are frozen values; a spec's ``parameters`` mapping (and a
tool call's ``arguments`` given without their text) must not change after its first use
(a tool's schema never does). The caches are bounded (`_CACHE_BYTES`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import is_
from typing import Any, Final, Generic, TypeVar

from .. import _json
from ..errors import ResponseFormatError, ServerError
from ._lines import excerpt
from .types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)

__all__ = [
    "chat_body",
    "chunk_parser",
    "embeddings_body",
    "parse_chat",
    "parse_chunk",
    "parse_embeddings",
    "shape_error",
    "tool_choice",
    "tools",
    "usage",
]

_CHOICES: Final = frozenset({"auto", "none", "required"})
_STREAM_OPTIONS: Final = {"include_usage": True}
_SHAPE_ERRORS: Final = (KeyError, IndexError, TypeError, AttributeError, ValueError)
_CACHE_BYTES: Final = 8 << 20
"""Encoded bytes each cache of `_Encoded` holds at most before it starts again (8 MiB)."""

K = TypeVar("K")
V = TypeVar("V")


class _Encoded(Generic[K, V]):
    """Values encoded once, by key: ``key -> (value, fragment)``. The value is kept, so
    a key made of ``id()`` values stays unique while its entry lives; the whole cache is
    dropped when its encoded bytes pass `_CACHE_BYTES` (simple, and a loop's working set
    is refilled on its next call)."""

    __slots__ = ("_size", "entries")

    def __init__(self) -> None:
        self.entries: dict[K, tuple[V, Any]] = {}
        self._size = 0

    def get(self, key: K, value: V) -> Any:
        """The fragment stored for ``key`` if it was stored for this very ``value``."""
        hit = self.entries.get(key)
        if hit is not None and hit[0] is value:
            return hit[1]
        return None

    def put(self, key: K, value: V, encoded: bytes) -> Any:
        """Store ``encoded`` (``value``'s JSON) for ``key``; its fragment."""
        if self._size + len(encoded) > _CACHE_BYTES:
            self.entries.clear()
            self._size = 0
        piece = _json.fragment(encoded)
        self.entries[key] = (value, piece)
        self._size += len(encoded)
        return piece


class _Prefixes:
    """Encoded runs of messages: ``id(last) -> (messages, JSON of the items, comma-joined,
    without brackets)``. The messages are kept, so an id stays unique while its entry
    lives, and a hit is checked element by element by identity; everything is dropped
    when the encoded bytes pass `_CACHE_BYTES` (a loop's next call encodes again)."""

    __slots__ = ("_size", "entries")

    def __init__(self) -> None:
        self.entries: dict[int, tuple[tuple[Message, ...], bytes]] = {}
        self._size = 0

    def longest(self, messages: tuple[Message, ...], end: int) -> tuple[int, bytes]:
        """The longest run ``messages[:k]`` (``k <= end``) stored: ``k`` and its bytes
        (``0, b""`` if none)."""
        entries = self.entries
        k = end
        while k:
            hit = entries.get(id(messages[k - 1]))
            if hit is not None and len(hit[0]) == k and all(map(is_, hit[0], messages)):
                return k, hit[1]
            k -= 1
        return 0, b""

    def put(self, messages: tuple[Message, ...], encoded: bytes) -> None:
        """Store ``encoded`` for the run ``messages`` (not empty)."""
        if self._size + len(encoded) > _CACHE_BYTES:
            self.entries.clear()
            self._size = 0
        self.entries[id(messages[-1])] = (messages, encoded)
        self._size += len(encoded)


_PREFIXES: Final = _Prefixes()
_TOOLS: Final[_Encoded[tuple[Any, ...], tuple[ToolSpec, ...]]] = _Encoded()


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json()},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _messages(messages: tuple[Message, ...]) -> Any:
    """``messages`` for a body: all but the last as the longest run found in (and then
    stored into) `_PREFIXES` plus what follows it, encoded now; the last, new in a loop's
    next call and usually alone in a single call, encoded afresh; one JSON fragment."""
    n = len(messages)
    if n <= 1:
        return [_message(messages[0])] if n else []
    head = n - 1
    k, run = _PREFIXES.longest(messages, head)
    if k < head:
        new = _json.dumps([_message(m) for m in messages[k:head]])[1:-1]
        run = run + b"," + new if k else new
        _PREFIXES.put(messages[:head], run)
    return _json.fragment(b"".join((b"[", run, b",", _json.dumps(_message(messages[-1])), b"]")))


_LAST_TOOLS: list[Any] = [(), None]
"""The last specs tuple `_tools_piece` was given and its fragment: a registry hands out
one tuple while its tools stay the same, so most calls need no key at all."""


def _tools_piece(specs: tuple[ToolSpec, ...]) -> Any:
    """The encoded ``tools`` list of ``specs`` (from or into `_TOOLS`), keyed by the
    specs' names, descriptions and parameter objects, so the registry's fresh tuple of
    the same tools each event still hits; the very tuple of the last call, at once."""
    last = _LAST_TOOLS
    if last[0] is specs:
        return last[1]
    key = tuple((s.name, s.description, id(s.parameters)) for s in specs)
    hit = _TOOLS.entries.get(key)  # the entry keeps its parameter objects, so ids hold
    piece = hit[1] if hit is not None else _TOOLS.put(key, specs, _json.dumps(tools(specs)))
    last[0], last[1] = specs, piece
    return piece


def tools(specs: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    """Tool specs in OpenAI's ``function`` shape (Ollama uses the same)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in specs
    ]


def tool_choice(choice: str | Mapping[str, Any]) -> Any:
    """``auto``/``none``/``required`` as is, a tool name as a function choice, a mapping as is."""
    if isinstance(choice, str):
        if choice in _CHOICES:
            return choice
        return {"type": "function", "function": {"name": choice}}
    return choice


def chat_body(request: ChatRequest, model: str | None, *, stream: bool) -> bytes:
    """The JSON body for ``/chat/completions``; ``model=None`` leaves the field out (Azure)."""
    messages = request.messages
    # One message (a single call): encoded here, without `_messages`' frame.
    body: dict[str, Any] = {
        "messages": [_message(messages[0])] if len(messages) == 1 else _messages(messages)
    }
    if model is not None:
        body["model"] = request.model or model
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.tools:
        body["tools"] = _tools_piece(request.tools)
    if request.tool_choice is not None:
        body["tool_choice"] = tool_choice(request.tool_choice)
    if request.stop is not None:
        body["stop"] = request.stop
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if stream:
        body["stream"] = True
        body["stream_options"] = _STREAM_OPTIONS
    if request.extra:
        body.update(request.extra)
    return _json.dumps(body)


def embeddings_body(request: EmbeddingRequest, model: str | None) -> bytes:
    """The JSON body for ``/embeddings``."""
    body: dict[str, Any] = {"input": request.inputs}
    if model is not None:
        body["model"] = request.model or model
    return _json.dumps(body)


def usage(data: Any) -> Usage | None:
    """`Usage` from an OpenAI ``usage`` object (None if absent); ``cached_tokens`` from
    ``prompt_tokens_details.cached_tokens``."""
    if not data:
        return None
    prompt = data.get("prompt_tokens") or 0
    completion = data.get("completion_tokens") or 0
    details = data.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") or 0) if details else 0
    return Usage(prompt, completion, data.get("total_tokens") or prompt + completion, cached)


def shape_error(
    data: Any, deployment: str, exc: BaseException | None = None
) -> ResponseFormatError:
    """A `ResponseFormatError` for a body that parsed as JSON but has the wrong shape."""
    text = excerpt(_json.dumps(data)) if not isinstance(data, bytes) else excerpt(data)
    why = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return ResponseFormatError(
        f"{deployment}: unexpected response shape{why}", excerpt=text, deployment=deployment
    )


def parse_chat(data: Any, deployment: str) -> ChatResponse:
    """A `ChatResponse` from a ``chat.completion`` object."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        calls = message.get("tool_calls")
        parsed: tuple[ToolCall, ...] = ()
        if calls:
            parse = ToolCall.parse
            parsed = tuple(
                [
                    parse(c["id"], (f := c["function"])["name"], f.get("arguments") or "")
                    for c in calls
                ]
            )
        return ChatResponse(
            message.get("content") or "",
            parsed,
            choice.get("finish_reason"),
            usage(data.get("usage")),
            data.get("model") or "",
            data,
            "",
            message.get("refusal") or None,
        )
    except _SHAPE_ERRORS as exc:
        raise shape_error(data, deployment, exc) from exc


def parse_chunk(data: Any, deployment: str) -> StreamChunk | None:
    """A `StreamChunk` from a ``chat.completion.chunk`` (None for an empty one)."""
    try:
        if "error" not in data and (choices := data.get("choices")) and not data.get("usage"):
            # The common chunk (a piece of text, nothing else) in as few lookups as it takes.
            choice = choices[0]
            delta = choice.get("delta")
            if delta and choice.get("finish_reason") is None:
                text = delta.get("content")
                # A delta of its text alone (the usual one) has no tool calls or refusal.
                if text and (
                    len(delta) == 1 or not (delta.get("tool_calls") or delta.get("refusal"))
                ):
                    return StreamChunk(text, (), None, None, data.get("model") or "")
        if "error" in data:
            raise ServerError(
                f"{deployment}: error in stream: {excerpt(_json.dumps(data['error']))}",
                status=500,
                excerpt=excerpt(_json.dumps(data)),
                deployment=deployment,
            )
        raw_usage = data.get("usage")
        used = usage(raw_usage) if raw_usage else None
        choices = data.get("choices")
        if not choices:
            if used is None:
                return None
            return StreamChunk("", (), None, used, data.get("model") or "")
        choice = choices[0]
        delta = choice.get("delta") or {}
        text = delta.get("content") or ""
        finish = choice.get("finish_reason")
        calls = delta.get("tool_calls")
        deltas = _tool_deltas(calls) if calls else ()
        refusal = delta.get("refusal") or ""
        if not text and not deltas and finish is None and used is None and not refusal:
            return None
        # The model that answered, on every chunk: a stream cut early is still charged to
        # it, and a streaming caller's text deltas name it.
        model = data.get("model") or ""
        if refusal:
            return StreamChunk(text, deltas, finish, used, model, refusal=refusal)
        return StreamChunk(text, deltas, finish, used, model)
    except _SHAPE_ERRORS as exc:
        raise shape_error(data, deployment, exc) from exc


def chunk_parser(deployment: str) -> Callable[[Any], StreamChunk | None]:
    """`parse_chunk` for ``deployment``'s chunks, as the OpenAI adapter's stream decoder
    calls it once per payload.

    A closure rather than ``functools.partial(parse_chunk, deployment=...)``: a partial
    with a keyword copies its keyword dict and builds an argument tuple on every call.
    The usual chunk (a piece of text and nothing else) is answered here, in one frame;
    anything else, or anything of the wrong shape, goes to `parse_chunk` (same result).
    """

    def parse(data: Any) -> StreamChunk | None:
        try:
            choices = data["choices"]
            if choices and not data.get("usage") and "error" not in data:
                choice = choices[0]
                delta = choice["delta"]
                if delta and choice.get("finish_reason") is None:
                    text = delta.get("content")
                    if text and (
                        len(delta) == 1 or not (delta.get("tool_calls") or delta.get("refusal"))
                    ):
                        return StreamChunk(text, (), None, None, data.get("model") or "")
        except _SHAPE_ERRORS:
            pass  # `parse_chunk` raises the shape error
        return parse_chunk(data, deployment)

    return parse


def _tool_deltas(calls: list[Any]) -> tuple[ToolCallDelta, ...]:
    out = []
    for position, call in enumerate(calls):
        function = call.get("function") or {}
        out.append(
            ToolCallDelta(
                call.get("index", position),
                call.get("id"),
                function.get("name"),
                function.get("arguments") or "",
            )
        )
    return tuple(out)


def parse_embeddings(data: Any, deployment: str) -> EmbeddingResponse:
    """An `EmbeddingResponse` from an embeddings ``list`` object, in input order."""
    try:
        items = sorted(data["data"], key=lambda item: item["index"])
        vectors = tuple(tuple(item["embedding"]) for item in items)
        return EmbeddingResponse(vectors, usage(data.get("usage")), data.get("model") or "")
    except _SHAPE_ERRORS as exc:
        raise shape_error(data, deployment, exc) from exc
