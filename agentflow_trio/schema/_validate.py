"""Check a value against a JSON schema and describe what is wrong, for the model.

Validation uses the ``jsonschema`` library (Draft 2020-12, the draft OpenAI and MCP tool
schemas are written in). A failure becomes a plain dict the model can act on::

    {"type": "invalid_arguments", "tool": "search", "field": "q",
     "expected": "string", "message": "q: 3 is not of type 'string'"}

``errors`` lists every problem (same keys) when there is more than one. `problems` gives
the same description for any value (structured output uses it): ``field``, ``expected``,
``got`` and ``message`` per problem. Converters word their own failures the same way
(`problem`) and prefix the path of the value they were converting (`under`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import jsonschema

from ..errors import SchemaValidationError

__all__ = [
    "ArgumentValidator",
    "brief",
    "compile_fast",
    "describe_path",
    "got",
    "invalid_arguments",
    "problem",
    "problems",
    "under",
]

_MAX_ERRORS: Final = 8
_MAX_GOT: Final = 80
_BOUNDS: Final = frozenset(
    {
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "multipleOf",
        "pattern",
        "format",
    }
)


class ArgumentValidator:
    """A compiled schema: ``validator.check(args)`` returns None or an error dict.

    Plain schemas (the ones `tool` derives from simple hints) also get a fast pre-check
    that only ever says "valid" when ``jsonschema`` would; anything it is unsure of goes
    to ``jsonschema``, which decides and explains.
    """

    __slots__ = ("_fast", "_tool", "_validator")

    def __init__(self, tool: str, schema: Mapping[str, Any]) -> None:
        """Compile ``schema``.

        Raises:
            ValueError: ``schema`` is not a valid Draft 2020-12 schema.
        """
        cls = jsonschema.Draft202012Validator
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"tool {tool!r}: invalid parameters schema: {exc.message}") from None
        self._tool = tool
        self._validator = cls(schema)
        self._fast = compile_fast(schema)

    def check(self, args: Mapping[str, Any]) -> dict[str, Any] | None:
        """None if ``args`` is valid, else an ``invalid_arguments`` error dict."""
        fast = self._fast
        if fast is not None and fast(args):
            return None
        found = problems(self._validator, args, noun="argument")
        if not found:
            return None
        main = found[0]
        error = invalid_arguments(
            self._tool, main["field"], main["expected"], main["message"], got=main["got"]
        )
        return error | {"errors": found} if len(found) > 1 else error


def invalid_arguments(
    tool: str, field: str | None, expected: str, message: str, *, got: str | None = None
) -> dict[str, Any]:
    """The error dict for arguments that do not fit (``field`` None: the whole object);
    ``got`` (a short description of the value) is included when given."""
    error = {
        "type": "invalid_arguments",
        "tool": tool,
        "field": field,
        "expected": expected,
        "message": message,
    }
    if got is not None:
        error["got"] = got
    return error


def describe_path(path: Iterable[Any]) -> str | None:
    """``["items", 0, "name"]`` -> ``"items[0].name"``; an empty path -> None."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def problems(validator: Any, value: Any, *, noun: str = "field") -> list[dict[str, Any]]:
    """What is wrong with ``value`` under a compiled ``jsonschema`` validator, shallow
    problems first, at most eight; empty when it is valid. ``noun`` is what a property is
    called in the messages ("field" for a value, "argument" for a tool's arguments)."""
    errors = validator.iter_errors(value)
    first = next(errors, None)
    if first is None:
        return []
    return [_problem(e, noun) for e in _sorted([first, *_take(errors, _MAX_ERRORS - 1)])]


def got(value: Any) -> str:
    """A short, bounded description of a value that did not fit."""
    text = repr(value)
    return text if len(text) <= _MAX_GOT else text[: _MAX_GOT - 3] + "..."


def problem(field: str | None, expected: str, value: str, message: str) -> dict[str, Any]:
    """One problem as `problems` words it; ``message`` is prefixed with the field path
    (``"p.x: must be > 0"``), and ``value`` is already a `got` description."""
    text = f"{field}: {message}" if field else message
    return {"field": field, "expected": expected, "got": value, "message": text}


def under(error: SchemaValidationError, key: str | int) -> SchemaValidationError:
    """``error`` seen from one level up: each problem's path (and the path its message
    starts with) gains ``key`` in front, so a failure inside ``items[2]`` says so."""
    moved = []
    for item in error.problems:
        field = item.get("field")
        path = _prefix(key, field)
        message = str(item.get("message", ""))
        if field and message.startswith(f"{field}: "):
            message = message[len(field) + 2 :]
        moved.append({**item, "field": path, "message": f"{path}: {message}"})
    return SchemaValidationError(moved)


def _prefix(key: str | int, field: str | None) -> str:
    head = f"[{key}]" if isinstance(key, int) else key
    if not field:
        return head
    return f"{head}{field}" if field.startswith("[") else f"{head}.{field}"


def _take(errors: Iterable[Any], n: int) -> list[Any]:
    out: list[Any] = []
    for error in errors:
        if len(out) >= n:
            break
        out.append(error)
    return out


def _sorted(errors: list[Any]) -> list[Any]:
    # Deterministic order: shallow problems first, then by path text.
    return sorted(
        errors, key=lambda e: (len(e.absolute_path), describe_path(e.absolute_path) or "")
    )


