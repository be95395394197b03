"""JSON encode/decode for the LLM wire: orjson when importable, the stdlib otherwise.

One place decides, so every adapter pays the same (lowest available) price per call.
``dumps`` returns bytes, ready for an HTTP body; ``dumps_canonical`` sorts keys, for
cache keys; ``loads`` accepts bytes or str; ``JSONDecodeError`` is what ``loads`` raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["JSONDecodeError", "dumps", "dumps_canonical", "dumps_str", "loads"]

loads: Callable[[bytes | str], Any]
dumps: Callable[[Any], bytes]
dumps_canonical: Callable[[Any], bytes]
JSONDecodeError: type[ValueError]


def _default(obj: Any) -> Any:
    # Read-only mappings (MappingProxyType defaults, user Mappings) encode as objects.
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is an optional speed-up
    _compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_default)
    _sorted = json.JSONEncoder(
        ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=_default
    )

    def dumps(obj: Any) -> bytes:
        return _compact.encode(obj).encode()

    def dumps_canonical(obj: Any) -> bytes:
        return _sorted.encode(obj).encode()

    loads = json.loads
    JSONDecodeError = json.JSONDecodeError
else:
    _SORT = _orjson.OPT_SORT_KEYS | _orjson.OPT_NON_STR_KEYS

    def dumps(obj: Any) -> bytes:
        return _orjson.dumps(obj, default=_default)

    def dumps_canonical(obj: Any) -> bytes:
        return _orjson.dumps(obj, default=_default, option=_SORT)

    loads = _orjson.loads
    JSONDecodeError = _orjson.JSONDecodeError


def dumps_str(obj: Any) -> str:
    """``dumps`` as text (tool-call arguments travel as a JSON string inside JSON)."""
    return dumps(obj).decode()
