"""Content-Encoding for response bodies: moved to ``llm._bodies`` (shared with httpx2).

The lean client asks for no compression (no ``accept-encoding``); a server that
compresses anyway with gzip or deflate is still understood, within ``max_response_bytes``
decoded bytes. Re-exported here for the earlier import path.
"""

from .._bodies import Decompressor as Decompressor
from .._bodies import decompressor as decompressor

__all__ = ["Decompressor", "decompressor"]