def _problem(error: Any, noun: str) -> dict[str, Any]:
    if error.context:  # anyOf / oneOf: report the branch that came closest
        error = jsonschema.exceptions.best_match([error])
    field = describe_path(error.absolute_path)
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind == "required" and isinstance(instance, Mapping):
        missing = [name for name in value if name not in instance]
        name = missing[0] if missing else None
        field = _join(field, name)
        return _entry(
            field, _expected_for(error, name), f"missing required {noun} {field!r}", "nothing"
        )
    if kind == "additionalProperties" and isinstance(instance, Mapping):
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(k for k in instance if k not in error.schema.get("properties", {}))
        field = _join(field, unknown[0] if unknown else None)
        listing = ", ".join(known) or "(none)"
        return _entry(
            field,
            f"no such {noun}; known: {listing}",
            f"unexpected {noun} {field!r}",
            got(instance.get(unknown[0])) if unknown else "",
        )
    expected = _expected(kind, value)
    where = f"{field}: " if field else ""
    return _entry(field, expected, f"{where}{_short(error.message)}", got(instance))


def _short(message: str) -> str:
    # jsonschema quotes the whole instance; keep messages bounded whatever the value.
    return message if len(message) <= 4 * _MAX_GOT else message[: 4 * _MAX_GOT - 3] + "..."


def _entry(field: str | None, expected: str, message: str, got: str) -> dict[str, Any]:
    return {"field": field, "expected": expected, "got": got, "message": message}


def _join(base: str | None, name: str | None) -> str | None:
    if name is None:
        return base
    return f"{base}.{name}" if base else name


def _expected_for(error: Any, name: str | None) -> str:
    schema = error.schema.get("properties", {}).get(name, {}) if name else {}
    if "type" in schema:
        return _expected("type", schema["type"])
    if "enum" in schema:
        return _expected("enum", schema["enum"])
    return "a value (required)"


def _expected(kind: str, value: Any) -> str:
    if kind == "type":
        return " or ".join(value) if isinstance(value, list) else str(value)
    if kind == "enum":
        return "one of " + ", ".join(repr(v) for v in value)
    if kind == "const":
        return repr(value)
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        return f"{kind} {value}"
    if kind in _BOUNDS:
        return f"{kind} {value}"
    if kind == "anyOf" or kind == "oneOf":
        return " or ".join(brief(s) for s in value)
    return f"{kind}: {value!r}"


def brief(schema: Any) -> str:
    """A few words for what ``schema`` admits (``"integer"``, ``"object (name, age)"``)."""
    if not isinstance(schema, Mapping) or "type" not in schema:
        return "a value matching the schema"
    kind = _expected("type", schema["type"])
    keys = schema.get("properties")
    if kind == "object" and isinstance(keys, Mapping) and keys:
        shown = ", ".join(list(keys)[:6]) + (", ..." if len(keys) > 6 else "")
        return f"{schema.get('title') or 'object'} ({shown})"
    return kind


# ----------------------------------------------------------------------------- fast path

_Check = Callable[[Any], bool]
_ANNOTATIONS: Final = frozenset({"description", "default", "title", "examples", "$comment"})
_FAST_KEYS: Final = frozenset(
    {"type", "enum", "items", "properties", "required", "additionalProperties"}
)
_TYPE_TESTS: Final[dict[str, _Check]] = {
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) is int or type(v) is float,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "array": lambda v: type(v) is list,
    "object": lambda v: type(v) is dict,
}


def compile_fast(schema: Any) -> _Check | None:
    """A quick check for a schema made only of ``type``, string ``enum``, ``items``,
    ``properties``, ``required`` and boolean ``additionalProperties`` (plus annotations);
    None for anything else. It may reject what ``jsonschema`` accepts (``1.0`` as an
    integer), never the reverse: a False only means "ask jsonschema"."""
    if not isinstance(schema, Mapping) or not set(schema) - _ANNOTATIONS <= _FAST_KEYS:
        return None
    checks: list[_Check] = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not all(isinstance(k, str) and k in _TYPE_TESTS for k in kinds):
            return None
        tests = tuple(_TYPE_TESTS[k] for k in kinds)
        checks.append(tests[0] if len(tests) == 1 else lambda v: any(t(v) for t in tests))
    if "enum" in schema:
        values = schema["enum"]
        if not isinstance(values, list) or not all(type(x) is str for x in values):
            return None
        allowed = frozenset(values)
        checks.append(lambda v: type(v) is str and v in allowed)
    if "items" in schema:
        item = compile_fast(schema["items"])
        if item is None:
            return None
        checks.append(lambda v: type(v) is not list or all(item(x) for x in v))
    if {"properties", "required", "additionalProperties"} & set(schema):
        obj = _compile_object(schema)
        if obj is None:
            return None
        checks.append(obj)
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(c(v) for c in checks)


def _compile_object(schema: Mapping[str, Any]) -> _Check | None:
    extra = schema.get("additionalProperties", True)
    required = schema.get("required", [])
    raw = schema.get("properties", {})
    if type(extra) is not bool or not isinstance(required, list) or not isinstance(raw, Mapping):
        return None
    props: dict[str, _Check] = {}
    for key, sub in raw.items():
        check = compile_fast(sub)
        if check is None:
            return None
        props[key] = check
    need = tuple(required)

    def check_object(value: Any) -> bool:
        if type(value) is not dict:
            return True  # "properties" and friends constrain objects only
        for key in need:
            if key not in value:
                return False
        for key, item in value.items():
            check = props.get(key)
            if check is None:
                if not extra:
                    return False
            elif not check(item):
                return False
        return True

    return check_object
