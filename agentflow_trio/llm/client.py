"""`LLMClient`: the face of a provider that agents get as ``ctx.llm``.

It builds the `ChatRequest` from plain arguments and is where per-call work that belongs
to the caller rather than to the provider's stack happens (the event's usage and budget,
progress sent to a streaming caller, structured output).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, final

import attrs

from . import _metering
from .base import Provider
from .types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    StreamChunk,
    ToolSpec,
    user,
)

__all__ = ["LLMClient", "Messages"]


Messages = ChatRequest | Sequence[Message] | str


@final
class LLMClient:
    """The convenience face of a provider (what agents get as ``ctx.llm``).

    ``await llm.complete([af.user("hi")], temperature=0)`` builds the `ChatRequest`:
    messages may be a `ChatRequest`, a sequence of `Message` or a plain string (one user
    message); keyword arguments are `ChatRequest` fields (``model``, ``temperature``,
    ``max_tokens``, ``tools``, ``tool_choice``, ``stop``, ``extra``).
    """

    __slots__ = ("provider",)

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def complete(self, messages: Messages, **fields: Any) -> ChatResponse:
        """A chat completion through the provider's stack."""
        return await _metering.complete(self.provider, _request(messages, fields))

    def stream(
        self, messages: Messages, **fields: Any
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """``async with llm.stream(messages) as chunks: async for chunk in chunks: ...``."""
        return _metering.stream(self.provider, _request(messages, fields))

    async def embed(
        self, texts: str | Sequence[str], *, model: str | None = None
    ) -> EmbeddingResponse:
        """Embeddings of ``texts`` (one vector per text, in order)."""
        inputs = (texts,) if isinstance(texts, str) else tuple(texts)
        return await self.provider.embed(EmbeddingRequest(inputs, model))


def _request(messages: Messages, fields: dict[str, Any]) -> ChatRequest:
    if isinstance(messages, ChatRequest):
        return attrs.evolve(messages, **fields) if fields else messages
    if "tools" in fields:
        fields["tools"] = tuple(
            t if isinstance(t, ToolSpec) else ToolSpec(**t) for t in fields["tools"]
        )
    if isinstance(fields.get("stop"), list):
        fields["stop"] = tuple(fields["stop"])
    msgs = (user(messages),) if isinstance(messages, str) else tuple(messages)
    return ChatRequest(msgs, **fields)
