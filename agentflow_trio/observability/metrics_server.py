"""The Prometheus endpoint of a process that hosts an App: ``[monitoring] enable_metrics``.

`serve_metrics` serves ``GET /metrics`` (the Prometheus text format) on
``metrics_host:metrics_port`` of its own, apart from the app's port, so a scraper never
queues behind agent traffic and the app's port never exposes the figures. It is a small
trio server on the project's HTTP/1.1 codec (``_http11``, as the debug server), started
as a service: ``port = await nursery.start(serve_metrics, config.monitoring, metrics)``
returns the bound port (``metrics_port = 0``: a free one), or None when
``enable_metrics`` is false (then nothing listens). It binds the port it is given; which
port a host gives it when the config sets none is the host's rule (9090 for ``agentcli
serve`` and ``worker``, a free port for the load commands: see `MonitoringConfig`).

Endpoints (``HEAD`` answers the headers only)::

    GET  /metrics   the metrics, rendered at each scrape
    GET  /          this list

Anything else is 404; other methods 405. ``metrics_host`` is loopback by default. Bound
to loopback, a request whose ``Host`` is no loopback name is answered 421 (DNS
rebinding: a web page whose name now points at 127.0.0.1 still sends its own name); on
any bind, a request from a page of another site (an ``Origin`` other than the ``Host``
asked, or ``Sec-Fetch-Site: cross-site``) is answered 403. Request heads are bounded by the
codec's defaults and bodies to 4 KiB.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING, Any, Final

import trio

from .._http11 import Request, ResponseWriter, is_loopback_host, serve_http_connection
from ._exposition import cross_site_refusal, render_metrics

if TYPE_CHECKING:
    from ..config import MonitoringConfig

__all__ = ["METRICS_PATH", "serve_metrics"]

METRICS_PATH: Final = "/metrics"
_TEXT: Final = b"text/plain; charset=utf-8"
_MAX_BODY: Final = 4096
_READ: Final = (b"GET", b"HEAD")
_INDEX: Final = __doc__.split("::", 1)[1].split("Anything else")[0] if __doc__ else ""


def _is_loopback_bind(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _MetricsApp:
    """Answers one request of the metrics endpoint (see the module docstring)."""

    def __init__(self, metrics: Any, host: str) -> None:
        self.metrics = metrics
        self.loopback = _is_loopback_bind(host)

    async def _refused(self, request: Request, writer: ResponseWriter) -> bool:
        headers = request.headers
        host = headers.get(b"host")
        if self.loopback and not is_loopback_host(host):
            shown = (host or b"").decode("latin-1")
            why = f"421 Host {shown!r} is not this loopback metrics endpoint\n"
            await writer.send(421, why.encode(), content_type=_TEXT, close=True)
            return True
        own = (host or b"").decode("latin-1").lower()
        refusal = cross_site_refusal(headers, lambda netloc: netloc.lower() == own)
        if refusal is not None:
            await writer.send(403, refusal, content_type=_TEXT, close=True)
            return True
        return False

    async def dispatch(self, request: Request, writer: ResponseWriter) -> None:
        if await self._refused(request, writer):
            return
        if request.body_too_large:
            why = f"request body over {_MAX_BODY} bytes\n".encode()
            await writer.send(413, why, content_type=_TEXT, close=True)
            return
        if request.path not in (METRICS_PATH, "/"):
            await writer.send(404, b"not found; the metrics are at /metrics\n", content_type=_TEXT)
            return
        if request.method not in _READ:
            await writer.send(405, b"use GET or HEAD\n", content_type=_TEXT,
                              headers=[("allow", "GET, HEAD")])  # fmt: skip
            return
        if request.path == "/":
            await writer.send(200, _INDEX.strip("\n").encode() + b"\n", content_type=_TEXT)
            return
        body, content_type = render_metrics(self.metrics)
        await writer.send(200, body, content_type=content_type)


async def serve_metrics(
    monitoring: MonitoringConfig,
    metrics: Any,
    *,
    task_status: trio.TaskStatus[int | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``metrics`` at ``http://metrics_host:metrics_port/metrics`` until cancelled.

    ``metrics`` is a `RunnerMetrics`, anything with ``render()`` or a prometheus_client
    registry, rendered at each scrape. Reports the bound port through ``task_status``
    (the free port ``metrics_port = 0`` got), or None without listening at all when
    ``enable_metrics`` is false. Each connection is a task of this call's nursery;
    cancelling the call closes the listener and every connection.

    Raises (before ``task_status.started``):
        OSError: the address cannot be bound; the message names it and the config keys.
    """
    if not monitoring.enable_metrics:
        task_status.started(None)
        return
    host, port = monitoring.metrics_host, int(monitoring.metrics_port)  # a plain int for
    # getaddrinfo, which refuses int subclasses (the default port is one: `MonitoringConfig`)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        raise OSError(
            exc.errno,
            f"the metrics endpoint ([monitoring] metrics_host, metrics_port) cannot bind "
            f"{where}: {exc.strerror or exc}",
        ) from exc
    try:
        if port == 0:  # each address would get its own port: keep one
            for extra in listeners[1:]:
                await trio.aclose_forcefully(extra)
            del listeners[1:]
        task_status.started(listeners[0].socket.getsockname()[1])
        app = _MetricsApp(metrics, host)
        handler = functools.partial(
            serve_http_connection, handler=app.dispatch, max_body_bytes=_MAX_BODY
        )
        await trio.serve_listeners(handler, listeners)
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
