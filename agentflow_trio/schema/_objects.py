"""Class-like types as JSON objects: the fields of an attrs class, a dataclass or a
TypedDict, and the words for a constructor that refused its values.

`object_fields` lists what `type_schema` needs per field (JSON key, annotation, whether it
is required, a description from the field's metadata); `construction_problems` turns the
exception an ``__init__`` raised (an attrs validator, a dataclass ``__post_init__``, a
pydantic dataclass) into problems a model can act on, naming the field when the exception
says which one.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ._validate import got, problem

__all__ = ["FieldSpec", "construction_problems", "is_typeddict", "object_fields"]

_QUOTED: Final = re.compile(r"'([^']+)'")


@attrs.frozen(slots=True)
class FieldSpec:
    """One field of a class-like type: its JSON ``key`` (also the constructor keyword),
    its ``hint`` (``Annotated`` kept), whether the JSON object must have it, and a
    description from the field's metadata (``{"description": ...}``), if any."""

    key: str
    hint: Any
    required: bool
    description: str | None = None


def is_typeddict(tp: Any) -> bool:
    """``tp`` is a TypedDict class."""
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def object_fields(tp: Any, where: str) -> list[FieldSpec] | None:
    """The fields of an attrs class, a dataclass or a TypedDict; None for other types.

    Raises:
        TypeError: the class's annotations do not resolve (``where`` names the place).
    """
    if is_typeddict(tp):
        hints = _hints(tp, where)
        return [
            FieldSpec(k, _strip_required(h), _typeddict_requires(tp, k, h))
            for k, h in hints.items()
        ]
    if isinstance(tp, type) and attrs.has(tp):
        hints = _hints(tp, where)
        return [
            FieldSpec(
                f.alias or f.name,
                hints.get(f.name, Any),
                f.default is attrs.NOTHING,
                _description(f.metadata),
            )
            for f in attrs.fields(tp)
            if f.init
        ]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = _hints(tp, where)
        return [
            FieldSpec(
                f.name,
                hints.get(f.name, Any),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                _description(f.metadata),
            )
            for f in dataclasses.fields(tp)
            if f.init
        ]
    return None


def construction_problems(
    tp: type, exc: Exception, value: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """What ``tp(**value)`` raising ``exc`` means, as problems (paths relative to the
    object). attrs validators name their attribute (``instance_of``, ``in_`` pass it in
    ``args``; the number and length validators quote it in the message)."""
    if type(exc).__name__ == "ValidationError" and type(exc).__module__.startswith("pydantic"):
        from ._pydantic import validation_problems  # pydantic is loaded: it raised this

        return validation_problems(exc, tp)
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    name = _field_named(tp, exc, text)
    if name is None:
        return [problem(None, f"a valid {tp.__name__}", got(value), f"{tp.__name__}: {text}")]
    shown = got(exc.args[3]) if len(exc.args) > 3 else got(value.get(name))
    return [problem(name, _expected(tp, name, exc), shown, text)]


def _field_named(tp: type, exc: Exception, text: str) -> str | None:
    if len(exc.args) > 1 and isinstance(exc.args[1], attrs.Attribute):
        attribute = exc.args[1]
        return attribute.alias or attribute.name
    if not attrs.has(tp):
        return None
    fields = {f.name: f.alias or f.name for f in attrs.fields(tp) if f.init}
    named = {fields[n] for n in _QUOTED.findall(text) if n in fields}
    return named.pop() if len(named) == 1 else None


def _expected(tp: type, name: str, exc: Exception) -> str:
    args = exc.args
    if len(args) > 2 and isinstance(args[1], attrs.Attribute):
        bound = args[2]
        if isinstance(exc, TypeError) and isinstance(bound, (type, tuple)):
            kinds = bound if isinstance(bound, tuple) else (bound,)
            return " or ".join(getattr(k, "__name__", repr(k)) for k in kinds)
        if isinstance(bound, (list, tuple, set, frozenset, range)):
            return "one of " + ", ".join(repr(v) for v in bound)
    return f"a value {tp.__name__}.{name} accepts"


def _description(metadata: Mapping[Any, Any]) -> str | None:
    text = metadata.get("description") if metadata else None
    return text if isinstance(text, str) else None


def _hints(tp: Any, where: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(tp, include_extras=True)
    except Exception as exc:
        raise TypeError(f"{where}: cannot resolve the annotations of {tp!r}: {exc}") from None


def _typeddict_requires(tp: Any, key: str, hint: Any) -> bool:
    # The marker wins: under ``from __future__ import annotations`` Python 3.11 cannot see
    # ``NotRequired[...]`` in a string and counts the key in ``__required_keys__``.
    origin = typing.get_origin(hint)
    if origin is typing.Required or origin is typing.NotRequired:
        return origin is typing.Required
    return key in tp.__required_keys__


def _strip_required(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is typing.Required or origin is typing.NotRequired:
        return typing.get_args(hint)[0]
    return hint
