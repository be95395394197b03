"""JSON encoding for the mock servers: orjson when installed, the standard library otherwise.

``dumps`` always returns compact UTF-8 bytes and ``loads`` accepts bytes; both raise
``ValueError`` (``JSONDecodeError`` is one) on bad input, whichever backend is in use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["BACKEND", "dumps", "loads"]

dumps: Callable[[Any], bytes]
loads: Callable[[bytes | str], Any]

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is an optional extra
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def _std_dumps(value: Any) -> bytes:
        return _encoder.encode(value).encode()

    dumps = _std_dumps
    loads = json.loads
    BACKEND = "json"
else:
    dumps = orjson.dumps
    loads = orjson.loads
    BACKEND = "orjson"
