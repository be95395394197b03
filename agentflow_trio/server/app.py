"""Serve a `Runner` over HTTP: a small ASGI app, run by hypercorn's trio worker.

Endpoints (JSON in and out)::

    POST /v1/events            {"type", "data"?, "metadata"?} -> 200 the AgentResult
    POST /v1/events?async=1    -> 202 {"id", "status": "pending"}; the event runs on
    GET  /v1/events/{id}       -> 200 the result, or 200 {"id", "status": "pending"}; 404
    GET  /metrics              Prometheus text (when a metrics object was given)
    GET  /healthz              200 {"status": "ok", ...}; 503 once the runner closes

A result is answered 200 whatever its outcome (``succeeded``, ``failed``, ``timed_out``,
``cancelled``): the outcome is in the body. The runner refusing an event (`QueueFull`,
`Overloaded`, `RunnerClosed`) is a 503 with the reason; a body that is not a JSON object
with a string ``"type"`` is a 400 with the reason; a body over ``max_body_bytes`` is a 413
(checked against Content-Length before reading, and while reading).

Bounds: the bodies read are bounded; results of async events are kept for ``result_ttl``
seconds after they finish, at most ``max_results`` of them (oldest dropped first), then
``GET`` answers 404. Events still running are bounded by the runner's own admission limit.
Cancellation: if the request task of a synchronous call is cancelled, the event is
cancelled too (as `Runner.call` does).

`make_app` registers one ``after_event`` hook on ``runner.hooks`` (to collect async
results). Importing this module does not import hypercorn; `serve` does.
"""

from __future__ import annotations

import collections
import functools
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final, Protocol, final

import trio

from .. import _json
from ..errors import RunnerError
from ..events import AgentResult, Event
from ..runner import Runner

