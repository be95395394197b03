"""Load shapes: ``"5m:100,10m:500,5m:100"`` parsed into a `Plan` of linear ramps.

A `Plan` is a sequence of `Stage` values. Each stage ramps its target linearly from where
the previous stage ended (the first from 0) to its own target over its duration, as k6
does; a constant load is one stage whose start equals its target (`Plan.constant`).
Stress and spike tests are just shapes: ``"2m:100,5m:100,2m:400,5m:400,2m:0"`` (stress),
``"1m:10,0s:500,1m:500,0s:10,1m:10"`` (spike: a zero-length stage jumps at once).

A target is a number of virtual users (closed model, an int) or an arrival rate (open
model): ``"200/s"``, ``"600/m"``, ``"36000/h"``, or a plain number meaning per second.

Guarantees: parsing never raises anything but `StageError` (a ``ValueError``) whose message
names the offending stage; a parsed plan is non-empty and lasts more than zero seconds.
`Plan.arrivals` is exact (closed-form inverse of the integrated rate), so the open model
schedules ``rate * duration`` arrivals for a constant rate with an integral product.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import attrs

from ..config import format_duration, parse_duration
from ..errors import ConfigError

__all__ = ["Plan", "Stage", "StageError", "parse_rate", "parse_stages"]

_RATE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:/\s*(s|sec|m|min|h))?\s*")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_FORM = "DURATION:TARGET (such as '5m:100' or '30s:200/s')"


class StageError(ValueError):
    """A load shape (``--stages``, ``--rate``) is malformed; the message says which part."""


@attrs.frozen(slots=True)
class Stage:
    """One leg of a plan: the target moves linearly from ``start`` to ``target`` over
    ``duration`` seconds. ``start``/``target`` are users (closed) or arrivals/s (open)."""

    duration: float
    start: float
    target: float

    def value_at(self, offset: float) -> float:
        """The target ``offset`` seconds into this stage (clamped to the stage)."""
        if self.duration <= 0 or offset >= self.duration:
            return self.target
        if offset <= 0:
            return self.start
        return self.start + (self.target - self.start) * offset / self.duration

    def arrivals(self) -> float:
        """Expected arrivals over the whole stage when the target is a rate."""
        return (self.start + self.target) * self.duration / 2.0

    def time_of_arrival(self, m: float) -> float:
        """The offset at which the integrated rate reaches ``m`` (``0 < m <= arrivals()``)."""
        a, b, d = self.start, self.target, self.duration
        # a*t + (b-a)*t^2/(2d) = m, in the form that stays stable when a == b or a == 0.
        root = math.sqrt(max(a * a + 2.0 * (b - a) * m / d, 0.0))
        return min(2.0 * m / (a + root), d)


@attrs.frozen(slots=True)
class Plan:
    """A whole load shape: stages back to back, ``total`` seconds long."""

    stages: tuple[Stage, ...]
    is_rate: bool = False

    @classmethod
    def constant(cls, duration: float, target: float, *, is_rate: bool = False) -> Plan:
        """One stage holding ``target`` for ``duration`` seconds (``--vus``/``--rate``)."""
        if not duration > 0:
            raise StageError(f"the duration must be > 0, got {format_duration(duration)}")
        return cls((Stage(duration, target, target),), is_rate)

    @property
    def total(self) -> float:
        """The length of the plan in seconds."""
        return sum(stage.duration for stage in self.stages)

    @property
    def peak(self) -> float:
        """The highest target reached."""
        return max(max(s.start, s.target) for s in self.stages)

    def locate(self, t: float) -> tuple[int, float]:
        """The index of the stage running at ``t`` seconds in, and the offset into it.

        A time on a boundary belongs to the later stage; past the end, to the last one.
        """
        begin = 0.0
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            end = begin + stage.duration
            if t < end or index == last:
                return index, t - begin
            begin = end
        raise AssertionError("unreachable: a plan has at least one stage")

    def value_at(self, t: float) -> float:
        """The target (users or rate) ``t`` seconds into the plan."""
        index, offset = self.locate(t)
        return self.stages[index].value_at(offset)

    def users_at(self, t: float) -> int:
        """Virtual users active ``t`` seconds in: the target rounded half up."""
        return math.floor(self.value_at(t) + 0.5)

    def stage_begin(self, index: int) -> float:
        """When stage ``index`` starts, in seconds from the plan's start."""
        return sum(stage.duration for stage in self.stages[:index])

    def next_change(self, t: float) -> float:
        """The next time after ``t`` when `users_at` may change (at most the stage's end)."""
        index, offset = self.locate(t)
        stage = self.stages[index]
        begin = t - offset
        end = begin + stage.duration
        slope = (stage.target - stage.start) / stage.duration if stage.duration > 0 else 0.0
        if slope == 0:
            return max(end, t)
        n = self.users_at(t)
        threshold = n + 0.5 if slope > 0 else n - 0.5
        when = max(begin + (threshold - stage.start) / slope, t)
        for _ in range(64):  # rounding may land a few ulps short of the threshold
            if when >= end or self.users_at(when) != n:
                return min(when, end)
            when = math.nextafter(when, math.inf)
        return min(when + 1e-9, end)

    def arrivals(self) -> Iterator[float]:
        """Arrival times (seconds from the start) of the open model, in order.

        The k-th arrival (k = 0, 1, ...) comes when the integrated rate reaches k + 1/2, so
        a constant rate spaces arrivals evenly, half a gap from the start.
        """
        begin = 0.0
        before = 0.0  # arrivals expected before this stage
        k = 0
        for stage in self.stages:
            inside = stage.arrivals()
            while k + 0.5 - before <= inside and inside > 0:
                yield begin + stage.time_of_arrival(k + 0.5 - before)
                k += 1
            before += inside
            begin += stage.duration

    def describe(self, index: int) -> str:
        """A short label of stage ``index``: ``"5m 0->100 users"`` or ``"10s 200/s"``."""
        stage = self.stages[index]
        unit = "/s" if self.is_rate else " users"
        if stage.start == stage.target:
            span = f"{_number(stage.target)}{unit}"
        else:
            span = f"{_number(stage.start)}->{_number(stage.target)}{unit}"
        return f"{format_duration(stage.duration)} {span}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def parse_rate(text: str) -> float:
    """Arrivals per second from ``"200/s"``, ``"600/m"``, ``"36000/h"`` or ``"50"`` (per s).

    Raises:
        StageError: not a rate, or not > 0.
    """
    rate = _rate(text)
    if rate is None or rate <= 0:
        raise StageError(f"rate {text!r} must be a number > 0 per s, m or h (such as '200/s')")
    return rate


