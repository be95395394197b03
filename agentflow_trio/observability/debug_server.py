"""A localhost debug HTTP server for the live process: the guide's pprof, for trio.

Endpoints (``GET`` reads and changes nothing; ``HEAD`` answers the headers only)::

    GET  /debug/tasks              the trio task tree as text (?frames=0: names only)
    GET  /debug/profile?seconds=N  cProfile the whole process for N seconds (default 10,
                                   at most 300); text top functions (?sort=cumulative,
                                   ?limit=40), or ?format=pstats: the binary pstats file
    GET  /debug/heap?limit=N       tracemalloc's top N allocation sites; 409 saying how
                                   to start tracing when it is off
    POST /debug/heap/start         start tracemalloc (?frames=N, default 1, at most 100)
    POST /debug/heap/stop          stop the tracing started here
    GET  /metrics                  Prometheus text of the given metrics (404 without)
    GET  /  and /debug             this list

Anything else is 404; other methods 405. It binds loopback only unless ``allow_remote``:
profiles and task dumps reveal the program, and a profile slows it down.

Requests from a browser page of another site are refused, so binding loopback is not
undone by a web page: a ``Host`` that is not loopback, the bind host or one of
``allowed_hosts`` is answered 421 (DNS rebinding: a page whose name now points at
127.0.0.1 still sends its own name), and an ``Origin`` that is not such a host, or
``Sec-Fetch-Site: cross-site``, is answered 403. The HTTP bounds (head size, header and
idle timeouts, a 64 KiB body) are those of `serve_http_connection`'s defaults; tracing
started here stops when the server does.
"""

from __future__ import annotations

import functools
import ipaddress
import tracemalloc
import urllib.parse
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final

import trio

from .._http11 import Request, ResponseWriter, is_loopback_host, serve_http_connection
from ..errors import ConfigError
from . import profiling
from ._exposition import cross_site_refusal, render_metrics

__all__ = ["MAX_PROFILE_SECONDS", "serve_debug"]

MAX_PROFILE_SECONDS: Final = 300.0
_TEXT: Final = b"text/plain; charset=utf-8"
_PSTATS: Final = b"application/octet-stream"
_MAX_BODY: Final = 64 * 1024
_MAX_TRACE_FRAMES: Final = 100
_INDEX: Final = __doc__.split("::", 1)[1].split("Anything else")[0] if __doc__ else ""


class _BadQuery(Exception):
    pass


def _check_host(host: str, allow_remote: bool) -> None:
    if allow_remote or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"the debug server binds loopback addresses only (got {host!r}): it exposes "
            "profiles and task dumps; pass allow_remote=True to bind it anyway"
        )


def _number(query: dict[str, list[str]], name: str, default: float, top: float) -> float:
    raw = query.get(name, [None])[-1]
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _BadQuery(f"{name}={raw!r} is not a number") from None
    if not 0 <= value <= top:
        raise _BadQuery(f"{name} must be between 0 and {top:g}, got {raw}")
    return value


_Route = Callable[[dict[str, list[str]], ResponseWriter], Awaitable[None]]
_READ: Final = (b"GET", b"HEAD")


