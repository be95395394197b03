"""Serve a `Runner` over HTTP: a small ASGI app, run by the project's HTTP/1.1 server.

Endpoints (JSON in and out)::

    POST /v1/events            {"type", "data"?, "metadata"?, "limits"?} -> 200 the result
    POST /v1/events?async=1    -> 202 {"id", "status": "pending"}; the event runs on
    POST /v1/events?stream=true   (or Accept: text/event-stream) -> 200 text/event-stream:
                               one SSE event per progress item, the result last
                               (``server._sse`` has the events and their data)
    GET  /v1/events/{id}       -> 200 the result, or 200 {"id", "status": "pending"}; 404
    GET  /metrics              Prometheus text (when a metrics object was given)
    GET  /healthz              200 {"status": "ok", "pid", ...}; 503 once the runner closes
                               (``pid``: the serving process, one of several under
                               ``agentcli serve --workers N``)
    POST /v1/chat/completions  the OpenAI-compatible face: ``model`` names the agent
    GET  /v1/models[/{id}]     the agents as models (``server._openai_face`` has the rules)

A result (`result_json`: ``id``, ``status``, ``outcome``, ``output``, ``error``, ``agent``,
and ``usage`` when the event made a model call) is answered 200 whatever its outcome
(``succeeded``, ``failed``, ``timed_out``, ``cancelled``, ``usage_limit_exceeded``): the
outcome is in the body. ``"limits"`` (``{"max_requests": 3, "max_total_tokens": ...,
"max_cost": ...}``, see `UsageLimits`) sets the event's usage budget; it can only tighten
the runner's own (``[limits]`` and the agent's), never loosen them. Every other answer is
JSON too, ``{"error": reason, ...}`` (the OpenAI face's paths answer in OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``), in this order of checks:

- 400 and the connection closed: both Content-Length and Transfer-Encoding (ambiguous
  framing: a request smuggling attempt).
- 421: a request that came in on a loopback address with a ``Host`` that is not a
  loopback name or one of ``allowed_hosts`` (DNS rebinding: a web page whose name was
  pointed at 127.0.0.1 still sends its own name; ``"*"`` turns the check off).
- 401 (in OpenAI's error shape, ``code: invalid_api_key``, with ``WWW-Authenticate:
  Bearer``): the app was made with an ``api_key`` and the request, to any endpoint but
  ``/healthz``, lacks ``Authorization: Bearer <that key>``. The key is compared in
  constant time (as SHA-256 digests, so not even its length shows); only its digest is
  kept, and it is never logged or echoed.
- 415: a ``POST /v1/events`` (or ``/v1/chat/completions``) whose Content-Type is not
  JSON (``application/json`` or a ``+json`` type, charset UTF-8 if one is given): a web
  page can send ``text/plain`` to any address without the browser asking first; it
  cannot send JSON.
- 413: a body over ``max_body_bytes`` (checked against Content-Length before reading,
  and while reading); 400: a body that is not a JSON object with a string ``"type"``,
  ``"limits"`` that are not limits (the error names the key: ``limits.max_cost``), or
  both ``async`` and ``stream`` asked for.
- 404: a ``"type"`` that names no agent of the runner (the event is not accepted, so it
  adds no metric label).
- 503: the runner refuses the event (`QueueFull`, `Overloaded`, `RunnerClosed`).
- 500: the agent's output cannot be sent as JSON (NaN, bytes, nesting deeper than
  `MAX_DEPTH`, ...: see ``server._wire``); the body names the problem, the event's id,
  agent and outcome. What goes on the wire is always strict JSON.

Event ids are random (``secrets.token_urlsafe(16)``, 128 bits): knowing one's own id says
nothing about another client's.

Bounds: the bodies read are bounded; results of async events are kept for ``result_ttl``
seconds after they finish, at most ``max_results`` of them (oldest dropped first), then
``GET`` answers 404. Events still running are bounded by the runner's own admission limit.
`serve` listens with a backlog of ``backlog`` (default `DEFAULT_BACKLOG`) pending
connections. Cancellation: if the request task of a synchronous or streamed call is
cancelled, or the client disconnects before its answer (mid-stream included), the event is
cancelled too (as `Runner.call` does): it frees its worker slot and makes no more model
calls.

`make_app` registers one ``after_event`` hook on ``runner.hooks`` (to collect async
results). `make_app` is an ASGI 3 app any ASGI server can run; `serve` runs it on
``server._http`` (httptools on trio streams), imported when `serve` runs.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import urllib.parse
from collections.abc import Collection, Mapping
from typing import Final, Protocol, final

import trio

from .. import _json
from .._http11 import is_loopback_host
from ..errors import ConfigError, RunnerError
from ..events import AgentResult, Event
from ..observability import tracing as _tracing
from ..runner import Runner
from ..usage import UsageLimits
from ._openai_face import CHAT_PATH, MODELS_PATH, OpenAIFace, reply_error
from ._sse import disconnect_watch, result_unless_gone, stream_answer
from ._wire import (
    JSON_TYPE,
    MAX_DEPTH,
    NotJSON,
    Receive,
    Scope,
    Send,
    reply_json,
    result_json,
    send_body,
    to_json_bytes,
)

__all__ = [
    "DEFAULT_BACKLOG",
    "MAX_DEPTH",
    "MetricsRenderer",
    "ServeApp",
    "make_app",
    "result_json",
    "serve",
]

DEFAULT_MAX_BODY_BYTES: Final = 1 << 20
DEFAULT_BACKLOG: Final = 1024
"""Pending connections the listening socket holds (the kernel may cap it lower:
``net.core.somaxconn``); a backlog of 100 dropped a burst of 2,000."""
_EVENTS: Final = "/v1/events"
_MAX_NAMES_SHOWN: Final = 20


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


def _result_body(result: AgentResult) -> tuple[int, bytes]:
    """200 and the result as strict JSON, or 500 and an error naming what is not JSON."""
    try:
        return 200, to_json_bytes(result_json(result), "result")
    except NotJSON as exc:
        body = {
            "error": f"the agent's output cannot be sent as JSON: {exc}",
            "id": result.event_id,
            "agent": result.agent,
            "outcome": result.outcome.value,
        }
        return 500, to_json_bytes(body)


def _content_type_error(headers: Mapping[bytes, bytes]) -> str | None:
    """Why the request's Content-Type is not JSON, or None if it is."""
    raw = headers.get(b"content-type")
    if raw is None:
        return "a JSON body needs Content-Type: application/json"
    return _media_type_error(raw)


