"""A localhost debug HTTP server for the live process: the guide's pprof, for trio.

Endpoints (``GET``; ``HEAD`` answers the headers only)::

    /debug/tasks                   the trio task tree as text (?frames=0: names only)
    /debug/profile?seconds=N       cProfile the whole process for N seconds (default 10,
                                   at most 300); text top functions (?sort=cumulative,
                                   ?limit=40), or ?format=pstats: the binary pstats file
    /debug/heap?limit=N            tracemalloc's top N allocation sites (starts tracing
                                   if it was off, and says so)
    /metrics                       Prometheus text of the given metrics (404 without)
    /  and /debug                  this list

Anything else is 404; other methods 405. It binds loopback only unless ``allow_remote``:
profiles and task dumps reveal the program, and a profile slows it down.
"""

from __future__ import annotations

import functools
import ipaddress
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from .._http11 import Request, ResponseWriter, serve_http_connection
from ..errors import ConfigError
from . import profiling

__all__ = ["MAX_PROFILE_SECONDS", "serve_debug"]

MAX_PROFILE_SECONDS: Final = 300.0
_TEXT: Final = b"text/plain; charset=utf-8"
_PSTATS: Final = b"application/octet-stream"
_MAX_BODY: Final = 64 * 1024
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


def _render_metrics(metrics: Any) -> tuple[bytes, bytes]:
    """Exposition of a `RunnerMetrics`, anything with ``render()``, or a registry."""
    exposition = getattr(metrics, "exposition", None)
    if exposition is not None:
        body, content_type = exposition()
    elif hasattr(metrics, "render"):
        body = metrics.render()
        content_type = getattr(metrics, "content_type", "text/plain; version=0.0.4")
    else:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body, content_type = generate_latest(metrics), CONTENT_TYPE_LATEST
    return bytes(body), str(content_type).encode()


class _DebugApp:
    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self.routes: dict[str, Callable[[dict[str, list[str]], ResponseWriter], Awaitable[None]]]
        self.routes = {
            "/": self._index,
            "/debug": self._index,
            "/debug/": self._index,
            "/debug/tasks": self._tasks,
            "/debug/profile": self._profile,
            "/debug/heap": self._heap,
            "/metrics": self._metrics,
        }

    async def dispatch(self, request: Request, writer: ResponseWriter) -> None:
        route = self.routes.get(request.path)
        if route is None:
            await writer.send(404, b"not found; see /debug\n", content_type=_TEXT)
            return
        if request.method not in (b"GET", b"HEAD"):
            await writer.send(
                405, b"use GET\n", content_type=_TEXT, headers=[("allow", "GET, HEAD")]
            )
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
        note = ""
        if profiling.ensure_tracing():
            note = (
                "tracemalloc was not tracing: started it now; only allocations made from "
                "now on are counted, ask again later\n"
            )
        await writer.send(200, (note + profiling.heap_top(limit)).encode(), content_type=_TEXT)

    async def _metrics(self, query: dict[str, list[str]], writer: ResponseWriter) -> None:
        if self.metrics is None:
            await writer.send(404, b"no metrics were given to this debug server\n",
                              content_type=_TEXT)  # fmt: skip
            return
        body, content_type = _render_metrics(self.metrics)
        await writer.send(200, body, content_type=content_type)


async def serve_debug(
    host: str = "127.0.0.1",
    port: int = 6060,
    *,
    metrics: Any = None,
    allow_remote: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the debug endpoints on ``host:port`` until cancelled; report the bound port.

    ``metrics`` is a `RunnerMetrics`, anything with ``render()``, or a prometheus_client
    registry (served at ``/metrics``). Each connection is a task of this call's nursery;
    cancelling the call ends them all (a running profile is stopped).

    Raises (before ``task_status.started``):
        ConfigError: ``host`` is not a loopback address and ``allow_remote`` is false.
        OSError: the address cannot be bound.
    """
    _check_host(host, allow_remote)
    app = _DebugApp(metrics)
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
        for listener in listeners:
            await trio.aclose_forcefully(listener)
