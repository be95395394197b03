"""The lean transport's own failures, one class per phase, mapped at each public edge.

The core (pool, connection) raises only these; `LeanSession` maps them to
`agentflow_trio.errors` (`SESSION_ERRORS`) and `LeanTransport` to httpx2's classes, each
with ``from`` so the cause chain reaches the socket error::

    LeanHTTPError
    ├── PoolTimeout        no connection slot within connection_timeout
    ├── ConnectTimeout     TCP connect + TLS handshake took longer than connection_timeout
    ├── ConnectFailed      refused, unreachable, DNS failure, TLS verification failure
    ├── WriteTimeout       the request could not be sent in time
    ├── WriteFailed        the connection broke while sending
    ├── ReadTimeout        the response (or the next part of a stream) did not come in time
    ├── ReadFailed         the connection broke or closed before the response was complete
    ├── ProtocolFailed     the bytes received are not a valid HTTP/1.1 response
    ├── ResponseTooLarge   the head or body crossed max_header_bytes / max_response_bytes
    ├── UnsupportedURL     not http:// or https:// (misuse: the configured URL is wrong)
    └── PoolClosed         the pool was closed (misuse: a call after aclose)
"""

from __future__ import annotations

__all__ = [
    "ConnectFailed",
    "ConnectTimeout",
    "LeanHTTPError",
    "PoolClosed",
    "PoolTimeout",
    "ProtocolFailed",
    "ReadFailed",
    "ReadTimeout",
    "ResponseTooLarge",
    "UnsupportedURL",
    "WriteFailed",
    "WriteTimeout",
]


class LeanHTTPError(Exception):
    """Root of the lean transport's failures. `LeanHTTPClient` raises them as they are
    (the subclass names the failure); the LLM session maps them to `agentflow_trio.errors`
    and `LeanTransport` to httpx2's exceptions."""


class PoolTimeout(LeanHTTPError):
    """Every connection slot stayed busy for ``connection_timeout`` seconds."""


class ConnectTimeout(LeanHTTPError):
    """Opening the connection (TCP, then TLS) took longer than ``connection_timeout``."""


class ConnectFailed(LeanHTTPError):
    """The connection could not be opened (refused, DNS, TLS verification...)."""


class WriteTimeout(LeanHTTPError):
    """The request could not be written before the request deadline."""


class WriteFailed(LeanHTTPError):
    """The connection broke while the request was being written."""


class ReadTimeout(LeanHTTPError):
    """The response, or the next part of a streamed one, did not arrive in time."""


class ReadFailed(LeanHTTPError):
    """The connection broke, or the server closed it, before the response was complete."""


class ProtocolFailed(LeanHTTPError):
    """The server's bytes are not a valid HTTP/1.1 response (or ask for an upgrade)."""


class ResponseTooLarge(LeanHTTPError):
    """The response's head or body crossed its bound: ``limit`` bytes, config key ``key``
    (``llm.max_header_bytes`` or ``llm.max_response_bytes``). Raised as the bound is
    crossed; the connection is then closed, never reused."""

    def __init__(self, message: str, *, limit: int = 0, key: str = "") -> None:
        self.limit = limit
        self.key = key
        super().__init__(message)


class UnsupportedURL(LeanHTTPError):
    """The URL is not ``http://`` or ``https://`` with a host."""


class PoolClosed(LeanHTTPError):
    """The pool (its session or transport) was closed; no new request is accepted."""
