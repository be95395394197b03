"""JSON schema (Draft 2020-12) of a Python annotation, and the converter back into it.

Supported, nested anywhere: ``str``, ``int``, ``float``, ``bool``, ``None``, ``Any``;
``list[X]``, ``Sequence[X]``, ``set[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``; ``dict``,
``dict[str, X]``, ``Mapping[str, X]``; ``Literal[...]``; ``enum.Enum`` subclasses;
``X | None`` / ``Optional[X]`` and other unions; attrs classes, dataclasses and TypedDicts
(objects; a field is required exactly when it has no default or default factory); pydantic
models (pydantic's own schema, references inlined; see ``_pydantic``); ``Annotated[X, ...]``
with a description string or constraints (see ``_constraints``). A tool parameter is
required exactly when it has no default (``x: int | None`` without a default is required but
may be null). Anything else raises ``TypeError`` where the type is declared (when the tool is
defined, when a `TypeSchema` is made), not when a model's value arrives.

Each annotation may also get a converter from the validated JSON value to the Python value
(an Enum member, an attrs or pydantic instance, a tuple, a float for ``3``). A converter
runs on a value that already passed the schema; when the type's own checks refuse it (an
attrs validator, a dataclass ``__post_init__``, a pydantic validator), it raises
`SchemaValidationError` whose problems give the path inside the value. A union converter
tries its members in order, each against its own schema, and returns the first that fits
and converts (put the most specific member first when several could fit).
"""

from __future__ import annotations

import enum
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping, MutableSequence, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final, Literal, Union

import jsonschema

from ..errors import SchemaValidationError
from ._constraints import apply_metadata
from ._objects import FieldSpec, construction_problems, object_fields
from ._validate import brief, compile_fast, got, problem, under

__all__ = ["Converter", "type_schema"]

Converter = Callable[[Any], Any]

_SIMPLE: Final[dict[Any, str]] = {str: "string", bool: "boolean", type(None): "null"}
_JSON_TYPES: Final[tuple[tuple[type, str], ...]] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (type(None), "null"),
)
_MAX_DEPTH: Final = 16
# Keywords that constrain one JSON type only, so "X or null" can share one schema.
_NULL_SAFE: Final = frozenset(
    {
        "type",
        "description",
        "title",
        "examples",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
    }
)


def type_schema(
    tp: Any, *, where: str = "", depth: int = 0
) -> tuple[dict[str, Any], Converter | None]:
    """The JSON schema of one annotation and the converter to apply to its value (or None
    when the validated JSON value is already the Python value).

    Raises:
        TypeError: the annotation is not supported (``where`` names the place).
    """
    if depth > _MAX_DEPTH:
        raise TypeError(f"{where}: type nests too deeply (recursive type?)")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        schema, convert = type_schema(args[0], where=where, depth=depth + 1)
        return apply_metadata(schema, args[1:]), convert
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return {}, None
    if tp in _SIMPLE:
        return {"type": _SIMPLE[tp]}, None
    if tp is int:
        return {"type": "integer"}, _to_int
    if tp is float:
        return {"type": "number"}, float
    if origin is Literal:
        return _enum_schema(list(args)), None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_schema([m.value for m in tp]), _enum_converter(tp)
    if origin is Union or origin is types.UnionType:
        return _union(args, where, depth)
    if _is_pydantic_model(tp):
        from ._pydantic import model_schema  # only once the user's type is a pydantic model

        return model_schema(tp, where)
    fields = object_fields(tp, where)
    if fields is not None:
        return _object_type(tp, fields, where, depth)
    container = origin if origin is not None else tp
    if isinstance(container, type):
        if issubclass(container, Mapping):
            return _mapping(args, where, depth)
        if issubclass(container, tuple):
            return _tuple(args, where, depth)
        if issubclass(container, (MutableSequence, Sequence, AbstractSet)) and container not in (
            str,
            bytes,
        ):
            return _array(container, args, where, depth)
    raise TypeError(f"{where}: unsupported annotation {tp!r}")


def _is_pydantic_model(tp: Any) -> bool:
    # Found through sys.modules: a pydantic model cannot exist unless pydantic was imported,
    # and a user without pydantic never pays for importing it.
    base = getattr(sys.modules.get("pydantic"), "BaseModel", None)
    return isinstance(tp, type) and isinstance(base, type) and issubclass(tp, base)


