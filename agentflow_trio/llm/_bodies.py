"""Bounded response bodies: the size limits both HTTP clients apply, and content decoding.

A server decides how many bytes it sends and how far they inflate; these bounds keep that
from deciding how much memory a call holds. Both clients (the lean one of ``_lean`` and the
httpx2 one of ``http``) apply them, each named by the ``[llm]`` key a user may change:

* ``max_response_bytes`` (default 64 MiB): a body as received (framing included; for a
  stream, the whole stream), a declared ``Content-Length``, and a body once decoded
  (gzip, deflate), each on its own; a gzip bomb stops at the bound, not at the end.
* ``max_header_bytes`` (default 64 KiB, lean client): the response head (status line and
  headers, interim ``1xx`` heads included). The httpx2 client has httpcore2's fixed
  100 KiB instead.

Crossing one raises `ResponseTooLargeError` naming the bound and its key. Only ``gzip``
and ``deflate`` (zlib) codings are decoded; the clients ask for nothing else (the lean one
asks for no compression at all), and any other coding is a `ResponseFormatError`.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Final

from ..errors import ResponseFormatError, ResponseTooLargeError

if TYPE_CHECKING:
    from ..config import LLMConfig

__all__ = [
    "BODY_KEY",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "HEADER_KEY",
    "Decompressor",
    "configured_limits",
    "decompressor",
    "too_large",
]

DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 2**20
"""Largest response body (as received, as declared, and once decoded): 64 MiB."""

DEFAULT_MAX_HEADER_BYTES: Final = 64 * 2**10
"""Largest response head (status line and headers) the lean client reads: 64 KiB."""

BODY_KEY: Final = "llm.max_response_bytes"
HEADER_KEY: Final = "llm.max_header_bytes"

_AUTO_HEADER: Final = 32 + zlib.MAX_WBITS  # accept a gzip or a zlib header
_CODINGS: Final = frozenset({b"gzip", b"x-gzip", b"deflate"})


def configured_limits(llm: LLMConfig) -> tuple[int, int]:
    """``(max_response_bytes, max_header_bytes)`` of an ``[llm]`` section."""
    return int(llm.max_response_bytes), int(llm.max_header_bytes)


def too_large(what: str, limit: int, key: str, deployment: str | None = None) -> Exception:
    """The `ResponseTooLargeError` for ``what`` (e.g. "decoded body") over ``limit`` bytes."""
    name = key.rpartition(".")[2]
    where = f"{deployment}: " if deployment else ""
    return ResponseTooLargeError(
        f"{where}response {what} larger than {limit} bytes ({name} = {limit})",
        limit=limit,
        key=key,
        deployment=deployment,
    )


class Decompressor:
    """Incremental decoder of one body; `feed` parts in order, then `flush`.

    At most ``limit`` decoded bytes come out in all: beyond them `feed` raises
    `ResponseTooLargeError` (or, with ``truncate``, drops the rest: for error excerpts).
    zlib never produces more than ``limit + 1`` bytes per call, so a bomb costs no more.
    """

    __slots__ = ("_left", "_limit", "_truncate", "_zlib")

    def __init__(self, limit: int = DEFAULT_MAX_RESPONSE_BYTES, *, truncate: bool = False) -> None:
        self._zlib = zlib.decompressobj(_AUTO_HEADER)
        self._limit = limit
        self._left = limit
        self._truncate = truncate

    def feed(self, data: bytes) -> bytes:
        """The decoded bytes ``data`` completes.

        Raises:
            ResponseTooLargeError: more than ``limit`` decoded bytes in all.
            ResponseFormatError: the data is not valid gzip/deflate.
        """
        if self._truncate and not self._left:
            return b""
        try:
            out = self._zlib.decompress(data, self._left + 1)
        except zlib.error as exc:
            raise ResponseFormatError(f"undecodable compressed body: {exc}") from exc
        return self._count(out)

    def flush(self) -> bytes:
        """What remains at the end of the body (same errors as `feed`)."""
        if self._truncate and not self._left:
            return b""  # the input not taken stays undecoded: flush would decode all of it
        try:
            out = self._zlib.flush()
        except zlib.error as exc:
            raise ResponseFormatError(f"undecodable compressed body: {exc}") from exc
        return self._count(out)

    def _count(self, out: bytes) -> bytes:
        left = self._left
        if len(out) > left:
            if not self._truncate:
                raise too_large("decoded body", self._limit, BODY_KEY)
            out = out[:left]
        self._left = left - len(out)
        return out


def decompressor(
    encoding: bytes | None, limit: int = DEFAULT_MAX_RESPONSE_BYTES, *, truncate: bool = False
) -> Decompressor | None:
    """A `Decompressor` for ``encoding`` (lower case), or None for a plain body.

    Raises:
        ResponseFormatError: a coding other than identity, gzip or deflate.
    """
    if encoding is None or encoding in (b"", b"identity"):
        return None
    if encoding not in _CODINGS:
        raise ResponseFormatError(f"unsupported content-encoding {encoding.decode('latin-1')!r}")
    return Decompressor(limit, truncate=truncate)
