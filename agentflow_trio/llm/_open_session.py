"""Open the HTTP session ``[llm] transport`` names: the lean client or the httpx2 one.

The one place that knows both clients behind the `Session` seam (``_session``), so neither
needs the other: the adapters (OpenAI, Azure, Ollama) call `open_http_session` and get a
`Session`. The lean client is the config's default; where it cannot serve (an HTTP proxy,
HTTP/2) the httpx2 one is used and the reason logged at INFO.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ._lean import fallback_reason, open_lean_session
from ._session import Session
from .http import open_httpx2_session

if TYPE_CHECKING:
    from ..config import LLMConfig

__all__ = ["open_http_session"]

_log = logging.getLogger("agentflow_trio.llm")


@asynccontextmanager
async def open_http_session(
    llm: LLMConfig,
    *,
    headers: Mapping[str, str],
    deployment: str,
    base_url: str,
    http_transport: str | None = None,
) -> AsyncIterator[Session]:
    """The provider's HTTP session, ``min_connections`` warmed up, closed on exit.

    ``headers`` are sent with every request (set once here, not per call); connections are
    warmed up to the origin of ``base_url``. ``http_transport`` (default: the config's
    ``transport``, else ``"httpx2"``) picks the client: ``"httpx2"`` (`HTTPSession`) or
    ``"lean"`` (``_lean.LeanSession``: HTTP/1.1 on trio streams, same interface and
    errors); where the lean one cannot serve (a proxy, HTTP/2) httpx2 is used and the
    reason logged at INFO.

    Raises:
        ConfigError: an unknown ``http_transport``.
    """
    choice = http_transport or getattr(llm, "transport", None) or "httpx2"
    if choice == "lean":
        reason = fallback_reason(llm)
        if reason is None:
            async with open_lean_session(
                llm, headers=headers, deployment=deployment, base_url=base_url
            ) as lean:
                yield lean
            return
        _log.info("%s: lean HTTP transport cannot serve: %s; using httpx2", deployment, reason)
    elif choice != "httpx2":
        raise ConfigError(f"expected 'lean' or 'httpx2', got {choice!r}", key="llm.transport")
    async with open_httpx2_session(
        llm, headers=headers, deployment=deployment, base_url=base_url
    ) as session:
        yield session
