"""Numeric bounds of config fields: one value serves as the attrs validator of a field built
in code and as the loader's description of what a TOML value must be."""

from __future__ import annotations

from typing import Any

import attrs

from ..errors import ConfigError
from ._messages import expected


@attrs.frozen
class Bounds:
    """Inclusive ``ge``/``le`` and exclusive ``gt`` limits; also an attrs validator."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None

    def admits(self, value: float) -> bool:
        """Whether ``value`` lies within every limit that is set."""
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
        )

    def describe(self) -> str:
        """The limits as a message fragment with a leading space (``" >= 1"``), or ``""``."""
        if self.ge is not None and self.le is not None:
            return f" between {self.ge} and {self.le}"
        if self.gt is not None:
            return f" > {self.gt}"
        if self.ge is not None:
            return f" >= {self.ge}"
        return f" <= {self.le}" if self.le is not None else ""

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        """Validate a field built in code.

        Raises:
            ConfigError: ``value`` is out of bounds; ``key`` is the field's name.
        """
        if not self.admits(value):
            noun = "an integer" if isinstance(value, int) else "a number"
            raise ConfigError(expected(noun + self.describe(), value), key=attribute.name)


def at_least(minimum: int) -> Bounds:
    """``value >= minimum``."""
    return Bounds(ge=minimum)


def above(minimum: int) -> Bounds:
    """``value > minimum``."""
    return Bounds(gt=minimum)


def between(minimum: int, maximum: int) -> Bounds:
    """``minimum <= value <= maximum``."""
    return Bounds(ge=minimum, le=maximum)


def bounds_of(attribute: attrs.Attribute[Any]) -> Bounds | None:
    """The field's `Bounds` validator, if it has one (also inside ``attrs.validators.and_``)."""
    validator = attribute.validator
    candidates = getattr(validator, "_validators", (validator,))
    return next((v for v in candidates if isinstance(v, Bounds)), None)
