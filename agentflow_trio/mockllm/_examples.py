"""Values that fit a JSON schema: what the mock answers when a request asks for a shape.

A chat request with OpenAI's ``response_format`` (``json_schema`` or ``json_object``), an
Ollama ``format``, or a ``tool_choice`` forcing one function gets, unless a scripted reply
says otherwise, a reply that fits: `example` builds a small deterministic value from the
schema (the first ``enum`` member, the ``minimum``, ``max(1, minItems)`` items, every
property, the first ``anyOf`` branch that is not null, ``$ref`` into ``$defs``). Patterns
are not solved; a schema deeper than 32 levels gets null there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from agentflow_trio import _json

__all__ = ["cached_example", "example", "forced_tool", "reply_schema"]

_MAX_DEPTH: Final = 32
_MAX_CACHED: Final = 256
_CACHE: dict[bytes, tuple[Any, str]] = {}
_FORMATS: Final = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "mock@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def reply_schema(body: Mapping[str, Any]) -> Any:
    """The schema a request's reply text must fit: ``response_format``'s JSON schema
    (OpenAI, Azure), Ollama's ``format`` (``"json"`` and ``json_object``: any object, as
    ``{}``); None when the request asks for no shape."""
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping):
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, Mapping) else None
            return schema if isinstance(schema, Mapping) else {"type": "object"}
        if fmt.get("type") == "json_object":
            return {"type": "object"}
    fmt = body.get("format")
    if isinstance(fmt, Mapping):
        return fmt
    if fmt == "json":
        return {"type": "object"}
    return None


def forced_tool(body: Mapping[str, Any]) -> tuple[str, Any] | None:
    """``(name, parameters schema)`` of the function a request's ``tool_choice`` forces
    (a named function, or ``"required"``: the first tool); None otherwise."""
    choice = body.get("tool_choice")
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    name = None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
    elif choice != "required":
        return None
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and (name is None or function.get("name") == name):
            found = function.get("name")
            if isinstance(found, str):
                return found, function.get("parameters") or {"type": "object"}
    return None


def cached_example(schema: Any) -> tuple[Any, str]:
    """`example` of ``schema`` and its JSON text, remembered by the schema's JSON (at most
    256 schemas; the oldest is forgotten first): a client asking for the same shape again
    and again costs one encoding, not a walk. The value is shared: never change it."""
    key = _json.dumps(schema)
    try:
        return _CACHE[key]
    except KeyError:
        pass
    value = example(schema)
    found = _CACHE[key] = (value, _json.dumps_str(value))
    if len(_CACHE) > _MAX_CACHED:
        del _CACHE[next(iter(_CACHE))]
    return found


def example(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small value that fits ``schema`` (see the module docstring)."""
    if root is None:
        root = schema
    if depth > _MAX_DEPTH or not isinstance(schema, Mapping):
        return None
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return example(_resolve(ref, root), root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return example(_pick(branches), root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        kind = kinds[0]
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _BUILDERS.get(kind, _null)(schema, root, depth)


def _pick(branches: list[Any]) -> Any:
    for branch in branches:
        if not (isinstance(branch, Mapping) and branch.get("type") == "null"):
            return branch
    return branches[0]


def _resolve(ref: str, root: Any) -> Any:
    if ref == "#":
        return root
    node = root
    for part in ref.removeprefix("#/").split("/"):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node


def _object(schema: Mapping[str, Any], root: Any, depth: int) -> Any:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {key: example(sub, root, depth + 1) for key, sub in properties.items()}


def _array(schema: Mapping[str, Any], root: Any, depth: int) -> Any:
    prefix = schema.get("prefixItems")
    if isinstance(prefix, list):
        return [example(sub, root, depth + 1) for sub in prefix]
    count = max(_int(schema.get("minItems"), 0), 1)
    top = schema.get("maxItems")
    if isinstance(top, int):
        count = min(count, top)
    items = schema.get("items")
    return [example(items, root, depth + 1) if items else "mock" for _ in range(count)]


def _string(schema: Mapping[str, Any], root: Any, depth: int) -> Any:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "mock") if isinstance(fmt, str) else "mock"
    least = _int(schema.get("minLength"), 0)
    if len(text) < least:
        text += "x" * (least - len(text))
    top = schema.get("maxLength")
    return text[:top] if isinstance(top, int) else text


def _number(schema: Mapping[str, Any], root: Any, depth: int) -> Any:
    integer = schema.get("type") == "integer" or (
        isinstance(schema.get("type"), list) and "integer" in schema["type"]
    )
    step = 1 if integer else 0.5
    low = _bound(schema, "minimum", "exclusiveMinimum", step)
    high = _bound(schema, "maximum", "exclusiveMaximum", -step)
    value: float = 1 if low is None else low
    if high is not None and value > high:
        value = high
    multiple = schema.get("multipleOf")
    if isinstance(multiple, (int, float)) and multiple > 0:
        value = -(-value // multiple) * multiple
    return int(value) if integer else float(value)


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str, step: float) -> Any:
    value = schema.get(inclusive)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    value = schema.get(exclusive)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value + step
    return None


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _boolean(schema: Mapping[str, Any], root: Any, depth: int) -> Any:
    return True


def _null(schema: Mapping[str, Any], root: Any, depth: int) -> Any:
    return None


_BUILDERS: Final = {
    "object": _object,
    "array": _array,
    "string": _string,
    "integer": _number,
    "number": _number,
    "boolean": _boolean,
    "null": _null,
}
