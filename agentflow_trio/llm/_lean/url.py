"""URLs to origins and request heads: parsed once per URL, encoded once, reused per call.

An `Origin` (scheme, host, port) names one connection pool. `request_prefix` builds the
constant start of a request head (request line, ``host``, the constant headers, and the
``content-length:`` name), so a call only appends the length, the blank line and the body
(`request_bytes`). Header names and values are checked once, when encoded: a CR, LF or NUL
(header injection) raises `ValueError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

import attrs

from ...config import redact_url
from .exceptions import UnsupportedURL

__all__ = [
    "DEFAULT_HEADERS",
    "Origin",
    "encode_headers",
    "parse_url",
    "request_bytes",
    "request_prefix",
]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_FORBIDDEN: Final = frozenset("\r\n\0")
_SPLIT_BODY: Final = 1 << 18  # bodies above 256 KiB are sent apart from the head (no copy)

DEFAULT_HEADERS: Final = (("accept", "*/*"), ("user-agent", "agentflow-trio"))
"""Sent before the caller's headers unless the caller names the same header."""


@attrs.frozen(slots=True)
class Origin:
    """Where a connection goes: ``scheme`` (http or https), ``host`` (no brackets), ``port``."""

    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        """True for https."""
        return self.scheme == "https"

    def host_header(self) -> str:
        """The ``host`` header value: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


def parse_url(url: str) -> tuple[Origin, str]:
    """The origin of ``url`` and its request target (path and query, at least ``/``).

    Raises:
        UnsupportedURL: not http/https, no host, or a bad port.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsupportedURL(f"malformed URL {redact_url(url)!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsupportedURL(
            f"the lean transport speaks http:// and https://, got {redact_url(url)!r}"
        )
    host = parts.hostname
    if not host:
        raise UnsupportedURL(f"no host in URL {redact_url(url)!r}")
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return Origin(scheme, host, port or _DEFAULT_PORTS[scheme]), target


def _encode(text: str, what: str) -> bytes:
    if not _FORBIDDEN.isdisjoint(text):
        raise ValueError(f"header {what} {text!r} contains CR, LF or NUL")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def encode_headers(headers: Iterable[tuple[str, str]]) -> bytes:
    """``name: value\\r\\n`` lines for ``headers``, in order.

    Raises:
        ValueError: a name or value contains CR, LF or NUL, or a name is empty or has
            a colon or whitespace.
    """
    lines = []
    for name, value in headers:
        if not name or ":" in name or name != name.strip() or " " in name:
            raise ValueError(f"invalid header name {name!r}")
        lines.append(b"%b: %b\r\n" % (_encode(name, "name"), _encode(value, "value")))
    return b"".join(lines)


def request_prefix(method: str, origin: Origin, target: str, headers: bytes) -> bytes:
    """The constant start of a request head, ending with ``content-length: ``.

    ``headers`` are encoded lines (`encode_headers`), sent after ``host``.
    """
    line = b"%b %b HTTP/1.1\r\nhost: %b\r\n" % (
        _encode(method, "method"),
        _encode(target, "target"),
        _encode(origin.host_header(), "host"),
    )
    return line + headers + b"content-length: "


def request_bytes(prefix: bytes, body: bytes) -> tuple[bytes, bytes]:
    """The head and the body to send for ``body`` after ``prefix`` (`request_prefix`).

    Small bodies travel in the head (one write, one copy); a body over 256 KiB is returned
    apart so it is written without being copied.
    """
    if len(body) > _SPLIT_BODY:
        return b"%b%d\r\n\r\n" % (prefix, len(body)), body
    return b"%b%d\r\n\r\n%b" % (prefix, len(body), body), b""
