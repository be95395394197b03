"""Pass/fail thresholds for a load run, k6-style: ``"p99<200ms"``, ``"errors<0.1%"``.

A threshold is ``METRIC OP VALUE``, spaces allowed around each part:

============================  ==========================================================
metric                        value
============================  ==========================================================
``p50 p90 p95 p99 max mean``  a latency: a duration with a unit (``200ms``, ``1.5s``,
                              ``250us``, ``1m``) or a plain number of milliseconds
``errors``                    the share of requests whose outcome is not ``succeeded``,
                              in percent: ``0.1%`` (the ``%`` is required)
``rps`` (or ``throughput``)   completed requests per second: ``50`` or ``50/s``
``ttft_p50`` ... ``ttft_max``  time to first token of streamed events (``_p50 _p90 _p95
                              _p99 _max _mean``), a duration as for latency
``itl_p50`` ... ``itl_max``    inter-token latency of streamed events, the same way
============================  ==========================================================

``OP`` is one of ``<``, ``<=``, ``>``, ``>=``; the threshold passes when ``ACTUAL OP VALUE``
holds for the run's total. A latency threshold fails when no request completed (there
is no latency to compare); a ``ttft_*``/``itl_*`` threshold fails when no token was
timed (no event streamed, or none carried two tokens for ITL). `parse_threshold` reads one
(`ThresholdError`, a `ValueError`, names what is wrong), `evaluate` checks a list against a
run's `PerformanceMetrics` and `StreamingFigures`.

``agentcli benchmark|loadtest --threshold "p99<200ms"`` (repeatable) and a load-test
script's module-level ``thresholds = ["p99<200ms", "errors<0.1%"]`` both end up here; the
results are in the `LoadReport` (its table, JSON and HTML report), and ``agentcli`` exits
99 when one fails, so a load test can gate a CI job.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from ..observability.stats import PerformanceMetrics
    from ._streaming import StreamingFigures

__all__ = [
    "METRICS",
    "Threshold",
    "ThresholdError",
    "ThresholdResult",
    "all_passed",
    "evaluate",
    "parse_threshold",
    "parse_thresholds",
]


class ThresholdError(ValueError):
    """A threshold that cannot be read; the message quotes it and says what is expected."""


_LATENCY: Final = {
    "p50": "p50_ms",
    "p90": "p90_ms",
    "p95": "p95_ms",
    "p99": "p99_ms",
    "max": "max_ms",
    "mean": "mean_ms",
}
_TOKENS: Final = {
    f"{kind}_{name}": (kind, field) for kind in ("ttft", "itl") for name, field in _LATENCY.items()
}
"""``ttft_p95`` -> (``"ttft"``, ``"p95_ms"``): the streamed events' token timings."""
METRICS: Final = (*_LATENCY, "errors", "rps", "throughput", *_TOKENS)
"""The metric names a threshold may use."""

_OPERATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_SHAPE: Final = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S(?:.*\S)?)\s*")
_NUMBER: Final = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
_EXAMPLES: Final = "such as 'p99<200ms', 'errors<0.1%', 'rps>=50' or 'ttft_p95<300ms'"


@attrs.frozen(slots=True)
class Threshold:
    """One parsed threshold: ``metric`` (a name of `METRICS`; ``throughput`` is read as
    ``rps``), ``op`` and ``limit`` in the metric's unit (milliseconds, percent, or
    requests per second). ``text`` is the threshold as written, for messages."""

    metric: str
    op: str
    limit: float
    text: str

    @property
    def unit(self) -> str:
        """``"ms"``, ``"%"`` or ``"/s"``."""
        if self.metric == "errors":
            return "%"
        return "/s" if self.metric == "rps" else "ms"

    def actual(
        self, metrics: PerformanceMetrics, streaming: StreamingFigures | None = None
    ) -> float | None:
        """This threshold's metric in ``metrics`` (or, for ``ttft_*``/``itl_*``, in
        ``streaming``); None: no latency (or no token) was recorded."""
        if self.metric == "errors":
            return metrics.error_rate * 100.0
        if self.metric == "rps":
            return metrics.requests_per_s
        token = _TOKENS.get(self.metric)
        if token is not None:
            return None if streaming is None else streaming.value(*token)
        value: float | None = getattr(metrics, _LATENCY[self.metric])
        return value

    def check(self, actual: float | None) -> bool:
        """Whether ``actual`` (None fails) satisfies the threshold."""
        return actual is not None and _OPERATORS[self.op](actual, self.limit)


