"""Content-Encoding for response bodies: identity, gzip and deflate (zlib).

The lean transport does not ask for compression (no ``accept-encoding``), so a compliant
server sends plain bodies; a server that compresses anyway with gzip or deflate is still
understood. Any other coding raises `ResponseFormatError`.
"""

from __future__ import annotations

import zlib
from typing import Final

from ...errors import ResponseFormatError

__all__ = ["Decompressor", "decompressor"]

_AUTO_HEADER: Final = 32 + zlib.MAX_WBITS  # accept a gzip or a zlib header
_CODINGS: Final = frozenset({b"gzip", b"x-gzip", b"deflate"})


class Decompressor:
    """Incremental decoder of one body; `feed` parts in order, then `flush`."""

    __slots__ = ("_zlib",)

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(_AUTO_HEADER)

    def feed(self, data: bytes) -> bytes:
        """The decoded bytes ``data`` completes.

        Raises:
            ResponseFormatError: the data is not valid gzip/deflate.
        """
        try:
            return self._zlib.decompress(data)
        except zlib.error as exc:
            raise ResponseFormatError(f"undecodable compressed body: {exc}") from exc

    def flush(self) -> bytes:
        """What remains at the end of the body."""
        try:
            return self._zlib.flush()
        except zlib.error as exc:
            raise ResponseFormatError(f"undecodable compressed body: {exc}") from exc


def decompressor(encoding: bytes | None) -> Decompressor | None:
    """A `Decompressor` for ``encoding`` (lower case), or None for a plain body.

    Raises:
        ResponseFormatError: a coding other than identity, gzip or deflate.
    """
    if encoding is None or encoding in (b"", b"identity"):
        return None
    if encoding not in _CODINGS:
        raise ResponseFormatError(f"unsupported content-encoding {encoding.decode('latin-1')!r}")
    return Decompressor()
