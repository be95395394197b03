"""The package's one JSON place: orjson (a required dependency) or, where it cannot be
imported, the standard library with the same behaviour.

One place decides, so every wire (LLM adapters, the mock LLM, ``serve``, Redis entries)
pays the same price per call and encodes the same way. ``dumps`` returns compact UTF-8
bytes, ready for an HTTP body or a Redis field; read-only mappings encode as objects and
sets as arrays. ``dumps_canonical`` sorts keys (cache keys); ``loads`` accepts bytes or
str; ``JSONDecodeError`` (a ``ValueError``) is what ``loads`` raises. ``BACKEND`` names
the backend in use (``"orjson"`` or ``"json"``). ``fragment(encoded)`` stands for JSON
already encoded inside a value given to ``dumps``: orjson copies its bytes as they are
(a request body reuses the bytes of what did not change since the last one); the
standard library decodes them back, so the output is the same either way.
``dumps_plain`` is the fast path of a caller that must write exactly what the standard
library writes: compact bytes for a value made only of JSON's own types (``str``-keyed
dicts, lists, tuples, strings, numbers, booleans, None; no subclasses), else None.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = [
    "BACKEND",
    "JSONDecodeError",
    "dumps",
    "dumps_canonical",
    "dumps_plain",
    "dumps_str",
    "fragment",
    "loads",
]

loads: Callable[[bytes | str], Any]
dumps: Callable[[Any], bytes]
dumps_canonical: Callable[[Any], bytes]
dumps_plain: Callable[[Any], bytes | None]
fragment: Callable[[bytes], Any]
JSONDecodeError: type[ValueError]
BACKEND: str


def _default(obj: Any) -> Any:
    # Read-only mappings (MappingProxyType defaults, user Mappings) encode as objects.
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, set | frozenset):
        return list(obj)
    # attrs instances (a tool agent's transcript of Messages and ToolResults) as objects of
    # their fields, as serve writes them; orjson does dataclasses and enums itself.
    if attrs.has(type(obj)):
        return {f.name: getattr(obj, f.name) for f in attrs.fields(type(obj))}
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised by the blocked-imports test
    _compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default)
    _sorted = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=_default
    )

    def dumps(obj: Any) -> bytes:
        return _compact.encode(obj).encode()

    def dumps_canonical(obj: Any) -> bytes:
        return _sorted.encode(obj).encode()

    def dumps_plain(obj: Any) -> bytes | None:
        return None

    loads = json.loads
    fragment = json.loads
    JSONDecodeError = json.JSONDecodeError
    BACKEND = "json"
else:
    _SORT = _orjson.OPT_SORT_KEYS | _orjson.OPT_NON_STR_KEYS

    def dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj, default=_default)

    def dumps_canonical(obj: Any) -> bytes:
        return _orjson.dumps(obj, default=_default, option=_SORT)

    _PLAIN = (
        _orjson.OPT_PASSTHROUGH_DATACLASS
        | _orjson.OPT_PASSTHROUGH_DATETIME
        | _orjson.OPT_PASSTHROUGH_SUBCLASS
    )

    def _refuse(obj: Any) -> Any:
        raise TypeError(type(obj).__name__)

    def dumps_plain(obj: Any) -> bytes | None:
        try:
            return _orjson.dumps(obj, default=_refuse, option=_PLAIN)
        except TypeError:  # orjson.JSONEncodeError included: not plain, or not encodable
            return None

    loads = _orjson.loads
    fragment = _orjson.Fragment
    JSONDecodeError = _orjson.JSONDecodeError
    BACKEND = "orjson"


def dumps_str(obj: Any) -> str:
    """``dumps`` as text (tool-call arguments travel as a JSON string inside JSON)."""
    return dumps(obj).decode()
