"""`Annotated` metadata as JSON schema keywords.

Understood: a plain string (the description), pydantic ``Field(...)`` (its ``ge``/``gt``/
``le``/``lt``/``multiple_of``/``min_length``/``max_length``/``pattern`` and its
``description``, ``title``, ``examples``), pydantic ``StringConstraints``, and the
``annotated_types`` constraints ``Ge``/``Gt``/``Le``/``Lt``/``Interval``/``MultipleOf``/
``MinLen``/``MaxLen``/``Len``. A numeric bound becomes ``minimum``/``exclusiveMinimum``/
``maximum``/``exclusiveMaximum``/``multipleOf`` on a number; a length bound becomes
``minLength``/``minItems``/``minProperties`` (and the ``max`` twins) by the JSON type of the
schema it bounds (string, array, object). Validation enforces them because every value is
checked against the schema before it is converted (tool arguments and structured output
alike). Anything else (pydantic's ``strip_whitespace``, a user's own marker) is ignored,
never an error.

Neither pydantic nor annotated_types is imported here: their objects are recognised through
``sys.modules`` (an object of a module nobody imported cannot exist).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Final

__all__ = ["apply_metadata"]

_NUMERIC: Final = (
    ("gt", "exclusiveMinimum"),
    ("ge", "minimum"),
    ("lt", "exclusiveMaximum"),
    ("le", "maximum"),
    ("multiple_of", "multipleOf"),
)
_LENGTH: Final = {
    "string": ("minLength", "maxLength"),
    "array": ("minItems", "maxItems"),
    "object": ("minProperties", "maxProperties"),
}
_MAX_GROUPS: Final = 64


def apply_metadata(schema: dict[str, Any], metadata: Iterable[Any]) -> dict[str, Any]:
    """``schema`` with the keywords ``Annotated[..., *metadata]`` adds (a new dict).

    Plain strings are joined into the description (they win over a ``Field``'s).
    """
    out = dict(schema)
    kinds = _kinds(schema)
    notes: list[str] = []
    for item in _flatten(metadata, 0):
        if isinstance(item, str):
            notes.append(item)
        else:
            _apply(out, kinds, item)
    if notes:
        out["description"] = " ".join(notes)
    return out


def _kinds(schema: dict[str, Any]) -> frozenset[str]:
    """The JSON types a schema admits, looking one level into ``anyOf``."""
    found: set[str] = set()
    for part in [schema, *schema.get("anyOf", ())]:
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(kind, str):
            found.add(kind)
        elif isinstance(kind, list):
            found.update(k for k in kind if isinstance(k, str))
    return frozenset(found)


def _flatten(metadata: Iterable[Any], depth: int) -> Iterator[Any]:
    """Every piece of metadata, with groups (``Interval``, ``Len``, ``StringConstraints``)
    and a ``Field``'s constraints opened up; a ``Field`` itself is yielded too (for its
    description, title and examples)."""
    field_info = _pydantic_field_info()
    for item in metadata:
        if isinstance(item, str):
            yield item
            continue
        if field_info is not None and isinstance(item, field_info):
            yield item
            if depth < _MAX_GROUPS:
                yield from _flatten(getattr(item, "metadata", ()), depth + 1)
        elif getattr(item, "__is_annotated_types_grouped_metadata__", False) is True:
            if depth < _MAX_GROUPS:
                yield from _flatten(item, depth + 1)
        else:
            yield item


def _apply(out: dict[str, Any], kinds: frozenset[str], item: Any) -> None:
    field_info = _pydantic_field_info()
    if field_info is not None and isinstance(item, field_info):
        _field_annotations(out, item)
        return
    if _is_annotated_type(item):
        _constraint(out, kinds, item)
    if type(item).__module__.startswith("pydantic"):  # Field(pattern=...), StringConstraints
        _pattern(out, kinds, getattr(item, "pattern", None))


def _field_annotations(out: dict[str, Any], info: Any) -> None:
    for key in ("description", "title"):
        value = getattr(info, key, None)
        if isinstance(value, str):
            out[key] = value
    examples = getattr(info, "examples", None)
    if isinstance(examples, list):
        out["examples"] = examples


def _constraint(out: dict[str, Any], kinds: frozenset[str], item: Any) -> None:
    if kinds & {"integer", "number"}:
        for attr, keyword in _NUMERIC:
            value = getattr(item, attr, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[keyword] = value
    for attr, index in (("min_length", 0), ("max_length", 1)):
        value = getattr(item, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            for kind, keywords in _LENGTH.items():
                if kind in kinds:
                    out[keywords[index]] = value


def _pattern(out: dict[str, Any], kinds: frozenset[str], pattern: Any) -> None:
    if isinstance(pattern, re.Pattern):
        pattern = pattern.pattern
    if isinstance(pattern, str) and "string" in kinds:
        out["pattern"] = pattern


def _pydantic_field_info() -> type | None:
    fields = sys.modules.get("pydantic.fields")
    found = getattr(fields, "FieldInfo", None) if fields is not None else None
    return found if isinstance(found, type) else None


def _is_annotated_type(item: Any) -> bool:
    module = sys.modules.get("annotated_types")
    base = getattr(module, "BaseMetadata", None) if module is not None else None
    return isinstance(base, type) and isinstance(item, base)
