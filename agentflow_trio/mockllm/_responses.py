"""The OpenAI Responses wire of the mock LLM (``POST /v1/responses``), as plain dicts.

Pure functions, no I/O. A request is checked (`problem`) and translated into the neutral,
chat-shaped body the mock's one reply flow reads (`to_chat`); the dialect-neutral
`Completion` comes back out as a ``response`` object (`response`) or the typed, numbered
SSE events of a streamed one (`stream_events`, `stream_failure`). HTTP errors keep
OpenAI's shape (``_payloads.openai_error``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from agentflow_trio import _json
from agentflow_trio.mockllm._anthropic import signature
from agentflow_trio.mockllm._payloads import Completion, content_text, split_text

__all__ = [
    "DEFAULT_REASONING",
    "GARBAGE_EVENT",
    "problem",
    "response",
    "stream_events",
    "stream_failure",
    "to_chat",
    "wants_reasoning",
]

DEFAULT_REASONING: Final = "The user asked a question; answer it briefly. (mock reasoning)"
"""The reasoning summary a request asking for reasoning gets when none is scripted."""

GARBAGE_EVENT: Final = (
    b'event: response.output_text.delta\ndata: {"type": <garbage from the mock>\n\n'
)
"""One streamed event whose data is not JSON (the ``malformed`` fault)."""

_MESSAGE_ROLES: Final = ("user", "assistant", "system", "developer")
_NO_REASONING: Final = {"effort": None, "summary": None}
_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}


# -- requests ---------------------------------------------------------------------------


def problem(body: Mapping[str, Any]) -> tuple[int, str] | None:
    """Why the real API would refuse this request, as (status, message), or None: a
    malformed ``input`` (400), and, with ``store`` false, a reasoning item without its
    ``encrypted_content`` (404, as the real API: nothing was stored to look its id up in)."""
    items = body.get("input", [])
    if isinstance(items, str):
        return None
    if not isinstance(items, list):
        return 400, "Invalid type for 'input': expected a string or an array of input items."
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            return 400, f"Invalid type for 'input[{index}]': expected an object."
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") not in _MESSAGE_ROLES:
            return 400, f"Invalid value for 'input[{index}].role'."
        if kind == "function_call_output" and not isinstance(item.get("call_id"), str):
            return 400, f"Missing required parameter: 'input[{index}].call_id'."
        if kind == "reasoning" and body.get("store") is False and not item.get("encrypted_content"):
            return 404, (
                f"Item with id '{item.get('id')}' not found. Items are not persisted when "
                "`store` is set to false. Try again with `store` set to true, or remove this "
                "item from your input."
            )
    return None


def wants_reasoning(body: Mapping[str, Any]) -> bool:
    """Whether the request asks for reasoning (``reasoning.effort`` or ``.summary`` set)."""
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        return False
    effort, summary = reasoning.get("effort"), reasoning.get("summary")
    return effort not in (None, "none") or summary is not None


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the neutral chat-shaped body (OpenAI chat fields) the reply flow
    reads: ``messages`` (``instructions`` first; ``function_call_output`` items as ``tool``
    messages), ``tools``, ``tool_choice``, ``response_format`` (from ``text.format``)."""
    chat: dict[str, Any] = {"model": body.get("model"), "messages": _chat_messages(body)}
    tools = body.get("tools")
    if isinstance(tools, list):
        chat["tools"] = [
            {
                "type": "function",
                "function": {"name": tool["name"], "parameters": tool.get("parameters")},
            }
            for tool in tools
            if isinstance(tool, dict)
            and tool.get("type") == "function"
            and isinstance(tool.get("name"), str)
        ]
    choice = body.get("tool_choice")
    if choice == "required":
        chat["tool_choice"] = "required"
    elif isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": fmt}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    return chat


def _chat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = {"name": tool["name"], "parameters": tool.get("parameters")}
    return {"type": "function", "function": function}


def _chat_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        out.append({"role": "system", "content": instructions})
    items = body.get("input", [])
    if isinstance(items, str):
        out.append({"role": "user", "content": items})
        return out
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            out.append({"role": item["role"], "content": content_text(item.get("content"))})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else content_text(output)
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
    return out


# -- replies ----------------------------------------------------------------------------


def _number(reply: Completion) -> str:
    return reply.id.removeprefix("chatcmpl-mock")


