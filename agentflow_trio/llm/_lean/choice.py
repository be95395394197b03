"""Whether the lean transport can serve a provider, and if not, why (for the INFO log)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...config import LLMConfig

__all__ = ["TRANSPORTS", "fallback_reason"]

TRANSPORTS = ("lean", "httpx2")
"""The values of ``[llm] transport``."""


def fallback_reason(llm: LLMConfig) -> str | None:
    """None if the lean transport can serve ``llm``, else why httpx2 must.

    It cannot tunnel through an HTTP proxy (``llm.proxy``) or speak HTTP/2 (``llm.http2``);
    both are read only if the config has them.
    """
    if getattr(llm, "proxy", None):
        return "an HTTP proxy is configured (llm.proxy)"
    if getattr(llm, "http2", False):
        return "HTTP/2 was requested (llm.http2)"
    return None
