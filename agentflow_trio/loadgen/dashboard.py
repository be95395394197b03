"""A live dashboard of a running load test: ``agentcli loadtest|benchmark --dashboard``.

`Dashboard` serves one page on 127.0.0.1 (a free port unless told otherwise) with the HTML
report's charts (see `report.figures`) plus gauges: requests completed, current stage,
requests in flight, queue depth, running agents, live trio tasks, breaker state, cache hit
rate, RSS. The page's plotly charts (plotly.js served from the same address, never a CDN)
grow every second from server-sent events on ``/events``; ``/snapshot.json`` is the whole
state at once. The HTTP stack is the project's `_http11` connection server: an event
stream is a chunked response whose head the writer sends and whose chunks this module
writes, one per second, until the run ends or the browser goes away.

`Dashboard` is a `ProgressSink`: the load commands call ``start(stats, ...)`` when the
run starts (``stats`` a `LoadStats`, whose `Timeline` and ``gauges`` are read) and
``stop()`` when it ends. Every task it starts lives in the nursery that runs `serve`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final

import trio

from .._http11 import Request, ResponseWriter, serve_http_connection
from ._tally import Timeline, tick_seconds
from .console import Counting, ProgressSink
from .report import PLOTLY_CONFIG, STYLE, chart_divs, figures, plotly_js

__all__ = ["Dashboard", "ServeWatch", "TeeProgress", "runner_gauges"]

_HTML: Final = b"text/html; charset=utf-8"
_JS: Final = b"application/javascript"
_JSON: Final = b"application/json"


def _hit_rate(hits: int, misses: int) -> float | None:
    return hits / (hits + misses) if hits + misses else None


def _state(breaker: Any) -> str:
    return str(getattr(breaker.state, "value", breaker.state))


def _router_breakers(router: Any) -> str:
    """A router's deployments' breakers counted by state, e.g. ``"closed 2, open 1"``."""
    counts: dict[str, int] = {}
    for dep in router.deployments:
        breaker = getattr(dep.stack, "breaker", None)
        state = "off" if breaker is None else _state(breaker)
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))


def runner_gauges(runner: Any, llm: Any = None) -> Callable[[], dict[str, Any]]:
    """A function reading ``runner.statistics()`` and, if ``llm`` has an LLM stack, its
    breaker and cache: what the dashboard shows besides the charts. With a model router
    the breaker gauge counts its deployments' breakers by state (``"closed 2, open 1"``)."""
    stack = getattr(getattr(llm, "provider", None), "statistics", None)

    def gauges() -> dict[str, Any]:
        s = runner.statistics()
        out: dict[str, Any] = {
            "queue_depth": s.queued,
            "events_in_flight": s.in_flight,
            "running_agents": s.running_agents,
            "breaker": "off",
            "cache_hit_rate": None,
        }
        if stack is not None:
            parts = stack()
            if parts.breaker is not None:
                out["breaker"] = _state(parts.breaker)
            elif getattr(parts, "router", None) is not None:
                out["breaker"] = _router_breakers(parts.router)
            if parts.cache is not None:
                out["cache_hit_rate"] = _hit_rate(parts.cache.hits, parts.cache.misses)
        return out

    return gauges


