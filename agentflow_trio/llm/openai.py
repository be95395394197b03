"""The OpenAI adapter: ``/chat/completions`` (plain and SSE) and ``/embeddings`` over httpx2.

`OpenAIProvider` speaks the OpenAI wire format to any URLs it is given, so Azure reuses it
with its own URLs and headers (see ``azure.py``). Streams ask for
``stream_options: {include_usage: true}``, so the last chunk carries the usage; streamed tool
call fragments arrive as `ToolCallDelta` (join them with `StreamAccumulator`).

A stream is judged by its answer (see ``_accumulate``): a clean end after ``finish_reason``
without ``data: [DONE]`` is a whole answer; one that stops before ``finish_reason`` raises an
`IncompleteStreamError` saying how much was delivered; up to `MAX_MALFORMED` garbage
events in a row are skipped and counted (``chunks.malformed``), not fatal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Final, final

from . import _openai_wire as wire
from ._accumulate import ChunkDecoder
from ._lines import MAX_MALFORMED, SSEDecoder
from ._open_session import open_http_session
from ._session import Session
from ._userinfo import move_userinfo
from .types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamChunk

if TYPE_CHECKING:
    from ..config import LLMConfig

__all__ = ["DEFAULT_OPENAI_URL", "OpenAIProvider", "open_openai", "openai_headers"]

DEFAULT_OPENAI_URL: Final = "https://api.openai.com/v1"
_SSE: Final = ("text/event-stream",)


@final
class OpenAIProvider:
    """A `Provider` for the OpenAI wire format at fixed URLs.

    ``model`` is the default model, or None to leave ``model`` out of bodies (Azure, where
    the deployment in the URL decides). Every call goes through ``session``; `aclose`
    closes it. Build one with `open_openai` (or ``azure.open_azure``). ``native_output``:
    the wire has a JSON-schema ``response_format`` (structured output's native mode).
    """

    native_output: Final = True

    def __init__(
        self,
        session: Session,
        *,
        chat_url: str,
        embeddings_url: str,
        model: str | None,
    ) -> None:
        self.session = session
        self._chat_url = chat_url
        self._embeddings_url = embeddings_url
        self._model = model
        self._parse_chunk = wire.chunk_parser(session.deployment)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One chat completion (see `HTTPSession.post_json` for the errors)."""
        # The body goes as an argument, not a local: the session drops it once sent.
        data = await self.session.post_json(
            self._chat_url, wire.chat_body(request, self._model, stream=False)
        )
        return wire.parse_chat(data, self.session.deployment)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """A streamed chat completion; the connection is released when the block exits.

        The iterator is a `GuardedChunks` (``delivered_chunks``, ``malformed``, ...).
        """
        decoder = ChunkDecoder(SSEDecoder(max_malformed=MAX_MALFORMED), self._parse_chunk)
        session = self.session
        body = wire.chat_body(request, self._model, stream=True)
        return session.open_guarded(self._chat_url, body, decoder, _SSE)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeddings for ``request.inputs``, in input order."""
        body = wire.embeddings_body(request, self._model)
        data = await self.session.post_json(self._embeddings_url, body)
        return wire.parse_embeddings(data, self.session.deployment)

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent."""
        await self.session.aclose()


def openai_headers(llm: LLMConfig) -> dict[str, str]:
    """The headers sent with every OpenAI call: auth, organization, then ``llm.headers``."""
    headers = {"content-type": "application/json"}
    if llm.api_key:
        headers["authorization"] = f"Bearer {llm.api_key}"
    if llm.organization:
        headers["openai-organization"] = llm.organization
    headers.update(llm.headers)
    return headers


@asynccontextmanager
async def open_openai(llm: LLMConfig) -> AsyncIterator[OpenAIProvider]:
    """An `OpenAIProvider` for ``llm`` (base URL default ``https://api.openai.com/v1``).

    The base URL includes the version prefix, as in the OpenAI SDK. The provider's HTTP
    client is closed when the block exits.
    """
    headers = openai_headers(llm)
    base = move_userinfo((llm.base_url or DEFAULT_OPENAI_URL).rstrip("/"), headers)
    async with open_http_session(
        llm, headers=headers, deployment=llm.model, base_url=base
    ) as session:
        yield OpenAIProvider(
            session,
            chat_url=f"{base}/chat/completions",
            embeddings_url=f"{base}/embeddings",
            model=llm.model,
        )