class _DebugApp:
    def __init__(self, metrics: Any, hosts: Collection[str]) -> None:
        self.metrics = metrics
        self.hosts = {h.lower().strip("[]") for h in hosts}
        self.started_tracing = False  # tracemalloc was started by POST /debug/heap/start
        self.routes: dict[str, tuple[tuple[bytes, ...], _Route]] = {
            "/": (_READ, self._index),
            "/debug": (_READ, self._index),
            "/debug/": (_READ, self._index),
            "/debug/tasks": (_READ, self._tasks),
            "/debug/profile": (_READ, self._profile),
            "/debug/heap": (_READ, self._heap),
            "/debug/heap/start": ((b"POST",), self._heap_start),
            "/debug/heap/stop": ((b"POST",), self._heap_stop),
            "/metrics": (_READ, self._metrics),
        }

    def _trusted(self, host: bytes | str | None) -> bool:
        """A loopback name or address, or one of the allowed hosts (port ignored)."""
        if host is None or is_loopback_host(host) or "*" in self.hosts:
            return True
        text = host.decode("latin-1") if isinstance(host, bytes) else host
        name = text.strip().lower()
        if name.startswith("["):
            name = name[1 : name.find("]")]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        return name in self.hosts

    async def _refuse(self, request: Request, writer: ResponseWriter) -> bool:
        """Answer 421/403 to a request a browser page of another site made; True if so."""
        headers = request.headers
        if not self._trusted(headers.get(b"host")):
            host = headers[b"host"].decode("latin-1")
            why = f"421 Host {host!r} is not this debug server (loopback or allowed_hosts)\n"
            await writer.send(421, why.encode(), content_type=_TEXT, close=True)
            return True
        refusal = cross_site_refusal(headers, self._trusted)
        if refusal is not None:
            await writer.send(403, refusal, content_type=_TEXT, close=True)
            return True
        return False

    async def dispatch(self, request: Request, writer: ResponseWriter) -> None:
        if await self._refuse(request, writer):
            return
        if request.body_too_large:
            why = f"request body over {_MAX_BODY} bytes\n"
            await writer.send(413, why.encode(), content_type=_TEXT, close=True)
            return
        found = self.routes.get(request.path)
        if found is None:
            await writer.send(404, b"not found; see /debug\n", content_type=_TEXT)
            return
        methods, route = found
        if request.method not in methods:
            allow = ", ".join(m.decode() for m in methods)
            use = f"use {allow}\n".encode()
            await writer.send(405, use, content_type=_TEXT, headers=[("allow", allow)])
            return
        query = urllib.parse.parse_qs(request.query)
        try:
            await route(query, writer)
        except _BadQuery as exc:
            await writer.send(400, f"{exc}\n".encode(), content_type=_TEXT)

    async def _index(self, query: dict[str, list[str]], writer: ResponseWriter) -> None:
        await writer.send(200, _INDEX.strip("\n").encode() + b"\n", content_type=_TEXT)

    async def _tasks(self, query: dict[str, list[str]], writer: ResponseWriter) -> None:
        frames = query.get("frames", ["1"])[-1] not in ("0", "false", "no")
        await writer.send(200, profiling.task_tree(frames=frames).encode(), content_type=_TEXT)

    async def _profile(self, query: dict[str, list[str]], writer: ResponseWriter) -> None:
        seconds = _number(query, "seconds", 10.0, MAX_PROFILE_SECONDS)
        limit = int(_number(query, "limit", 40, 10_000))
        sort = query.get("sort", ["cumulative"])[-1]
        form = query.get("format", ["text"])[-1]
        if form not in ("text", "pstats"):
            raise _BadQuery(f"format={form!r}: use text or pstats")
        if sort not in profiling.SORT_KEYS:
            raise _BadQuery(f"sort={sort!r}: use one of {', '.join(sorted(profiling.SORT_KEYS))}")
        try:
            stats = await profiling.cpu_profile(seconds)
        except profiling.ProfilerBusy as exc:
            await writer.send(409, f"{exc}\n".encode(), content_type=_TEXT)
            return
        if form == "pstats":
            await writer.send(
                200,
                profiling.stats_bytes(stats),
                content_type=_PSTATS,
                headers=[("content-disposition", 'attachment; filename="profile.pstats"')],
            )
            return
        text = profiling.format_stats(stats, limit=limit, sort=sort)
        head = f"CPU profile of the whole process for {seconds:g}s (cProfile, sort={sort})\n"
        await writer.send(200, (head + text).encode(), content_type=_TEXT)

    async def _heap(self, query: dict[str, list[str]], writer: ResponseWriter) -> None:
        limit = int(_number(query, "limit", 25, 10_000))
        if not tracemalloc.is_tracing():
            why = (
                "tracemalloc is not tracing. Start it with POST /debug/heap/start (for "
                "example: curl -X POST http://127.0.0.1:PORT/debug/heap/start), or run with "
                "PYTHONTRACEMALLOC=1; only allocations made from then on are counted, and "
                "tracing costs memory and time until POST /debug/heap/stop\n"
            )
            await writer.send(409, why.encode(), content_type=_TEXT)
            return
        await writer.send(200, profiling.heap_top(limit).encode(), content_type=_TEXT)

    async def _heap_start(self, query: dict[str, list[str]], writer: ResponseWriter) -> None:
        frames = int(_number(query, "frames", 1, _MAX_TRACE_FRAMES))
        if not profiling.ensure_tracing(max(frames, 1)):
            await writer.send(200, b"tracemalloc was already tracing\n", content_type=_TEXT)
            return
        self.started_tracing = True
        text = "tracemalloc started: GET /debug/heap shows what is allocated from now on\n"
        await writer.send(200, text.encode(), content_type=_TEXT)

    async def _heap_stop(self, query: dict[str, list[str]], writer: ResponseWriter) -> None:
        if not (self.started_tracing and tracemalloc.is_tracing()):
            why = b"tracemalloc was not started by POST /debug/heap/start: left as it is\n"
            await writer.send(409, why, content_type=_TEXT)
            return
        self.stop_tracing()
        await writer.send(200, b"tracemalloc stopped\n", content_type=_TEXT)

    def stop_tracing(self) -> None:
        """Stop the tracing this server started, if it still runs."""
        if self.started_tracing:
            self.started_tracing = False
            if tracemalloc.is_tracing():
                tracemalloc.stop()

    async def _metrics(self, query: dict[str, list[str]], writer: ResponseWriter) -> None:
        if self.metrics is None:
            await writer.send(404, b"no metrics were given to this debug server\n",
                              content_type=_TEXT)  # fmt: skip
            return
        body, content_type = render_metrics(self.metrics)
        await writer.send(200, body, content_type=content_type)


async def serve_debug(
    host: str = "127.0.0.1",
    port: int = 6060,
    *,
    metrics: Any = None,
    allow_remote: bool = False,
    allowed_hosts: Collection[str] = (),
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the debug endpoints on ``host:port`` until cancelled; report the bound port.

    ``metrics`` is a `RunnerMetrics`, anything with ``render()``, or a prometheus_client
    registry (served at ``/metrics``). Each connection is a task of this call's nursery;
    cancelling the call ends them all (a running profile is stopped, tracing started by
    ``POST /debug/heap/start`` is stopped). ``Host`` and ``Origin`` must name a loopback
    address, ``host`` or one of ``allowed_hosts`` (``"*"``: any; needed to reach a remote
    bind by a name).

    Raises (before ``task_status.started``):
        ConfigError: ``host`` is not a loopback address and ``allow_remote`` is false.
        OSError: the address cannot be bound.
    """
    _check_host(host, allow_remote)
    app = _DebugApp(metrics, [host, *allowed_hosts])
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        if port == 0:  # each address would get its own port: keep one
            for extra in listeners[1:]:
                await trio.aclose_forcefully(extra)
            del listeners[1:]
        task_status.started(listeners[0].socket.getsockname()[1])
        handler = functools.partial(
            serve_http_connection, handler=app.dispatch, max_body_bytes=_MAX_BODY
        )
        await trio.serve_listeners(handler, listeners)
    finally:
        app.stop_tracing()
        for listener in listeners:
            await trio.aclose_forcefully(listener)