class ServeWatch:
    """What the dashboard watches under ``agentcli serve``: a `Timeline` fed by the runner's
    hooks, each event timed from when it was accepted (queue wait included) to its end.

    ``async with``-free: `run` (started in the server's nursery) closes a timeline second
    every second until cancelled. The hooks cost two dict operations per event.
    """

    def __init__(self, runner: Any, llm: Any = None) -> None:
        self.timeline = Timeline(None)
        self.completed = 0
        self.gauges = runner_gauges(runner, llm)
        self.collector: Any = None
        self._accepted: dict[str, float] = {}
        runner.hooks.on_accept.append(self._on_accept)
        runner.hooks.after_event.append(self._after_event)

    def _on_accept(self, event: Any) -> None:
        self._accepted[event.id] = trio.current_time()
        self.timeline.begin_request()

    def _after_event(self, event: Any, result: Any) -> None:
        accepted = self._accepted.pop(event.id, None)
        if accepted is None:
            return
        self.timeline.end_request()
        self.timeline.record(accepted, trio.current_time(), str(result.outcome.value))
        self.completed += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the timeline now and close a second every second, until cancelled."""
        origin = trio.current_time()
        self.timeline.start(origin)
        task_status.started()
        await tick_seconds(self.timeline, origin)


class TeeProgress:
    """Tells several `ProgressSink` objects (the terminal bar, the dashboard) alike."""

    def __init__(self, *sinks: ProgressSink | None) -> None:
        self._sinks = [s for s in sinks if s is not None]

    def start(self, stats: Counting, seconds: float, requests: int | None) -> None:
        for sink in self._sinks:
            sink.start(stats, seconds, requests)

    def stop(self) -> None:
        for sink in self._sinks:
            sink.stop()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Dashboard:
    """The live dashboard server (see the module docstring)."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, interval: float = 1.0, title: str = ""
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the dashboard is served on loopback only, not {host!r}")
        self.host, self.port, self.interval = host, port, interval
        self.title = title or "agentcli live dashboard"
        self._stats: Any = None
        self._finished = False
        self._wake = trio.Event()
        self._streams = 0
        self._idle = trio.Event()  # set when the last open stream ends

    # -- ProgressSink ----------------------------------------------------------------
    def start(self, stats: Counting, seconds: float, requests: int | None) -> None:
        """The run begins: watch ``stats`` (a `LoadStats`)."""
        self._stats = stats
        self._finished = False

    def stop(self) -> None:
        """The run ended: streams send their last frame (``finished: true``) and end."""
        self._finished = True
        self._wake.set()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/`` once `serve` has started."""
        return f"http://{self.host}:{self.port}/"

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``task_status.started(url)`` once accepting."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, self._connection, listeners))
            task_status.started(self.url)

    async def linger(self, timeout: float = 2.0) -> None:
        """After `stop`: wait (at most ``timeout`` s) for open streams to send their end."""
        if self._streams:
            with trio.move_on_after(timeout):
                await self._idle.wait()

    # -- state -----------------------------------------------------------------------
    def snapshot(self, first: int = 0) -> tuple[dict[str, Any], int]:
        """The state now, with timeline seconds from ``first``; and the next ``first``."""
        stats = self._stats
        frame: dict[str, Any] = {
            "finished": self._finished,
            "started": stats is not None,
            "requests_total": 0,
            "stage": "waiting for the run to start",
            "gauges": {},
        }
        if stats is None:
            return frame, first
        timeline = stats.timeline
        now = trio.current_time()
        part = timeline.to_dict(first)
        errors = part["errors"]
        part["error_total"] = [sum(v) for v in zip(*errors.values(), strict=True)] or [0] * len(
            part["seconds"]
        )
        curve = timeline.latency.percentile_curve()
        count = timeline.latency.count
        frame.update(
            requests_total=stats.completed,
            stage="finished" if self._finished else timeline.stage_at(now),
            elapsed_s=round(now - (timeline.origin or now), 3),
            timeline=part,
            latency_curve={
                "percentile": [p.percentile for p in curve],
                "latency_ms": [p.latency_ms for p in curve],
                "one_in": [
                    float(count)
                    if p.percentile >= 100
                    else min(1 / (1 - p.percentile / 100), count)
                    for p in curve
                ],
            },
        )
        gauges: dict[str, Any] = {"requests_in_flight": timeline.in_flight}
        source: Callable[[], Mapping[str, Any]] | None = getattr(stats, "gauges", None)
        if source is not None:
            gauges.update(source())
        collector = getattr(stats, "collector", None)
        if collector is not None:
            figures_now = collector.process_figures()
            gauges["trio_tasks"] = figures_now.get("active_tasks")
            gauges["rss_mib"] = (figures_now.get("rss_bytes") or 0) / 2**20
        frame["gauges"] = {k: _clean(v) for k, v in gauges.items()}
        return frame, timeline.seconds

    # -- HTTP ------------------------------------------------------------------------
    async def _connection(self, stream: trio.SocketStream) -> None:
        async def handler(request: Request, writer: ResponseWriter) -> None:
            await self._route(request, writer, stream)

        await serve_http_connection(stream, handler, max_body_bytes=4096)

    async def _route(
        self, request: Request, writer: ResponseWriter, stream: trio.abc.Stream
    ) -> None:
        if request.method not in (b"GET", b"HEAD"):
            await writer.send(405, b'{"error":"GET only"}', headers=[("allow", "GET")])
        elif request.path == "/":
            await writer.send(200, self._page().encode(), content_type=_HTML)
        elif request.path == "/plotly.min.js":
            await writer.send(
                200,
                _plotly_bytes(),
                content_type=_JS,
                headers=[("cache-control", "max-age=3600")],
            )
        elif request.path == "/snapshot.json":
            frame, _ = self.snapshot()
            await writer.send(200, json.dumps(frame, allow_nan=False).encode(), content_type=_JSON)
        elif request.path == "/events":
            await self._events(writer, stream)
        elif request.path == "/favicon.ico":
            await writer.send(204, b"", content_type=b"image/x-icon")
        else:
            await writer.send(404, b'{"error":"not found"}')

    async def _events(self, writer: ResponseWriter, stream: trio.abc.Stream) -> None:
        """One server-sent event per ``interval`` until the run ends (then the stream ends)."""
        await writer.send_chunked(200, (), content_type=b"text/event-stream", truncate_after=0)
        if self._idle.is_set():
            self._idle = trio.Event()
        self._streams += 1
        try:
            first = 0
            while True:
                if self._wake.is_set() and not self._finished:
                    self._wake = trio.Event()
                frame, first = self.snapshot(first)
                data = json.dumps(frame, separators=(",", ":"), allow_nan=False).encode()
                await stream.send_all(_chunk(b"data: " + data + b"\n\n"))
                if frame["finished"]:
                    await stream.send_all(b"0\r\n\r\n")
                    return
                with trio.move_on_after(self.interval):
                    await self._wake.wait()
        finally:
            self._streams -= 1
            if not self._streams:
                self._idle.set()

    def _page(self) -> str:
        figs = figures({"timeline": {"stages": [], "errors": {}}})
        if self._stats is not None:
            plan_part = self._stats.timeline.to_dict(0, 0)
            figs = figures({"timeline": {**plan_part, "error_total": []}})
        gauges = "".join(
            f'<div class="gauge"><div class="v" id="{ident}">-</div><div class="k">{label}</div>'
            "</div>"
            for ident, label in _GAUGES
        )
        config = json.dumps(PLOTLY_CONFIG)
        data = json.dumps(figs).replace("<", "\\u003c")
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{self.title}</title><style>{STYLE}</style>"
            '<script src="/plotly.min.js"></script></head><body>'
            f"<h1>{self.title}</h1>"
            '<p class="sub">live: updates every second (<span id="status">connecting</span>)</p>'
            f'<div class="gauges">{gauges}</div>'
            f'<div class="charts">{chart_divs(list(figs))}</div>'
            f'<script type="application/json" id="figures">{data}</script>'
            f"<script>const PLOTLY_CONFIG = {config};{_LIVE_SCRIPT}</script>"
            "</body></html>"
        )


_GAUGES: Final = (
    ("requests", "requests completed"),
    ("stage", "current stage"),
    ("g-requests_in_flight", "requests in flight"),
    ("g-queue_depth", "queue depth"),
    ("g-running_agents", "running agents"),
    ("g-trio_tasks", "active trio tasks"),
    ("g-breaker", "breaker state"),
    ("g-cache_hit_rate", "cache hit rate"),
    ("g-rss_mib", "RSS MiB"),
)

_LIVE_SCRIPT: Final = """
const figs = JSON.parse(document.getElementById('figures').textContent);
for (const [id, fig] of Object.entries(figs)) {
  Plotly.newPlot(id, fig.data, fig.layout, PLOTLY_CONFIG);
}
const COLOURS = ['#d62728', '#ff7f0e', '#8c564b', '#e377c2', '#bcbd22', '#9467bd'];
function lookup(obj, path) {
  for (const part of path.split('.')) obj = (obj && obj[part] !== undefined) ? obj[part] : [];
  return obj;
}
function show(id, value) {
  const el = document.getElementById(id);
  if (!el) return;
  if (value === null || value === undefined) el.textContent = '-';
  else if (typeof value === 'number' && !Number.isInteger(value)) el.textContent = value.toFixed(2);
  else el.textContent = String(value);
}
function update(f) {
  window.lastFrame = f;
  show('requests', f.requests_total);
  show('stage', f.stage);
  for (const [k, v] of Object.entries(f.gauges || {})) {
    show('g-' + k, k === 'cache_hit_rate' && v !== null ? (v * 100).toFixed(1) + '%' : v);
  }
  const t = f.timeline;
  if (!t) return;
  const errors = document.getElementById('chart-errors');
  Object.keys(t.errors).forEach((kind, i) => {
    if (!errors.data.some(tr => tr.meta && tr.meta.y === 'timeline.errors.' + kind)) {
      // A new kind: zero in every second shown so far; replaces the "no errors" trace.
      const before = Array.from(document.getElementById('chart-throughput').data[0].x);
      const none = errors.data.findIndex(tr => tr.meta && tr.meta.y === 'timeline.error_total');
      if (none >= 0) Plotly.deleteTraces(errors, none);
      Plotly.addTraces(errors, {type: 'bar', name: kind, x: before, y: before.map(() => 0),
        meta: {x: 'timeline.seconds', y: 'timeline.errors.' + kind},
        marker: {color: COLOURS[i % COLOURS.length]}});
      Plotly.relayout(errors, {annotations: []});
    }
  });
  if (t.seconds.length) {
    for (const gd of document.querySelectorAll('.plotly-graph-div')) {
      const idx = [], xs = [], ys = [];
      gd.data.forEach((tr, i) => {
        if (tr.meta && tr.meta.y.startsWith('timeline.')) {
          idx.push(i); xs.push(t.seconds); ys.push(lookup(f, tr.meta.y));
        }
      });
      if (idx.length) Plotly.extendTraces(gd, {x: xs, y: ys}, idx);
    }
  }
  if (f.latency_curve) {
    Plotly.restyle('chart-distribution', {x: [f.latency_curve.one_in],
      y: [f.latency_curve.latency_ms], customdata: [f.latency_curve.percentile]}, [0]);
  }
}
const source = new EventSource('/events');
source.onopen = () => show('status', 'connected');
source.onmessage = (m) => {
  const f = JSON.parse(m.data);
  update(f);
  if (f.finished) { show('status', 'run finished'); source.close(); }
};
source.onerror = () => { show('status', 'disconnected'); source.close(); };
"""


_PLOTLY: list[bytes] = []


def _plotly_bytes() -> bytes:
    if not _PLOTLY:
        _PLOTLY.append(plotly_js().encode())
    return _PLOTLY[0]
