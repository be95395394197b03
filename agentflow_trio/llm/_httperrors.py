"""Translate httpx2 exceptions and HTTP error statuses into `agentflow_trio.errors` classes.

Every httpx2 exception class has an explicit entry in `EXCEPTION_MAP` (a test walks httpx2
and fails on any class left out); an exception is mapped through the first class of its MRO
found there, so a new httpx2 subclass still lands on its parent's mapping. Mapped errors keep
the original as ``__cause__`` (callers write ``raise map_exception(exc, d) from exc``).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

import httpx2

from .. import _json
from ..errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    LLMConnectError,
    LLMError,
    LLMReadError,
    LLMTimeoutError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ResponseTooLargeError,
    ServerError,
    TransportError,
)
from ._lines import excerpt

__all__ = [
    "EXCEPTION_MAP",
    "HTTPX_ERRORS",
    "MAX_RETRY_AFTER",
    "map_exception",
    "parse_retry_after",
    "status_error",
]

HTTPX_ERRORS: Final = (
    httpx2.HTTPError,
    httpx2.InvalidURL,
    httpx2.CookieConflict,
    httpx2.StreamError,
)
"""Every exception httpx2 raises on purpose: catch these at the provider boundary."""

EXCEPTION_MAP: Final[Mapping[type[Exception], type[Exception]]] = MappingProxyType(
    {
        # The operational tree: no usable response.
        httpx2.HTTPError: LLMError,
        httpx2.RequestError: TransportError,
        httpx2.TransportError: TransportError,
        httpx2.TimeoutException: LLMTimeoutError,
        httpx2.ConnectTimeout: LLMTimeoutError,
        httpx2.ReadTimeout: LLMTimeoutError,
        httpx2.WriteTimeout: LLMTimeoutError,
        httpx2.PoolTimeout: LLMTimeoutError,
        httpx2.NetworkError: TransportError,
        httpx2.ConnectError: LLMConnectError,
        httpx2.ProxyError: LLMConnectError,
        httpx2.ReadError: LLMReadError,
        httpx2.WriteError: LLMReadError,
        httpx2.CloseError: LLMReadError,
        httpx2.ProtocolError: TransportError,
        httpx2.RemoteProtocolError: LLMReadError,
        httpx2.LocalProtocolError: TransportError,
        httpx2.TooManyRedirects: TransportError,
        # A response came, but not in a usable shape.
        httpx2.DecodingError: ResponseFormatError,
        httpx2.SSEError: ResponseFormatError,
        # An error status (only if someone called raise_for_status).
        httpx2.HTTPStatusError: APIStatusError,
        # Misuse: the configured URL is wrong; retrying cannot help.
        httpx2.UnsupportedProtocol: ConfigError,
        httpx2.InvalidURL: ConfigError,
        # Misuse of httpx2 by this package (a bug here, not at the provider).
        httpx2.CookieConflict: LLMError,
        httpx2.StreamError: LLMError,
        httpx2.StreamConsumed: LLMError,
        httpx2.StreamClosed: LLMError,
        httpx2.ResponseNotRead: LLMError,
        httpx2.RequestNotRead: LLMError,
    }
)

MAX_RETRY_AFTER: Final = 86_400.0
"""The largest Retry-After `parse_retry_after` reports (one day): a larger value is absurd
and reads as this. `Retry` caps further, by its ``max_delay``."""

HTTPX2_MAX_HEAD: Final = 100 * 1024
"""httpcore2's fixed bound on an incomplete HTTP/1.1 event (a response head, a chunk line)."""

_TOO_LONG: Final = "Receive buffer too long"  # h11's message for that bound
_DELAY: Final = re.compile(rb"[0-9]{1,20}(?:\.[0-9]{1,9})?")
_DATE_CHARS: Final = 64
_GO_DURATION: Final = re.compile(r"(?:[0-9]{1,12}(?:\.[0-9]{1,9})?(?:h|ms|m|s|us|µs|ns))+")
_GO_PART: Final = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)(h|ms|m|s|us|µs|ns)")
_GO_UNIT: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_LIMIT_KINDS: Final = ("requests", "tokens", "input-tokens", "output-tokens")

_STATUS: Final[Mapping[int, type[APIStatusError]]] = {
    400: BadRequestError,
    422: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    429: RateLimitError,
}

_resolved: dict[type[BaseException], type[Exception]] = {}


def _target(kind: type[BaseException]) -> type[Exception]:
    target = _resolved.get(kind)
    if target is None:
        target = next((EXCEPTION_MAP[k] for k in kind.__mro__ if k in EXCEPTION_MAP), LLMError)
        _resolved[kind] = target
    return target


