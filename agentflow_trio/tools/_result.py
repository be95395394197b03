"""`ToolResult`: what one tool call produced, whatever the outcome, ready for the model."""

from __future__ import annotations

import enum
import itertools
import json
import os
import re
from typing import Any, Final, Literal, TypeAlias

import attrs

from .. import _json
from .._frozen import fast_init
from ..errors import ToolArgumentError, ToolError, UnknownTool
from ..llm.types import Message

__all__ = ["ToolOutcome", "ToolResult", "cancelled_result", "dumps", "new_call_id"]

ToolOutcome: TypeAlias = Literal["ok", "error", "timed_out", "cancelled"]

_SHORT_EXPONENT: Final = re.compile(rb"e-[0-9](?![0-9])")
_CALL_PREFIX: Final = "call_" + os.urandom(3).hex() + "_"
_CALL_COUNTER = itertools.count(1)


def new_call_id() -> str:
    """A process-unique id for a call that did not come with one from the model."""
    return f"{_CALL_PREFIX}{next(_CALL_COUNTER):x}"


@fast_init
@attrs.frozen(slots=True)
class ToolResult:
    """The result of one tool call: exactly one per call, even a failed or cancelled one.

    ``outcome`` is ``"ok"`` (``output`` is the tool's dict), ``"error"`` (bad arguments,
    unknown tool, or the tool raised), ``"timed_out"`` or ``"cancelled"``; for every outcome
    but ``"ok"``, ``error`` is a dict with at least ``type`` and ``message``, written for the
    model to read. ``traceback`` (a tool that raised) is for logs only: it is never sent to
    the model. ``duration`` is in seconds of ``trio.current_time()``. Neither takes part
    in equality. Treat ``output`` and ``error`` as read-only.
    """

    call_id: str
    name: str
    outcome: ToolOutcome
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    duration: float = attrs.field(default=0.0, eq=False)
    traceback: str | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def ok(self) -> bool:
        """True if the tool ran and returned."""
        return self.outcome == "ok"

    def content(self) -> str:
        """The JSON text the model sees: the output, or ``{"error": {...}}``."""
        return dumps(self.output if self.outcome == "ok" else {"error": self.error})

    def to_message(self) -> Message:
        """The ``tool`` message answering call ``call_id`` (for every outcome; one that
        did not succeed is marked ``is_error``)."""
        if self.outcome == "ok":
            return Message("tool", dumps(self.output), None, (), self.call_id)
        text = dumps({"error": self.error})
        return Message("tool", text, None, (), self.call_id, (), None, True)

    def unwrap(self) -> dict[str, Any]:
        """The output if the call succeeded, else raise.

        Raises:
            ToolArgumentError: the arguments did not fit the schema (``field`` is set).
            UnknownTool: no tool of that name.
            ToolError: the tool raised, timed out or was cancelled.
        """
        if self.outcome == "ok" and self.output is not None:
            return self.output
        error = self.error or {}
        message = str(error.get("message", self.outcome))
        kind = error.get("type")
        if kind == "invalid_arguments":
            raise ToolArgumentError(message, tool=self.name, field=error.get("field"))
        if kind == "unknown_tool":
            raise UnknownTool(message)
        raise ToolError(f"tool {self.name!r} {self.outcome}: {message}")


def cancelled_result(call_id: str, name: str, message: str, duration: float = 0.0) -> ToolResult:
    """A ``cancelled`` result: the call was stopped, or never started, for ``message``."""
    error = {"type": "cancelled", "message": message}
    return ToolResult(call_id, name, "cancelled", None, error, duration)


def dumps(value: Any) -> str:
    """Compact JSON text; attrs instances, sets, tuples and enums are turned into JSON.

    A value of plain JSON types is encoded by orjson (`_json.dumps_plain`), unless the
    text has a ``null`` (maybe a NaN or an infinity, which the standard library writes
    ``NaN``/``Infinity``) or a one-digit negative exponent (``1e-7``, written ``1e-07``):
    those, and everything else, by the standard library, so the text is as before.
    """
    fast = _json.dumps_plain(value)
    # ``find``, not ``in``: a bytes ``in`` first tries its operand as an int and pays for
    # the error (several times the cost of the search itself).
    if (
        fast is not None
        and fast.find(b"null") < 0
        and (fast.find(b"e-") < 0 or _SHORT_EXPONENT.search(fast) is None)
    ):
        return fast.decode()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)
