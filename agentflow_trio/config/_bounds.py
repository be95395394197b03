"""Numeric bounds of config fields: one value serves as the attrs validator of a field built
in code and as the loader's description of what a TOML value must be.

Every int, size and duration field has a lower and an upper bound: the upper one is far
above what a real deployment needs and well below what breaks something (a C ``int``, a
timer, memory), so a typo such as ``worker_pool_size = 100000000`` is refused at load,
naming the key and the bound, instead of hanging or crashing at start.
"""

from __future__ import annotations

import math
from collections.abc import Sized
from typing import Any, Final, TypeGuard

import attrs

from ..errors import ConfigError
from ._messages import expected
from .units import Unit

__all__ = [
    "DAY",
    "HOUR",
    "INT32_MAX",
    "Bounds",
    "MaxItems",
    "between",
    "bounds_of",
    "duration",
    "size",
]

HOUR: Final = 3600.0
DAY: Final = 86400.0
INT32_MAX: Final = 2**31 - 1
"""The largest C ``int``: what ``gc.set_threshold`` and friends take."""


@attrs.frozen
class Bounds:
    """Inclusive ``ge``/``le`` and exclusive ``gt`` limits; also an attrs validator.

    ``integer`` admits ints only (never bools); otherwise ints and finite floats. NaN is
    never admitted. ``unit`` (a `Unit`) renders the limits as durations or sizes.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    integer: bool = False
    unit: Unit | None = None

    def admits(self, value: object) -> bool:
        """Whether ``value`` is a number of the right kind within every limit that is set."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
        )

    def describe(self, value: object = None) -> str:
        """The limits as a message fragment with a leading space (``" >= 1"``), or ``""``.

        For a number ``value`` that breaks exactly one limit, only that limit is named
        (``" <= 65536"``); otherwise all of them (``" between 1 and 65536"``).
        """
        low = f">= {self._show(self.ge)}" if self.ge is not None else None
        if self.gt is not None:
            low = f"> {self._show(self.gt)}"
        high = f"<= {self._show(self.le)}" if self.le is not None else None
        if _is_number(value):
            below = (self.ge is not None and value < self.ge) or (
                self.gt is not None and value <= self.gt
            )
            above = self.le is not None and value > self.le
            if below and low is not None:
                return f" {low}"
            if above and high is not None:
                return f" {high}"
        if self.ge is not None and self.le is not None and self.gt is None:
            return f" between {self._show(self.ge)} and {self._show(self.le)}"
        parts = [part for part in (low, high) if part is not None]
        return f" {' and '.join(parts)}" if parts else ""

    def noun(self) -> str:
        """What a value must be: ``"an integer"``, ``"a number"``, ``"a duration"``, ..."""
        if self.unit is not None:
            return f"a {self.unit.value}"
        return "an integer" if self.integer else "a number"

    def _show(self, limit: float) -> str:
        if self.unit is Unit.DURATION and limit and limit % DAY == 0:
            return f"{int(limit // DAY)}d"
        if self.unit is not None:
            return self.unit.format(limit)
        return str(int(limit)) if float(limit).is_integer() else str(limit)

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        """Validate a field built in code.

        Raises:
            ConfigError: ``value`` is not a number of the right kind, is NaN, or is out
                of bounds; ``key`` is the field's name.
        """
        if not self.admits(value):
            raise ConfigError(
                expected(self.noun() + self.describe(value), value), key=attribute.name
            )


def _is_number(value: object) -> TypeGuard[float]:
    """An int or a float that is not NaN (never a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def between(minimum: int, maximum: int) -> Bounds:
    """An integer with ``minimum <= value <= maximum``."""
    return Bounds(ge=minimum, le=maximum, integer=True)


def duration(*, le: float, ge: float | None = None, gt: float | None = None) -> Bounds:
    """A duration in seconds, ``>= ge`` (or ``> gt``; default ``>= 0``) and ``<= le``."""
    if ge is None and gt is None:
        ge = 0
    return Bounds(ge=ge, gt=gt, le=le, unit=Unit.DURATION)


def size(*, le: int, ge: int = 0) -> Bounds:
    """A size in bytes, ``ge <= value <= le``."""
    return Bounds(ge=ge, le=le, integer=True, unit=Unit.SIZE)


@attrs.frozen
class MaxItems:
    """An attrs validator: a list or dict field holds at most ``limit`` items."""

    limit: int

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: Sized) -> None:
        """Raises: ConfigError: ``value`` holds more than ``limit`` items."""
        if len(value) > self.limit:
            raise ConfigError(
                f"expected at most {self.limit} entries, got {len(value)}", key=attribute.name
            )


def bounds_of(attribute: attrs.Attribute[Any]) -> Bounds | None:
    """The field's `Bounds` validator, if it has one (also inside ``attrs.validators.and_``
    or ``attrs.validators.optional``)."""
    validator = attribute.validator
    candidates = getattr(validator, "_validators", (validator,))
    candidates = tuple(getattr(v, "validator", v) for v in candidates)
    return next((v for v in candidates if isinstance(v, Bounds)), None)
