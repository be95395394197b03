"""What a tool call is, for the registry and the fan-out alike.

`CallSpec` (the shapes a call may take), `OnError` (the fan-out's failure policies),
`as_call` (any `CallSpec` as a `ToolCall` with an id) and `Registry` (the two calls the
fan-out makes on a registry). Both ``base`` and ``fanout`` import these from here, so the
fan-out never imports the registry that uses it.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from ..llm.types import ToolCall
from ._result import ToolResult, new_call_id

if TYPE_CHECKING:
    from ..agents import Context

__all__ = ["CallSpec", "OnError", "Registry", "as_call"]

OnError: TypeAlias = Literal["continue", "cancel_siblings"]
CallSpec: TypeAlias = ToolCall | tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], str]
"""One call for `ToolRegistry.call_many`: a model's `ToolCall`, ``(name, args)`` or
``(name, args, call_id)``."""


class Registry(Protocol):
    """What the fan-out needs from a registry (`ToolRegistry` is the one implementation).

    ``call`` runs one call in the caller's task; ``_call_inline`` answers it without a
    checkpoint when it can (see `ToolRegistry._call_inline`).
    """

    async def call(
        self, ctx: Context | None, call: ToolCall, /, *, timeout: float | None = None
    ) -> ToolResult: ...

    def _call_inline(
        self, ctx: Context | None, call: ToolCall, timeout: float | None, /
    ) -> ToolResult | Coroutine[Any, Any, ToolResult] | None: ...


def as_call(item: CallSpec) -> ToolCall:
    """``item`` as a `ToolCall` with an id (a new one if it has none).

    Raises:
        TypeError: ``item`` is neither a `ToolCall` nor a ``(name, args[, call_id])`` tuple.
    """
    if isinstance(item, ToolCall):
        if item.id:
            return item
        return ToolCall(
            new_call_id(), item.name, item.arguments, item.raw_arguments, item.parse_error
        )
    if isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], str):
        call_id = item[2] if len(item) == 3 else new_call_id()
        return ToolCall(str(call_id), item[0], item[1])
    raise TypeError(f"a call is a ToolCall or a (name, args) tuple, not {item!r}")
