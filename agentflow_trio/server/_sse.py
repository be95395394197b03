"""A streamed event's answer as Server-Sent Events: one SSE event per progress item.

``POST /v1/events?stream=true`` (or ``Accept: text/event-stream``) is answered ``200
text/event-stream`` at once, then one event per item the event's code sends, in order::

    id: 3
    event: text_delta
    data: {"text":"Hel","model":"gpt-4o-mini"}

=====================  ======================================================================
``event:``             ``data:`` (one line of strict JSON, see ``server._wire``)
=====================  ======================================================================
``text_delta``         ``{"text", "model"}``: model text as it streamed
``tool_call_started``  ``{"call_id", "name", "arguments"}``
``tool_call_finished`` ``{"call_id", "name", "status", "output", "error", "duration"}``
``partial_output``     ``{"value"}``: structured output as far as it has streamed
``result``             the result, exactly as the non-streamed answer's body; always last
``error``              ``{"error", ...}``: an item that JSON cannot carry (then the stream
                       goes on), or a result that JSON cannot carry (then it is the last)
=====================  ======================================================================

``id:`` numbers the events from 1, so a client can tell whether it missed one. The body is
written as the items come (chunked), nothing is buffered beyond the runner's own bounded
channel: a client that reads slowly slows the event down. A client that disconnects
cancels the event (its model stream and tools are cancelled at their next checkpoint).

The pieces every answer to a client who may leave shares live here too: `relay` (items to
a writer, the event cancelled if the client disconnects: what `stream_answer` and the
OpenAI face's streamed completions run on) and `result_unless_gone` (the same for an
answer sent in one piece).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from .. import _json
from ..events import AgentResult
from ..progress import (
    FinalResult,
    PartialOutput,
    ProgressItem,
    TextDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from ..runner import EventHandle
from ._wire import (
    DISCONNECT_EXTENSION,
    DisconnectWatch,
    NotJSON,
    Receive,
    Scope,
    Send,
    result_json,
    to_json_bytes,
)

__all__ = [
    "SSE_HEADERS",
    "disconnect_watch",
    "frame",
    "item_frame",
    "relay",
    "result_unless_gone",
    "stream_answer",
]

SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on as it comes
]


def frame(seq: int, kind: str, data: bytes) -> bytes:
    """One SSE event: ``id``, ``event`` and one ``data`` line (compact JSON has no newline)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, kind.encode(), data)


def item_frame(seq: int, item: ProgressItem) -> tuple[bytes, bool]:
    """The SSE event for ``item`` and whether it ends the stream (a result, or a result
    that cannot be sent)."""
    if type(item) is TextDelta:  # the hot path: two strings, nothing to check
        try:
            data = _json.dumps({"text": item.text, "model": item.model})
        except (TypeError, ValueError):  # orjson: a lone surrogate; the checked path says so
            pass
        else:
            return frame(seq, "text_delta", data), False
    kind, payload = _payload(item)
    try:
        return frame(seq, kind, to_json_bytes(payload, kind)), kind == "result"
    except NotJSON as exc:
        error: dict[str, Any] = {"error": f"cannot be sent as JSON: {exc}", "event": kind}
        if isinstance(item, FinalResult):
            result = item.result
            error.update(id=result.event_id, agent=result.agent, outcome=result.outcome.value)
        return frame(seq, "error", to_json_bytes(error)), kind == "result"


def _payload(item: ProgressItem) -> tuple[str, Any]:
    if isinstance(item, TextDelta):
        return "text_delta", {"text": item.text, "model": item.model}
    if isinstance(item, ToolCallStarted):
        return "tool_call_started", {
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
    if isinstance(item, ToolCallFinished):
        return "tool_call_finished", {
            "call_id": item.call_id,
            "name": item.name,
            "status": item.status,
            "output": item.output,
            "error": item.error,
            "duration": item.duration,
        }
    if isinstance(item, PartialOutput):
        return "partial_output", {"value": item.value}
    return "result", result_json(item.result)


async def stream_answer(handle: EventHandle, receive: Receive, send: Send) -> None:
    """Answer with ``handle``'s progress items as SSE until its result; if the client
    disconnects first, cancel the event and stop.

    The response starts (200) before the first item, so the client learns at once that
    the event was accepted. Leaving for any reason (a disconnect, this task cancelled,
    an error writing) cancels the event unless it has already ended.
    """
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    seq = 0

    async def write(item: ProgressItem) -> bool:
        nonlocal seq
        seq += 1
        body, last = item_frame(seq, item)
        await send({"type": "http.response.body", "body": body, "more_body": not last})
        return last

    await relay(handle, receive, write)


async def relay(
    handle: EventHandle, receive: Receive, write: Callable[[ProgressItem], Awaitable[bool]]
) -> None:
    """Give ``handle``'s progress items to ``write`` in order until it returns True (it
    wrote the last piece of the answer); if the client disconnects first, cancel the
    event and stop.

    A disconnect never cancels a ``write`` under way: the server may learn of it inside
    that very write (an ASGI server may hand the app ``http.disconnect`` while sending
    the last piece, then close an HTTP/1.0 connection in the same call), and cancelling there
    would leave the socket open and the client waiting for an end that never comes. The
    write finishes, then the relay stops.

    Leaving for any reason (a disconnect, this task cancelled, ``write`` raising) cancels
    the event unless it has already ended, so no work is left running for nobody.
    """
    watch = _Watch(handle)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.run, receive, nursery.cancel_scope)
            async for item in handle.events():
                watch.writing = True
                last = await write(item)
                watch.writing = False
                if last or watch.gone:
                    break
            nursery.cancel_scope.cancel()
    finally:
        if not handle.done:
            handle.cancel()


def disconnect_watch(scope: Scope) -> DisconnectWatch | None:
    """The server's `DISCONNECT_EXTENSION` in ``scope``, or None (another ASGI server)."""
    extensions = scope.get("extensions")
    return None if not extensions else extensions.get(DISCONNECT_EXTENSION)


async def result_unless_gone(
    handle: EventHandle, receive: Receive, watch: DisconnectWatch | None = None
) -> AgentResult | None:
    """The event's result, or None if the client disconnected first (then the event is
    cancelled: nobody is left to read its answer). Leaving early for any reason cancels
    the event too.

    With ``watch`` (`disconnect_watch`: the server calls back when the client goes), no
    task waits on ``receive``: the callback cancels the event. Otherwise a task does."""
    if watch is not None:
        return await _result_or_cancel(handle, watch)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_Watch(handle).run, receive, nursery.cancel_scope)
            result = await handle.result()
            nursery.cancel_scope.cancel()
            return result
    finally:
        if not handle.done:
            handle.cancel()
    return None  # the client left: the watch cancelled the nursery


async def _result_or_cancel(handle: EventHandle, watch: DisconnectWatch) -> AgentResult | None:
    gone = False

    def left() -> None:
        nonlocal gone
        gone = True
        handle.cancel()

    unwatch = watch(left)
    try:
        result = await handle.result()
    finally:
        unwatch()
        if not handle.done:
            handle.cancel()
    return None if gone else result


class _Watch:
    """Waits for the client's ``http.disconnect``, then cancels the event and the scope
    that serves it; while `relay` is writing, only the event (the write finishes, then
    the relay stops: see `relay`)."""

    __slots__ = ("gone", "handle", "writing")

    def __init__(self, handle: EventHandle) -> None:
        self.handle = handle
        self.writing = False  # a write is under way: let it finish
        self.gone = False  # the client disconnected

    async def run(self, receive: Receive, scope: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self.handle.cancel()
        if not self.writing:
            scope.cancel()