@attrs.frozen(slots=True)
class ThresholdResult:
    """A threshold checked against a run: the ``actual`` value (None: nothing to compare,
    which fails) and whether it ``passed``."""

    threshold: Threshold
    actual: float | None
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"threshold", "actual", "unit", "passed"}``."""
        return {
            "threshold": self.threshold.text,
            "actual": self.actual,
            "unit": self.threshold.unit,
            "passed": self.passed,
        }

    @property
    def observed(self) -> str:
        """What the run measured: ``p99 = 12.34 ms``, ``errors = 0.50%``, ``rps = 80.00/s``."""
        t = self.threshold
        if self.actual is None:
            return f"{t.metric}: no data"
        space = " " if t.unit == "ms" else ""
        return f"{t.metric} = {self.actual:.2f}{space}{t.unit}"

    def describe(self) -> str:
        """One line for the console: ``p99<200ms: pass (p99 = 12.34 ms)``."""
        verdict = "pass" if self.passed else "FAIL"
        return f"{self.threshold.text}: {verdict} ({self.observed})"


def parse_threshold(text: str) -> Threshold:
    """Read one threshold (see the module docstring).

    Raises:
        ThresholdError: an unknown metric or operator, or a value that does not fit the
            metric (a latency without a duration, errors without ``%`` or over 100%).
    """
    if not isinstance(text, str):
        raise ThresholdError(f"a threshold must be a string ({_EXAMPLES}), got {text!r}")
    shape = _SHAPE.fullmatch(text)
    if shape is None:
        raise ThresholdError(f"threshold {text!r} must be METRIC OP VALUE, {_EXAMPLES}")
    name, op, raw = shape.groups()
    metric = name.lower()
    if metric == "throughput":
        metric = "rps"
    if metric not in _LATENCY and metric not in _TOKENS and metric not in ("errors", "rps"):
        known = ", ".join(METRICS)
        raise ThresholdError(f"threshold {text!r}: unknown metric {name!r} (one of {known})")
    limit = _limit(metric, raw.strip(), text)
    return Threshold(metric, op, limit, f"{name}{op}{raw.strip()}")


def _limit(metric: str, raw: str, text: str) -> float:
    if metric == "errors":
        return _percent(raw, text)
    if metric == "rps":
        number = raw.removesuffix("/s").strip()
        if not _NUMBER.fullmatch(number):
            raise ThresholdError(f"threshold {text!r}: rps takes requests per second, like 50/s")
        return float(number)
    return _milliseconds(raw, text)


def _percent(raw: str, text: str) -> float:
    number = raw.removesuffix("%").strip()
    if not raw.endswith("%") or not _NUMBER.fullmatch(number):
        raise ThresholdError(f"threshold {text!r}: errors takes a percentage, like 0.1%")
    value = float(number)
    if value > 100:
        raise ThresholdError(f"threshold {text!r}: a percentage is at most 100%")
    return value


def _milliseconds(raw: str, text: str) -> float:
    if _NUMBER.fullmatch(raw):
        return float(raw)  # a plain number is milliseconds, as in k6
    from ..config import parse_duration

    try:
        seconds = parse_duration(raw)
    except ValueError:
        raise ThresholdError(
            f"threshold {text!r}: {raw!r} is not a duration (such as '200ms' or '1.5s')"
        ) from None
    if not math.isfinite(seconds):  # pragma: no cover - parse_duration refuses these
        raise ThresholdError(f"threshold {text!r}: {raw!r} is not finite")
    return seconds * 1000.0


def parse_thresholds(texts: Iterable[str]) -> tuple[Threshold, ...]:
    """`parse_threshold` for each; the first bad one raises `ThresholdError`."""
    return tuple(parse_threshold(text) for text in texts)


def evaluate(
    thresholds: Iterable[Threshold],
    metrics: PerformanceMetrics,
    streaming: StreamingFigures | None = None,
) -> tuple[ThresholdResult, ...]:
    """Check each threshold against ``metrics`` (a run's total) and ``streaming`` (its
    streamed events' token timings, None when nothing streamed), in order."""
    results = []
    for threshold in thresholds:
        actual = threshold.actual(metrics, streaming)
        results.append(ThresholdResult(threshold, actual, threshold.check(actual)))
    return tuple(results)


def all_passed(results: Iterable[ThresholdResult]) -> bool:
    """True when every result passed (and for none at all)."""
    return all(result.passed for result in results)
