"""The OpenAI Responses API adapter: ``POST /responses`` (plain and SSE), and ``/embeddings``.

`ResponsesProvider` speaks the Responses wire (``_responses_wire``; request bodies in
``_responses_body``) with the same headers, HTTP session and stream guards as
`OpenAIProvider`: a stream that ends before ``response.completed`` (or
``response.incomplete``) raises an `IncompleteStreamError` saying how much was delivered;
up to `MAX_MALFORMED` garbage events in a row are skipped and counted; the events a
stream's chunks do not need are not decoded (`ResponsesSSEDecoder`), and the stream is
done at its last event, so its connection is pooled as after OpenAI's ``[DONE]``. With
``"store": false`` in ``extra``, reasoning items are asked for and sent back with their
``encrypted_content`` (nothing is kept server-side). Reasoning items come back as
``ChatResponse.items`` and are sent back in place on the next turn (the tool loop carries
them); ``previous_response_id``, ``store``, ``reasoning`` and ``include`` pass through
``ChatRequest.extra``, and ``response_id`` is the answer's id to refer to later.

Embeddings are not part of the Responses API: `embed` posts to ``{base}/embeddings`` with
the OpenAI embeddings wire (the same base URL and key serve both on OpenAI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Final, final

from . import _openai_wire
from . import _responses_wire as wire
from ._accumulate import ChunkDecoder
from ._lines import MAX_MALFORMED
from ._open_session import open_http_session
from ._session import Session
from ._userinfo import move_userinfo
from .openai import DEFAULT_OPENAI_URL, openai_headers
from .types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamChunk

if TYPE_CHECKING:
    from ..config import LLMConfig

__all__ = ["ResponsesProvider", "open_responses"]

_SSE: Final = ("text/event-stream",)


@final
class ResponsesProvider:
    """A `Provider` for the OpenAI Responses wire at fixed URLs.

    ``model`` is the default model (a request's ``model`` wins). Every call goes through
    ``session``; `aclose` closes it. Build one with `open_responses`. ``native_output``:
    the wire has a JSON-schema reply format (``text.format``), structured output's native
    mode.
    """

    native_output: Final = True

    def __init__(
        self,
        session: Session,
        *,
        responses_url: str,
        embeddings_url: str,
        model: str | None,
    ) -> None:
        self.session = session
        self._responses_url = responses_url
        self._embeddings_url = embeddings_url
        self._model = model

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One response (see `HTTPSession.post_json` for the errors; a ``failed``
        response raises the `APIStatusError` subclass of its error code)."""
        body = wire.request_body(request, self._model, stream=False)
        data = await self.session.post_json(self._responses_url, body)
        return wire.parse_response(data, self.session.deployment)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """A streamed response; the connection is released when the block exits.

        The iterator is a `GuardedChunks` (``delivered_chunks``, ``malformed``, ...); an
        ``error`` or ``response.failed`` event raises its typed error.
        """
        session = self.session
        events = wire.StreamEvents(session.deployment)
        decoder = ChunkDecoder(wire.ResponsesSSEDecoder(max_malformed=MAX_MALFORMED), events)
        body = wire.request_body(request, self._model, stream=True)
        return session.open_guarded(self._responses_url, body, decoder, _SSE)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embeddings for ``request.inputs``, in input order, from ``{base}/embeddings``
        (the Responses API has none of its own)."""
        body = _openai_wire.embeddings_body(request, self._model)
        data = await self.session.post_json(self._embeddings_url, body)
        return _openai_wire.parse_embeddings(data, self.session.deployment)

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent."""
        await self.session.aclose()


@asynccontextmanager
async def open_responses(llm: LLMConfig) -> AsyncIterator[ResponsesProvider]:
    """A `ResponsesProvider` for ``llm`` (base URL default ``https://api.openai.com/v1``,
    the headers of `openai_headers`). The provider's HTTP client is closed on exit."""
    headers = openai_headers(llm)
    base = move_userinfo((llm.base_url or DEFAULT_OPENAI_URL).rstrip("/"), headers)
    async with open_http_session(
        llm, headers=headers, deployment=llm.model, base_url=base
    ) as session:
        yield ResponsesProvider(
            session,
            responses_url=f"{base}/responses",
            embeddings_url=f"{base}/embeddings",
            model=llm.model,
        )
