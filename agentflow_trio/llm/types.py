"""Provider-neutral values for talking to a model: messages, requests, responses, chunks.

Every class is ``attrs.frozen`` with slots and no validators, so building one on the hot
path costs a plain ``__init__`` (the tool loop's values: `fast_init`'s, cheaper still).
Mappings are treated as read-only; the defaults are shared immutable empties. Wire
formats (OpenAI, Azure, Ollama JSON) stay out of these classes: the adapters translate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from .. import _json
from .._frozen import fast_init

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "Message",
    "ProviderItem",
    "StreamChunk",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Usage",
    "assistant",
    "estimate_input_tokens",
    "estimate_tokens",
    "system",
    "tool_message",
    "user",
]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_EMPTY_SCHEMA: Mapping[str, Any] = MappingProxyType({"type": "object", "properties": {}})


@fast_init
@attrs.frozen(slots=True)
class ToolCall:
    """A call of a tool requested by the model.

    ``arguments`` is the parsed JSON object; ``raw_arguments`` the string the model sent.
    When the model sent something that is not a JSON object, ``arguments`` is empty and
    ``parse_error`` says why: the tools layer reports that back to the model instead of
    raising here. Build from the wire with `ToolCall.parse`.
    """

    id: str
    name: str
    arguments: Mapping[str, Any] = _EMPTY
    raw_arguments: str = ""
    parse_error: str | None = None

    @classmethod
    def parse(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        """Parse ``raw_arguments``; never raises, a bad payload sets ``parse_error``."""
        if not raw_arguments.strip():
            return cls(id, name, _EMPTY, raw_arguments)
        try:
            value = _json.loads(raw_arguments)
        except _json.JSONDecodeError as exc:
            return cls(id, name, _EMPTY, raw_arguments, f"arguments are not valid JSON: {exc}")
        if not isinstance(value, dict):
            kind = type(value).__name__
            return cls(id, name, _EMPTY, raw_arguments, f"arguments must be an object, not {kind}")
        return cls(id, name, value, raw_arguments)

    def arguments_json(self) -> str:
        """The arguments as JSON text: ``raw_arguments`` if set, else ``arguments`` encoded."""
        return self.raw_arguments or _json.dumps_str(dict(self.arguments))


@attrs.frozen(slots=True)
class ProviderItem:
    """A piece of a model's answer that only its own vendor's API understands, kept verbatim.

    Anthropic's ``thinking`` / ``redacted_thinking`` blocks and the Responses API's
    ``reasoning`` items must be sent back unchanged on the next turn of a tool loop; they
    ride on the assistant `Message` as items. ``provider`` is the provider name that made
    the item (``"anthropic"``, ``"openai_responses"``); a provider sends back only its own
    items and drops the others (after a fail-over to another vendor they mean nothing).
    ``data`` is the item's JSON object as the API gave it.
    """

    provider: str
    data: Mapping[str, Any]


@fast_init
@attrs.frozen(slots=True)
class Message:
    """One chat message. ``content`` is None for an assistant turn made only of tool calls.

    ``items``: vendor pieces of an assistant turn to send back as they were (`ProviderItem`).
    ``cache_control``: a prompt-caching breakpoint after this message (Anthropic's
    ``{"type": "ephemeral"}``), passed through by providers that have one, ignored by others.
    ``is_error``: a ``tool`` message answering a call that failed (its content is then the
    error); Anthropic's ``tool_result`` says so (``is_error``), the other wires have no
    such flag and send the content alone.
    """

    role: str
    content: str | None
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    items: tuple[ProviderItem, ...] = ()
    cache_control: Mapping[str, Any] | None = None
    is_error: bool = False


def system(content: str) -> Message:
    """A system message."""
    return Message("system", content)


def user(content: str, *, name: str | None = None) -> Message:
    """A user message."""
    return Message("user", content, name)


def assistant(
    content: str | None,
    tool_calls: tuple[ToolCall, ...] = (),
    items: tuple[ProviderItem, ...] = (),
) -> Message:
    """An assistant message, as the model said it (text, tool calls, vendor items)."""
    return Message("assistant", content, None, tool_calls, None, items)


def tool_message(tool_call_id: str, content: str, *, is_error: bool = False) -> Message:
    """The result of a tool call, answering the assistant's call ``tool_call_id``
    (``is_error``: the call failed and ``content`` says how)."""
    return Message("tool", content, None, (), tool_call_id, (), None, is_error)


@fast_init
@attrs.frozen(slots=True)
class ToolSpec:
    """A tool the model may call: ``parameters`` is its JSON schema (an object schema)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = _EMPTY_SCHEMA


