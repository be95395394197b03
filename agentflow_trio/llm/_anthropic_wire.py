"""The Anthropic Messages API's JSON shapes: request bodies, messages and stream events.

Pure translation, both ways, so each direction can be tested against the other: our
`ChatRequest` to a ``/v1/messages`` body (`messages_body`) and back (`parse_request`); a
``message`` object to a `ChatResponse` (`parse_message`) and back (`message_json`); the
SSE events of a stream to `StreamChunk` values (`EventParser`, which keeps the state of one
stream: the model, the input usage of ``message_start``, thinking blocks being assembled).

How our neutral values map (the Messages API has no ``system`` or ``tool`` role):

=========================== ==============================================================
system messages             ``system``: one string, or text blocks when there are several
                            or one carries ``cache_control``; the API has no other place
                            for them, so one in mid-history moves there too (joined in
                            order with the others, not where it stood)
tool messages in a row      one user turn of ``tool_result`` blocks (parallel tool calls);
                            a user message right after them joins that turn as text
assistant tool calls        ``tool_use`` blocks, ``input`` the parsed arguments
assistant ``items``         the ``"anthropic"`` ones first in the turn, verbatim (thinking
                            must come back unchanged); other vendors' items are dropped
``Message.cache_control``   on the message's last block
empty messages              left out (the API refuses empty content and empty text
                            blocks); their ``cache_control`` goes on the block before
``stop_reason``             end_turn/stop_sequence -> stop, tool_use -> tool_calls,
                            max_tokens -> length, refusal -> content_filter; pause_turn
                            stays pause_turn (a server tool paused a long turn: send the
                            turn back as it is and the model goes on; never a "stop")
=========================== ==============================================================

``usage.prompt_tokens`` is the whole input, as Anthropic's docs define it: ``input_tokens``
+ ``cache_read_input_tokens`` + ``cache_creation_input_tokens``. An ``error`` object (an
``error`` event in a stream, or an error body) becomes the typed error of its ``type``
(`error_from_body`): ``overloaded_error`` a `ServerError` with status 529, which the
router fails over and retries like any 5xx.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, final

from .. import _json
from ..errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from ._lines import excerpt
from ._openai_wire import shape_error
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
    "ANTHROPIC",
    "EventParser",
    "error_from_body",
    "finish_reason",
    "message_json",
    "messages_body",
    "parse_message",
    "parse_request",
    "usage",
]

ANTHROPIC: Final = "anthropic"
"""The provider name on the `ProviderItem` values this wire makes and sends back."""

_SHAPE_ERRORS: Final = (KeyError, IndexError, TypeError, AttributeError, ValueError)
_STOP: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}
_STOP_BACK: Final[Mapping[str, str]] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
_CHOICES: Final[Mapping[str, Mapping[str, str]]] = {
    "auto": {"type": "auto"},
    "required": {"type": "any"},
    "none": {"type": "none"},
}
_CHOICES_BACK: Final[Mapping[str, str]] = {"auto": "auto", "any": "required", "none": "none"}
_ERRORS: Final[Mapping[str, tuple[type[APIStatusError], int]]] = {
    "invalid_request_error": (BadRequestError, 400),
    "authentication_error": (AuthenticationError, 401),
    "billing_error": (APIStatusError, 402),
    "permission_error": (AuthenticationError, 403),
    "not_found_error": (NotFoundError, 404),
    "request_too_large": (BadRequestError, 413),
    "rate_limit_error": (RateLimitError, 429),
    "api_error": (ServerError, 500),
    "timeout_error": (ServerError, 504),
    "overloaded_error": (ServerError, 529),
}
_REFUSED: Final = "the model declined to answer (stop_reason: refusal)"


# --------------------------------------------------------------------------- requests


def messages_body(request: ChatRequest, model: str, *, max_tokens: int, stream: bool) -> bytes:
    """The JSON body for ``POST /v1/messages``.

    ``max_tokens`` is the API's required field when the request gives none; ``extra`` is
    merged last (``thinking``, ``metadata``, ``top_k``, ...).

    Raises:
        ConfigError: the request asks for a JSON-schema reply format (``response_format``),
            which the Messages API has not: structured output uses the tool mode here.
    """
    if request.response_format is not None:
        raise ConfigError(
            "anthropic has no JSON-schema reply format: use output_mode 'tool' or 'auto'",
            key="llm.output_mode",
        )
    system, turns = _turns(request.messages)
    body: dict[str, Any] = {
        "model": request.model or model,
        "max_tokens": request.max_tokens or max_tokens,
        "messages": turns,
    }
    if system is not None:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.tools:
        body["tools"] = [_tool(t) for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if request.stop is not None:
        body["stop_sequences"] = (
            [request.stop] if isinstance(request.stop, str) else list(request.stop)
        )
    if stream:
        body["stream"] = True
    if request.extra:
        body.update(request.extra)
    return _json.dumps(body)


def _turns(messages: tuple[Message, ...]) -> tuple[str | list[Any] | None, list[Any]]:
    """``system`` and the ``messages`` list of a body (see the module docstring)."""
    systems: list[Message] = []
    turns: list[dict[str, Any]] = []
    results: list[Any] | None = None  # the open user turn of tool results
    for m in messages:
        role = m.role
        if role == "system":
            if m.content:  # the API refuses an empty text block
                systems.append(m)
        elif role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id or "",
                "content": m.content or "",
            }
            if m.is_error:
                block["is_error"] = True
            if m.cache_control is not None:
                block["cache_control"] = dict(m.cache_control)
            if results is None:
                results = [block]
                turns.append({"role": "user", "content": results})
            else:
                results.append(block)
        elif role == "assistant":
            content = _assistant_content(m)
            if content:
                results = None
                turns.append({"role": "assistant", "content": content})
            else:  # nothing to say: the API refuses empty content
                _mark(turns, m.cache_control)
        elif not m.content:  # the API refuses empty content, and empty text blocks
            _mark(turns, m.cache_control)
        elif results is not None:  # a user message right after tool results joins them
            results.extend(_text_blocks(m))
            results = None
        else:
            turns.append({"role": "user", "content": _text_content(m)})
    return _system(systems), turns


def _mark(turns: list[dict[str, Any]], cache_control: Mapping[str, Any] | None) -> None:
    """The cache breakpoint of a message left out (it had no content) goes on the last
    block before it, which ends the same prefix."""
    if cache_control is None or not turns:
        return
    last = turns[-1]
    content = last["content"]
    if isinstance(content, str):
        content = last["content"] = [_text_block(content, None)]
    content[-1]["cache_control"] = dict(cache_control)


def _system(systems: list[Message]) -> str | list[Any] | None:
    if not systems:
        return None
    if len(systems) == 1 and systems[0].cache_control is None:
        return systems[0].content or ""
    return [_text_block(m.content or "", m.cache_control) for m in systems]


def _text_block(text: str, cache_control: Mapping[str, Any] | None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if cache_control is not None:
        block["cache_control"] = dict(cache_control)
    return block


def _text_content(m: Message) -> str | list[Any]:
    if m.cache_control is None:
        return m.content or ""
    return [_text_block(m.content or "", m.cache_control)]


def _text_blocks(m: Message) -> list[Any]:
    return [_text_block(m.content or "", m.cache_control)]


def _assistant_content(m: Message) -> str | list[Any]:
    """The turn's content: its text alone, or blocks (items, text, calls); "" or []
    when it has nothing to send (the caller leaves the turn out)."""
    blocks: list[dict[str, Any]] = [dict(i.data) for i in m.items if i.provider == ANTHROPIC]
    if not blocks and not m.tool_calls and m.cache_control is None:
        return m.content or ""
    if m.content:
        blocks.append({"type": "text", "text": m.content})
    for call in m.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)})
    if m.cache_control is not None and blocks:
        blocks[-1]["cache_control"] = dict(m.cache_control)
    return blocks


def _input(call: ToolCall) -> dict[str, Any]:
    """The call's arguments as an object (``{}`` when the model's text was not one)."""
    if call.arguments or not call.raw_arguments:
        return dict(call.arguments)
    return dict(ToolCall.parse(call.id, call.name, call.raw_arguments).arguments)


def _tool(spec: ToolSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name}
    if spec.description:
        out["description"] = spec.description
    out["input_schema"] = dict(spec.parameters)
    return out


def _tool_choice(choice: str | Mapping[str, Any]) -> Any:
    if isinstance(choice, str):
        fixed = _CHOICES.get(choice)
        return dict(fixed) if fixed is not None else {"type": "tool", "name": choice}
    return dict(choice)


def parse_request(body: Mapping[str, Any]) -> ChatRequest:
    """The `ChatRequest` a ``/v1/messages`` body says: `messages_body` read back.

    Fields this module does not send (``metadata``, ``thinking``, ...) land in ``extra``.
    Raises ``KeyError`` / ``TypeError`` for a body without the API's shape.
    """
    known = {"model", "max_tokens", "messages", "system", "temperature", "tools"}
    known |= {"tool_choice", "stop_sequences", "stream"}
    messages: list[Message] = []
    system = body.get("system")
    if isinstance(system, str):
        messages.append(Message("system", system))
    elif system:
        messages.extend(
            Message("system", b["text"], cache_control=b.get("cache_control")) for b in system
        )
    for turn in body["messages"]:
        messages.extend(_read_turn(turn))
    stop = body.get("stop_sequences")
    choice = body.get("tool_choice")
    return ChatRequest(
        tuple(messages),
        model=body.get("model"),
        temperature=body.get("temperature"),
        max_tokens=body.get("max_tokens"),
        tools=tuple(
            ToolSpec(t["name"], t.get("description", ""), t["input_schema"])
            for t in body.get("tools") or ()
        ),
        tool_choice=_read_choice(choice) if choice is not None else None,
        stop=(stop[0] if len(stop) == 1 else tuple(stop)) if stop else None,
        extra={k: v for k, v in body.items() if k not in known},
    )


def _read_choice(choice: Mapping[str, Any]) -> str | Mapping[str, Any]:
    kind = str(choice.get("type"))
    if kind == "tool" and set(choice) == {"type", "name"}:
        return str(choice["name"])
    if kind in _CHOICES_BACK and len(choice) == 1:
        return _CHOICES_BACK[kind]
    return choice


def _read_turn(turn: Mapping[str, Any]) -> list[Message]:
    role, content = turn["role"], turn["content"]
    if isinstance(content, str):
        return [Message(role, content)]
    if role == "assistant":
        text = "".join(b["text"] for b in content if b["type"] == "text")
        calls = tuple(
            ToolCall(b["id"], b["name"], b["input"], _json.dumps_str(b["input"]))
            for b in content
            if b["type"] == "tool_use"
        )
        kept = ("text", "tool_use")
        items = tuple(ProviderItem(ANTHROPIC, b) for b in content if b["type"] not in kept)
        cache = content[-1].get("cache_control") if content else None
        return [Message("assistant", text or None, None, calls, None, items, cache)]
    out = []
    for b in content:
        if b["type"] == "tool_result":
            out.append(
                Message(
                    "tool",
                    _result_text(b["content"]),
                    None,
                    (),
                    b["tool_use_id"],
                    (),
                    b.get("cache_control"),
                    b.get("is_error") is True,
                )
            )
        else:
            out.append(Message("user", b.get("text", ""), cache_control=b.get("cache_control")))
    return out


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content)


# --------------------------------------------------------------------------- responses


def usage(data: Mapping[str, Any] | None) -> Usage | None:
    """`Usage` from a Messages ``usage`` object (None if absent); ``prompt_tokens`` is the
    whole input (fresh + read from the cache + written to it)."""
    if not data:
        return None
    read = data.get("cache_read_input_tokens") or 0
    created = data.get("cache_creation_input_tokens") or 0
    prompt = (data.get("input_tokens") or 0) + read + created
    completion = data.get("output_tokens") or 0
    return Usage(prompt, completion, prompt + completion, read, created)


def finish_reason(stop_reason: str | None) -> str | None:
    """Our finish reason for Anthropic's ``stop_reason`` (an unknown one passes as is)."""
    if stop_reason is None:
        return None
    return _STOP.get(stop_reason, stop_reason)


