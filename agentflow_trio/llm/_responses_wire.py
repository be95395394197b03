"""The OpenAI Responses API JSON shapes: our values to request bodies, responses and stream
events back to our values.

Pure functions (and one small per-stream parser, `StreamEvents`, which remembers the model
and which function calls got argument deltas). A response that does not have the expected
shape raises `ResponseFormatError` with an excerpt, never a bare ``KeyError``; a failed
response or an ``error`` event raises the `APIStatusError` subclass of its code.

Requests: leading system messages become ``instructions`` (later ones stay ``system``
input items); user and assistant text are message items; an assistant's tool calls are
``function_call`` items (``call_id``, ``name``, ``arguments`` text) and tool results
``function_call_output`` items. A turn whose output had a reasoning (or other built-in)
item keeps its whole output as ``openai_responses`` `ProviderItem` values (`turn_items`),
because the API pairs a reasoning item with the message or call after it by their ids;
those go back verbatim, in order (`_assistant_turn`); other vendors' items are dropped.
``stop`` and ``Message.name`` have no Responses field and are left out. ``max_tokens``
is ``max_output_tokens``; a JSON-schema ``response_format`` is ``text.format`` (the
native structured-output mode); ``extra`` is merged last (``previous_response_id``,
``store``, ``reasoning``, ``include`` ...). With ``store`` false the API keeps nothing,
so a reasoning item can come back on the next turn only with its ``encrypted_content``:
``include`` then gets ``"reasoning.encrypted_content"`` (the caller's entries kept), the
answer's reasoning items carry it, and they go back with it, verbatim. What a tool loop
sends again (its history's items, its tools list) is encoded once and reused as JSON
fragments (bounded caches).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, final

from .. import _json
from ..errors import (
    APIStatusError,
    BadRequestError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
)
from ._lines import DEFAULT_MAX_LINE, SSEDecoder, excerpt
from .types import (
    ChatRequest,
    ChatResponse,
    Message,
    ProviderItem,
    StreamChunk,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
)

__all__ = [
    "ENCRYPTED",
    "PROVIDER",
    "ResponsesSSEDecoder",
    "StreamEvents",
    "failure_error",
    "input_items",
    "parse_response",
    "request_body",
    "text_format",
    "tool_choice",
    "tools",
    "turn_items",
    "usage",
]

PROVIDER: Final = "openai_responses"
"""The `ProviderItem.provider` of this wire's items (and its ``[llm] provider`` name)."""
ENCRYPTED: Final = "reasoning.encrypted_content"
"""The ``include`` entry added when ``store`` is false (see `request_body`)."""

_CHOICES: Final = frozenset({"auto", "none", "required"})
_SHAPE_ERRORS: Final = (KeyError, IndexError, TypeError, AttributeError, ValueError)
_PLAIN: Final = frozenset({"message", "function_call"})  # output items that are not kept
_STATUS_OF_CODE: Final[Mapping[str, int]] = {
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "api_error": 500,
    "vector_store_timeout": 504,
}
_KIND_OF_STATUS: Final[Mapping[int, type[APIStatusError]]] = {
    400: BadRequestError,
    429: RateLimitError,
}


_UNREAD: Final = frozenset(
    {
        b"response.in_progress",
        b"response.content_part.added",
        b"response.content_part.done",
        b"response.output_text.done",
        b"response.output_text.annotation.added",
        b"response.refusal.done",
        b"response.function_call_arguments.done",
        b"response.reasoning_summary_part.added",
        b"response.reasoning_summary_part.done",
        b"response.reasoning_summary_text.delta",
        b"response.reasoning_summary_text.done",
        b"response.reasoning_text.delta",
        b"response.reasoning_text.done",
    }
)
"""Stream events whose data `StreamEvents` never reads (what they say arrives again in
the events it does read), so their JSON is not decoded at all."""


