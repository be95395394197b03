"""What structured output sends for one output type, built once per type and kept.

An `OutputPlan` holds everything a call needs that depends only on the type: its
`TypeSchema`; the schema as the wire carries it (objects closed with
``additionalProperties: false`` where the schema left them open, as OpenAI's SDK sends a
pydantic model; a non-object type wrapped as ``{"result": ...}`` for the native and tool
modes, whose providers want an object at the root); whether that schema qualifies for
OpenAI's strict mode; the ``response_format`` value, the ``final_result`` `ToolSpec`, and
the prompted-mode instruction. `plan_for` returns the cached plan of a type (or of a
ready `TypeSchema`), so a call pays a dict lookup, not a schema build.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Generic, TypeVar, final

from .. import _json
from ..schema import TypeSchema
from .types import ToolSpec

__all__ = ["FINAL_RESULT", "WRAP_KEY", "OutputPlan", "plan_for", "strict_qualifies"]

T = TypeVar("T")

FINAL_RESULT: Final = "final_result"
"""The name of the tool the tool mode forces the model to call with its answer."""
WRAP_KEY: Final = "result"
"""The one property a non-object output is wrapped in (native and tool modes)."""

_MAX_PLANS: Final = 512
_PLANS: dict[Any, OutputPlan[Any]] = {}
_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_-]+")
_STRICT_KEYS: Final = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "description",
        "title",
        "$defs",
        "$ref",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
    }
)
_NOT_SCHEMAS: Final = frozenset({"enum", "const", "required", "default", "examples", "title"})
_SAYS_WHAT: Final = frozenset({"type", "anyOf", "$ref", "enum", "const"})
_TOOL_DESCRIPTION: Final = "Give the final answer: its arguments are the result."


@final
class OutputPlan(Generic[T]):
    """The per-type values of structured output (see the module docstring).

    ``wrapped`` is true when the type's schema is not an object: the native and tool
    modes then send ``wire_schema`` (``{"result": <schema>}``, required, nothing else)
    and take the value out of ``result``; the prompted mode asks for the bare value.
    """

    __slots__ = (
        "instruction",
        "name",
        "response_format",
        "schema",
        "strict",
        "tool",
        "wire_schema",
        "wrapped",
    )

    def __init__(self, schema: TypeSchema[T]) -> None:
        self.schema = schema
        self.name = _NAME_CHARS.sub("_", schema.name)[:64] or "output"
        inner = _closed(schema.json_schema)
        self.wrapped = inner.get("type") != "object"
        self.wire_schema: dict[str, Any] = (
            {
                "type": "object",
                "properties": {WRAP_KEY: inner},
                "required": [WRAP_KEY],
                "additionalProperties": False,
            }
            if self.wrapped
            else inner
        )
        self.strict = strict_qualifies(self.wire_schema)
        self.response_format: Mapping[str, Any] = {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.wire_schema, "strict": self.strict},
        }
        self.tool = ToolSpec(FINAL_RESULT, _TOOL_DESCRIPTION, self.wire_schema)
        self.instruction = (
            f"Answer with a single JSON value ({self.name}) and nothing else: no prose, no "
            f"code fence. It must match this JSON schema:\n{_json.dumps_str(inner)}"
        )

    def __repr__(self) -> str:
        return f"<OutputPlan {self.name} wrapped={self.wrapped} strict={self.strict}>"


def plan_for(output_type: Any) -> OutputPlan[Any]:
    """The plan of ``output_type`` (a type, or a `TypeSchema`), from the cache when it has
    been seen; at most 512 are kept (the oldest is dropped first).

    Raises:
        TypeError: the type is not supported by `TypeSchema`.
    """
    try:
        return _PLANS[output_type]
    except KeyError:
        pass
    except TypeError:  # unhashable: build every time
        return OutputPlan(_schema(output_type))
    plan = OutputPlan(_schema(output_type))
    if len(_PLANS) >= _MAX_PLANS:
        del _PLANS[next(iter(_PLANS))]
    _PLANS[output_type] = plan
    return plan


def _closed(schema: Any, depth: int = 0) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists its
    properties and says nothing about others (a pydantic model's schema), as OpenAI's
    SDK sends a pydantic type: the model is told not to add keys, which validation would
    ignore anyway; the rest of the schema is shared, not copied."""
    if depth > 64:
        return schema
    if isinstance(schema, list):
        items = [_closed(item, depth + 1) for item in schema]
        return items if any(a is not b for a, b in zip(items, schema, strict=True)) else schema
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] | None = None
    for key, value in schema.items():
        if key in _NOT_SCHEMAS:
            continue
        if key in ("properties", "$defs") and isinstance(value, Mapping):
            new: Any = {k: _closed(v, depth + 1) for k, v in value.items()}
            if all(new[k] is value[k] for k in value):
                continue
        else:
            new = _closed(value, depth + 1)
            if new is value:
                continue
        out = dict(schema) if out is None else out
        out[key] = new
    if "properties" in schema and "additionalProperties" not in schema:
        out = dict(schema) if out is None else out
        out["additionalProperties"] = False
    return schema if out is None else out


def _schema(output_type: Any) -> TypeSchema[Any]:
    if isinstance(output_type, TypeSchema):
        return output_type
    return TypeSchema(output_type)


def strict_qualifies(schema: Any, depth: int = 0) -> bool:
    """True when ``schema`` is one OpenAI accepts with ``strict: true``: an object at the
    root, every object listing all its properties as required with ``additionalProperties:
    false``, and only the keywords strict mode supports (no ``prefixItems``,
    ``uniqueItems``, ``oneOf``...), each schema saying what it holds (``type``, ``anyOf``,
    ``$ref``, ``enum`` or ``const``: no bare ``{}``), at most 10 levels deep."""
    if depth == 0 and (not isinstance(schema, Mapping) or schema.get("type") != "object"):
        return False
    return _strict(schema, depth)


def _strict(schema: Any, depth: int) -> bool:
    if not isinstance(schema, Mapping) or depth > 10:
        return False
    if not set(schema) <= _STRICT_KEYS or not _SAYS_WHAT & set(schema):
        return False
    kind = schema.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if is_object or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False or not isinstance(properties, Mapping):
            return False
        if set(schema.get("required", ())) != set(properties):
            return False
        if not all(_strict(sub, depth + 1) for sub in properties.values()):
            return False
    elif "additionalProperties" in schema:
        return False
    if "items" in schema and not _strict(schema["items"], depth + 1):
        return False
    any_of = schema.get("anyOf")
    if any_of is not None and not (
        isinstance(any_of, list) and all(_strict(sub, depth + 1) for sub in any_of)
    ):
        return False
    defs = schema.get("$defs")
    return defs is None or (
        isinstance(defs, Mapping) and all(_strict(sub, depth + 1) for sub in defs.values())
    )
