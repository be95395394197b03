"""Span names (``event ask``, ``invoke_agent ask``, ``execute_tool lookup``, ``chat
gpt-4o``), made once per distinct name and shared by every span that has it.

Why: an ended span waits for its batch (512 spans) with its name; a name made per span is
one more object per span alive that long, and the memory such objects take is what the
export thread later reads and frees cold (``bench/tracing_overhead.py --cache`` counts the
cache misses). A known name is one dictionary lookup, no dearer than the concatenation.
The tables are bounded: names come from events, agents, tools and models, and an event
type comes from outside (HTTP, Redis); past the bound a name is made per span again.
"""

from __future__ import annotations

from typing import Final, final

__all__ = ["CHAT_NAMES", "EVENT_NAMES", "INVOKE_NAMES", "TOOL_NAMES", "SpanNames"]

_LIMIT: Final = 1024


@final
class SpanNames(dict[str, str]):
    """``names[suffix]`` is ``prefix + suffix``, kept (while there is room) on first use."""

    __slots__ = ("_limit", "_prefix")

    def __init__(self, prefix: str, limit: int = _LIMIT) -> None:
        super().__init__()
        self._prefix = prefix
        self._limit = limit

    def __missing__(self, suffix: str) -> str:
        name = self._prefix + suffix
        if len(self) < self._limit:
            self[suffix] = name
        return name


EVENT_NAMES: Final = SpanNames("event ")
"""Event type -> its span's name."""
INVOKE_NAMES: Final = SpanNames("invoke_agent ")
"""Agent name -> its run's span name."""
TOOL_NAMES: Final = SpanNames("execute_tool ")
"""Tool name -> its call's span name."""
CHAT_NAMES: Final = SpanNames("chat ")
"""Model -> its call's span name."""
