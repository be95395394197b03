"""Our values to the OpenAI Responses API's request body (``POST /responses``).

Leading system messages become ``instructions`` (later ones stay ``system`` input
items); user and assistant text are message items; an assistant's tool calls are
``function_call`` items (``call_id``, ``name``, ``arguments`` text) and tool results
``function_call_output`` items. A turn whose output had a reasoning (or other built-in)
item keeps its whole output as ``openai_responses`` `ProviderItem` values, because the API
pairs a reasoning item with the message or call after it by their ids; those go back
verbatim, in order (`_assistant_turn`); other vendors' items are dropped. ``stop`` and
``Message.name`` have no Responses field and are left out. ``max_tokens`` is
``max_output_tokens``; a JSON-schema ``response_format`` is ``text.format`` (the native
structured-output mode); ``extra`` is merged last (``previous_response_id``, ``store``,
``reasoning``, ``include`` ...). With ``store`` false the API keeps nothing, so a
reasoning item can come back on the next turn only with its ``encrypted_content``:
``include`` then gets `ENCRYPTED` (the caller's entries kept), the answer's reasoning
items carry it, and they go back with it, verbatim. What a tool loop sends again (its
history's items, its tools list) is encoded once and reused as JSON fragments (bounded
caches). ``_responses_wire`` re-exports the public names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .. import _json
from .types import ChatRequest, Message, ToolCall, ToolSpec

__all__ = [
    "ENCRYPTED",
    "PROVIDER",
    "input_items",
    "request_body",
    "text_format",
    "tool_choice",
    "tools",
]

PROVIDER: Final = "openai_responses"
"""The `ProviderItem.provider` of this wire's items (and its ``[llm] provider`` name)."""
ENCRYPTED: Final = "reasoning.encrypted_content"
"""The ``include`` entry added when ``store`` is false (see `request_body`)."""

_CHOICES: Final = frozenset({"auto", "none", "required"})


def input_items(messages: tuple[Message, ...]) -> tuple[str | None, list[dict[str, Any]]]:
    """The ``instructions`` (leading system messages joined by a blank line, or None) and
    the ``input`` items of ``messages``."""
    start = _leading_system(messages)
    out: list[dict[str, Any]] = []
    for m in messages[start:] if start else messages:
        _message_items(m, out)
    return _instructions(messages, start), out


def _leading_system(messages: tuple[Message, ...]) -> int:
    start = 0
    while start < len(messages) and messages[start].role == "system":
        start += 1
    return start


def _instructions(messages: tuple[Message, ...], start: int) -> str | None:
    return "\n\n".join(m.content or "" for m in messages[:start]) if start else None


def _message_items(m: Message, out: list[dict[str, Any]]) -> None:
    """Append the input items of one message (not a leading system one) to ``out``."""
    role = m.role
    if role == "tool":
        out.append(
            {
                "type": "function_call_output",
                "call_id": m.tool_call_id or "",
                "output": m.content or "",
            }
        )
    elif role != "assistant":
        out.append({"role": role, "content": m.content or ""})
    elif m.items:
        _assistant_turn(m, out)
    else:
        if m.content:
            out.append({"role": "assistant", "content": m.content})
        for c in m.tool_calls:
            out.append(_function_call(c))


class _Encoded:
    """JSON pieces encoded once, by key: ``key -> (value, pieces)``; the value is kept, so
    a key made of ``id()`` values stays unique while its entry lives. The whole cache is
    dropped when its encoded bytes pass `_CACHE_BYTES` (a loop refills what it uses)."""

    __slots__ = ("_size", "entries")

    def __init__(self) -> None:
        self.entries: dict[Any, tuple[Any, Any]] = {}
        self._size = 0

    def put(self, key: Any, value: Any, encoded: list[bytes]) -> list[Any]:
        """Store the fragments of ``encoded`` (``value``'s JSON pieces) for ``key``."""
        size = sum(map(len, encoded))
        if self._size + size > _CACHE_BYTES:
            self.entries.clear()
            self._size = 0
        pieces = [_json.fragment(piece) for piece in encoded]
        self.entries[key] = (value, pieces)
        self._size += size
        return pieces


_CACHE_BYTES: Final = 8 << 20
"""Encoded bytes each cache holds at most before it starts again (8 MiB)."""
_MESSAGES: Final = _Encoded()
_TOOLS: Final = _Encoded()


def _body_input(messages: tuple[Message, ...], start: int) -> list[Any]:
    """``input`` for a body: the items of each message but the last from (or into)
    `_MESSAGES`, as JSON already encoded (a tool loop sends its history again and again);
    the last, new in a loop's next call and usually alone in a single call, afresh."""
    rest = messages[start:] if start else messages
    out: list[Any] = []
    if len(rest) > 1:
        entries = _MESSAGES.entries
        for m in rest[:-1]:
            hit = entries.get(id(m))
            if hit is not None and hit[0] is m:
                out += hit[1]
                continue
            items: list[dict[str, Any]] = []
            _message_items(m, items)
            out += _MESSAGES.put(id(m), m, [_json.dumps(item) for item in items])
    if rest:
        _message_items(rest[-1], out)
    return out


