"""Wire shapes of the mock LLM: OpenAI (and Azure) and Ollama bodies, as plain dicts.

Pure functions, no I/O: they turn a reply (text, tool calls, token counts) into the JSON
objects each dialect sends, and requests into token counts. Kept apart from the server so
the shapes can be read (and checked against the real APIs) in one place.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import math
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from agentflow_trio import _json

__all__ = [
    "CONTEXT_WINDOW",
    "DONE_EVENT",
    "GARBAGE_BODY",
    "Completion",
    "ToolCallOut",
    "azure_error",
    "chat_completion",
    "chat_stream_events",
    "content_filter_error",
    "context_length_error",
    "count_prompt_words",
    "embedding_vector",
    "encode_embedding",
    "garbage_part",
    "ollama_chat",
    "ollama_error",
    "ollama_stream_lines",
    "openai_error",
    "split_text",
    "tool_results_text",
]

_TOOL_RESULT_EXCERPT = 500
DONE_EVENT = b"data: [DONE]\n\n"


@attrs.frozen
class ToolCallOut:
    """A tool call as the mock sends it; ``arguments`` is a JSON object."""

    id: str
    name: str
    arguments: Any

    def arguments_json(self) -> str:
        return _json.dumps(self.arguments).decode()


@attrs.frozen
class Completion:
    """Everything one chat reply needs, whatever the dialect.

    ``refusal`` is sent as OpenAI's ``message.refusal`` (content null); ``finish``
    replaces the finish reason; ``cached_tokens`` (when > 0) is reported as
    ``usage.prompt_tokens_details.cached_tokens``. ``thinking`` (the model's reasoning)
    and ``cache_creation_tokens`` are sent only by the wires that have them (Anthropic,
    Responses).
    """

    id: str
    created: int
    model: str
    text: str | None
    tool_calls: tuple[ToolCallOut, ...]
    prompt_tokens: int
    completion_tokens: int
    refusal: str | None = None
    finish: str | None = None
    cached_tokens: int = 0
    thinking: str | None = None
    cache_creation_tokens: int = 0

    @property
    def finish_reason(self) -> str:
        if self.finish is not None:
            return self.finish
        return "tool_calls" if self.tool_calls else "stop"

    def usage(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


# -- requests ---------------------------------------------------------------------------


def content_text(content: Any) -> str:
    """The text of a string or of a list of parts or blocks (those with a ``text`` string:
    OpenAI content parts, Responses ``input_text``/``output_text``, Anthropic text blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def count_prompt_words(messages: Sequence[Any]) -> int:
    """Rough prompt token count: the words of every message's text content (at least 1)."""
    words = 0
    for message in messages:
        if isinstance(message, dict):
            words += len(content_text(message.get("content")).split())
    return max(words, 1)


def tool_results_text(messages: Sequence[Any]) -> str | None:
    """A reply quoting the tool results (role "tool") sent since the last user message.

    None when there are none: a new user turn gets the ordinary reply, so a tool loop ends.
    """
    results: list[str] = []
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") == "user":
            break
        if message.get("role") == "tool":
            results.append(content_text(message.get("content"))[:_TOOL_RESULT_EXCERPT])
    if not results:
        return None
    return "Based on the tool results: " + "; ".join(reversed(results))


def split_text(text: str, parts: int) -> list[str]:
    """``text`` cut into at most ``parts`` non-empty pieces of near-equal length, in order."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    pieces, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


# -- OpenAI / Azure ---------------------------------------------------------------------


def openai_error(
    message: str, kind: str | None, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def azure_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


CONTEXT_WINDOW = 8192  # the window the context_length fault claims


def context_length_error() -> dict[str, Any]:
    """OpenAI's (and Azure's) 400 body for a prompt over the model's context window."""
    message = (
        f"This model's maximum context length is {CONTEXT_WINDOW} tokens. However, your "
        f"messages resulted in {CONTEXT_WINDOW + 1000} tokens. Please reduce the length of "
        "the messages."
    )
    return openai_error(message, "invalid_request_error", "context_length_exceeded", "messages")


_FILTER_RESULT = {
    "hate": {"filtered": False, "severity": "safe"},
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": True, "severity": "medium"},
}


def content_filter_error() -> dict[str, Any]:
    """The 400 body of a prompt refused by the content policy (Azure's shape: ``code``
    ``content_filter``, ``innererror.code`` ``ResponsibleAIPolicyViolation``)."""
    message = (
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. Please modify your prompt and retry. (mock LLM)"
    )
    error = openai_error(message, None, "content_filter", "prompt")
    error["error"]["status"] = 400
    error["error"]["innererror"] = {
        "code": "ResponsibleAIPolicyViolation",
        "content_filter_result": _FILTER_RESULT,
    }
    return error


GARBAGE_BODY = b'{"id": "chatcmpl-mock", "choices": [{"message": <garbage from the mock>'
"""A 200 body that is not JSON (the ``malformed`` fault of a plain request)."""


def garbage_part(ndjson: bool) -> bytes:
    """One streamed part that is not JSON: an SSE event, or an NDJSON line."""
    data = b'{"choices": [{"delta": {"content": <garbage from the mock>'
    return data + b"\n" if ndjson else b"data: " + data + b"\n\n"


def _openai_tool_call(call: ToolCallOut) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json()},
    }