def _rate(text: str) -> float | None:
    match = _RATE.fullmatch(text)
    if match is None:
        return None
    return float(match[1]) / _PER[match[2]]


def parse_stages(text: str, *, rates: bool = False) -> Plan:
    """Parse ``"DURATION:TARGET,..."`` into a `Plan`.

    With ``rates`` false a target is a whole number of users unless a target carries a
    rate unit (``/s``, ``/m``, ``/h``): then the whole plan is an open-model rate plan and
    plain numbers in it mean per second. With ``rates`` true every target is a rate.

    Raises:
        StageError: an empty list, a stage not of the form ``DURATION:TARGET``, a bad
            duration or target, or a plan that lasts zero seconds.
    """
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in parts):
        raise StageError(f"stages {text!r} must be a comma-separated list of {_FORM}")
    is_rate = rates or any("/" in part.partition(":")[2] for part in parts)
    stages: list[Stage] = []
    previous = 0.0
    for part in parts:
        duration, target = _parse_stage(part, is_rate)
        stages.append(Stage(duration, previous, target))
        previous = target
    plan = Plan(tuple(stages), is_rate)
    if not plan.total > 0:
        raise StageError(f"stages {text!r} last 0s: at least one stage needs a duration > 0")
    return plan


def _parse_stage(part: str, is_rate: bool) -> tuple[float, float]:
    duration_text, colon, target_text = part.partition(":")
    if not colon or not duration_text.strip() or not target_text.strip():
        raise StageError(f"stage {part!r} must be {_FORM}")
    try:
        duration = parse_duration(duration_text.strip())
    except ConfigError:
        raise StageError(
            f"stage {part!r}: {duration_text.strip()!r} is not a duration "
            "(such as '30s', '500ms' or '5m')"
        ) from None
    return duration, _parse_target(part, target_text.strip(), is_rate)


def _parse_target(part: str, text: str, is_rate: bool) -> float:
    if is_rate:
        rate = _rate(text)
        if rate is None:
            raise StageError(f"stage {part!r}: target {text!r} is not a rate (such as '200/s')")
        return rate
    if not text.isdigit():
        raise StageError(
            f"stage {part!r}: target {text!r} must be a whole number of virtual users "
            "(or a rate such as '200/s' for the open model)"
        )
    return float(int(text))