def _tools_piece(specs: tuple[ToolSpec, ...]) -> Any:
    """The encoded ``tools`` list of ``specs`` (from or into `_TOOLS`), keyed by the
    specs' names, descriptions and parameter objects, so a registry's fresh tuple of the
    same tools still hits (the entry keeps the specs, so the ids hold)."""
    key = tuple((t.name, t.description, id(t.parameters)) for t in specs)
    hit = _TOOLS.entries.get(key)
    if hit is not None:
        return hit[1][0]
    return _TOOLS.put(key, specs, [_json.dumps(tools(specs))])[0]


def _function_call(c: ToolCall) -> dict[str, Any]:
    return {
        "type": "function_call",
        "call_id": c.id,
        "name": c.name,
        "arguments": c.arguments_json(),
    }


def _assistant_turn(m: Message, out: list[dict[str, Any]]) -> None:
    """An assistant turn with items: this wire's items go back verbatim, in order (a
    reasoning item must be followed by the item the API paired it with, by id); a message
    item only while the turn's text is still what it said (else the text takes its place),
    a function-call item only for a call still in ``tool_calls``; text and calls not
    covered by an item follow as plain items. Other vendors' items are dropped."""
    calls = {c.id: c for c in m.tool_calls}
    text = m.content or ""
    own = [
        i.data if isinstance(i.data, dict) else dict(i.data)
        for i in m.items
        if i.provider == PROVIDER
    ]
    said = "".join(
        part.get("text") or ""
        for data in own
        if data.get("type") == "message"
        for part in data.get("content") or ()
        if part.get("type") == "output_text"
    )
    keep_text = bool(text) and said == text
    text_sent = keep_text or not text
    for data in own:
        kind = data.get("type")
        if kind == "message":
            if keep_text:
                out.append(data)
            elif not text_sent:
                out.append({"role": "assistant", "content": text})
                text_sent = True
        elif kind == "function_call":
            if calls.pop(str(data.get("call_id")), None) is not None:
                out.append(data)
        else:
            out.append(data)
    if not text_sent:
        out.append({"role": "assistant", "content": text})
    for c in calls.values():
        out.append(_function_call(c))


def tools(specs: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    """Tool specs as Responses ``function`` tools. ``strict`` is false, as Chat Completions
    has it by default (the Responses API defaults to true, which refuses most schemas)."""
    return [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
            "strict": False,
        }
        for t in specs
    ]


def tool_choice(choice: str | Mapping[str, Any]) -> Any:
    """``auto``/``none``/``required`` as is, a tool name as ``{"type": "function", "name"}``;
    a Chat Completions function choice (``{"type": "function", "function": {"name"}}``)
    reshaped; any other mapping as is."""
    if isinstance(choice, str):
        if choice in _CHOICES:
            return choice
        return {"type": "function", "name": choice}
    function = choice.get("function") if choice.get("type") == "function" else None
    if isinstance(function, Mapping) and "name" in function:
        return {"type": "function", "name": function["name"]}
    return dict(choice)


def text_format(response_format: Mapping[str, Any]) -> dict[str, Any]:
    """The ``text.format`` of a Chat Completions ``response_format``: a ``json_schema``
    one flattened (``{"type": "json_schema", "name", "schema", "strict"}``), others
    (``json_object``, ``text``) as they are."""
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema") or {}
        return {"type": "json_schema", **spec}
    return dict(response_format)


def request_body(request: ChatRequest, model: str | None, *, stream: bool) -> bytes:
    """The JSON body for ``POST /responses``. ``extra`` is merged last, key by key; a
    ``text`` object in it is merged into the native mode's (``{"verbosity": "low"}`` keeps
    the ``format``); with ``"store": false`` in it, ``include`` gets `ENCRYPTED`."""
    messages = request.messages
    start = _leading_system(messages)
    body: dict[str, Any] = {"model": request.model or model, "input": _body_input(messages, start)}
    if start:
        body["instructions"] = _instructions(messages, start)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    if request.tools:
        body["tools"] = _tools_piece(request.tools)
    if request.tool_choice is not None:
        body["tool_choice"] = tool_choice(request.tool_choice)
    if request.response_format is not None:
        body["text"] = {"format": text_format(request.response_format)}
    if stream:
        body["stream"] = True
    if request.extra:
        text = body.get("text")
        body.update(request.extra)
        if text is not None and isinstance(body["text"], Mapping):  # e.g. text.verbosity
            body["text"] = {**text, **body["text"]}
        if body.get("store") is False:
            body["include"] = _with_encrypted(body.get("include"))
    return _json.dumps(body)


def _with_encrypted(include: Any) -> Any:
    """``include`` with `ENCRYPTED` added (the caller's entries kept, in order): with
    ``store`` false nothing is kept server-side, so a reasoning item sent back on the next
    turn is refused unless it carries its ``encrypted_content``."""
    if include is None:
        return [ENCRYPTED]
    if not isinstance(include, list | tuple) or ENCRYPTED in include:
        return include  # not a list: the API names the error
    return [*include, ENCRYPTED]
