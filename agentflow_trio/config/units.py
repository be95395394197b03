"""Durations and sizes: the `Duration` and `Size` field types, their parsers and renderers.

A duration is a float of seconds, written ``"500ms"``, ``"30s"``, ``"1h30m"`` or a number;
a size is an int of bytes, written ``"64MiB"``, ``"10MB"``, ``"512KiB"`` or a number. The
renderers give the shortest usual text, and parsing it gives back the same value.
"""

from __future__ import annotations

import enum
import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, TypeAlias

from ..errors import ConfigError
from ._messages import expected

__all__ = [
    "Duration",
    "Size",
    "Unit",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]


class Unit(enum.Enum):
    """The marker inside `Duration` and `Size`: the loader parses and renders a field by it."""

    DURATION = "duration"
    SIZE = "size"

    @property
    def examples(self) -> str:
        """Examples for an error message, such as ``"(such as '30s', '500ms' or '1h30m')"``."""
        return _DURATION_EXAMPLES if self is Unit.DURATION else _SIZE_EXAMPLES

    def parse(self, value: object) -> float:
        """`parse_duration` or `parse_size`.

        Raises:
            ConfigError: as the parser.
        """
        return parse_duration(value) if self is Unit.DURATION else parse_size(value)

    def format(self, value: Any) -> str:
        """`format_duration` or `format_size` of a field's value."""
        return format_duration(value) if self is Unit.DURATION else format_size(value)


Duration: TypeAlias = Annotated[float, Unit.DURATION]
"""A duration in seconds (a float); TOML accepts ``"500ms"``, ``"30s"``, ``"1h30m"``, 2.5."""

Size: TypeAlias = Annotated[int, Unit.SIZE]
"""A size in bytes (an int); TOML accepts ``"64MiB"``, ``"10MB"``, ``"512KiB"``, 1024."""


# --------------------------------------------------------------------------- durations

_DURATION_UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),
    "ms": Fraction(1, 10**3),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})(ns|us|µs|ms|s|m|h|d)")
_DURATION_TEXT = re.compile(rf"(?:{_NUMBER}(?:ns|us|µs|ms|s|m|h|d))+|{_NUMBER}")
# The longest text `format_duration` writes for a float is about 330 characters (5e-324s);
# longer text is no duration or size, and never a 4,300-digit number int() refuses.
_MAX_TEXT = 400
_DURATION_EXAMPLES = "(such as '30s', '500ms' or '1h30m')"
_DURATION_EXPECTED = f"a duration >= 0 {_DURATION_EXAMPLES}"


def parse_duration(value: object) -> float:
    """Return ``value`` as seconds: ``"100ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1.5s"``.

    A plain number (int, float or numeric string) is seconds. Units: ns, us (µs), ms, s,
    m, h, d; components may repeat and are summed exactly, then rounded once to a float.

    Raises:
        ConfigError: ``value`` is negative, not finite, a bool, not a duration, or text
            longer than 400 characters.
    """
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_TEXT or not _DURATION_TEXT.fullmatch(text):
            raise ConfigError(expected(_DURATION_EXPECTED, value))
        if text[-1].isdigit() or text[-1] == ".":
            total = Fraction(text)
        else:
            total = sum(
                (Fraction(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text)),
                Fraction(0),
            )
        return _finite_seconds(total, value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _finite_seconds(value, value)
    raise ConfigError(expected(_DURATION_EXPECTED, value))


def _finite_seconds(total: Fraction | float, original: object) -> float:
    try:
        seconds = float(total)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(expected(_DURATION_EXPECTED, original))
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds as the shortest usual form: ``"30s"``, ``"500ms"``, ``"1h30m"``, ``"1.5s"``.

    ``parse_duration(format_duration(x)) == x`` for every finite ``x >= 0``.

    Raises:
        ValueError: ``seconds`` is negative or not finite.
    """
    seconds = float(seconds)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot render {seconds!r} as a duration")
    if seconds == 0:
        return "0s"
    if seconds.is_integer():
        hours, rest = divmod(int(seconds), 3600)
        minutes, secs = divmod(rest, 60)
        parts = ((hours, "h"), (minutes, "m"), (secs, "s"))
        return "".join(f"{n}{unit}" for n, unit in parts if n)
    millis = round(seconds * 1000)
    if seconds < 1 and millis and float(Fraction(millis, 1000)) == seconds:
        return f"{millis}ms"
    return f"{Decimal(repr(seconds)):f}s"


# --------------------------------------------------------------------------- sizes

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_TEXT = re.compile(rf"({_NUMBER})\s*([A-Za-z]*)")
_SIZE_EXAMPLES = "(such as '64MiB', '10MB' or 4096)"
_SIZE_EXPECTED = f"a size >= 0 {_SIZE_EXAMPLES}"
_SIZE_RENDER = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_SIZE_RENDER_DECIMAL = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))


def parse_size(value: object) -> int:
    """Return ``value`` in bytes: an int, or ``"64MiB"``, ``"10MB"``, ``"512KiB"``, ``"1.5GiB"``.

    Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB, MB, GB, TB)
    powers of 1000; units are case-insensitive; ``B`` or no unit means bytes.

    Raises:
        ConfigError: ``value`` is negative, a bool, not a whole number of bytes, garbage,
            or text longer than 400 characters.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and len(value) <= _MAX_TEXT:
        match = _SIZE_TEXT.fullmatch(value.strip())
        if match and match[2].lower() in _SIZE_UNITS:
            total = Fraction(match[1]) * _SIZE_UNITS[match[2].lower()]
            if total.denominator == 1:
                return int(total)
    raise ConfigError(expected(_SIZE_EXPECTED, value))


def format_size(size: int) -> str:
    """Render bytes with the largest unit that divides them: ``"64MiB"``, ``"10MB"``, ``"7B"``.

    ``parse_size(format_size(n)) == n`` for every int ``n >= 0``.
    """
    for unit, factor in (*_SIZE_RENDER, *_SIZE_RENDER_DECIMAL):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