def parse_message(data: Any, deployment: str) -> ChatResponse:
    """A `ChatResponse` from a ``message`` object (an ``error`` object raises its error)."""
    try:
        if data.get("type") == "error":
            raise error_from_body(data, deployment)
        text: list[str] = []
        calls: list[ToolCall] = []
        items: list[ProviderItem] = []
        for block in data["content"]:
            kind = block["type"]
            if kind == "text":
                text.append(block["text"])
            elif kind == "tool_use":
                given = block.get("input")
                calls.append(
                    ToolCall(block["id"], block["name"], given or {}, _json.dumps_str(given or {}))
                )
            else:
                items.append(ProviderItem(ANTHROPIC, block))
        stop = data.get("stop_reason")
        joined = "".join(text)
        return ChatResponse(
            joined,
            tuple(calls),
            finish_reason(stop),
            usage(data.get("usage")),
            data.get("model") or "",
            data,
            refusal=(joined or _REFUSED) if stop == "refusal" else None,
            items=tuple(items),
        )
    except _SHAPE_ERRORS as exc:
        raise shape_error(data, deployment, exc) from exc


def message_json(response: ChatResponse, message_id: str = "msg_0") -> dict[str, Any]:
    """The ``message`` object that `parse_message` reads as ``response`` (its way back)."""
    content: list[Any] = [dict(i.data) for i in response.items if i.provider == ANTHROPIC]
    if response.text:
        content.append({"type": "text", "text": response.text})
    for call in response.tool_calls:
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _input(call)}
        )
    used = response.usage or Usage()
    fresh = used.prompt_tokens - used.cached_tokens - used.cache_creation_tokens
    reason = response.finish_reason
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": _STOP_BACK.get(reason, reason) if reason is not None else None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": fresh,
            "output_tokens": used.completion_tokens,
            "cache_read_input_tokens": used.cached_tokens,
            "cache_creation_input_tokens": used.cache_creation_tokens,
        },
    }