@final
class ResponsesSSEDecoder(SSEDecoder):
    """`SSEDecoder` for Responses streams, which end after ``response.completed`` (no
    ``data: [DONE]``: `terminator` names it in an early end's error) and name every event
    on an ``event:`` line.

    Each piece of body that starts on an event boundary is reshaped before the plain
    decoder sees it: a whole event named in `_UNREAD` is dropped, undecoded, and the
    ``event:`` line of the others is cut off, so each is the one ``data:`` line the plain
    decoder reads fastest; an unfinished last event goes on as it came. A piece that
    starts inside an event, or has CR line ends, goes to the plain decoder untouched;
    bounds and the malformed-event policy are the plain ones.
    """

    __slots__ = ("_inside",)
    terminator = "response.completed"

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, *, max_malformed: int = 0) -> None:
        super().__init__(max_line, max_malformed=max_malformed)
        self._inside = False  # the last piece ended inside an event

    def feed(self, data: bytes) -> list[Any]:
        """Payloads of the events completed by ``data`` (the events `StreamEvents` reads)."""
        if self._inside or b"\r" in data:
            self._inside = not data.endswith((b"\n\n", b"\r\n\r\n"))
            return super().feed(data)
        events = data.split(b"\n\n")
        tail = events.pop()  # the start of an event still coming, passed on as it is
        kept = []
        for event in events:
            if event.startswith(b"event: "):
                end = event.find(b"\n")
                if end < 0 or event[7:end] in _UNREAD:
                    continue
                event = event[end + 1 :]
            kept.append(event)
        kept.append(tail)
        self._inside = bool(tail)
        return super().feed(b"\n\n".join(kept))


# -- requests ------------------------------------------------------------------------------


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


# -- responses -----------------------------------------------------------------------------


def usage(data: Any) -> Usage | None:
    """`Usage` from a Responses ``usage`` object (None if absent); ``cached_tokens`` from
    ``input_tokens_details.cached_tokens``."""
    if not data:
        return None
    prompt = data.get("input_tokens") or 0
    completion = data.get("output_tokens") or 0
    details = data.get("input_tokens_details")
    cached = (details.get("cached_tokens") or 0) if details else 0
    return Usage(prompt, completion, data.get("total_tokens") or prompt + completion, cached)


def _finish_reason(data: Any, calls: bool) -> str:
    """``length`` / ``content_filter`` for an incomplete response, else ``tool_calls``
    when it called functions, else ``stop``."""
    if data.get("status") == "incomplete":
        details = data.get("incomplete_details") or {}
        return "content_filter" if details.get("reason") == "content_filter" else "length"
    return "tool_calls" if calls else "stop"


def failure_error(error: Any, deployment: str, where: str = "response failed") -> APIStatusError:
    """The typed error of a Responses ``error`` object (a failed response's, or an
    ``error`` stream event's): rate limits `RateLimitError` (429), invalid requests
    `BadRequestError` (400), anything else `ServerError` (5xx, retryable)."""
    error = error if isinstance(error, Mapping) else {}
    code = str(error.get("code") or error.get("type") or "")
    status = _STATUS_OF_CODE.get(code)
    if status is None:
        client = code.startswith(("invalid", "image_", "context_length")) or "policy" in code
        status = 400 if client else 500
    kind = _KIND_OF_STATUS.get(status, ServerError)
    text = excerpt(_json.dumps(dict(error)))
    message = error.get("message") or "no message"
    return kind(
        f"{deployment}: {where} ({code or 'no code'}): {excerpt(str(message))}",
        status=status,
        excerpt=text,
        deployment=deployment,
    )


def _shape_error(data: Any, deployment: str, exc: BaseException) -> ResponseFormatError:
    text = excerpt(_json.dumps(data)) if isinstance(data, dict | list) else excerpt(str(data))
    return ResponseFormatError(
        f"{deployment}: unexpected response shape ({type(exc).__name__}: {exc})",
        excerpt=text,
        deployment=deployment,
    )


def parse_response(data: Any, deployment: str) -> ChatResponse:
    """A `ChatResponse` from a ``response`` object.

    Raises:
        APIStatusError: the response's status is ``failed`` (see `failure_error`).
        ResponseFormatError: not a response object.
    """
    try:
        if data.get("status") == "failed":
            raise failure_error(data.get("error"), deployment)
        text: list[str] = []
        refusal: list[str] = []
        calls: list[ToolCall] = []
        output = data["output"]
        kept = False
        for item in output:
            kind = item["type"]
            if kind == "message":
                for part in item.get("content") or ():
                    what = part.get("type")
                    if what == "output_text":
                        text.append(part.get("text") or "")
                    elif what == "refusal":
                        refusal.append(part.get("refusal") or "")
            elif kind == "function_call":
                calls.append(
                    ToolCall.parse(item["call_id"], item["name"], item.get("arguments") or "")
                )
            else:
                kept = True
        return ChatResponse(
            "".join(text),
            tuple(calls),
            _finish_reason(data, bool(calls)),
            usage(data.get("usage")),
            data.get("model") or "",
            data,
            refusal="".join(refusal) or None,
            items=turn_items(output) if kept else (),
            response_id=data.get("id") or "",
        )
    except _SHAPE_ERRORS as exc:
        raise _shape_error(data, deployment, exc) from exc