def map_exception(exc: Exception, deployment: str | None = None) -> Exception:
    """The `agentflow_trio.errors` exception for an httpx2 exception (not raised here).

    Transport failures become `TransportError` subclasses, format problems
    `ResponseFormatError`, an `httpx2.HTTPStatusError` the `APIStatusError` subclass of
    its status, a bad URL `ConfigError` (key ``llm.base_url``), and httpcore2's refusal of
    an oversized head `ResponseTooLargeError`.
    """
    if isinstance(exc, httpx2.HTTPStatusError):
        response = exc.response
        body = response.content if hasattr(response, "_content") else b""
        return status_error(response.status_code, response.headers, body, deployment)
    target = _target(type(exc))
    message = f"{deployment or 'llm'}: {type(exc).__name__}: {exc}".rstrip(": ")
    if target is ConfigError:
        return ConfigError(message, key="llm.base_url")
    if target is ResponseFormatError:
        return ResponseFormatError(message, deployment=deployment)
    if isinstance(exc, httpx2.RemoteProtocolError) and _TOO_LONG in str(exc):
        return ResponseTooLargeError(
            f"{deployment or 'llm'}: response head larger than {HTTPX2_MAX_HEAD} bytes "
            "(httpcore2's fixed bound)",
            limit=HTTPX2_MAX_HEAD,
            deployment=deployment,
        )
    return target(message, deployment=deployment)  # type: ignore[call-arg]


def status_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes | str,
    deployment: str | None = None,
) -> APIStatusError:
    """The `APIStatusError` subclass for an HTTP error ``status``, with a body excerpt.

    400/422 `BadRequestError`, 401/403 `AuthenticationError`, 404 `NotFoundError`, 429
    `RateLimitError`, 5xx `ServerError`, any other status `APIStatusError`.
    ``retry_after`` comes from the headers (see `parse_retry_after`).
    """
    kind = _STATUS.get(status) or (ServerError if status >= 500 else APIStatusError)
    text = excerpt(body)
    return kind(
        f"{deployment or 'llm'}: HTTP {status}: {text}",
        status=status,
        excerpt=text,
        retry_after=parse_retry_after(headers),
        deployment=deployment,
    )


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date),
    else from the vendor's rate-limit reset headers (see `_reset_hint`).

    Look-ups are by lower-case name (httpx2's headers ignore case). Only plain decimal
    numbers count (``1e3``, ``nan``, ``inf``, ``-3``, ``1_000`` are garbage); garbage and
    unparsable dates give None, a date in the past 0.0, and anything above
    `MAX_RETRY_AFTER` (an absurd ``1000000000``, a date in 2096) reads as `MAX_RETRY_AFTER`.
    """
    ms = headers.get("retry-after-ms")
    if ms:
        value = _seconds(ms)
        if value is not None:
            return min(value / 1000.0, MAX_RETRY_AFTER)
    raw = headers.get("retry-after")
    if not raw:
        return _reset_hint(headers, time.time() if now is None else now)
    value = _seconds(raw)
    if value is not None:
        return min(value, MAX_RETRY_AFTER)
    if len(raw) > _DATE_CHARS:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    wait = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, wait), MAX_RETRY_AFTER)


def _reset_hint(headers: Mapping[str, str], now: float) -> float | None:
    """Without ``Retry-After``: the wait until the latest reset of an exhausted rate limit
    (its ``remaining`` is 0), from Anthropic's ``anthropic-ratelimit-<kind>-reset`` (an RFC
    3339 time) or OpenAI's ``x-ratelimit-reset-<kind>`` (a duration such as ``6m0s``);
    None when no limit says it is exhausted, or its reset does not parse."""
    waits: list[float] = []
    for kind in _LIMIT_KINDS:
        if headers.get(f"anthropic-ratelimit-{kind}-remaining", "").strip() == "0":
            when = _rfc3339(headers.get(f"anthropic-ratelimit-{kind}-reset", ""))
            if when is not None:
                waits.append(when - now)
        if headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0":
            wait = _go_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
            if wait is not None:
                waits.append(wait)
    if not waits:
        return None
    return min(max(0.0, max(waits)), MAX_RETRY_AFTER)


def _rfc3339(text: str) -> float | None:
    """A POSIX time from an RFC 3339 date-time (bounded: at most 64 characters)."""
    text = text.strip()
    if not text or len(text) > _DATE_CHARS:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _go_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``)."""
    text = text.strip()
    if not text or len(text) > _DATE_CHARS or not _GO_DURATION.fullmatch(text):
        return None
    return sum(float(n) * _GO_UNIT[unit] for n, unit in _GO_PART.findall(text))


def _seconds(text: str) -> float | None:
    data = text.strip().encode("latin-1", "replace")
    return float(data) if _DELAY.fullmatch(data) else None


def format_error(deployment: str, message: str, body: bytes) -> ResponseFormatError:
    """A `ResponseFormatError` naming the deployment, with an excerpt of the body."""
    return ResponseFormatError(
        f"{deployment}: {message}", excerpt=excerpt(body), deployment=deployment
    )


def json_body(content: bytes, content_type: str, deployment: str) -> Any:
    """Decode a successful response's JSON body; a wrong type or bad JSON is a format error."""
    if "json" not in content_type:
        raise format_error(deployment, f"expected JSON, got content type {content_type!r}", content)
    try:
        return _json.loads(content)
    except _json.JSONDecodeError as exc:
        raise format_error(deployment, f"malformed JSON body: {exc}", content) from exc