def chat_completion(reply: Completion) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` object."""
    text = None if reply.refusal is not None else reply.text
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": reply.refusal}
    if reply.tool_calls:
        message["tool_calls"] = [_openai_tool_call(call) for call in reply.tool_calls]
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": "fp_mock",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        ],
        "usage": reply.usage(),
    }


def _tool_call_deltas(calls: Sequence[ToolCallOut], chunks: int) -> Iterator[dict[str, Any]]:
    """OpenAI streams a tool call as a header (id, name) and then argument fragments
    (``chunks`` of them, at least 2)."""
    for index, call in enumerate(calls):
        header = {"name": call.name, "arguments": ""}
        yield {"index": index, "id": call.id, "type": "function", "function": header}
        for fragment in split_text(call.arguments_json(), max(chunks, 2)):
            yield {"index": index, "function": {"arguments": fragment}}


def chat_stream_events(reply: Completion, chunks: int, include_usage: bool) -> list[bytes]:
    """The ``data: ...`` server-sent events of a streamed reply, ``[DONE]`` last."""

    def event(delta: dict[str, Any] | None, finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": "fp_mock",
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if delta is None:
            chunk["usage"] = reply.usage()
        return b"data: " + _json.dumps(chunk) + b"\n\n"

    if reply.refusal is not None:
        pieces = split_text(reply.refusal, chunks)
        events = [
            event({"role": "assistant", "content": None, "refusal": ""}),
            *(event({"refusal": piece}) for piece in pieces),
        ]
    else:
        pieces = split_text(reply.text or "", chunks)
        events = [
            event({"role": "assistant", "content": piece} if index == 0 else {"content": piece})
            for index, piece in enumerate(pieces)
        ]
        if not pieces:
            events.append(event({"role": "assistant", "content": reply.text}))
    events.extend(
        event({"tool_calls": [delta]}) for delta in _tool_call_deltas(reply.tool_calls, chunks)
    )
    events.append(event({}, reply.finish_reason))
    if include_usage:
        events.append(event(None))
    events.append(DONE_EVENT)
    return events


# -- Ollama -----------------------------------------------------------------------------


def ollama_error(message: str) -> dict[str, Any]:
    return {"error": message}


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def _ollama_message(text: str, calls: Sequence[ToolCallOut]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"function": {"name": call.name, "arguments": call.arguments}} for call in calls
        ]
    return message


def _ollama_done(reply: Completion, created_at: str) -> dict[str, Any]:
    return {
        "model": reply.model,
        "created_at": created_at,
        "message": _ollama_message("", ()),
        "done": True,
        "done_reason": "stop",
        "total_duration": 0,
        "load_duration": 0,
        "prompt_eval_count": reply.prompt_tokens,
        "prompt_eval_duration": 0,
        "eval_count": reply.completion_tokens,
        "eval_duration": 0,
    }


def ollama_chat(reply: Completion) -> dict[str, Any]:
    """A non-streamed ``/api/chat`` answer."""
    body = _ollama_done(reply, _now_iso())
    body["message"] = _ollama_message(reply.text or "", reply.tool_calls)
    return body


def ollama_stream_lines(reply: Completion, chunks: int) -> list[bytes]:
    """The NDJSON lines of a streamed ``/api/chat`` answer; the last one has ``done: true``."""
    created_at = _now_iso()

    def line(message: dict[str, Any]) -> bytes:
        body = {"model": reply.model, "created_at": created_at, "message": message, "done": False}
        return _json.dumps(body) + b"\n"

    lines = [line(_ollama_message(piece, ())) for piece in split_text(reply.text or "", chunks)]
    if reply.tool_calls:
        lines.append(line(_ollama_message("", reply.tool_calls)))
    lines.append(_json.dumps(_ollama_done(reply, created_at)) + b"\n")
    return lines


# -- embeddings -------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def embedding_vector(text: str, dim: int) -> tuple[float, ...]:
    """A unit vector of ``dim`` floats derived from a hash of ``text``: same text, same vector."""
    data = text.encode()
    values: list[float] = []
    block = 0
    while len(values) < dim:
        digest = hashlib.blake2b(data, digest_size=64, salt=block.to_bytes(16, "little")).digest()
        values.extend(word / 2**31 - 1.0 for word in struct.unpack("<16I", digest))
        block += 1
    del values[dim:]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return tuple(round(value / norm, 6) for value in values)


def encode_embedding(
    vector: tuple[float, ...], encoding: str
) -> list[float] | tuple[float, ...] | str:
    """``vector`` as OpenAI sends it: floats, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
