"""The per-event work around one model call that belongs to the caller, not the provider:
the event's usage and budget, and text deltas sent to a streaming caller.

`LLMClient` sends every model call through `complete` and `stream` here; with no event
usage and no progress sink in the context they are a plain pass-through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

from .base import Provider
from .types import ChatRequest, ChatResponse, StreamChunk

__all__ = ["complete", "stream"]


async def complete(provider: Provider, request: ChatRequest) -> ChatResponse:
    """One completion, charged to the current event's usage."""
    return await provider.complete(request)


def stream(
    provider: Provider, request: ChatRequest
) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
    """One stream, charged to the current event's usage as it goes."""
    return provider.stream(request)
