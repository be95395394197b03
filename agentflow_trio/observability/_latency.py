"""`LatencyRecorder`: latencies in an HDR histogram, with a per-second series for charts.

HDR (1 µs to 1 h, 3 significant digits): every percentile is within 0.1 % of the true
value, memory is fixed and recording is O(1); never a sorted list. Load generators record
with `LatencyRecorder.record_from`, from each request's *intended* start, so a stalled
server shows in the tail instead of silently slowing the generator down (no coordinated
omission). Public through `agentflow_trio.observability.stats`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Final

import attrs
import trio
from hdrh.histogram import HdrHistogram

__all__ = ["CurvePoint", "LatencyRecorder", "LatencySummary", "SecondStats"]

_HIGHEST_US: Final = 3_600_000_000  # one hour, in microseconds
_SIGNIFICANT_DIGITS: Final = 3
_SERIES_DIGITS: Final = 2  # per-second histograms: 1 % precision, 26 KiB while open
_PERCENTILES: Final = (50.0, 90.0, 95.0, 99.0, 99.9)
_SERIES_PERCENTILES: Final = (50.0, 95.0, 99.0)


def _now() -> float:
    """``trio.current_time()`` inside a trio run, else ``time.perf_counter()``."""
    try:
        return trio.current_time()
    except RuntimeError:
        return time.perf_counter()


def _new_histogram(digits: int = _SIGNIFICANT_DIGITS) -> HdrHistogram:
    return HdrHistogram(1, _HIGHEST_US, digits)


class _Put:
    """``record_value(us)`` of one `HdrHistogram`, for ``0 <= us <= _HIGHEST_US``, with
    hdrh's bucket arithmetic inlined: the same counts, total, min and max as
    ``HdrHistogram.record_value`` (a property test holds them equal), at a fraction of its
    seven Python calls per value. Writes to the histogram's own ``counts`` in place, so
    ``reset`` and ``add`` on the histogram stay valid."""

    __slots__ = ("_counts", "_half", "_hist", "_mask", "_shift", "_unit")

    def __init__(self, hist: HdrHistogram) -> None:
        self._hist = hist
        self._counts = hist.counts
        self._mask = hist.sub_bucket_mask
        self._unit = hist.unit_magnitude
        self._half = hist.sub_bucket_half_count
        # bucket index = bit_length(us | mask) - unit - (half-count magnitude + 1)
        self._shift = hist.sub_bucket_half_count_magnitude

    def __call__(self, us: int) -> None:
        unit = self._unit
        shift = self._shift
        bucket = (us | self._mask).bit_length() - unit - shift - 1
        index = ((bucket + 1) << shift) + (us >> (bucket + unit)) - self._half
        self._counts[index] += 1
        hist = self._hist
        hist.total_count += 1
        if us < hist.min_value:
            hist.min_value = us
        if us > hist.max_value:
            hist.max_value = us


def _ms(us: float) -> float:
    return us / 1000.0


@attrs.frozen
class LatencySummary:
    """Percentiles of a `LatencyRecorder`, in milliseconds (None when nothing was recorded).

    Each figure is within the HDR precision (0.1 %) of the exact value; a percentile is
    reported as the highest value equivalent to it, capped at ``max_ms``.
    """

    count: int
    min_ms: float | None
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None


@attrs.frozen
class SecondStats:
    """One second of a recorder's time series: throughput and latency percentiles (ms).

    ``second`` is ``floor(timestamp - origin)`` of the completions it holds; ``count`` is
    the number of requests completed in it (the throughput). Precision is 1 %.
    """

    second: int
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@attrs.frozen
class CurvePoint:
    """A point of an HDR percentile plot: ``count`` requests took at most ``latency_ms``."""

    percentile: float
    latency_ms: float
    count: int


_EMPTY_SUMMARY: Final = LatencySummary(0, None, None, None, None, None, None, None, None)


def _summarize(h: HdrHistogram) -> LatencySummary:
    count = h.get_total_count()
    if not count:
        return _EMPTY_SUMMARY
    top = h.max_value
    p = h.get_percentile_to_value_dict(list(_PERCENTILES))
    return LatencySummary(
        count=count,
        min_ms=_ms(h.min_value),
        mean_ms=min(_ms(h.get_mean_value()), _ms(top)),
        p50_ms=_ms(min(p[50.0], top)),
        p90_ms=_ms(min(p[90.0], top)),
        p95_ms=_ms(min(p[95.0], top)),
        p99_ms=_ms(min(p[99.0], top)),
        p999_ms=_ms(min(p[99.9], top)),
        max_ms=_ms(top),
    )


def _second_stats(second: int, h: HdrHistogram) -> SecondStats:
    top = h.max_value
    p = h.get_percentile_to_value_dict(list(_SERIES_PERCENTILES))
    return SecondStats(
        second,
        h.get_total_count(),
        _ms(min(p[50.0], top)),
        _ms(min(p[95.0], top)),
        _ms(min(p[99.0], top)),
        _ms(top),
    )


def _add(into: HdrHistogram, other: HdrHistogram) -> None:
    """``into.add(other)`` keeping the exact min and max (hdrh rounds them to buckets)."""
    if not other.get_total_count():
        return
    low, high = into.min_value, into.max_value
    into.add(other)
    into.min_value = min(low, other.min_value)
    into.max_value = max(high, other.max_value)


def _decode(entry: tuple[SecondStats, bytes]) -> HdrHistogram:
    """A closed second's histogram, with its exact maximum restored."""
    stats, encoded = entry
    hist = HdrHistogram.decode(encoded)
    if stats.max_ms is not None:
        hist.max_value = round(stats.max_ms * 1000)
    return hist


