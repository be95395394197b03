"""The wording every config error shares: what was expected, what was found instead, and
the "did you mean" hint for a misspelt key or choice."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

MAX_SHOWN: Final = 120
"""At most this many characters of a wrong value are echoed in a message (then ``...``)."""

_CUTOFF: Final = 0.6  # difflib's default closeness for a hint inside the table
_ELSEWHERE_CUTOFF: Final = 0.9  # a key of another table is hinted only when nearly exact
_CLOSE: Final = 0.9  # nearly equal: one slip away
_MAX_HINTS: Final = 5


def safe_repr(value: object) -> str:
    """``repr(value)`` cut to `MAX_SHOWN` characters; never raises (a 10,000-digit int or
    a 5,000-deep list has no repr: it reads ``<int too large to show>``)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__} too large to show>"
    if len(text) > MAX_SHOWN:
        return f"{text[: MAX_SHOWN - 3]}... ({len(text)} characters)"
    return text


def expected(what: str, found: object, *, shown: str | None = None) -> str:
    """``expected WHAT, got FOUND (TYPE)``: the one shape of a wrong-value message.

    ``shown`` replaces the repr of ``found`` (a masked secret, a redacted URL).
    """
    text = safe_repr(found) if shown is None else shown
    return f"expected {what}, got {text} ({type(found).__name__})"


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[-.\s]+")


def _normal(name: str) -> str:
    """The snake_case a key was probably meant as: ``maxConnections``, ``MAX-CONNECTIONS``
    and ``max connections`` all read ``max_connections``."""
    return _SEPARATORS.sub("_", _CAMEL.sub("_", name.strip())).lower()


def _closest(name: str, candidates: Sequence[str], cutoff: float) -> tuple[float, list[str]]:
    """The best difflib ratio of ``name`` against ``candidates`` and every candidate that
    reaches it (a tie is shown as a tie, never settled by alphabetical order)."""
    scores = [(difflib.SequenceMatcher(None, name, c).ratio(), c) for c in candidates]
    best = max((score for score, _ in scores), default=0.0)
    if best < cutoff:
        return 0.0, []
    return best, sorted(c for score, c in scores if best - score < 1e-9)


def closest(
    name: str, candidates: Iterable[str], elsewhere: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """What ``name`` was probably meant as, best first (at most five).

    In order: a candidate equal to it up to case and separators; the candidates difflib
    finds nearly equal (ratio >= 0.9, best first); the places (from ``elsewhere``: field
    name -> dotted paths in other tables) of a field of that name or nearly that name, for
    a key put in the wrong table, followed by the closest candidates; else the closest
    candidates (ratio >= 0.6). A tie lists every candidate that reaches the best ratio.
    """
    names = list(candidates)
    exact = [n for n in dict.fromkeys((name.lower(), _normal(name))) if n in names]
    if exact:
        return exact
    norm = _normal(name)
    score, near = _closest(norm, names, _CUTOFF)
    if score >= _ELSEWHERE_CUTOFF:
        # Every nearly equal candidate, best first: one slip away from two keys
        # ("deploymenst": deployment, deployments) names both.
        ranked = sorted(names, key=lambda c: -difflib.SequenceMatcher(None, norm, c).ratio())
        close = [c for c in ranked if difflib.SequenceMatcher(None, norm, c).ratio() >= _CLOSE]
        return list(dict.fromkeys(near + close))[:_MAX_HINTS]
    others = elsewhere or {}
    fields = [norm] if norm in others else _closest(norm, list(others), _ELSEWHERE_CUTOFF)[1]
    paths = [path for field in fields for path in others[field]]
    return (paths + near)[:_MAX_HINTS]


def suggest(
    name: str, candidates: Iterable[str], elsewhere: Mapping[str, Sequence[str]] | None = None
) -> str:
    """``; did you mean 'X'?`` (or ``'X' or 'Y'`` on a tie) from `closest`, or nothing."""
    hints = [repr(h) for h in closest(name, candidates, elsewhere)]
    if not hints:
        return ""
    listing = hints[0] if len(hints) == 1 else f"{', '.join(hints[:-1])} or {hints[-1]}"
    return f"; did you mean {listing}?"
