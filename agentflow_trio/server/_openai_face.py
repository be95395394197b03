"""The OpenAI-compatible face of ``serve``: an agent answers as if it were a chat model, so
any OpenAI SDK or chat UI can talk to it.

Endpoints (JSON in and out; errors are OpenAI's shape, ``{"error": {"message", "type",
"param", "code"}}``)::

    POST /v1/chat/completions   {"model": "<agent>", "messages": [...], ...} -> 200 a
                                chat.completion; with "stream": true, 200 text/event-stream
                                of chat.completion.chunk objects, then ``data: [DONE]``
    GET  /v1/models             {"object": "list", "data": [{"id", "object": "model",
                                "created", "owned_by": "agentflow_trio"}, ...]}: the agents
    GET  /v1/models/{id}        one of them; 404 model_not_found

The request becomes ``Event(model, data, metadata)``: ``data["messages"]`` holds the
request's messages as sent (checked first with `message_from_dict`, so `tool_agent` and any
agent reading ``data["messages"]`` work unchanged), plus the sampling and format fields an
agent may honour when not null (``temperature``, ``top_p``, ``max_tokens``,
``max_completion_tokens``, ``stop``, ``seed``, penalties, ``logit_bias``,
``response_format``, ``tools``, ``tool_choice``, ``parallel_tool_calls``,
``reasoning_effort``, ``verbosity``); ``metadata`` holds the request's ``metadata`` (at most
16 string pairs, keys up to 64 and values up to 512 characters, as OpenAI bounds them: a
``session_id`` there picks the runner's session, see below) and ``user``. OpenAI's platform options
(``store``, ``service_tier``, ``prompt_cache_*``, ...) are accepted and mean nothing here;
``n`` other than 1 and ``logprobs: true`` are refused (one answer, no log probabilities), as
is any field OpenAI does not define (``Unrecognized request argument supplied``).

Sessions and the conversation: OpenAI clients resend the whole conversation each turn,
and a `tool_agent` in a session puts the session's history before the event's messages,
so the model would see every earlier turn twice. The rule: the client's messages are the
conversation whenever they hold an earlier turn. A request with ``metadata.session_id``
whose messages are only the new turn (no ``assistant`` or ``tool`` message) runs in that
session: its history comes first and the turn is remembered (a server-side conversation:
send only what is new). A request whose messages already hold an assistant or tool
message runs outside the session: the model sees exactly the messages sent, nothing is
read from or written to the session.

The answer's ``choices[0].message.content`` is the agent's output: a ``str`` as it is, a
mapping's ``text`` or else ``answer`` when that is a string (`tool_agent`'s output), anything
else as compact strict JSON (``server._wire``; structured output arrives as its JSON).
``finish_reason`` is ``"stop"``, ``usage`` the event's `RunUsage` (``prompt_tokens`` =
input, ``completion_tokens`` = output, ``prompt_tokens_details.cached_tokens``; zeros when
the event made no model call), ``id`` is ``chatcmpl-`` + the event's id (also sent as
``x-request-id``), ``model`` the agent's name.

Streaming: the response starts with the event's first model text, not before, so an event
that fails before saying anything is answered with its HTTP error (the SDK raises its typed
exception). The first chunk carries ``role``; each `TextDelta` is one content delta, in
order; at the end, if the answer's text extends what was streamed (an agent that does not
stream, or whose answer is not the model's text), the rest comes as one more delta; the last
choice chunk has ``finish_reason``; ``stream_options.include_usage`` adds the usage chunk
(``choices`` empty; every other chunk then has ``"usage": null``); then ``data: [DONE]``.
An event that fails after the stream started ends it with ``data: {"error": {...}}`` and no
``[DONE]`` (the SDK raises `APIError`). A client that disconnects cancels the event.

Outcomes that are not an answer (``x-should-retry: false`` tells the SDK not to run the
event again by itself where a retry would repeat the spending):

=======================  ======  ===================  ======================  ============
outcome / refusal        status  type                 code                    SDK retries
=======================  ======  ===================  ======================  ============
failed                   500     server_error         agent_failed            no
timed_out                504     server_error         timed_out               no
usage_limit_exceeded     429     insufficient_quota   usage_limit_exceeded    no
cancelled (the server    503     server_error         cancelled               yes
cancelled it: shutdown;
a client that left is
sent nothing)
runner refuses (full,    503     server_error         queue_full, overloaded, yes (Retry-
overloaded, closed)                                   runner_closed           After: 1)
output not JSON          500     server_error         output_not_json         no
unknown model            404     invalid_request_     model_not_found
                                 error
bad body                 400     invalid_request_     (the field in param)
                                 error
=======================  ======  ===================  ======================  ============

The guards of ``/v1/events`` apply first (``server.app``: Host check, API key, JSON
Content-Type, body bound), their answers in this shape too.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final, final

import attrs

from .. import _json
from ..errors import RunnerError
from ..events import AgentResult, Event, Outcome
from ..progress import FinalResult, ProgressItem, TextDelta
from ..runner import Runner
from ..tools.loop import MAX_MESSAGES, message_from_dict
from ._sse import SSE_HEADERS, relay, result_unless_gone
from ._wire import JSON_TYPE, DisconnectWatch, NotJSON, Receive, Send, send_body, to_json_bytes

__all__ = ["CHAT_PATH", "MODELS_PATH", "OpenAIFace", "reply_error"]

CHAT_PATH: Final = "/v1/chat/completions"
MODELS_PATH: Final = "/v1/models"
OWNER: Final = "agentflow_trio"

_FACE_FIELDS: Final = frozenset(
    {"model", "messages", "stream", "stream_options", "n", "metadata", "user", "logprobs"}
)
_PASSED_FIELDS: Final = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "verbosity",
    }
)
"""Request fields an agent may honour: copied into the event's data when not null."""
_IGNORED_FIELDS: Final = frozenset(
    {
        "audio",
        "function_call",
        "functions",
        "modalities",
        "moderation",
        "prediction",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "store",
        "top_logprobs",
        "web_search_options",
    }
)
"""OpenAI platform options: accepted (a client library may always send them), no effect."""
_MAX_METADATA: Final = 16
_MAX_METADATA_KEY: Final = 64
_MAX_METADATA_VALUE: Final = 512
_MAX_NAMES_SHOWN: Final = 20

