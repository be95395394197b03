"""A lean HTTP/1.1 client on trio streams for the LLM adapters (private subpackage).

Layers, bottom up: `Connection` (one trio stream, responses parsed by httptools), `ConnectionPool`
(keep-alive connections to one origin with the guide's settings), `Exchange` (one request:
slot, connection, send, give back), then three faces: `LeanSession` (the adapters'
``post_json``/``open_stream`` interface, errors from `agentflow_trio.errors`),
`LeanTransport` (an ``httpx2`` transport, errors from httpx2) and `LeanHTTPClient` (plain
requests to one base URL, the load generator's client). The last two are public through
`agentflow_trio.llm`. TLS goes through
``trio.SSLStream`` with the system trust store (`default_ssl_context`).

Selected with ``[llm] transport = "lean"`` (or ``open_http_session(..., http_transport=
"lean")``); ``"httpx2"`` keeps the plain httpx2 client.
"""

from .choice import TRANSPORTS as TRANSPORTS
from .choice import fallback_reason as fallback_reason
from .client import LeanHTTPClient as LeanHTTPClient
from .client import LeanResponse as LeanResponse
from .connection import Connection as Connection
from .exceptions import LeanHTTPError as LeanHTTPError
from .exchange import Exchange as Exchange
from .mapping import HTTPX_ERRORS as HTTPX_ERRORS
from .mapping import SESSION_ERRORS as SESSION_ERRORS
from .pool import ConnectionPool as ConnectionPool
from .pool import PoolSettings as PoolSettings
from .pools import PoolSet as PoolSet
from .session import LeanSession as LeanSession
from .session import open_lean_session as open_lean_session
from .tls import default_ssl_context as default_ssl_context
from .transport import LeanTransport as LeanTransport

__all__ = [
    "HTTPX_ERRORS",
    "SESSION_ERRORS",
    "TRANSPORTS",
    "Connection",
    "ConnectionPool",
    "Exchange",
    "LeanHTTPClient",
    "LeanHTTPError",
    "LeanResponse",
    "LeanSession",
    "LeanTransport",
    "PoolSet",
    "PoolSettings",
    "default_ssl_context",
    "fallback_reason",
    "open_lean_session",
]