@fast_init
@attrs.frozen(slots=True)
class ChatRequest:
    """A chat completion request.

    ``model=None`` means the provider's configured model. ``tool_choice`` is ``"auto"``,
    ``"none"``, ``"required"``, a tool name, or a provider-shaped mapping. ``extra`` is
    merged last into the provider's JSON body, for knobs this class does not name.

    ``response_format`` asks for a reply shape, in OpenAI's form (the neutral one here):
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` or
    ``{"type": "json_object"}``. OpenAI and Azure send it as is; Ollama as its ``format``
    (the schema, or ``"json"``). Structured output (``output``) fills it in native mode.
    """

    messages: tuple[Message, ...]
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    stop: str | tuple[str, ...] | None = None
    extra: Mapping[str, Any] = _EMPTY
    response_format: Mapping[str, Any] | None = None

    def with_model(self, model: str | None) -> ChatRequest:
        """This request for ``model`` (what a router sends a deployment; a third of the
        cost of ``attrs.evolve``)."""
        return ChatRequest(
            self.messages,
            model,
            self.temperature,
            self.max_tokens,
            self.tools,
            self.tool_choice,
            self.stop,
            self.extra,
            self.response_format,
        )

    def to_canonical(self) -> dict[str, Any]:
        """A plain JSON-able form holding everything that can change the answer."""
        return {
            "messages": [_canonical_message(m) for m in self.messages],
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "tools": [[t.name, t.description, dict(t.parameters)] for t in self.tools],
            "tool_choice": _plain(self.tool_choice),
            "stop": list(self.stop) if isinstance(self.stop, tuple) else self.stop,
            "extra": dict(self.extra),
            "response_format": _plain(self.response_format),
        }

    def to_cache_key(self) -> str:
        """A stable key for this request: the blake2b-128 hex digest of the canonical JSON
        of `to_canonical` (sorted keys, compact, encoded once by the fast encoder)."""
        return hashlib.blake2b(
            _json.dumps_canonical(self.to_canonical()), digest_size=16
        ).hexdigest()