def error_from_body(
    data: Any,
    deployment: str,
    *,
    status: int | None = None,
    retry_after: float | None = None,
) -> APIStatusError:
    """The typed error of an Anthropic ``{"type": "error", "error": {type, message}}``.

    The error's ``type`` picks the class and, when ``status`` is not given, the status
    (``overloaded_error``: `ServerError` 529; ``rate_limit_error``: `RateLimitError` 429
    with ``retry_after``); an unknown type is a `ServerError` 500.
    """
    error = data.get("error") if isinstance(data, Mapping) else None
    kind = error.get("type") if isinstance(error, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else None
    cls, code = _ERRORS.get(kind or "", (ServerError, 500))
    text = excerpt(_json.dumps(data) if not isinstance(data, bytes) else data)
    return cls(
        f"{deployment}: {kind or 'error'}: {message or text}",
        status=status or code,
        excerpt=text,
        retry_after=retry_after,
        deployment=deployment,
    )


# --------------------------------------------------------------------------- streams


@final
class EventParser:
    """The `StreamChunk` of each event of one Messages stream, in order (None: no chunk).

    ``content_block_delta`` text is ``delta_text``, ``input_json_delta`` a `ToolCallDelta`
    keyed by the block's index (id and name from ``content_block_start``); thinking and
    other vendor blocks are assembled from their deltas and come out whole as a
    `ProviderItem` at their ``content_block_stop``; ``message_delta`` carries the finish
    reason and the usage (the input counts of ``message_start`` with the final output
    count), and for a ``refusal`` the text so far as ``refusal``; ``ping`` and unknown
    events say nothing; an ``error`` event raises its typed error (`error_from_body`).
    ``stopped`` turns true at ``message_stop``. Every chunk names the model of
    ``message_start``.
    """

    __slots__ = ("_blocks", "_deployment", "_model", "_text", "_usage", "stopped")

    def __init__(self, deployment: str) -> None:
        self._deployment = deployment
        self._model = ""
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        self._text: list[str] = []  # for a refusal's words at the end
        self.stopped = False

    def __call__(self, data: Any) -> StreamChunk | None:
        try:
            kind = data["type"]
            if kind == "content_block_delta":
                return self._delta(data["index"], data["delta"])
            if kind == "content_block_start":
                return self._start(data["index"], data["content_block"])
            if kind == "content_block_stop":
                block = self._blocks.pop(data["index"], None)
                if block is None:
                    return None
                return StreamChunk(model=self._model, items=(ProviderItem(ANTHROPIC, block),))
            if kind == "message_delta":
                return self._message_delta(data)
            if kind == "message_start":
                message = data["message"]
                self._model = message.get("model") or ""
                self._usage = dict(message.get("usage") or {})
                return None
            if kind == "message_stop":
                self.stopped = True
                return None
            if kind == "error":
                raise error_from_body(data, self._deployment)
            return None  # ping, and event types newer than this module
        except _SHAPE_ERRORS as exc:
            raise shape_error(data, self._deployment, exc) from exc

    def _delta(self, index: int, delta: Mapping[str, Any]) -> StreamChunk | None:
        kind = delta["type"]
        if kind == "text_delta":
            text = delta["text"]
            self._text.append(text)
            return StreamChunk(text, model=self._model)
        if kind == "input_json_delta":
            part = delta.get("partial_json") or ""
            return StreamChunk("", (ToolCallDelta(index, None, None, part),), model=self._model)
        block = self._blocks.get(index)
        if block is not None:
            if kind == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
        return None  # citations and other deltas of text blocks are not carried

    def _start(self, index: int, block: Mapping[str, Any]) -> StreamChunk | None:
        kind = block["type"]
        if kind == "text":
            text = block.get("text") or ""
            if not text:
                return None
            self._text.append(text)
            return StreamChunk(text, model=self._model)
        if kind == "tool_use":
            given = block.get("input")
            arguments = _json.dumps_str(given) if given else ""
            call = ToolCallDelta(index, block["id"], block["name"], arguments)
            return StreamChunk("", (call,), model=self._model)
        self._blocks[index] = dict(block)
        return None

    def _message_delta(self, data: Mapping[str, Any]) -> StreamChunk:
        stop = (data.get("delta") or {}).get("stop_reason")
        given = data.get("usage")
        if given:
            used = self._usage
            for key, value in given.items():
                if value is not None:
                    used[key] = value
        reason = finish_reason(stop)
        return StreamChunk(
            finish_reason=reason,
            usage=usage(self._usage),
            model=self._model,
            refusal=("".join(self._text) or _REFUSED) if stop == "refusal" else "",
        )
