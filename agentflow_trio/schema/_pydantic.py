"""pydantic models as schemas: pydantic's own JSON schema, made self-contained, and its
``model_validate`` as the converter, with a ``ValidationError`` worded as our problems.

Imported only once an annotation is a pydantic model (``_types`` finds out through
``sys.modules``, without importing anything), so pydantic stays an optional dependency.

``model_json_schema()`` puts nested models in ``$defs`` and points at them with ``$ref``;
a ``$ref`` only resolves against the root of the document, which a model nested in a tool's
arguments or in a ``list[...]`` is not. So every reference is inlined. A recursive model
(``Node`` holding ``list[Node]``) cannot be inlined and raises ``TypeError`` naming the
cycle; nesting is bounded as well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import pydantic

from ..errors import SchemaValidationError
from ._validate import describe_path, got, problem

__all__ = ["model_schema", "validation_problems"]

_MAX_REFS: Final = 32
_MAX_PROBLEMS: Final = 8
_DATA_KEYS: Final = frozenset({"default", "examples", "enum", "const"})
_REF_PREFIX: Final = "#/$defs/"
_TYPES: Final = {
    "string_type": "string",
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "integer",
    "float_type": "number",
    "float_parsing": "number",
    "bool_type": "boolean",
    "bool_parsing": "boolean",
    "list_type": "array",
    "tuple_type": "array",
    "set_type": "array",
    "dict_type": "object",
    "model_type": "object",
    "model_attributes_type": "object",
    "none_required": "null",
    "missing": "a value (required)",
}
_BOUNDS: Final = {
    "greater_than": ("gt", "exclusiveMinimum"),
    "greater_than_equal": ("ge", "minimum"),
    "less_than": ("lt", "exclusiveMaximum"),
    "less_than_equal": ("le", "maximum"),
    "multiple_of": ("multiple_of", "multipleOf"),
    "string_too_short": ("min_length", "minLength"),
    "string_too_long": ("max_length", "maxLength"),
    "too_short": ("min_length", "minItems"),
    "too_long": ("max_length", "maxItems"),
    "string_pattern_mismatch": ("pattern", "pattern"),
}


def model_schema(
    tp: type[pydantic.BaseModel], where: str
) -> tuple[dict[str, Any], Callable[[Any], Any]]:
    """The self-contained schema of model ``tp`` and its converter (``model_validate``).

    Raises:
        TypeError: pydantic cannot give ``tp`` a JSON schema, or ``tp`` is recursive.
    """
    try:
        raw = tp.model_json_schema()
    except Exception as exc:  # PydanticInvalidForJsonSchema, PydanticUserError...
        raise TypeError(f"{where}: {tp.__name__} has no JSON schema: {exc}") from None
    defs = raw.get("$defs", {})
    schema = _inline(raw, defs, (tp.__name__,), where)
    return schema, _converter(tp)


def validation_problems(exc: Any, model: Any) -> list[dict[str, Any]]:
    """A pydantic ``ValidationError`` as problems: ``loc`` becomes the field path, the
    error type and its context the ``expected`` words."""
    name = getattr(model, "__name__", "the model")
    return [_problem(e, name) for e in exc.errors(include_url=False)[:_MAX_PROBLEMS]]


def _converter(tp: type[pydantic.BaseModel]) -> Callable[[Any], Any]:
    validate = tp.model_validate

    def convert(value: Any) -> Any:
        try:
            return validate(value)
        except pydantic.ValidationError as exc:
            raise SchemaValidationError(validation_problems(exc, tp)) from None

    return convert


def _inline(node: Any, defs: Mapping[str, Any], stack: tuple[str, ...], where: str) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs, stack, where) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    ref = node.get("$ref")
    if ref is not None:
        out.update(_resolve(ref, defs, stack, where))
    for key, value in node.items():
        if key in ("$ref", "$defs"):
            continue
        out[key] = value if key in _DATA_KEYS else _inline(value, defs, stack, where)
    return out


def _resolve(ref: Any, defs: Mapping[str, Any], stack: tuple[str, ...], where: str) -> Any:
    local = isinstance(ref, str) and ref.startswith(_REF_PREFIX)
    name = ref[len(_REF_PREFIX) :] if local else None
    if name is None or name not in defs:
        raise TypeError(f"{where}: {stack[0]}'s schema has a reference it cannot resolve: {ref}")
    if name in stack[1:]:
        cycle = " -> ".join([*stack[stack.index(name, 1) :], name])
        raise TypeError(
            f"{where}: {stack[0]} is recursive ({cycle}); a recursive model cannot be "
            "inlined into a tool or output schema"
        )
    if len(stack) > _MAX_REFS:
        raise TypeError(f"{where}: {stack[0]} nests models too deeply (over {_MAX_REFS})")
    return _inline(defs[name], defs, (*stack, name), where)


def _problem(error: Mapping[str, Any], model: str) -> dict[str, Any]:
    field = describe_path(error.get("loc", ()))
    kind = str(error.get("type", ""))
    text = str(error.get("msg", "invalid"))
    shown = "nothing" if kind == "missing" else got(error.get("input"))
    return problem(field, _expected(kind, error.get("ctx") or {}, text, model), shown, text)


def _expected(kind: str, ctx: Mapping[str, Any], text: str, model: str) -> str:
    if kind in _TYPES:
        return _TYPES[kind]
    if kind in _BOUNDS:
        key, keyword = _BOUNDS[kind]
        if key in ctx:
            return f"{keyword} {ctx[key]}"
    if kind in ("literal_error", "enum") and "expected" in ctx:
        return f"one of {ctx['expected']}"
    if kind in ("value_error", "assertion_error"):
        return f"a value {model}'s validators accept"
    return text
