"""The W3C ``traceparent`` check shared by ``tracing`` and its spans: a value from outside
(an HTTP header, a Redis entry, an event's metadata) is bounded, and garbage is ignored."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_TRACEPARENT", "TRACEPARENT", "parse_traceparent"]

TRACEPARENT: Final = "traceparent"
MAX_TRACEPARENT: Final = 55
"""The length of a version-00 ``traceparent``; anything longer is refused unread."""

_FORMAT: Final = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parse_traceparent(value: object) -> str | None:
    """``value`` (str or bytes) as a W3C ``traceparent`` of version 00 whose ids are not
    all zero, lower-cased; None for anything else."""
    if isinstance(value, bytes):
        if len(value) > MAX_TRACEPARENT + 2:
            return None
        value = value.decode("latin-1")
    if not isinstance(value, str) or len(value) > MAX_TRACEPARENT + 2:
        return None
    found = _FORMAT.fullmatch(value.strip().lower())
    if found is None or set(found[1]) == {"0"} or set(found[2]) == {"0"}:
        return None
    return found[0]