__all__ = ["MetricsRenderer", "ServeApp", "make_app", "result_json", "serve"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES: Final = 1 << 20
_EVENTS: Final = "/v1/events"
_JSON_TYPE: Final = b"application/json"


class MetricsRenderer(Protocol):
    """What ``/metrics`` needs (`RunnerMetrics` is one): ``exposition() -> (body, type)``."""

    def exposition(self) -> tuple[bytes, str]: ...


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


@final
class _Results:
    """Pending ids and finished results of async events: bounded, with a TTL."""

    __slots__ = ("_done", "_max", "_pending", "_ttl")

    def __init__(self, max_results: int, ttl: float) -> None:
        self._pending: set[str] = set()
        self._done: collections.OrderedDict[str, tuple[float, AgentResult]] = (
            collections.OrderedDict()
        )
        self._max = max_results
        self._ttl = ttl

    def expect(self, event_id: str) -> None:
        self._pending.add(event_id)

    def finished(self, event: Event, result: AgentResult) -> None:
        """The runner's ``after_event`` hook: keep the result if someone will ask for it."""
        if event.id in self._pending:
            self._pending.discard(event.id)
            self._done[event.id] = (trio.current_time() + self._ttl, result)
            self._evict()

    def get(self, event_id: str) -> AgentResult | str | None:
        """The result, ``"pending"``, or None for an unknown or expired id."""
        self._evict()
        if event_id in self._pending:
            return "pending"
        entry = self._done.get(event_id)
        return entry[1] if entry is not None else None

    def _evict(self) -> None:
        done = self._done
        now = trio.current_time()
        while done and (len(done) > self._max or next(iter(done.values()))[0] <= now):
            done.popitem(last=False)


def result_json(result: AgentResult) -> dict[str, Any]:
    """The wire form of a result (tracebacks stay on the server)."""
    error = result.error
    return {
        "id": result.event_id,
        "status": "done",
        "outcome": result.outcome.value,
        "output": result.output,
        "error": None if error is None else {"type": error.type, "message": error.message},
        "agent": result.agent,
    }


def _dumps(value: Any) -> bytes:
    try:
        return _json.dumps(value)
    except (TypeError, ValueError):  # an agent returned something JSON cannot hold
        return json.dumps(value, default=repr, separators=(",", ":")).encode()


@final
class ServeApp:
    """The ASGI application `make_app` returns (see the module docstring)."""

    def __init__(
        self,
        runner: Runner,
        *,
        metrics: MetricsRenderer | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_results: int = 10_000,
        result_ttl: float = 300.0,
    ) -> None:
        if max_body_bytes < 0 or max_results < 1 or not result_ttl > 0:
            raise ValueError("need max_body_bytes >= 0, max_results >= 1 and result_ttl > 0")
        self.runner = runner
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._results = _Results(max_results, result_ttl)
        runner.hooks.after_event.append(self._results.finished)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            try:
                await self._http(scope, receive, send)
            except _Disconnected:
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        if path == _EVENTS:
            if method != "POST":
                return await _reply(send, 405, {"error": "use POST"}, allow="POST")
            return await self._post_event(scope, receive, send)
        if path.startswith(_EVENTS + "/"):
            if method != "GET":
                return await _reply(send, 405, {"error": "use GET"}, allow="GET")
            return await self._get_event(path[len(_EVENTS) + 1 :], send)
        if path == "/healthz":
            return await self._healthz(send)
        if path == "/metrics":
            return await self._metrics(send)
        await _reply(send, 404, {"error": f"no such endpoint: {path}"})

    async def _post_event(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await _read_body(scope, receive, self.max_body_bytes)
        except _TooLarge:
            limit = self.max_body_bytes
            return await _reply(send, 413, {"error": f"request body over {limit} bytes"})
        event = _parse_event(body)
        if isinstance(event, str):
            return await _reply(send, 400, {"error": event})
        try:
            handle = self.runner.emit_nowait(event)
        except RunnerError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            return await _reply(send, 503, {"error": reason}, retry_after="1")
        if _wants_async(scope):
            self._results.expect(event.id)
            if handle.done:  # ended before we asked (cancelled while queued)
                self._results.finished(event, handle.result_nowait())
            return await _reply(send, 202, {"id": event.id, "status": "pending"})
        try:
            result = await handle.result()
        finally:
            if not handle.done:
                handle.cancel()
        await _reply(send, 200, result_json(result))

    async def _get_event(self, event_id: str, send: Send) -> None:
        found = self._results.get(urllib.parse.unquote(event_id))
        if found is None:
            return await _reply(send, 404, {"error": f"unknown or expired event id {event_id!r}"})
        if isinstance(found, str):
            return await _reply(send, 200, {"id": event_id, "status": found})
        await _reply(send, 200, result_json(found))

    async def _healthz(self, send: Send) -> None:
        stats = self.runner.statistics()
        body = {
            "status": "closed" if stats.closed else "ok",
            "in_flight": stats.in_flight,
            "queued": stats.queued,
            "max_concurrent_events": stats.max_concurrent_events,
            "completed": stats.completed,
        }
        await _reply(send, 503 if stats.closed else 200, body)

    async def _metrics(self, send: Send) -> None:
        if self.metrics is None:
            return await _reply(send, 404, {"error": "metrics are not enabled"})
        payload, content_type = self.metrics.exposition()
        await _send(send, 200, payload, content_type.encode())


def make_app(
    runner: Runner,
    *,
    metrics: MetricsRenderer | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_results: int = 10_000,
    result_ttl: float = 300.0,
) -> ServeApp:
    """An ASGI app serving ``runner`` (which must be open while requests arrive).

    Raises:
        ValueError: a bound is out of range.
    """
    return ServeApp(
        runner,
        metrics=metrics,
        max_body_bytes=max_body_bytes,
        max_results=max_results,
        result_ttl=result_ttl,
    )


async def serve(
    app: ServeApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn's trio worker until cancelled.

    Reports the bound TCP port to ``task_status`` (useful with ``port=0``:
    ``port = await nursery.start(functools.partial(serve, app, port=0))``). Errors while
    binding (``OSError``) come out of ``nursery.start``.
    """
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve as hypercorn_serve

    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.loglevel = "WARNING"
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        asgi: Any = app  # hypercorn's typing wants its TypedDict scopes; the protocol is ASGI 3
        binds = await nursery.start(functools.partial(hypercorn_serve, asgi, config, mode="asgi"))
        task_status.started(urllib.parse.urlsplit(binds[0]).port or port)


# -- ASGI plumbing ----------------------------------------------------------------------


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse_event(body: bytes) -> Event | str:
    """The event in ``body``, or the reason it is not one."""
    try:
        data = _json.loads(body)
    except ValueError as exc:
        return f"the body is not valid JSON: {exc}"
    if not isinstance(data, dict):
        return f"the body must be a JSON object, not {type(data).__name__}"
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        return 'the body needs "type": a non-empty string naming the agent'
    unknown = sorted(set(data) - {"type", "data", "metadata"})
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; expected type, data, metadata"
    payload, metadata = data.get("data", {}), data.get("metadata", {})
    for name, value in (("data", payload), ("metadata", metadata)):
        if not isinstance(value, dict):
            return f'"{name}" must be a JSON object, not {type(value).__name__}'
    return Event(kind, payload, metadata)


def _wants_async(scope: Scope) -> bool:
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return any(v.lower() in ("1", "true", "yes") for v in query.get("async", ()))


async def _reply(send: Send, status: int, body: Mapping[str, Any], **headers: str) -> None:
    extra = [(name.replace("_", "-"), value) for name, value in headers.items()]
    await _send(send, status, _dumps(body), _JSON_TYPE, extra)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers += [(name.encode(), value.encode()) for name, value in extra or ()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
