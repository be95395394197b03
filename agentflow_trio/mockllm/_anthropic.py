"""The Anthropic Messages wire of the mock LLM (``POST /v1/messages``), as plain dicts.

Pure functions, no I/O. A request is checked (`problem`) and translated into the neutral,
chat-shaped body the mock's one reply flow reads (`to_chat`); the dialect-neutral
`Completion` comes back out as a ``message`` object (`message`) or the SSE events of a
streamed one (`stream_events`), and errors take Anthropic's shape (`error_body`). Thinking
blocks are signed (`signature`) so that the mock can check a client sends them back
unchanged across a tool turn, as the real API requires.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Mapping
from typing import Any, Final

from agentflow_trio import _json
from agentflow_trio.mockllm._payloads import Completion, content_text, split_text

__all__ = [
    "DEFAULT_THINKING",
    "GARBAGE_EVENT",
    "content_filter_error",
    "context_length_error",
    "error_body",
    "error_type",
    "message",
    "problem",
    "rate_limit_headers",
    "signature",
    "stop_reason",
    "stream_error",
    "stream_events",
    "to_chat",
    "wants_thinking",
]

DEFAULT_THINKING: Final = "The user asked a question; answer it briefly. (mock thinking)"
"""The thinking a request that enables thinking gets when none is scripted."""

GARBAGE_EVENT: Final = b'event: content_block_delta\ndata: {"type": <garbage from the mock>\n\n'
"""One streamed event whose data is not JSON (the ``malformed`` fault)."""

CONTEXT_WINDOW: Final = 200_000
_MIN_BUDGET: Final = 1024
_ROLES: Final = ("user", "assistant")
_THINKING_BLOCKS: Final = ("thinking", "redacted_thinking")
_STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# -- requests ---------------------------------------------------------------------------


def problem(body: Mapping[str, Any]) -> str | None:
    """Why the real API would answer this request 400 (``invalid_request_error``), or None:
    missing fields, wrong roles or shapes (a tool result's ``is_error`` not a boolean),
    empty content (an empty text block, or a message with none but the final assistant
    one), and thinking sent back wrong."""
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Field required"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (a non-empty list)"
    for index, item in enumerate(messages):
        if not isinstance(item, dict) or item.get("role") not in _ROLES:
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        content = item.get("content")
        if not isinstance(content, str) and not (
            isinstance(content, list) and all(_is_block(block) for block in content)
        ):
            return f"messages.{index}.content: Input should be a string or a list of blocks"
        for at, block in enumerate(content if isinstance(content, list) else ()):
            flag = block.get("is_error", False) if block["type"] == "tool_result" else False
            if not isinstance(flag, bool):
                return f"messages.{index}.content.{at}.is_error: Input should be a valid boolean"
    return _empty_problem(body, messages) or _thinking_problem(body, messages, max_tokens)


def _empty_problem(body: Mapping[str, Any], messages: list[Any]) -> str | None:
    """The real API's refusals of empty content: an empty text block anywhere (``system``
    included), and a message with no content that is not the final assistant one."""
    system = body.get("system")
    if isinstance(system, list) and any(_empty_text(block) for block in system):
        return "system: text content blocks must be non-empty"
    last = len(messages) - 1
    for index, item in enumerate(messages):
        content = item["content"]
        if isinstance(content, list) and any(_empty_text(block) for block in content):
            return "messages: text content blocks must be non-empty"
        if not content and not (index == last and item["role"] == "assistant"):
            return (
                f"messages.{index}: all messages must have non-empty content except for "
                "the optional final assistant message"
            )
    return None


def _empty_text(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text" and not block.get("text")


def _is_block(block: Any) -> bool:
    return isinstance(block, dict) and isinstance(block.get("type"), str)


def wants_thinking(body: Mapping[str, Any]) -> bool:
    """Whether the request enables extended thinking (``thinking.type`` enabled/adaptive)."""
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _thinking_problem(body: Mapping[str, Any], messages: list[Any], max_tokens: int) -> str | None:
    """With thinking enabled: the budget's bounds, and the rule that the assistant turn
    before a tool result starts with its thinking block, sent back unchanged."""
    if not wants_thinking(body):
        return None
    thinking = body["thinking"]
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < _MIN_BUDGET:
            return f"thinking.enabled.budget_tokens: Input should be >= {_MIN_BUDGET}"
        if budget >= max_tokens:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
    last = messages[-1]
    content = last.get("content")
    if last.get("role") != "user" or not isinstance(content, list):
        return None
    if not any(block.get("type") == "tool_result" for block in content):
        return None
    index = len(messages) - 2
    if index < 0:
        return None
    blocks = messages[index].get("content")
    first = blocks[0] if isinstance(blocks, list) and blocks else {"type": "text"}
    if first.get("type") not in _THINKING_BLOCKS:
        return (
            f"messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, "
            f"but found `{first.get('type')}`. When `thinking` is enabled, a final `assistant` "
            "message must start with a thinking block (preceding the lastmost set of "
            "`tool_use` and `tool_result` blocks)."
        )
    if first["type"] == "thinking" and first.get("signature") != signature(
        str(first.get("thinking", ""))
    ):
        return f"messages.{index}.content.0: Invalid `signature` in `thinking` block"
    return None


def signature(thinking: str) -> str:
    """The mock's signature of a thinking text (what it sends in ``signature``)."""
    digest = hashlib.blake2b(thinking.encode(), digest_size=32, key=b"agentflow-mock").digest()
    return base64.b64encode(digest).decode()


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the neutral chat-shaped body (OpenAI chat fields) the reply flow
    reads: ``messages`` (tool results as ``tool`` messages), ``tools``, ``tool_choice``,
    ``response_format`` (from ``output_format``) and ``model``."""
    chat: dict[str, Any] = {"model": body.get("model"), "messages": _chat_messages(body)}
    tools = body.get("tools")
    if isinstance(tools, list):
        chat["tools"] = [
            {
                "type": "function",
                "function": {"name": tool["name"], "parameters": tool.get("input_schema")},
            }
            for tool in tools
            if isinstance(tool, dict) and isinstance(tool.get("name"), str)
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        if choice.get("type") == "any":
            chat["tool_choice"] = "required"
        elif choice.get("type") == "tool":
            chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    fmt = body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = {"schema": fmt.get("schema")}
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    return chat


def _chat_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = content_text(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for item in body["messages"]:
        role, content = item["role"], item["content"]
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        text = content_text(content)
        if role == "assistant":
            calls = [
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": _json.dumps(block.get("input", {})).decode(),
                    },
                }
                for block in content
                if block["type"] == "tool_use"
            ]
            out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
            continue
        results = [block for block in content if block["type"] == "tool_result"]
        if text or not results:
            out.append({"role": "user", "content": text})
        out.extend(
            {
                "role": "tool",
                "tool_call_id": block.get("tool_use_id"),
                "content": content_text(block.get("content")),
            }
            for block in results
        )
    return out


# -- replies ----------------------------------------------------------------------------


def _message_id(reply: Completion) -> str:
    return "msg_" + reply.id.removeprefix("chatcmpl-")


def stop_reason(reply: Completion) -> str:
    """``end_turn``, ``tool_use``, ``refusal``, or the scripted finish reason translated
    (``length`` -> ``max_tokens``; an Anthropic name passes as it is)."""
    if reply.finish is not None:
        return _STOP_REASONS.get(reply.finish, reply.finish)
    if reply.refusal is not None:
        return "refusal"
    return "tool_use" if reply.tool_calls else "end_turn"


def _usage(reply: Completion, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": reply.prompt_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": reply.cache_creation_tokens,
        "cache_read_input_tokens": reply.cached_tokens,
    }


def _answer_text(reply: Completion) -> str | None:
    if reply.refusal is not None:
        return reply.refusal
    if reply.text is None or (not reply.text and reply.tool_calls):
        return None
    return reply.text


def _blocks(reply: Completion) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.thinking is not None:
        blocks.append(
            {"type": "thinking", "thinking": reply.thinking, "signature": signature(reply.thinking)}
        )
    text = _answer_text(reply)
    if text is not None:
        blocks.append({"type": "text", "text": text})
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        for call in reply.tool_calls
    )
    return blocks


def message(reply: Completion) -> dict[str, Any]:
    """A non-streamed ``message`` object."""
    return {
        "id": _message_id(reply),
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": _blocks(reply),
        "stop_reason": stop_reason(reply),
        "stop_sequence": None,
        "usage": _usage(reply, reply.completion_tokens),
    }


def _event(data: dict[str, Any]) -> bytes:
    kind: str = data["type"]
    return b"event: " + kind.encode() + b"\ndata: " + _json.dumps(data) + b"\n\n"


def _block_events(index: int, block: dict[str, Any], chunks: int) -> list[bytes]:
    """``content_block_start``, its deltas and ``content_block_stop`` for one block."""
    kind = block["type"]
    start: dict[str, Any]
    deltas: list[dict[str, Any]]
    if kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": piece}
            for piece in split_text(block["thinking"], chunks)
        ]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "tool_use":
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        arguments = _json.dumps(block["input"]).decode()
        deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in split_text(arguments, max(chunks, 2))
        ]
    else:
        start = {"type": "text", "text": ""}
        deltas = [
            {"type": "text_delta", "text": piece} for piece in split_text(block["text"], chunks)
        ]
    events = [_event({"type": "content_block_start", "index": index, "content_block": start})]
    events.extend(
        _event({"type": "content_block_delta", "index": index, "delta": delta}) for delta in deltas
    )
    events.append(_event({"type": "content_block_stop", "index": index}))
    return events


def stream_events(reply: Completion, chunks: int) -> list[bytes]:
    """The SSE events of a streamed message: ``message_start`` (input usage), ``ping``,
    each block's start/deltas/stop, ``message_delta`` (stop reason, output usage) and
    ``message_stop`` last."""
    start = message(reply)
    start.update(content=[], stop_reason=None, usage=_usage(reply, 1))
    events = [_event({"type": "message_start", "message": start}), _event({"type": "ping"})]
    for index, block in enumerate(_blocks(reply)):
        events.extend(_block_events(index, block, chunks))
    delta = {"stop_reason": stop_reason(reply), "stop_sequence": None}
    usage = {"output_tokens": reply.completion_tokens}
    events.append(_event({"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(_event({"type": "message_stop"}))
    return events


# -- errors -----------------------------------------------------------------------------


def error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (529: ``overloaded_error``)."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for ``status``."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def stream_error(status: int) -> bytes:
    """The ``event: error`` SSE event a stream ends with when it fails midway."""
    message = "Overloaded" if status == 529 else "Internal server error (mock LLM)"
    return _event(error_body(status, message))


def rate_limit_headers(seconds: float | None) -> list[tuple[str, str]]:
    """The ``anthropic-ratelimit-requests-*`` headers of a 429 (reset: RFC 3339 time)."""
    reset = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds or 0)
    stamp = reset.isoformat(timespec="seconds").replace("+00:00", "Z")
    return [
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", stamp),
    ]


def context_length_error() -> dict[str, Any]:
    """The 400 body of a prompt over the context window."""
    message = f"prompt is too long: {CONTEXT_WINDOW + 1000} tokens > {CONTEXT_WINDOW} maximum"
    return error_body(400, message)


def content_filter_error() -> dict[str, Any]:
    """The 400 body of a request refused by the usage policy (mock LLM)."""
    return error_body(400, "Output blocked by content filtering policy (mock LLM)")