class LatencyRecorder:
    """Latencies in an HDR histogram, with a per-second time series for charts.

    `record` costs one histogram update (two with the series on) and keeps nothing per
    record: memory is the histograms' fixed size plus a few hundred bytes per second of
    series. Safe on a load generator's hot path. Values are kept in
    microseconds, clamped to [0, 1 h]; every percentile is within 0.1 % of the exact one.

    The series buckets completions by ``floor(timestamp - origin)``: ``timestamp`` is the
    ``at`` given to `record` (``end`` for `record_from`), else ``clock()`` (default:
    ``trio.current_time()`` inside trio, ``time.perf_counter()`` outside). Give every
    recorder that will be merged the same clock and origin. A record for a second earlier
    than the one being collected counts in the current one. ``series=False`` turns the
    series off (then `record` never reads a clock).
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_hist",
        "_interval",
        "_origin",
        "_put",
        "_put_interval",
        "_second",
    )

    def __init__(
        self,
        *,
        series: bool = True,
        origin: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._hist = _new_histogram()
        self._interval: HdrHistogram | None = _new_histogram(_SERIES_DIGITS) if series else None
        self._put = _Put(self._hist)
        self._put_interval = _Put(self._interval) if self._interval is not None else None
        self._origin = origin
        self._clock = clock if clock is not None else _now
        self._second = -(1 << 62)
        # Closed seconds: their stats and their encoded histogram (for exact merges).
        self._closed: dict[int, tuple[SecondStats, bytes]] = {}

    # ------------------------------------------------------------------ recording
    def record(self, seconds: float, *, at: float | None = None) -> None:
        """Record one latency of ``seconds``, completed at ``at`` (default: now)."""
        us = int(seconds * 1_000_000)
        if us > _HIGHEST_US:
            us = _HIGHEST_US
        elif us < 0:
            us = 0
        self._put(us)
        put_interval = self._put_interval
        if put_interval is not None:
            second = int((self._clock() if at is None else at) - self._origin)
            if second > self._second:
                self._roll(second)
            put_interval(us)

    def record_from(self, intended_start: float, end: float) -> None:
        """Record ``end - intended_start``: latency from when the request *should* have been
        sent, which keeps a stalled server visible (no coordinated omission)."""
        self.record(end - intended_start, at=end)

    def reset(self) -> None:
        """Forget everything recorded."""
        self._hist.reset()
        if self._interval is not None:
            self._interval.reset()
        self._closed.clear()
        self._second = -(1 << 62)

    def merge(self, other: LatencyRecorder) -> None:
        """Add everything ``other`` recorded to this recorder (``other`` is unchanged).

        The series merges exactly when both recorders share clock and origin; it is
        skipped if either recorder has none.
        """
        _add(self._hist, other._hist)
        if self._interval is None or other._interval is None:
            return
        for second, hist in other._seconds():
            key = math.floor(other._origin + second - self._origin)
            if key == self._second:
                _add(self._interval, hist)
            else:
                self._close(key, hist)

    # ------------------------------------------------------------------ reading
    @property
    def count(self) -> int:
        """How many latencies were recorded."""
        return int(self._hist.get_total_count())

    def percentile(self, percentile: float) -> float | None:
        """The latency (ms) at ``percentile`` (0 to 100), or None if nothing was recorded."""
        if not self._hist.get_total_count():
            return None
        h = self._hist
        return _ms(min(max(h.get_value_at_percentile(percentile), h.min_value), h.max_value))

    def summary(self) -> LatencySummary:
        """Count, min, mean, p50/p90/p95/p99/p99.9 and max, in milliseconds."""
        return _summarize(self._hist)

    def series(self) -> tuple[SecondStats, ...]:
        """Per-second throughput and p50/p95/p99/max, oldest first, gaps filled with zeros.

        Empty when the series is off or nothing was recorded.
        """
        if self._interval is None:
            return ()
        by_second = {second: stats for second, (stats, _) in self._closed.items()}
        if self._interval.get_total_count():
            by_second[self._second] = _second_stats(self._second, self._interval)
        if not by_second:
            return ()
        first, last = min(by_second), max(by_second)
        return tuple(
            by_second.get(s) or SecondStats(s, 0, None, None, None, None)
            for s in range(first, last + 1)
        )

    def percentile_curve(self, ticks_per_half_distance: int = 5) -> tuple[CurvePoint, ...]:
        """The HDR percentile plot: points ever closer to 100 % (``ticks_per_half_distance``
        points between each halving of the distance to 100 %), ending at the maximum."""
        points: list[CurvePoint] = []
        if not self._hist.get_total_count():
            return ()
        top = self._hist.max_value
        for item in self._hist.get_percentile_iterator(ticks_per_half_distance):
            point = CurvePoint(
                float(item.percentile_level_iterated_to),
                _ms(min(item.value_iterated_to, top)),
                int(item.total_count_to_this_value),
            )
            if not points or point != points[-1]:
                points.append(point)
        return tuple(points)

    # ------------------------------------------------------------------ internals
    def _roll(self, second: int) -> None:
        """Close the second being collected and start collecting ``second``."""
        interval = self._interval
        assert interval is not None
        if interval.get_total_count():
            self._close(self._second, interval)
            interval.reset()
        self._second = second
        reopened = self._closed.pop(second, None)
        if reopened is not None:  # a merge filled this second earlier: keep collecting it
            _add(interval, _decode(reopened))

    def _close(self, second: int, hist: HdrHistogram) -> None:
        existing = self._closed.get(second)
        if existing is not None:
            combined = _decode(existing)
            _add(combined, hist)
            hist = combined
        self._closed[second] = (_second_stats(second, hist), hist.encode())

    def _seconds(self) -> Iterator[tuple[int, HdrHistogram]]:
        for second, entry in self._closed.items():
            yield second, _decode(entry)
        if self._interval is not None and self._interval.get_total_count():
            yield self._second, self._interval

    def __repr__(self) -> str:
        s = self.summary()
        if not s.count:
            return "<LatencyRecorder empty>"
        return f"<LatencyRecorder n={s.count} p50={s.p50_ms:.3f}ms p99={s.p99_ms:.3f}ms>"
