"""JSON schema (Draft 2020-12) of a Python annotation, and the converter back into it.

Supported: ``str``, ``int``, ``float``, ``bool``, ``None``, ``Any``; ``list[X]``,
``Sequence[X]``, ``set[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``; ``dict``, ``dict[str, X]``,
``Mapping[str, X]``; ``Literal[...]``; ``enum.Enum`` subclasses; ``X | None`` /
``Optional[X]`` and other unions; ``TypedDict`` and attrs classes (nested objects);
``Annotated[X, "description"]``. A parameter is required exactly when it has no default
(``x: int | None`` without a default is required but may be null). Anything else raises
``TypeError`` when the tool is defined, not when the model calls it.

Each parameter may also get a converter from the validated JSON value to the Python value
the function expects (an Enum member, an attrs instance, a tuple, a float for ``3``).
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping, MutableSequence, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final, Literal, Union

import attrs

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


def type_schema(
    tp: Any, *, where: str = "", depth: int = 0
) -> tuple[dict[str, Any], Converter | None]:
    """The JSON schema of one annotation and the converter to apply to its value (or None).

    Raises:
        TypeError: the annotation is not supported (``where`` names the parameter).
    """
    if depth > _MAX_DEPTH:
        raise TypeError(f"{where}: type nests too deeply (recursive type?)")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        schema, convert = type_schema(args[0], where=where, depth=depth + 1)
        notes = [m for m in args[1:] if isinstance(m, str)]
        return ({**schema, "description": " ".join(notes)} if notes else schema), convert
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
        return _enum_schema([m.value for m in tp]), tp
    if origin is Union or origin is types.UnionType:
        return _union(args, where, depth)
    if _is_typeddict(tp):
        return _typeddict(tp, where, depth)
    if isinstance(tp, type) and attrs.has(tp):
        return _attrs_class(tp, where, depth)
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
    raise TypeError(f"{where}: unsupported annotation {tp!r} for a tool argument")


def _to_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) else value


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {_json_type(v) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema = {"type": kinds.pop(), **schema}
    return schema


def _json_type(value: Any) -> str | None:
    for kind, name in _JSON_TYPES:
        if isinstance(value, kind):
            return name
    return None


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
    return {"anyOf": any_of}, None


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and "enum" not in schema and set(schema) <= {"type", "description"}:
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _or_none(convert: Converter) -> Converter:
    return lambda value: None if value is None else convert(value)


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
            return schema, lambda value: {k: convert(v) for k, v in value.items()}
    return schema, None


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
        inner = convert
        return schema, (lambda v: build(inner(x) for x in v)) if inner else build
    if convert is not None:
        inner_list = convert
        return schema, lambda value: [inner_list(x) for x in value]
    return schema, None


def _tuple(
    args: tuple[Any, ...], where: str, depth: int
) -> tuple[dict[str, Any], Converter | None]:
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item = args[0] if args else Any
        schema, convert = type_schema(item, where=where, depth=depth + 1)
        out: dict[str, Any] = {"type": "array"}
        if schema:
            out["items"] = schema
        inner = convert
        return out, (lambda v: tuple(inner(x) for x in v)) if inner else tuple
    parts = [type_schema(a, where=where, depth=depth + 1) for a in args]
    converters = [c for _, c in parts]
    fixed: dict[str, Any] = {
        "type": "array",
        "prefixItems": [s for s, _ in parts],
        "items": False,
        "minItems": len(args),
    }

    def convert_fixed(value: Any) -> tuple[Any, ...]:
        return tuple(c(x) if c else x for c, x in zip(converters, value, strict=True))

    return fixed, convert_fixed


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _typeddict(tp: Any, where: str, depth: int) -> tuple[dict[str, Any], Converter | None]:
    hints = typing.get_type_hints(tp, include_extras=True)
    properties: dict[str, Any] = {}
    converters: dict[str, Converter] = {}
    for key, hint in hints.items():
        bare = _strip_required(hint)
        properties[key], convert = type_schema(bare, where=f"{where}.{key}", depth=depth + 1)
        if convert is not None:
            converters[key] = convert
    required = [k for k in hints if k in tp.__required_keys__]
    schema = _object(properties, required)
    return schema, _field_converter(converters, dict) if converters else None


def _strip_required(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Required or origin is typing.NotRequired:
        return typing.get_args(hint)[0]
    return hint


def _attrs_class(tp: type, where: str, depth: int) -> tuple[dict[str, Any], Converter | None]:
    hints = typing.get_type_hints(tp, include_extras=True)
    properties: dict[str, Any] = {}
    required: list[str] = []
    converters: dict[str, Converter] = {}
    for field in attrs.fields(tp):
        if not field.init:
            continue
        key = field.alias or field.name
        hint = hints.get(field.name, Any)
        properties[key], convert = type_schema(hint, where=f"{where}.{key}", depth=depth + 1)
        if field.default is attrs.NOTHING:
            required.append(key)
        if convert is not None:
            converters[key] = convert
    return _object(properties, required), _field_converter(converters, tp)


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _field_converter(converters: dict[str, Converter], build: Callable[..., Any]) -> Converter:
    def convert(value: Any) -> Any:
        return build(**{k: converters[k](v) if k in converters else v for k, v in value.items()})

    return convert
