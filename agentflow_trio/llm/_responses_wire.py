"""The OpenAI Responses API JSON shapes: our values to request bodies (``_responses_body``,
re-exported here), responses and stream events back to our values.

Pure functions (and the two per-stream parts: `ResponsesSSEDecoder`, which reads only
what the chunks need, and `StreamEvents`, which remembers the model and which function
calls got argument deltas). A response that does not have the expected shape raises
`ResponseFormatError` with an excerpt, never a bare ``KeyError``; a failed response or
an ``error`` event raises the `APIStatusError` subclass of its code. A turn whose output
had a reasoning (or other built-in) item keeps its whole output as ``openai_responses``
`ProviderItem` values (`turn_items`), sent back verbatim by ``_responses_body``.
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
from ._responses_body import ENCRYPTED as ENCRYPTED
from ._responses_body import PROVIDER as PROVIDER
from ._responses_body import input_items as input_items
from ._responses_body import request_body as request_body
from ._responses_body import text_format as text_format
from ._responses_body import tool_choice as tool_choice
from ._responses_body import tools as tools
from .types import ChatResponse, ProviderItem, StreamChunk, ToolCall, ToolCallDelta, Usage

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
_ITEM_EVENTS: Final = frozenset({b"response.output_item.added", b"response.output_item.done"})
"""Item events `StreamEvents` reads for function calls only (every finished item comes
again in ``response.completed``'s ``output``): decoded only when they name one."""
_LAST_TYPES: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})
"""The events a response stream ends with: nothing after one is read (`done`)."""
_DECODE, _SKIP, _IF_CALL, _MODEL_ONLY, _LAST = range(5)
_ACTIONS: Final[Mapping[bytes, int]] = {
    **dict.fromkeys(_UNREAD, _SKIP),
    **dict.fromkeys(_ITEM_EVENTS, _IF_CALL),
    b"response.created": _MODEL_ONLY,
    **{name.encode(): _LAST for name in _LAST_TYPES},
}
"""What `ResponsesSSEDecoder` does with an event, by name (others: `_DECODE`)."""
_MODEL_KEY: Final = b'"model":'


@final
class ResponsesSSEDecoder(SSEDecoder):
    """`SSEDecoder` for Responses streams, which end with ``response.completed`` (or
    ``.incomplete`` / ``.failed``; no ``data: [DONE]``: `terminator` names it in an early
    end's error) and name every event on an ``event:`` line. ``done`` turns true at that
    last event, so the connection is drained and pooled as after OpenAI's ``[DONE]``.

    A piece of body is decoded here from its first event boundary on (the plain decoder
    ends an event an earlier piece began), event by event, as little as `StreamEvents`
    needs: an event named in `_UNREAD` is dropped undecoded, an
    item event (`_ITEM_EVENTS`) too unless it holds a function call, and of
    ``response.created`` (the whole request echoed) only the model is read, without
    decoding it (`_created`); the others' one ``data:`` line is decoded at once. An event
    of any other shape, the unfinished last event, and a piece that has CR line ends,
    holds no event boundary or exceeds the line bound go to the plain decoder, so bounds
    and the malformed-event policy are its own (what it decodes `StreamEvents` reads the
    same way).
    """

    __slots__ = ("_inside",)
    terminator = "response.completed"

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, *, max_malformed: int = 0) -> None:
        super().__init__(max_line, max_malformed=max_malformed)
        self._inside = False  # the last piece ended inside an event

    def feed(self, data: bytes) -> list[Any]:
        """Payloads of the events completed by ``data`` (the events `StreamEvents` reads),
        up to the stream's last one (then `done`: what follows is not read)."""
        if self.done:
            return []
        out: list[Any] = []
        if self._inside and b"\r" not in data:  # the plain decoder ends the event it holds
            cut = data.find(b"\n\n") + 2
            if cut > 1:
                out = self._plain(data[:cut])
                data = data[cut:]
                self._inside = False
                if self.done:
                    return out
        if self._inside or b"\r" in data or len(data) > self._max:
            self._inside = not data.endswith((b"\n\n", b"\r\n\r\n"))
            return out + self._plain(data)
        events = data.split(b"\n\n")
        tail = events.pop()  # the start of an event still coming
        loads = self._json.loads
        for event in events:
            if not event.startswith(b"event: "):  # no name: the plain decoder reads it
                out += self._plain(event + b"\n\n")
                if self.done:
                    return out
                continue
            end = event.find(b"\n")
            if end < 0:
                continue  # a name without data
            action = _ACTIONS.get(event[7:end], _DECODE)
            if action == _SKIP or (action == _IF_CALL and b"function_call" not in event):
                continue
            if action == _MODEL_ONLY and self._created(event, out):
                continue
            if event.startswith(b"data: ", end + 1) and event.find(b"\n", end + 1) < 0:
                loads(event[end + 7 :], out)
            else:
                out += self._plain(event[end + 1 :] + b"\n\n")
            if action == _LAST or self.done:
                self.done = True
                return out
        self._inside = bool(tail)
        if tail:
            out += self._plain(tail)
        return out

    def _plain(self, data: bytes) -> list[Any]:
        """The plain decoder's payloads of ``data``, up to the stream's last event (then
        `done`)."""
        out = super().feed(data)
        for index, payload in enumerate(out):
            if isinstance(payload, dict) and payload.get("type") in _LAST_TYPES:
                self.done = True
                return out[: index + 1]
        return out

    def _created(self, event: bytes, out: list[Any]) -> bool:
        """``response.created`` reduced to the one field `StreamEvents` reads, the model:
        the string after the first ``"model":`` of the JSON (no JSON string holds that text
        unescaped, and the response's ``model`` comes before its nested objects in the
        API's key order; the final chunk's model is ``response.completed``'s anyway).
        False, to decode the event instead, when there is no plain model string there."""
        at = event.find(_MODEL_KEY)
        if at < 0:
            return False
        at += len(_MODEL_KEY)
        if event.startswith(b" ", at):
            at += 1
        if not event.startswith(b'"', at):
            return False
        stop = event.find(b'"', at + 1)
        raw = event[at + 1 : stop]
        if stop < 0 or b"\\" in raw or not raw.isascii():
            return False
        out.append({"type": "response.created", "response": {"model": raw.decode()}})
        self._json.valid += 1
        return True


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
    finished, every item of its ``output`` as ``items`` (see `turn_items`: the same items
    a plain answer has; the finished items seen, in output order, when it has none).
    ``response.failed`` and ``error`` events raise (`failure_error`); other event types
    say nothing (None). Every chunk names the model that answered (from
    ``response.created``), so a cut stream is charged to it.
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
        output = response.get("output")
        calls = self._calls
        items: tuple[ProviderItem, ...] = ()
        if output:  # every item of the turn, finished, in order: the plain answer's
            kinds = {item["type"] for item in output}
            calls = calls or "function_call" in kinds
            if not kinds <= _PLAIN:
                items = turn_items(output)
        elif self._kept:  # a completed response without its output: the items seen
            items = self._items()
        return StreamChunk(
            "",
            (),
            _finish_reason(response, calls),
            usage(response.get("usage")),
            response.get("model") or self._model,
            items=items,
            response_id=response.get("id") or "",
        )

    def _items(self) -> tuple[ProviderItem, ...]:
        ordered = sorted(self._finished_items, key=lambda pair: pair[0])
        return turn_items([item for _, item in ordered])
