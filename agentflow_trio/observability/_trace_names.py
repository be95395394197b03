"""Span names (``event ask``, ``invoke_agent ask``, ``execute_tool lookup``, ``chat
gpt-4o``), made once per distinct name and shared by every span that has it.

Why: an ended span waits for its batch (512 spans) with its name; a name made per span is
one more object per span alive that long, and the memory such objects take is what the
export thread later reads and frees cold (``bench/tracing_overhead.py --cache`` counts the
cache misses). A known name is one dictionary lookup, cheaper than the concatenation. The
tables are bounded: names come from events, agents, tools and models, and an event type
comes from outside (HTTP, Redis); past the bound a name is made per span again.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHAT_NAMES", "EVENT_NAMES", "INVOKE_NAMES", "TOOL_NAMES", "named"]

_LIMIT: Final = 1024

EVENT_NAMES: Final[dict[str, str]] = {}
"""Event type -> its span's name, ``event <type>``."""
INVOKE_NAMES: Final[dict[str, str]] = {}
"""Agent name -> its run's span name, ``invoke_agent <agent>``."""
TOOL_NAMES: Final[dict[str, str]] = {}
"""Tool name -> its call's span name, ``execute_tool <tool>``."""
CHAT_NAMES: Final[dict[str, str]] = {}
"""Model -> its call's span name, ``chat <model>``."""


def named(table: dict[str, str], prefix: str, suffix: str) -> str:
    """``prefix + suffix``, kept in ``table`` under ``suffix`` while it has room. Callers
    look the table up first (``table.get(suffix) or named(...)``): one C call when known."""
    name = prefix + suffix
    if len(table) < _LIMIT:
        table[suffix] = name
    return name
