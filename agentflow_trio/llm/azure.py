"""The Azure OpenAI adapter: the OpenAI wire format at per-deployment URLs.

``{base_url}/openai/deployments/{deployment}/chat/completions?api-version=...`` (and
``/embeddings``), authenticated with the ``api-key`` header. The deployment (``llm.deployment``,
or ``llm.model`` when empty) picks the model, so bodies carry no ``model`` field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..errors import ConfigError
from ._open_session import open_http_session
from ._userinfo import move_userinfo, strip_userinfo
from .openai import OpenAIProvider

if TYPE_CHECKING:
    from ..config import LLMConfig

__all__ = ["azure_headers", "azure_urls", "open_azure"]


def azure_headers(llm: LLMConfig) -> dict[str, str]:
    """The headers sent with every Azure call: ``api-key``, then ``llm.headers``."""
    headers = {"content-type": "application/json"}
    if llm.api_key:
        headers["api-key"] = llm.api_key
    headers.update(llm.headers)
    return headers


def azure_urls(llm: LLMConfig) -> tuple[str, str]:
    """The chat and embeddings URLs of ``llm``'s deployment.

    Raises:
        ConfigError: ``llm.base_url`` is empty (Azure has no default endpoint).
    """
    if not llm.base_url:
        raise ConfigError(
            "Azure needs base_url (https://RESOURCE.openai.azure.com)", key="llm.base_url"
        )
    base = strip_userinfo(llm.base_url).rstrip("/")
    deployment = quote(llm.deployment or llm.model, safe="")
    version = quote(llm.api_version, safe="")
    prefix = f"{base}/openai/deployments/{deployment}"
    return (
        f"{prefix}/chat/completions?api-version={version}",
        f"{prefix}/embeddings?api-version={version}",
    )


@asynccontextmanager
async def open_azure(llm: LLMConfig) -> AsyncIterator[OpenAIProvider]:
    """An `OpenAIProvider` for ``llm``'s Azure deployment; closes its client on exit.

    Raises:
        ConfigError: ``llm.base_url`` is empty.
    """
    chat_url, embeddings_url = azure_urls(llm)
    headers = azure_headers(llm)
    base_url = move_userinfo(llm.base_url, headers)
    async with open_http_session(
        llm, headers=headers, deployment=llm.deployment or llm.model, base_url=base_url
    ) as session:
        yield OpenAIProvider(session, chat_url=chat_url, embeddings_url=embeddings_url, model=None)
