"""`LeanHTTPClient`: a plain HTTP/1.1 client for one base URL, on the lean transport's pool.

What ``agentcli loadtest --target URL`` sends a scenario's requests through (and what any
caller that wants raw speed can use): pooled keep-alive connections (`ConnectionPool`,
httptools parser), request heads pre-encoded per (method, path), no request objects and no
header dictionaries unless the caller reads ``response.headers``. Unlike the LLM session
it never raises for an HTTP status: the status is the caller's to judge.

Cancellation: a request cancelled at any point closes its connection unless the response
had been read to its end; its pool slot is always released.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, final

import trio

from ... import _json
from .connection import Connection
from .exchange import Exchange, own_deadline
from .pool import PoolSettings
from .pools import PoolSet
from .url import encode_headers, parse_url, request_bytes, request_prefix

__all__ = ["LeanHTTPClient", "LeanResponse"]

_BASE_HEADERS: Final = (("accept", "*/*"), ("user-agent", "agentflow-trio"))
_JSON_TYPE: Final = (("content-type", "application/json"),)
_MAX_PREFIXES: Final = 1024


@final
class LeanResponse:
    """A response: ``status_code``, ``content`` (bytes), `text`, `json`, `headers`."""

    __slots__ = ("_raw_headers", "content", "status_code")

    def __init__(self, status: int, content: bytes, raw_headers: Any) -> None:
        self.status_code = status
        self.content = content
        self._raw_headers = raw_headers

    @property
    def is_success(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    @property
    def headers(self) -> dict[str, str]:
        """The response headers, names lower-cased (built on first use)."""
        return {
            bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
            for name, value in self._raw_headers
        }

    def json(self) -> Any:
        """The body decoded as JSON (orjson). Raises ``ValueError`` (``JSONDecodeError``)."""
        return _json.loads(self.content)

    def __repr__(self) -> str:
        return f"<LeanResponse [{self.status_code}]>"


@final
class LeanHTTPClient:
    """Requests to one base URL (``http://host:port[/prefix]``) over a lean pool.

    ``max_connections`` bounds the open connections (a request beyond it waits for a
    slot); ``timeout`` bounds each request from its first byte sent to its last byte
    read, and the wait for a slot and the connect. Close it with `aclose` (idempotent).

    Raises (from `request`): the lean transport's ``LeanHTTPError`` subclasses for a
    connect failure, a timeout (``ReadTimeout``/``WriteTimeout``/``PoolTimeout``) or a
    lost connection; never for an HTTP status.
    """

    __slots__ = ("_base_path", "_pool", "_pools", "_prefixes", "_timeout", "origin")

    def __init__(self, base_url: str, *, timeout: float = 60.0, max_connections: int = 100) -> None:
        origin, base_path = parse_url(base_url)
        self.origin = origin
        self._base_path = base_path.rstrip("/")
        settings = PoolSettings(
            max_connections=max(int(max_connections), 1),
            connection_timeout=timeout,
            request_timeout=timeout,
        )
        self._pools = PoolSet(settings)
        self._pool = self._pools.pool(origin)
        self._timeout = timeout
        self._prefixes: dict[tuple[str, str, bool], bytes] = {}

    def _prefix(self, method: str, path: str, is_json: bool) -> bytes:
        key = (method, path, is_json)
        prefix = self._prefixes.get(key)
        if prefix is None:
            target = path if "://" not in path else parse_url(path)[1]
            if not target.startswith("/"):
                target = "/" + target
            headers = _BASE_HEADERS + _JSON_TYPE if is_json else _BASE_HEADERS
            prefix = request_prefix(
                method, self.origin, self._base_path + target, encode_headers(headers)
            )
            if len(self._prefixes) < _MAX_PREFIXES:
                self._prefixes[key] = prefix
        return prefix

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> LeanResponse:
        """Send one request and read the whole response (``json`` encoded by ``_json``)."""
        if json is not None:
            body = _json.dumps(json)
        elif isinstance(content, str):
            body = content.encode()
        else:
            body = content or b""
        prefix = self._prefix(method, path, json is not None)
        if headers:
            prefix = prefix[: -len(b"content-length: ")]
            prefix += encode_headers(headers.items()) + b"content-length: "
        head, rest = request_bytes(prefix, body)
        exchange = Exchange(self._pool)
        try:
            deadline = own_deadline(self._timeout)  # no cancel scope when one ends sooner
            if deadline is None:
                conn = await self._exchange(exchange, method, head, rest)
                data = await conn.receive_all()
            else:
                with trio.CancelScope(deadline=deadline) as scope:
                    conn = await self._exchange(exchange, method, head, rest)
                    data = await conn.receive_all()
                if scope.cancelled_caught:
                    raise exchange.timeout_error(self._timeout)
            return LeanResponse(conn.status, data, conn.headers)
        finally:
            await exchange.aclose()

    @staticmethod
    async def _exchange(exchange: Exchange, method: str, head: bytes, rest: bytes) -> Connection:
        await exchange.open(no_body=method == "HEAD")
        return await exchange.send(head, rest)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> LeanResponse:
        """``request("POST", path, json=json, ...)``."""
        return await self.request("POST", path, json=json, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> LeanResponse:
        """``request("GET", path, ...)``."""
        return await self.request("GET", path, **kwargs)

    async def aclose(self) -> None:
        """Close every connection. Idempotent; never blocks."""
        await self._pools.aclose()

    async def __aenter__(self) -> LeanHTTPClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
