"""The wording every config error shares: what was expected, what was found instead."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def expected(what: str, found: object) -> str:
    """``expected WHAT, got FOUND (TYPE)``: the one shape of a wrong-value message."""
    return f"expected {what}, got {found!r} ({type(found).__name__})"


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``; did you mean 'X'?`` for the closest candidate, or nothing when none is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
