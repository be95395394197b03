"""The lean transport's errors translated at its two edges: agentflow_trio.errors and httpx2.

`SESSION_ERRORS` (for `LeanSession`) and `HTTPX_ERRORS` (for `LeanTransport`) each have an
entry for every `LeanHTTPError` class (a test walks the tree); callers raise the result
``from`` the original, so the chain reaches the socket or TLS error.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeVar

import httpx2

from ...errors import (
    ConfigError,
    LLMConnectError,
    LLMReadError,
    LLMTimeoutError,
    ResponseTooLargeError,
    TransportError,
)
from .exceptions import (
    ConnectFailed,
    ConnectTimeout,
    LeanHTTPError,
    PoolClosed,
    PoolTimeout,
    ProtocolFailed,
    ReadFailed,
    ReadTimeout,
    ResponseTooLarge,
    UnsupportedURL,
    WriteFailed,
    WriteTimeout,
)

__all__ = ["HTTPX_ERRORS", "SESSION_ERRORS", "to_httpx", "to_llm_error"]

SESSION_ERRORS: Final[Mapping[type[LeanHTTPError], type[Exception]]] = MappingProxyType(
    {
        LeanHTTPError: TransportError,
        PoolTimeout: LLMTimeoutError,
        ConnectTimeout: LLMTimeoutError,
        ConnectFailed: LLMConnectError,
        WriteTimeout: LLMTimeoutError,
        WriteFailed: LLMReadError,
        ReadTimeout: LLMTimeoutError,
        ReadFailed: LLMReadError,
        ProtocolFailed: LLMReadError,
        ResponseTooLarge: ResponseTooLargeError,
        UnsupportedURL: ConfigError,
        PoolClosed: TransportError,
    }
)

HTTPX_ERRORS: Final[Mapping[type[LeanHTTPError], type[httpx2.RequestError]]] = MappingProxyType(
    {
        LeanHTTPError: httpx2.TransportError,
        PoolTimeout: httpx2.PoolTimeout,
        ConnectTimeout: httpx2.ConnectTimeout,
        ConnectFailed: httpx2.ConnectError,
        WriteTimeout: httpx2.WriteTimeout,
        WriteFailed: httpx2.WriteError,
        ReadTimeout: httpx2.ReadTimeout,
        ReadFailed: httpx2.ReadError,
        ProtocolFailed: httpx2.RemoteProtocolError,
        ResponseTooLarge: httpx2.DecodingError,  # a response came, but not a usable one
        UnsupportedURL: httpx2.UnsupportedProtocol,
        PoolClosed: httpx2.TransportError,
    }
)


E = TypeVar("E", bound=Exception)


def _lookup(kind: type[LeanHTTPError], table: Mapping[type[LeanHTTPError], type[E]]) -> type[E]:
    for cls in kind.__mro__:
        if cls in table:
            return table[cls]
    return table[LeanHTTPError]


def to_llm_error(exc: LeanHTTPError, deployment: str | None = None) -> Exception:
    """The `agentflow_trio.errors` exception for ``exc`` (not raised here)."""
    target = _lookup(type(exc), SESSION_ERRORS)
    message = f"{deployment or 'llm'}: {exc}"
    if target is ConfigError:
        return ConfigError(message, key="llm.base_url")
    if isinstance(exc, ResponseTooLarge):
        return ResponseTooLargeError(
            message, limit=exc.limit, key=exc.key or None, deployment=deployment
        )
    return target(message, deployment=deployment)  # type: ignore[call-arg]


def to_httpx(exc: LeanHTTPError, request: httpx2.Request | None = None) -> httpx2.RequestError:
    """The httpx2 exception for ``exc``, carrying ``request`` (not raised here)."""
    target = _lookup(type(exc), HTTPX_ERRORS)
    return target(str(exc), request=request)