_OUTCOME_ERRORS: Final[Mapping[Outcome, tuple[int, str, str]]] = {
    Outcome.FAILED: (500, "server_error", "agent_failed"),
    Outcome.TIMED_OUT: (504, "server_error", "timed_out"),
    Outcome.USAGE_LIMIT_EXCEEDED: (429, "insufficient_quota", "usage_limit_exceeded"),
    Outcome.CANCELLED: (503, "server_error", "cancelled"),
}
_NO_HEADERS: Final[Mapping[str, str]] = {}
_NO_RETRY: Final = {"x_should_retry": "false"}
_RETRY_SOON: Final = {"retry_after": "1"}


class _Refusal(Exception):
    """An answer other than the completion, in OpenAI's error shape; raised where the
    request or the result is found wanting, sent by whoever catches it."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        *,
        param: str | None = None,
        headers: Mapping[str, str] = _NO_HEADERS,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        self.param = param
        self.headers = headers

    async def send_to(self, send: Send, event_id: str | None = None) -> None:
        """Answer with this error (``event_id``, when the event was accepted, as
        ``x-request-id``)."""
        headers = dict(self.headers)
        if event_id is not None:
            headers["x_request_id"] = event_id
        await reply_error(
            send,
            self.status,
            self.message,
            kind=self.kind,
            code=self.code,
            param=self.param,
            **headers,
        )


@attrs.frozen(slots=True)
class _Chat:
    """A checked chat completion request."""

    model: str
    data: dict[str, Any]
    metadata: dict[str, str]
    stream: bool
    include_usage: bool


@final
class OpenAIFace:
    """The OpenAI-compatible endpoints over one runner (see the module docstring)."""

    __slots__ = ("_created", "_runner")

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._created = int(time.time())  # the agents' "created": when this face was made

    async def chat_completions(
        self, body: bytes, receive: Receive, send: Send, watch: DisconnectWatch | None = None
    ) -> None:
        """Answer ``POST /v1/chat/completions`` (the guards of ``server.app`` passed);
        ``watch``: the server's disconnect callback, if it has one (``server._sse``)."""
        try:
            chat = _parse_chat(body)
            self._check_model(chat.model)
        except _Refusal as refusal:
            return await refusal.send_to(send)
        event = Event(chat.model, chat.data, chat.metadata, id=secrets.token_urlsafe(16))
        try:
            handle = self._runner.emit_nowait(event, stream=chat.stream)
        except RunnerError as exc:
            name = type(exc).__name__
            why = f"the server refused the request ({name}: {exc})"
            refused = _Refusal(503, why, "server_error", _snake(name), headers=_RETRY_SOON)
            return await refused.send_to(send)
        if chat.stream:
            writer = _ChunkWriter(send, event.id, self._created, chat.model, chat.include_usage)
            return await relay(handle, receive, writer.write)
        result = await result_unless_gone(handle, receive, watch)
        if result is None:  # the client left; the event was cancelled
            return
        try:
            body = to_json_bytes(_completion(result, event.id, self._created, chat.model))
        except _Refusal as refusal:
            return await refusal.send_to(send, event.id)
        await send_body(send, 200, body, JSON_TYPE, [("x-request-id", event.id)])

    async def list_models(self, send: Send) -> None:
        """Answer ``GET /v1/models``: every agent of the runner, by name."""
        data = [self._model(name) for name in sorted(self._runner.agents)]
        await send_body(send, 200, to_json_bytes({"object": "list", "data": data}), JSON_TYPE)

    async def get_model(self, quoted_name: str, send: Send) -> None:
        """Answer ``GET /v1/models/{id}``: one agent, or 404 ``model_not_found``."""
        name = urllib.parse.unquote(quoted_name)
        try:
            self._check_model(name)
        except _Refusal as refusal:
            return await refusal.send_to(send)
        await send_body(send, 200, to_json_bytes(self._model(name)), JSON_TYPE)

    def _model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self._created, "owned_by": OWNER}

    def _check_model(self, name: str) -> None:
        agents = self._runner.agents
        if name in agents:
            return
        names = sorted(agents)
        more = ", ..." if len(names) > _MAX_NAMES_SHOWN else ""
        shown = ", ".join(names[:_MAX_NAMES_SHOWN]) + more
        why = f"The model {name[:100]!r} does not exist: the models are agents ({shown or 'none'})"
        raise _Refusal(404, why, code="model_not_found", param="model")


