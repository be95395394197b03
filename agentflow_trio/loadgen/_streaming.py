"""Time to first token and inter-token latency of streamed events, for the load report.

A streamed event's tokens are the non-empty `TextDelta` items its progress stream carries
(``runner.stream`` in-process, ``text_delta`` server-sent events over HTTP from
``agentcli serve``). `TokenTimes` keeps two HDR recorders for a run: time to first token
(TTFT: from sending or emitting the event to its first token) and inter-token latency
(ITL: each gap between two consecutive tokens of one event), so an event of K tokens adds
one TTFT sample and K - 1 ITL samples; an event that ends without a token adds none and
is counted as ``without_tokens``. `consume_progress` and `consume_sse` read one event's
stream to its end, timing each token on arrival (``trio.current_time()``: exact under
``MockClock``) and returning its result. `StreamingFigures` is what the console, JSON and
HTML reports and the ``ttft_*``/``itl_*`` thresholds read. Recording is O(1) per token.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import trio

from .. import _json
from ..progress import FinalResult, TextDelta

if TYPE_CHECKING:
    from ..events import AgentResult
    from ..observability.stats import LatencyRecorder, LatencySummary

__all__ = [
    "StreamingFigures",
    "TokenTimes",
    "consume_progress",
    "consume_sse",
    "percentile_curve",
]

_SUMMARY_FIELDS: Final = (
    "count",
    "min_ms",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
)


def percentile_curve(latency: LatencyRecorder) -> dict[str, list[float]]:
    """The HDR percentile curve as parallel lists; ``one_in`` is 1 / (1 - percentile),
    capped at the sample count (the maximum is one sample in all of them)."""
    points = latency.percentile_curve()
    count = latency.count
    return {
        "percentile": [p.percentile for p in points],
        "latency_ms": [p.latency_ms for p in points],
        "one_in": [
            min(1.0 / (1.0 - p.percentile / 100.0), float(count))
            if p.percentile < 100.0
            else float(count)
            for p in points
        ],
    }


def _summary_dict(summary: LatencySummary) -> dict[str, Any]:
    return {name: getattr(summary, name) for name in _SUMMARY_FIELDS}


@attrs.frozen(slots=True)
class StreamingFigures:
    """The streamed events of a run: how many (``events``; ``without_tokens`` of them
    carried no token), and the TTFT and ITL percentiles in milliseconds (``count`` is the
    number of samples: one per event with a token for TTFT, tokens - 1 per event for ITL).
    ``ttft_curve``/``itl_curve`` are the HDR percentile curves (see `percentile_curve`)."""

    events: int
    without_tokens: int
    ttft: LatencySummary
    itl: LatencySummary
    ttft_curve: Mapping[str, Any] = attrs.field(factory=dict)
    itl_curve: Mapping[str, Any] = attrs.field(factory=dict)

    def value(self, kind: str, field: str) -> float | None:
        """``kind`` (``"ttft"`` or ``"itl"``) at ``field`` (``"p95_ms"``...); None when
        there is no sample."""
        summary = self.ttft if kind == "ttft" else self.itl
        figure: float | None = getattr(summary, field)
        return figure

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``LoadReport.to_dict()["streaming"]``)."""
        return {
            "events": self.events,
            "without_tokens": self.without_tokens,
            "ttft": _summary_dict(self.ttft),
            "itl": _summary_dict(self.itl),
            "ttft_curve": dict(self.ttft_curve),
            "itl_curve": dict(self.itl_curve),
        }


@final
class TokenTimes:
    """A run's TTFT and ITL recorders and its count of streamed events (see the module
    docstring). Fixed memory: two HDR histograms and two counters."""

    __slots__ = ("events", "itl", "ttft", "without_tokens")

    def __init__(self) -> None:
        from ..observability.stats import LatencyRecorder

        self.ttft = LatencyRecorder(series=False)
        self.itl = LatencyRecorder(series=False)
        self.events = 0
        self.without_tokens = 0

    def untimed(self) -> None:
        """Count a streamed event whose answer carried no token stream at all."""
        self.events += 1
        self.without_tokens += 1

    def figures(self) -> StreamingFigures | None:
        """The run's `StreamingFigures`, or None when no event was streamed."""
        if not self.events:
            return None
        return StreamingFigures(
            self.events,
            self.without_tokens,
            self.ttft.summary(),
            self.itl.summary(),
            percentile_curve(self.ttft),
            percentile_curve(self.itl),
        )


@final
class _Ticks:
    """One event's token clock: the first token records TTFT, every later one an ITL."""

    __slots__ = ("_last", "_sent", "_times")

    def __init__(self, times: TokenTimes, sent: float) -> None:
        self._times = times
        self._sent = sent
        self._last: float | None = None

    def token(self, now: float) -> None:
        last = self._last
        if last is None:
            self._times.ttft.record(now - self._sent)
        else:
            self._times.itl.record(now - last)
        self._last = now

    def end(self) -> None:
        """The event's stream ended (however): count it."""
        times = self._times
        times.events += 1
        if self._last is None:
            times.without_tokens += 1


async def consume_progress(
    items: AsyncIterable[Any], times: TokenTimes, sent: float
) -> AgentResult | None:
    """Read a runner's progress ``items`` to the end, timing each non-empty `TextDelta`
    from ``sent`` (a ``trio.current_time()``); the `FinalResult`'s result (None if the
    stream ended without one). The event counts in ``times`` however the read ends."""
    ticks = _Ticks(times, sent)
    now = trio.current_time
    result: AgentResult | None = None
    try:
        async for item in items:
            if isinstance(item, TextDelta):
                if item.text:
                    ticks.token(now())
            elif isinstance(item, FinalResult):
                result = item.result
    finally:
        ticks.end()
    return result


def _has_text(data: str) -> bool:
    try:
        payload = _json.loads(data)
    except ValueError:
        return False
    return isinstance(payload, Mapping) and bool(payload.get("text"))


async def consume_sse(lines: AsyncIterable[str], times: TokenTimes, sent: float) -> Any:
    """Read ``agentcli serve``'s server-sent events (``lines`` without their line ends)
    to the end, timing each ``text_delta`` with non-empty ``text`` from ``sent``; the
    decoded JSON of the ``result`` event (None if there was none). Comments, ``id:`` and
    unknown events are skipped, as the SSE standard says. The event counts in ``times``
    however the read ends.

    Raises:
        ValueError: the ``result`` event's data is not JSON.
    """
    ticks = _Ticks(times, sent)
    now = trio.current_time
    name, data = "message", []
    result: Any = None
    try:
        async for line in lines:
            if line:
                field, _, value = line.partition(":")
                if field == "data":
                    data.append(value[1:] if value.startswith(" ") else value)
                elif field == "event":
                    name = value.strip()
                continue
            if data:
                if name == "text_delta":
                    if _has_text("\n".join(data)):
                        ticks.token(now())
                elif name == "result":
                    result = _json.loads("\n".join(data))
            name, data = "message", []
        if data and name == "result":  # the last event, its blank line missing
            result = _json.loads("\n".join(data))
    finally:
        ticks.end()
    return result