@fast_init
@attrs.frozen(slots=True)
class Usage:
    """Token counts reported by the provider. ``cached_tokens`` is the part of
    ``prompt_tokens`` the provider served from its prompt cache (OpenAI and Azure report
    it as ``usage.prompt_tokens_details.cached_tokens``, Anthropic as
    ``cache_read_input_tokens``; 0 when not reported). ``cache_creation_tokens``: the part
    written to the prompt cache (Anthropic's ``cache_creation_input_tokens``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0


@fast_init
@attrs.frozen(slots=True)
class ChatResponse:
    """A finished chat completion. ``text`` is "" when the model only called tools.

    ``model`` is the model that answered and ``deployment`` the router's deployment that
    served it (``""`` when no router is involved); ``usage`` is that answer's only, never
    the failed attempts' before it. ``refusal`` is the model's refusal message when it
    declined to answer (OpenAI's ``message.refusal``), else None. ``items``: vendor pieces
    to send back on the next turn (`ProviderItem`; the tool loop puts them on the assistant
    message); ``response_id``: the API's id for this answer where it has one that can be
    referred to later (the Responses API's ``previous_response_id``), else "".
    """

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""
    raw: Mapping[str, Any] | None = attrs.field(default=None, eq=False, repr=False)
    deployment: str = ""
    refusal: str | None = None
    items: tuple[ProviderItem, ...] = ()
    response_id: str = ""


@fast_init
@attrs.frozen(slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call; pieces with the same ``index`` belong together.

    ``id`` and ``name`` usually arrive in the first piece only; ``arguments`` is a fragment
    of the JSON text, to be concatenated (see `StreamAccumulator`).
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@fast_init
@attrs.frozen(slots=True)
class StreamChunk:
    """One increment of a streamed completion. The last chunks carry ``finish_reason``
    and, when the provider reports it, ``usage``; through a router they also say which
    ``model`` and ``deployment`` answered (``""`` on the other chunks). ``refusal`` is a
    piece of a refusal message (OpenAI's ``delta.refusal``), to be concatenated. ``items``:
    whole vendor items finished by this chunk (`ProviderItem`, e.g. a thinking block at its
    ``content_block_stop``), kept in order by `StreamAccumulator`; ``response_id`` as on
    `ChatResponse` (on any one chunk)."""

    delta_text: str = ""
    tool_call_deltas: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""
    deployment: str = ""
    refusal: str = ""
    items: tuple[ProviderItem, ...] = ()
    response_id: str = ""


@attrs.frozen(slots=True)
class EmbeddingRequest:
    """Texts to embed; ``model=None`` means the provider's configured model."""

    inputs: tuple[str, ...]
    model: str | None = None


@attrs.frozen(slots=True)
class EmbeddingResponse:
    """One vector per input, in input order; ``deployment`` as in `ChatResponse`."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage | None = None
    model: str = ""
    deployment: str = ""


def estimate_tokens(request: ChatRequest) -> int:
    """A rough token count (for tokens-per-minute limits, context windows and usage
    budgets): 4 characters per token of what the request sends (the messages' text and
    tool-call arguments, the tools' names, descriptions and schemas, the response format),
    plus ``max_tokens`` (what the provider reserves for the answer)."""
    return estimate_input_tokens(request) + (request.max_tokens or 0)


def estimate_input_tokens(request: ChatRequest) -> int:
    """`estimate_tokens` without ``max_tokens``: what the request sends, in tokens."""
    chars = 0
    for m in request.messages:
        content = m.content
        if content:
            chars += len(content)
        for call in m.tool_calls:
            chars += len(call.name) + len(call.raw_arguments or "")
    if request.tools:
        chars += _tools_chars(request.tools)
    if request.response_format is not None:
        chars += len(_json.dumps(request.response_format))
    return chars // 4 + 1


_TOOL_CHARS: dict[int, tuple[tuple[ToolSpec, ...], int]] = {}
_TOOL_CHARS_MAX = 256
"""`_tools_chars` by ``id`` of the specs tuple (the tuple kept, so the id stays its own);
emptied when full. A registry hands out one tuple while its tools stay the same, so a tool
loop counts its schemas once, not once per model call."""


def _tools_chars(specs: tuple[ToolSpec, ...]) -> int:
    """The characters ``specs`` add to a request: names, descriptions, encoded schemas (a
    spec's ``parameters`` must not change once used, as the wires' caches also assume)."""
    hit = _TOOL_CHARS.get(id(specs))
    if hit is not None and hit[0] is specs:
        return hit[1]
    chars = 0
    for spec in specs:
        chars += len(spec.name) + len(spec.description) + len(_json.dumps(spec.parameters))
    if len(_TOOL_CHARS) >= _TOOL_CHARS_MAX:
        _TOOL_CHARS.clear()
    _TOOL_CHARS[id(specs)] = (specs, chars)
    return chars


def _canonical_message(m: Message) -> list[Any]:
    calls = [[c.id, c.name, c.arguments_json()] for c in m.tool_calls]
    row: list[Any] = [m.role, m.content, m.name, calls, m.tool_call_id]
    if m.items or m.cache_control is not None:  # keys of plain messages stay as they were
        row.append([[i.provider, dict(i.data)] for i in m.items])
        row.append(_plain(m.cache_control))
    if m.is_error:  # Anthropic sends it: a different request
        row.append(True)
    return row


def _plain(value: object) -> object:
    return dict(value) if isinstance(value, Mapping) else value