async def reply_error(
    send: Send,
    status: int,
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    **headers: str,
) -> None:
    """Answer ``status`` with OpenAI's error body; each keyword header as in `reply_json`."""
    error = {"message": message, "type": kind, "param": param, "code": code}
    extra = [(name.replace("_", "-"), value) for name, value in headers.items()]
    await send_body(send, status, to_json_bytes({"error": error}), JSON_TYPE, extra)


# -- the request ---------------------------------------------------------------------------


def _parse_chat(body: bytes) -> _Chat:
    """The checked request in ``body``.

    Raises:
        _Refusal: 400, naming the field at fault in ``param``.
    """
    try:
        request = _json.loads(body)
    except ValueError as exc:
        raise _Refusal(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise _Refusal(400, f"the body must be a JSON object, not {type(request).__name__}")
    known = _FACE_FIELDS | _PASSED_FIELDS | _IGNORED_FIELDS
    unknown = sorted(name for name in request if name not in known)
    if unknown:
        shown = unknown[0][:100]
        raise _Refusal(400, f"Unrecognized request argument supplied: {shown}", param=shown)
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise _Refusal(400, '"model" must be a non-empty string: an agent\'s name', param="model")
    data: dict[str, Any] = {"messages": _messages(request.get("messages"))}
    data.update((k, v) for k, v in request.items() if k in _PASSED_FIELDS and v is not None)
    _check_one_answer(request)
    stream = _flag(request, "stream")
    options = request.get("stream_options")
    if options is not None and not stream:
        why = "stream_options is only allowed when stream is true"
        raise _Refusal(400, why, param="stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise _Refusal(400, "stream_options must be an object", param="stream_options")
        include_usage = _flag(options, "include_usage", "stream_options.")
    metadata = _metadata(request)
    if "session_id" in metadata and _earlier_turns(data["messages"]):
        del metadata["session_id"]  # the client sent the conversation: see the module
    return _Chat(model, data, metadata, stream, include_usage)


def _earlier_turns(messages: list[Any]) -> bool:
    """Whether ``messages`` already hold a model's turn (an assistant or tool message):
    the client resends the conversation, as OpenAI clients do."""
    return any(m.get("role") in ("assistant", "tool") for m in messages)


def _messages(messages: Any) -> list[Any]:
    """The request's messages as sent, once each has been read as a `Message`."""
    if not isinstance(messages, list) or not messages:
        raise _Refusal(400, '"messages" must be a non-empty list of messages', param="messages")
    if len(messages) > MAX_MESSAGES:
        why = f"messages holds {len(messages)} messages; at most {MAX_MESSAGES}"
        raise _Refusal(400, why, param="messages")
    for index, message in enumerate(messages):
        try:
            message_from_dict(message, index)
        except ValueError as exc:
            raise _Refusal(400, str(exc), param=f"messages[{index}]") from None
    return messages


def _check_one_answer(request: Mapping[str, Any]) -> None:
    n = request.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise _Refusal(400, "n must be 1: an agent gives one answer", param="n")
    if _flag(request, "logprobs"):
        raise _Refusal(400, "logprobs are not available from an agent", param="logprobs")


def _flag(mapping: Mapping[str, Any], key: str, prefix: str = "") -> bool:
    value = mapping.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise _Refusal(400, f"{prefix}{key} must be true or false", param=prefix + key)


def _metadata(request: Mapping[str, Any]) -> dict[str, str]:
    """The event's metadata: the request's ``metadata`` pairs and its ``user``."""
    raw = request.get("metadata")
    metadata: dict[str, str] = {}
    if raw is not None:
        if not isinstance(raw, dict) or len(raw) > _MAX_METADATA:
            why = f"metadata must be an object of at most {_MAX_METADATA} string pairs"
            raise _Refusal(400, why, param="metadata")
        for key, value in raw.items():
            if len(key) > _MAX_METADATA_KEY or not isinstance(value, str):
                why = f"metadata keys are at most {_MAX_METADATA_KEY} characters; values strings"
                raise _Refusal(400, why, param="metadata")
            if len(value) > _MAX_METADATA_VALUE:
                why = f"metadata values are at most {_MAX_METADATA_VALUE} characters"
                raise _Refusal(400, why, param=f"metadata.{key}")
            metadata[key] = value
    user = request.get("user")
    if user is not None:
        if not isinstance(user, str) or len(user) > _MAX_METADATA_VALUE:
            why = f"user must be a string of at most {_MAX_METADATA_VALUE} characters"
            raise _Refusal(400, why, param="user")
        metadata["user"] = user
    return metadata


# -- the answer ----------------------------------------------------------------------------


def answer_text(output: Any) -> str:
    """The text an agent's output stands for (see the module docstring).

    Raises:
        NotJSON: the output is neither text nor JSON-able.
    """
    if isinstance(output, str):
        return output
    if isinstance(output, Mapping):
        for key in ("text", "answer"):
            value = output.get(key)
            if isinstance(value, str):
                return value
    return to_json_bytes(output, "output").decode()


def _completion(result: AgentResult, event_id: str, created: int, model: str) -> dict[str, Any]:
    """The chat.completion for a succeeded result.

    Raises:
        _Refusal: the result is not an answer (see the module docstring's table).
    """
    message = {"role": "assistant", "content": _content(result), "refusal": None}
    return {
        "id": f"chatcmpl-{event_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(result),
    }


def _content(result: AgentResult) -> str:
    """The answer's text, or the `_Refusal` the result's outcome is answered with."""
    if result.outcome is not Outcome.SUCCEEDED:
        status, kind, code = _OUTCOME_ERRORS[result.outcome]
        error = result.error
        why = f": {error.type}: {error.message}" if error is not None else ""
        message = f"agent {result.agent!r} ended {result.outcome.value}{why}"
        headers = _RETRY_SOON if result.outcome is Outcome.CANCELLED else _NO_RETRY
        raise _Refusal(status, message, kind, code, headers=headers)
    try:
        return answer_text(result.output)
    except NotJSON as exc:
        why = f"the agent's output cannot be sent as JSON: {exc}"
        raise _Refusal(500, why, "server_error", "output_not_json", headers=_NO_RETRY) from None


def _usage(result: AgentResult) -> dict[str, Any]:
    usage = result.usage
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _snake(name: str) -> str:
    """``QueueFull`` -> ``queue_full``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _text_json(text: str) -> bytes:
    try:
        return _json.dumps(text)
    except (TypeError, ValueError):  # orjson: a lone surrogate; escaped, still strict JSON
        return json.dumps(text).encode()


@final
class _ChunkWriter:
    """One streamed completion: progress items in, ``chat.completion.chunk`` SSE out."""

    __slots__ = ("_head", "_id", "_include_usage", "_send", "_started", "_streamed", "_tail")

    def __init__(
        self, send: Send, event_id: str, created: int, model: str, include_usage: bool
    ) -> None:
        self._send = send
        self._id = event_id
        self._include_usage = include_usage
        ident, name = _json.dumps(f"chatcmpl-{event_id}"), to_json_bytes(model)
        self._head = b'data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,' % (
            ident,
            created,
            name,
        )
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._started = False
        self._streamed: list[str] = []

    async def write(self, item: ProgressItem) -> bool:
        """Send what ``item`` adds to the answer; True once the answer is complete."""
        if isinstance(item, TextDelta):
            if item.text:
                await self._start()
                self._streamed.append(item.text)
                await self._body(self._delta(b'{"content":%s}' % _text_json(item.text)))
            return False
        if isinstance(item, FinalResult):
            await self._finish(item.result)
            return True
        return False  # tool calls and partial output: the answer is the text

    async def _finish(self, result: AgentResult) -> None:
        try:
            content = _content(result)
        except _Refusal as refusal:
            if not self._started:
                return await refusal.send_to(self._send, self._id)
            error = {"message": refusal.message, "type": refusal.kind, "code": refusal.code}
            return await self._body(b"data: %s\n\n" % to_json_bytes({"error": error}), last=True)
        await self._start()
        streamed = "".join(self._streamed)
        if len(content) > len(streamed) and content.startswith(streamed):
            rest = content[len(streamed) :]
            await self._body(self._delta(b'{"content":%s}' % _text_json(rest)))
        await self._body(self._delta(b"{}", b'"stop"'))
        if self._include_usage:
            usage = to_json_bytes(_usage(result))
            await self._body(b'%s"choices":[],"usage":%s}\n\n' % (self._head, usage))
        await self._body(b"data: [DONE]\n\n", last=True)

    async def _start(self) -> None:
        if self._started:
            return
        self._started = True
        headers = [*SSE_HEADERS, (b"x-request-id", self._id.encode())]
        await self._send({"type": "http.response.start", "status": 200, "headers": headers})
        await self._body(self._delta(b'{"role":"assistant","content":""}'))

    def _delta(self, delta: bytes, finish: bytes = b"null") -> bytes:
        choice = b'[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]' % (delta, finish)
        return b'%s"choices":%s%s' % (self._head, choice, self._tail)

    async def _body(self, body: bytes, *, last: bool = False) -> None:
        await self._send({"type": "http.response.body", "body": body, "more_body": not last})