def _to_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) else value


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {_json_type(v) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema = {"type": kinds.pop(), **schema}
    return schema


def _enum_converter(tp: type[enum.Enum]) -> Converter:
    def convert(value: Any) -> Any:
        try:
            return tp(value)
        except ValueError:
            expected = "one of " + ", ".join(repr(m.value) for m in tp)
            message = f"{value!r} is not a valid {tp.__name__}"
            raise SchemaValidationError([problem(None, expected, got(value), message)]) from None

    return convert


def _json_type(value: Any) -> str | None:
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    return None


# ----------------------------------------------------------------------------- unions


def _union(
    args: tuple[Any, ...], where: str, depth: int
) -> tuple[dict[str, Any], Converter | None]:
    members = [a for a in args if a is not type(None)]
    nullable = len(members) < len(args)
    parts = [type_schema(a, where=where, depth=depth + 1) for a in members]
    if len(parts) == 1:
        schema, convert = parts[0]
        if nullable:
            schema = _nullable(schema)
            if convert is not None:
                convert = _or_none(convert)
        return schema, convert
    any_of = [s for s, _ in parts] + ([{"type": "null"}] if nullable else [])
    schema = {"anyOf": any_of}
    if all(c is None for _, c in parts):
        return schema, None
    return schema, _union_converter(parts, schema)


def _union_converter(
    parts: list[tuple[dict[str, Any], Converter | None]], whole: dict[str, Any]
) -> Converter:
    """Try each member in order: the first whose own schema the value fits and whose
    converter accepts it wins. None stays None (the schema allowed it or said so)."""
    members = [(_fits(schema), convert) for schema, convert in parts]
    expected = " or ".join(brief(s) for s, _ in parts)

    def convert(value: Any) -> Any:
        if value is None:
            return None
        refused: SchemaValidationError | None = None
        for fits, member in members:
            if not fits(value):
                continue
            if member is None:
                return value
            try:
                return member(value)
            except SchemaValidationError as exc:
                refused = refused or exc
        if refused is not None:
            raise refused
        message = f"{got(value)} fits none of: {expected}"
        raise SchemaValidationError([problem(None, expected, got(value), message)])

    return convert


def _fits(schema: dict[str, Any]) -> Callable[[Any], bool]:
    fast = compile_fast(schema)
    slow: Callable[[Any], bool] = jsonschema.Draft202012Validator(schema).is_valid
    if fast is None:
        return slow
    return lambda value: fast(value) or slow(value)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema and set(schema) <= _NULL_SAFE:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _or_none(convert: Converter) -> Converter:
    return lambda value: None if value is None else convert(value)


# ----------------------------------------------------------------------------- containers


def _mapping(
    args: tuple[Any, ...], where: str, depth: int
) -> tuple[dict[str, Any], Converter | None]:
    schema: dict[str, Any] = {"type": "object"}
    if len(args) == 2:
        if args[0] not in (str, Any):
            raise TypeError(f"{where}: JSON object keys are strings, not {args[0]!r}")
        value_schema, convert = type_schema(args[1], where=where, depth=depth + 1)
        if value_schema:
            schema["additionalProperties"] = value_schema
        if convert is not None:
            return schema, _each_value(convert)
    return schema, None


def _each_value(convert: Converter) -> Converter:
    def convert_mapping(value: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in value.items():
            try:
                out[key] = convert(item)
            except SchemaValidationError as exc:
                raise under(exc, key) from None
        return out

    return convert_mapping


def _array(
    container: type, args: tuple[Any, ...], where: str, depth: int
) -> tuple[dict[str, Any], Converter | None]:
    schema: dict[str, Any] = {"type": "array"}
    convert: Converter | None = None
    if args:
        schema["items"], convert = type_schema(args[0], where=where, depth=depth + 1)
    if issubclass(container, AbstractSet):
        schema["uniqueItems"] = True
        build: type = frozenset if container is frozenset else set
        return schema, _each_item(convert, build) if convert else build
    return schema, _each_item(convert, list) if convert is not None else None


def _each_item(convert: Converter, build: Callable[[list[Any]], Any]) -> Converter:
    def convert_items(value: Any) -> Any:
        out: list[Any] = []
        for item in value:
            try:
                out.append(convert(item))
            except SchemaValidationError as exc:
                raise under(exc, len(out)) from None
        return out if build is list else build(out)

    return convert_items


def _tuple(
    args: tuple[Any, ...], where: str, depth: int
) -> tuple[dict[str, Any], Converter | None]:
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item = args[0] if args else Any
        schema, convert = type_schema(item, where=where, depth=depth + 1)
        out: dict[str, Any] = {"type": "array"}
        if schema:
            out["items"] = schema
        return out, _each_item(convert, tuple) if convert else tuple
    parts = [type_schema(a, where=where, depth=depth + 1) for a in args]
    converters = [c for _, c in parts]
    fixed: dict[str, Any] = {
        "type": "array",
        "prefixItems": [s for s, _ in parts],
        "items": False,
        "minItems": len(args),
    }

    def convert_fixed(value: Any) -> tuple[Any, ...]:
        out: list[Any] = []
        for convert, item in zip(converters, value, strict=True):
            try:
                out.append(convert(item) if convert else item)
            except SchemaValidationError as exc:
                raise under(exc, len(out)) from None
        return tuple(out)

    return fixed, convert_fixed


# ----------------------------------------------------------------------------- objects


def _object_type(
    tp: Any, fields: list[FieldSpec], where: str, depth: int
) -> tuple[dict[str, Any], Converter | None]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    converters: dict[str, Converter] = {}
    for field in fields:
        schema, convert = type_schema(field.hint, where=f"{where}.{field.key}", depth=depth + 1)
        if field.description and "description" not in schema:
            schema = {**schema, "description": field.description}
        properties[field.key] = schema
        if field.required:
            required.append(field.key)
        if convert is not None:
            converters[field.key] = convert
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    if issubclass(tp, dict):  # a TypedDict: the JSON object is already the value
        return schema, _each_field(converters, dict, None) if converters else None
    return schema, _each_field(converters, tp, tp)


def _each_field(
    converters: dict[str, Converter], build: Callable[..., Any], cls: type | None
) -> Converter:
    """Convert the fields that need it, then build; a constructor's refusal (an attrs
    validator, ``__post_init__``) becomes problems about that object."""

    def convert(value: Any) -> Any:
        kwargs = dict(value)
        for key, field_convert in converters.items():
            if key in kwargs:
                try:
                    kwargs[key] = field_convert(kwargs[key])
                except SchemaValidationError as exc:
                    raise under(exc, key) from None
        if cls is None:
            return kwargs
        try:
            return build(**kwargs)
        except (TypeError, ValueError) as exc:
            raise SchemaValidationError(construction_problems(cls, exc, value)) from exc

    return convert