def _items(reply: Completion, body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``output`` items: reasoning, the message, then the function calls."""
    number = _number(reply)
    items: list[dict[str, Any]] = []
    if reply.thinking is not None:
        reasoning: dict[str, Any] = {
            "type": "reasoning",
            "id": f"rs_mock{number}",
            "summary": [{"type": "summary_text", "text": reply.thinking}],
        }
        include = body.get("include")
        if isinstance(include, list) and "reasoning.encrypted_content" in include:
            reasoning["encrypted_content"] = signature(reply.thinking)
        items.append(reasoning)
    part: dict[str, Any] | None = None
    if reply.refusal is not None:
        part = {"type": "refusal", "refusal": reply.refusal}
    elif reply.text is not None and (reply.text or not reply.tool_calls):
        part = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
    if part is not None:
        items.append(
            {
                "type": "message",
                "id": f"msg_mock{number}",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )
    items.extend(
        {
            "type": "function_call",
            "id": f"fc_mock{number}_{index}",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments_json(),
            "status": "completed",
        }
        for index, call in enumerate(reply.tool_calls)
    )
    return items


def _usage(reply: Completion) -> dict[str, Any]:
    reasoning = len(reply.thinking.split()) if reply.thinking else 0
    return {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens},
        "output_tokens": reply.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def response(
    reply: Completion, body: Mapping[str, Any], status: str | None = None
) -> dict[str, Any]:
    """A ``response`` object; ``status`` None: ``completed``, or ``incomplete`` for a
    scripted ``length``/``content_filter`` finish. The request's settings are echoed."""
    reason = _INCOMPLETE.get(reply.finish or "")
    if status is None:
        status = "incomplete" if reason else "completed"
    done = status in ("completed", "incomplete")
    text = body.get("text")
    reasoning = body.get("reasoning")
    metadata = body.get("metadata")
    return {
        "id": f"resp_mock{_number(reply)}",
        "object": "response",
        "created_at": reply.created or int(time.time()),
        "completed_at": int(time.time()) if status == "completed" else None,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": reply.model,
        "output": _items(reply, body) if done else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": reasoning
        if isinstance(reasoning, dict)
        else {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": text if isinstance(text, dict) else {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": _usage(reply) if done else None,
        "user": body.get("user"),
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


class _Events:
    """Numbered SSE events (``sequence_number`` from 0), each with its ``event:`` line."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def add(self, kind: str, **fields: Any) -> None:
        data = {"type": kind, "sequence_number": len(self.parts), **fields}
        self.parts.append(b"event: " + kind.encode() + b"\ndata: " + _json.dumps(data) + b"\n\n")


def _item_events(events: _Events, index: int, item: dict[str, Any], chunks: int) -> None:
    kind, item_id = item["type"], item["id"]
    where = {"item_id": item_id, "output_index": index}
    if kind == "reasoning":
        events.add("response.output_item.added", output_index=index, item={**item, "summary": []})
        for summary_index, part in enumerate(item["summary"]):
            at = {**where, "summary_index": summary_index}
            events.add("response.reasoning_summary_part.added", **at, part={**part, "text": ""})
            for piece in split_text(part["text"], chunks):
                events.add("response.reasoning_summary_text.delta", **at, delta=piece)
            events.add("response.reasoning_summary_text.done", **at, text=part["text"])
            events.add("response.reasoning_summary_part.done", **at, part=part)
    elif kind == "message":
        added = {**item, "status": "in_progress", "content": []}
        events.add("response.output_item.added", output_index=index, item=added)
        part = item["content"][0]
        at = {**where, "content_index": 0}
        if part["type"] == "refusal":
            events.add("response.content_part.added", **at, part={**part, "refusal": ""})
            for piece in split_text(part["refusal"], chunks):
                events.add("response.refusal.delta", **at, delta=piece)
            events.add("response.refusal.done", **at, refusal=part["refusal"])
        else:
            events.add("response.content_part.added", **at, part={**part, "text": ""})
            for piece in split_text(part["text"], chunks):
                events.add("response.output_text.delta", **at, delta=piece, logprobs=[])
            events.add("response.output_text.done", **at, text=part["text"], logprobs=[])
        events.add("response.content_part.done", **at, part=part)
    else:  # function_call
        added = {**item, "arguments": "", "status": "in_progress"}
        events.add("response.output_item.added", output_index=index, item=added)
        for piece in split_text(item["arguments"], max(chunks, 2)):
            events.add("response.function_call_arguments.delta", **where, delta=piece)
        events.add(
            "response.function_call_arguments.done",
            **where,
            name=item["name"],
            arguments=item["arguments"],
        )
    events.add("response.output_item.done", output_index=index, item=item)


def stream_events(reply: Completion, body: Mapping[str, Any], chunks: int) -> list[bytes]:
    """The SSE events of a streamed response: ``response.created``, ``.in_progress``, each
    output item's added/delta/done events, and ``response.completed`` (with the usage; or
    ``response.incomplete``) last."""
    events = _Events()
    opening = response(reply, body, "in_progress")
    events.add("response.created", response=opening)
    events.add("response.in_progress", response=opening)
    for index, item in enumerate(_items(reply, body)):
        _item_events(events, index, item, chunks)
    final = response(reply, body)
    closing = "response.completed" if final["status"] == "completed" else "response.incomplete"
    events.add(closing, response=final)
    return events.parts


def stream_failure(reply: Completion, body: Mapping[str, Any], at: int) -> list[bytes]:
    """The ``error`` and ``response.failed`` events a stream cut after ``at`` events ends
    with (numbered from ``at``)."""
    events = _Events()
    events.parts = [b""] * at  # numbering continues after the events already sent
    message = "The mock LLM failed while generating the response."
    events.add("error", code="server_error", message=message, param=None)
    failed = response(reply, body, "failed")
    failed["error"] = {"code": "server_error", "message": message}
    events.add("response.failed", response=failed)
    return events.parts[at:]