def turn_items(output: list[Any]) -> tuple[ProviderItem, ...]:
    """A turn's ``output`` items as `ProviderItem` values, all of them in order: what the
    next turn sends back when the turn had a reasoning (or other built-in) item, whose
    pairing with the message or call after it goes by the items' ids."""
    return tuple(ProviderItem(PROVIDER, item) for item in output)


# -- stream events -------------------------------------------------------------------------


@final
class StreamEvents:
    """Turns one stream's events into `StreamChunk` values (call it with each event).

    ``output_text.delta`` -> ``delta_text``; ``refusal.delta`` -> ``refusal``; a
    ``function_call`` item's ``output_item.added`` (id, name) and its
    ``function_call_arguments.delta`` pieces -> `ToolCallDelta` indexed by
    ``output_index`` (a call whose arguments came in no delta gets them from its
    ``output_item.done``); ``response.completed`` / ``response.incomplete`` -> the finish
    reason, usage and ``response_id``, and, when a reasoning (or other built-in) item
    finished, every finished item in output order as ``items`` (see `turn_items`: the
    same items a plain answer has). ``response.failed`` and ``error`` events raise
    (`failure_error`); other event types say nothing (None). Every chunk names the model
    that answered (from ``response.created``), so a cut stream is charged to it.
    """

    __slots__ = ("_argued", "_calls", "_deployment", "_finished_items", "_kept", "_model")

    def __init__(self, deployment: str) -> None:
        self._deployment = deployment
        self._model = ""
        self._calls = False  # a function call was seen
        self._argued: set[int] = set()  # output indexes whose arguments have arrived
        self._finished_items: list[tuple[int, Any]] = []  # (output index, item) when done
        self._kept = False  # a reasoning or other built-in item finished

    def __call__(self, data: Any) -> StreamChunk | None:
        try:
            kind = data["type"]
            if kind == "response.output_text.delta":
                delta = data.get("delta")
                return StreamChunk(delta, (), None, None, self._model) if delta else None
            if kind == "response.function_call_arguments.delta":
                index = data["output_index"]
                self._argued.add(index)
                piece = ToolCallDelta(index, None, None, data.get("delta") or "")
                return StreamChunk("", (piece,), None, None, self._model)
            if kind == "response.output_item.added":
                return self._added(data["item"], data["output_index"])
            if kind == "response.output_item.done":
                return self._done(data["item"], data["output_index"])
            if kind in ("response.completed", "response.incomplete"):
                return self._finished(data["response"])
            if kind == "response.refusal.delta":
                delta = data.get("delta") or ""
                return (
                    StreamChunk("", (), None, None, self._model, refusal=delta) if delta else None
                )
            if kind in ("response.created", "response.in_progress"):
                self._model = data["response"].get("model") or self._model
                return None
            if kind == "response.failed":
                raise failure_error(data["response"].get("error"), self._deployment)
            if kind == "error":
                raise failure_error(data, self._deployment, "error in stream")
            return None
        except _SHAPE_ERRORS as exc:
            raise _shape_error(data, self._deployment, exc) from exc

    def _added(self, item: Any, index: int) -> StreamChunk | None:
        if item["type"] != "function_call":
            return None
        self._calls = True
        arguments = item.get("arguments") or ""
        if arguments:
            self._argued.add(index)
        piece = ToolCallDelta(index, item.get("call_id"), item.get("name"), arguments)
        return StreamChunk("", (piece,), None, None, self._model)

    def _done(self, item: Any, index: int) -> StreamChunk | None:
        self._finished_items.append((index, item))
        kind = item["type"]
        if kind == "message":
            return None
        if kind != "function_call":
            self._kept = True
            return None
        if index in self._argued:
            return None
        self._calls = True
        self._argued.add(index)
        arguments = item.get("arguments") or ""
        piece = ToolCallDelta(index, item.get("call_id"), item.get("name"), arguments)
        return StreamChunk("", (piece,), None, None, self._model)

    def _finished(self, response: Any) -> StreamChunk:
        calls = self._calls or any(
            item.get("type") == "function_call" for item in response.get("output") or ()
        )
        return StreamChunk(
            "",
            (),
            _finish_reason(response, calls),
            usage(response.get("usage")),
            response.get("model") or self._model,
            items=self._items() if self._kept else (),
            response_id=response.get("id") or "",
        )

    def _items(self) -> tuple[ProviderItem, ...]:
        ordered = sorted(self._finished_items, key=lambda pair: pair[0])
        return turn_items([item for _, item in ordered])
