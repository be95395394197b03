"""The Anthropic adapter: the Messages API (``POST /v1/messages``, plain and SSE).

`AnthropicProvider` speaks Anthropic's own wire format (``_anthropic_wire`` translates),
so prompt caching (``Message.cache_control``), extended thinking (kept as `ProviderItem`
values and sent back on the next turn of a tool loop) and parallel tool calls survive,
which an OpenAI-compatible shim drops. Structured output uses the tool mode (a forced
``final_result`` call): the API has no JSON-schema reply format (``native_output`` False).
Every system message, one in mid-history included, goes into the request's ``system``
(the API has no system turn); messages with no content are left out (the API refuses
them); ``stop_reason`` ``pause_turn`` is the finish reason ``"pause_turn"``, never
``"stop"``: the turn is unfinished, send it back as it is to let the model go on.

A stream is judged as OpenAI's is (see ``_accumulate``): it ends at ``message_stop``; a body
that ends after ``message_delta`` brought the ``stop_reason`` is a whole answer; one that
stops before raises an `IncompleteStreamError` saying how much was delivered; up to
`MAX_MALFORMED` garbage events in a row are skipped and counted (``chunks.malformed``).
An ``error`` event raises its typed error (``overloaded_error``: `ServerError` 529, which
the router fails over like any 5xx). Error statuses are mapped by the session
(``_httperrors``): 429 `RateLimitError` with the ``retry-after`` header, 529 `ServerError`.
Anthropic has no embeddings API: `AnthropicProvider.embed` raises `ConfigError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Final, final

from ..errors import ConfigError
from . import _anthropic_wire as wire
from ._accumulate import ChunkDecoder
from ._lines import MAX_MALFORMED, SSEDecoder
from ._open_session import open_http_session
from ._session import Session
from ._userinfo import move_userinfo
from .types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamChunk

if TYPE_CHECKING:
    from ..config import LLMConfig

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_ANTHROPIC_URL",
    "DEFAULT_MAX_TOKENS",
    "AnthropicProvider",
    "anthropic_headers",
    "open_anthropic",
]

DEFAULT_ANTHROPIC_URL: Final = "https://api.anthropic.com"
ANTHROPIC_VERSION: Final = "2023-06-01"
"""The ``anthropic-version`` header sent unless ``[llm] headers`` gives another."""
DEFAULT_MAX_TOKENS: Final = 4096
"""``max_tokens`` (required by the API) for a request that gives none."""
_SSE: Final = ("text/event-stream",)


@final
class _Events(SSEDecoder):
    """`SSEDecoder` for Messages streams, which end at a ``message_stop`` event (no
    ``data: [DONE]``: `terminator` names it in an early end's error) and name every event
    on an ``event:`` line.

    A piece of body that starts on an event boundary is decoded here, event by event:
    ``ping`` is dropped undecoded, the ``event:`` line of the others is skipped and their
    one ``data:`` line decoded at once. An event of any other shape (several data lines,
    comments), the unfinished last event, and a piece that starts inside an event, has CR
    line ends or exceeds the line bound go to the plain decoder, so bounds and the
    malformed-event policy are its own. On either path ``message_stop`` sets ``done``:
    what follows it is not read.
    """

    __slots__ = ("_inside",)

    terminator: ClassVar[str] = "message_stop"

    def __init__(self) -> None:
        super().__init__(max_malformed=MAX_MALFORMED)
        self._inside = False  # the last piece ended inside an event

    def feed(self, data: bytes) -> list[Any]:
        """Payloads of the events completed by ``data`` (``ping`` left out)."""
        if self.done:
            return []
        if self._inside or b"\r" in data or len(data) > self._max:
            self._inside = not data.endswith((b"\n\n", b"\r\n\r\n"))
            return self._plain(data)
        events = data.split(b"\n\n")
        tail = events.pop()  # the start of an event still coming
        out: list[Any] = []
        loads = self._json.loads
        for event in events:
            name = b""
            if event.startswith(b"event: "):
                end = event.find(b"\n")
                if end < 0:
                    continue  # a name without data
                name = event[7:end]
                if name == b"ping":
                    continue
                event = event[end + 1 :]
            if event.startswith(b"data: ") and b"\n" not in event:
                loads(event[6:], out)
            else:
                out += self._plain(event + b"\n\n")
            if name == b"message_stop" or self.done:
                self.done = True
                return out
        self._inside = bool(tail)
        if tail and not self.done:
            out += self._plain(tail)
        return out

    def _plain(self, data: bytes) -> list[Any]:
        """The plain decoder's payloads of ``data``, up to a ``message_stop`` (then done)."""
        out = super().feed(data)
        for index, payload in enumerate(out):
            if isinstance(payload, dict) and payload.get("type") == "message_stop":
                self.done = True
                return out[: index + 1]
        return out


@final
class AnthropicProvider:
    """A `Provider` for the Anthropic Messages API at a fixed URL.

    ``model`` is the default model; ``max_tokens`` the default of a request that gives
    none. Every call goes through ``session``; `aclose` closes it. Build one with
    `open_anthropic`. ``native_output`` False: structured output uses the tool mode.
    """

    native_output: Final = False

    def __init__(
        self,
        session: Session,
        *,
        messages_url: str,
        model: str,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.session = session
        self._url = messages_url
        self._model = model
        self._max_tokens = max_tokens

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One message (see `Session.post_json` for the errors)."""
        body = wire.messages_body(request, self._model, max_tokens=self._max_tokens, stream=False)
        data = await self.session.post_json(self._url, body)
        return wire.parse_message(data, self.session.deployment)

    def stream(
        self, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """A streamed message; the connection is released when the block exits.

        The iterator is a `GuardedChunks` (``delivered_chunks``, ``malformed``, ...).
        """
        session = self.session
        decoder = ChunkDecoder(_Events(), wire.EventParser(session.deployment))
        body = wire.messages_body(request, self._model, max_tokens=self._max_tokens, stream=True)
        return session.open_guarded(self._url, body, decoder, _SSE)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Anthropic has no embeddings API.

        Raises:
            ConfigError: always; route embeddings to an OpenAI, Azure or Ollama deployment.
        """
        raise ConfigError(
            f"{self.session.deployment}: Anthropic has no embeddings API; "
            "send embeddings to an openai, azure or ollama deployment",
            key="llm.provider",
        )

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent."""
        await self.session.aclose()


def anthropic_headers(llm: LLMConfig) -> dict[str, str]:
    """The headers sent with every call: ``x-api-key``, ``anthropic-version``, then
    ``llm.headers`` (which may give another version or ``anthropic-beta``)."""
    headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
    if llm.api_key:
        headers["x-api-key"] = llm.api_key
    headers.update(llm.headers)
    return headers


def _base(url: str) -> str:
    """The API's origin-and-prefix without the version: a base URL may end in ``/v1``."""
    base = url.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


@asynccontextmanager
async def open_anthropic(llm: LLMConfig) -> AsyncIterator[AnthropicProvider]:
    """An `AnthropicProvider` for ``llm`` (base URL default ``https://api.anthropic.com``,
    with or without ``/v1``); the provider's HTTP client is closed when the block exits."""
    headers = anthropic_headers(llm)
    base = move_userinfo(_base(llm.base_url or DEFAULT_ANTHROPIC_URL), headers)
    async with open_http_session(
        llm, headers=headers, deployment=llm.model, base_url=base
    ) as session:
        yield AnthropicProvider(session, messages_url=f"{base}/v1/messages", model=llm.model)