@functools.lru_cache(maxsize=256)
def _media_type_error(raw: bytes) -> str | None:
    """`_content_type_error` of one header value (cached: clients send few values)."""
    text = raw.decode("latin-1")
    media, *params = (part.strip().lower() for part in text.split(";"))
    json_type = media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
    if not json_type:
        return f"Content-Type {text[:100]!r} is not JSON: send application/json"
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return f"JSON is UTF-8; Content-Type {text[:100]!r} names another charset"
    return None


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
        allowed_hosts: Collection[str] = (),
        api_key: str | None = None,
    ) -> None:
        if max_body_bytes < 0 or max_results < 1 or not result_ttl > 0:
            raise ValueError("need max_body_bytes >= 0, max_results >= 1 and result_ttl > 0")
        if api_key is not None and not api_key:
            raise ValueError("api_key must be a non-empty string, or None for no key")
        self.runner = runner
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self._key_digest = None if api_key is None else _digest(api_key.encode())
        self._results = _Results(max_results, result_ttl)
        self._openai = OpenAIFace(runner)
        runner.hooks.after_event.append(self._results.finished)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "http":
            try:
                if _tracing.active is None:
                    await self._http(scope, receive, send)
                else:  # a server span, continuing the request's traceparent
                    await _tracing.active.serve(scope, receive, send, self._http)
            except _Disconnected:
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            if name in headers and name in (b"content-length", b"transfer-encoding", b"host"):
                headers[name] += b"," + value
            else:
                headers[name] = value
        if b"content-length" in headers and b"transfer-encoding" in headers:
            with contextlib.suppress(_TooLarge):
                await _read_body({}, receive, self.max_body_bytes)
            why = "both Content-Length and Transfer-Encoding: ambiguous framing, refused"
            return await reply_json(send, 400, {"error": why}, connection="close")
        if not self._host_allowed(scope, headers.get(b"host")):
            host = headers.get(b"host", b"").decode("latin-1")[:100]
            why = f"Host {host!r} is not this server: use localhost or add it to allowed_hosts"
            return await reply_json(send, 421, {"error": why})
        method, path = scope["method"], scope["path"]
        if path == "/healthz":
            return await self._healthz(send)
        if not self._authorized(headers.get(b"authorization")):
            why = "a valid API key is needed: send Authorization: Bearer <key>"
            return await reply_error(
                send, 401, why, code="invalid_api_key", www_authenticate="Bearer"
            )
        if path == _EVENTS:
            if method != "POST":
                return await reply_json(send, 405, {"error": "use POST"}, allow="POST")
            return await self._post_event(scope, headers, receive, send)
        if path.startswith(_EVENTS + "/"):
            if method != "GET":
                return await reply_json(send, 405, {"error": "use GET"}, allow="GET")
            return await self._get_event(path[len(_EVENTS) + 1 :], send)
        if path == "/metrics":
            return await self._metrics(send)
        if path in (CHAT_PATH, MODELS_PATH) or path.startswith(MODELS_PATH + "/"):
            return await self._openai_route(scope, headers, receive, send)
        await reply_json(send, 404, {"error": f"no such endpoint: {path[:100]}"})

    def _authorized(self, authorization: bytes | None) -> bool:
        """No key set, or ``Authorization: Bearer <the key>`` (compared in constant time)."""
        if self._key_digest is None:
            return True
        scheme, _, token = (authorization or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(_digest(token.strip()), self._key_digest)

    async def _openai_route(
        self, scope: Scope, headers: Mapping[bytes, bytes], receive: Receive, send: Send
    ) -> None:
        method, path = scope["method"], scope["path"]
        wanted = "POST" if path == CHAT_PATH else "GET"
        if method != wanted:
            why = f"use {wanted} for {path[:100]}"
            return await reply_error(send, 405, why, code="method_not_allowed", allow=wanted)
        if path == MODELS_PATH:
            return await self._openai.list_models(send)
        if path != CHAT_PATH:
            return await self._openai.get_model(path[len(MODELS_PATH) + 1 :], send)
        body = await self._json_body(headers, receive, send, openai=True)
        if body is not None:
            await self._openai.chat_completions(body, receive, send, disconnect_watch(scope))

    async def _json_body(
        self, headers: Mapping[bytes, bytes], receive: Receive, send: Send, *, openai: bool
    ) -> bytes | None:
        """The request's JSON body, or None once it has been refused (415, 413), in the
        error shape of the path (``openai``: OpenAI's)."""
        wrong_type = _content_type_error(headers)
        if wrong_type is not None:
            await _refuse(send, 415, wrong_type, openai, accept="application/json")
            return None
        try:
            return await _read_body(headers, receive, self.max_body_bytes)
        except _TooLarge:
            why = f"request body over {self.max_body_bytes} bytes"
            await _refuse(send, 413, why, openai)
            return None

    def _host_allowed(self, scope: Scope, host: bytes | None) -> bool:
        """Any Host on a non-loopback socket; on loopback, a loopback name or an allowed one."""
        server = scope.get("server")
        if not server or not _is_loopback_address(str(server[0])):
            return True
        if is_loopback_host(host) or "*" in self.allowed_hosts:
            return True
        assert host is not None
        name = host.decode("latin-1").strip().lower()
        return name in self.allowed_hosts or name.rpartition(":")[0] in self.allowed_hosts

    async def _post_event(
        self, scope: Scope, headers: Mapping[bytes, bytes], receive: Receive, send: Send
    ) -> None:
        body = await self._json_body(headers, receive, send, openai=False)
        if body is None:
            return
        parsed = _parse_event(body)
        if isinstance(parsed, str):
            return await reply_json(send, 400, {"error": parsed})
        event, limits = parsed
        wants_async, wants_stream = _wants(scope, "async"), _wants_stream(scope, headers)
        if wants_async and wants_stream:
            why = "ask for async or stream, not both"
            return await reply_json(send, 400, {"error": why})
        agents = self.runner.agents
        if event.type not in agents:
            names = sorted(agents)
            more = ", ..." if len(names) > _MAX_NAMES_SHOWN else ""
            shown = ", ".join(names[:_MAX_NAMES_SHOWN]) + more
            why = f"no agent named {event.type[:100]!r}; known: {shown or '(none)'}"
            return await reply_json(send, 404, {"error": why})
        try:
            handle = self.runner.emit_nowait(event, limits=limits, stream=wants_stream)
        except RunnerError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            return await reply_json(send, 503, {"error": reason}, retry_after="1")
        if wants_stream:
            return await stream_answer(handle, receive, send)
        if wants_async:
            self._results.expect(event.id)
            if handle.done:  # ended before we asked (cancelled while queued)
                self._results.finished(event, handle.result_nowait())
            return await reply_json(send, 202, {"id": event.id, "status": "pending"})
        result = await result_unless_gone(handle, receive, disconnect_watch(scope))
        if result is not None:
            await send_body(send, *_result_body(result), JSON_TYPE)

    async def _get_event(self, event_id: str, send: Send) -> None:
        found = self._results.get(urllib.parse.unquote(event_id))
        if found is None:
            why = f"unknown or expired event id {event_id[:100]!r}"
            return await reply_json(send, 404, {"error": why})
        if isinstance(found, str):
            return await reply_json(send, 200, {"id": event_id, "status": found})
        await send_body(send, *_result_body(found), JSON_TYPE)

    async def _healthz(self, send: Send) -> None:
        stats = self.runner.statistics()
        body = {
            "status": "closed" if stats.closed else "ok",
            "in_flight": stats.in_flight,
            "queued": stats.queued,
            "max_concurrent_events": stats.max_concurrent_events,
            "completed": stats.completed,
            "pid": os.getpid(),
        }
        await reply_json(send, 503 if stats.closed else 200, body)

    async def _metrics(self, send: Send) -> None:
        if self.metrics is None:
            return await reply_json(send, 404, {"error": "metrics are not enabled"})
        payload, content_type = self.metrics.exposition()
        await send_body(send, 200, payload, content_type.encode())


def make_app(
    runner: Runner,
    *,
    metrics: MetricsRenderer | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_results: int = 10_000,
    result_ttl: float = 300.0,
    allowed_hosts: Collection[str] = (),
    api_key: str | None = None,
) -> ServeApp:
    """An ASGI app serving ``runner`` (which must be open while requests arrive).

    ``allowed_hosts``: Host names (``name`` or ``name:port``) accepted besides loopback
    ones on a loopback socket, e.g. the name a local reverse proxy forwards; ``"*"``: any.
    ``api_key``: when given, every endpoint but ``/healthz`` needs ``Authorization: Bearer
    <api_key>`` (what an OpenAI SDK sends as its ``api_key``); only its digest is kept.

    Raises:
        ValueError: a bound is out of range, or ``api_key`` is empty.
    """
    return ServeApp(
        runner,
        metrics=metrics,
        max_body_bytes=max_body_bytes,
        max_results=max_results,
        result_ttl=result_ttl,
        allowed_hosts=allowed_hosts,
        api_key=api_key,
    )


async def serve(
    app: ServeApp,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    backlog: int = DEFAULT_BACKLOG,
    fd: int | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled, on the project's HTTP/1.1 server (``server._http``:
    httptools on trio streams; hypercorn measured several times the CPU per request).

    Reports the bound TCP port to ``task_status`` (useful with ``port=0``:
    ``port = await nursery.start(functools.partial(serve, app, port=0))``). Errors while
    binding (``OSError``) come out of ``nursery.start``. ``backlog``: pending connections
    the listening socket holds before the kernel drops new ones (`DEFAULT_BACKLOG`).
    ``fd``: serve on this already bound TCP socket (its file descriptor, closed when the
    call ends) instead of binding ``host:port``: how ``agentcli serve --workers N``
    children share one port (`agentflow_trio.server._workers`).

    Raises:
        ValueError: ``backlog`` is not between 1 and 65535.
    """
    if not 1 <= backlog <= 65535:
        raise ValueError(f"backlog must be between 1 and 65535, got {backlog}")
    from ._http import serve_listeners

    if fd is None:
        listeners = await trio.open_tcp_listeners(port, host=host.strip("[]"), backlog=backlog)
        if port == 0:  # each address of a name would get its own free port: keep one
            for extra in listeners[1:]:
                await trio.aclose_forcefully(extra)
            del listeners[1:]
    else:
        sock = socket.socket(fileno=fd)
        try:
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(sock))]
    bound = listeners[0].socket.getsockname()[1]
    max_body = getattr(app, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(serve_listeners, app, listeners, max_body_bytes=max_body)
        )
        task_status.started(bound)


# -- ASGI plumbing ----------------------------------------------------------------------


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(headers: Mapping[bytes, bytes], receive: Receive, limit: int) -> bytes:
    length = headers.get(b"content-length", b"")
    if length.isdigit() and int(length) > limit:
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


def _parse_event(body: bytes) -> tuple[Event, UsageLimits | None] | str:
    """The event in ``body`` and its limits, or the reason it is not one."""
    try:
        data = _json.loads(body)
    except ValueError as exc:
        return f"the body is not valid JSON: {exc}"
    if not isinstance(data, dict):
        return f"the body must be a JSON object, not {type(data).__name__}"
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        return 'the body needs "type": a non-empty string naming the agent'
    unknown = sorted(set(data) - {"type", "data", "metadata", "limits"})
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; expected type, data, metadata, limits"
    payload, metadata = data.get("data", {}), data.get("metadata", {})
    for name, value in (("data", payload), ("metadata", metadata)):
        if not isinstance(value, dict):
            return f'"{name}" must be a JSON object, not {type(value).__name__}'
    limits = None
    if data.get("limits") is not None:
        try:
            limits = UsageLimits.from_mapping(data["limits"], key="limits")
        except ConfigError as exc:
            return f"{exc.key}: {exc.reason}"
    return Event(kind, payload, metadata, id=secrets.token_urlsafe(16)), limits


@functools.lru_cache(maxsize=64)
def _is_loopback_address(address: str) -> bool:
    """Whether the socket address a request came in on is loopback (cached: a server
    listens on few addresses, and every request asks)."""
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _wants(scope: Scope, flag: str) -> bool:
    """Whether the query string turns ``flag`` on (``1``, ``true`` or ``yes``)."""
    raw = scope.get("query_string", b"")
    if not raw:
        return False
    query = urllib.parse.parse_qs(raw.decode("latin-1"))
    return any(v.lower() in ("1", "true", "yes") for v in query.get(flag, ()))


def _wants_stream(scope: Scope, headers: Mapping[bytes, bytes]) -> bool:
    """``?stream=true``, or an ``Accept`` that names ``text/event-stream``."""
    accept = headers.get(b"accept", b"").lower()
    return b"text/event-stream" in accept or _wants(scope, "stream")


async def _refuse(send: Send, status: int, why: str, openai: bool, **headers: str) -> None:
    """Answer an error in the path's shape: OpenAI's (``openai``) or ``{"error": why}``."""
    if openai:
        await reply_error(send, status, why, **headers)
    else:
        await reply_json(send, status, {"error": why}, **headers)


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()
