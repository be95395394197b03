"""`LLMClient`: the face of a provider that agents get as ``ctx.llm``.

It builds the `ChatRequest` from plain arguments and is where per-call work that belongs
to the caller rather than to the provider's stack happens (the event's usage and budget,
progress sent to a streaming caller, structured output: ``output``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, final, overload

import attrs

from ..schema import TypeSchema
from . import _metering
from .base import Provider
from .output import (
    OutputMode,
    OutputStream,
    check_output_settings,
    complete_output,
    open_output_stream,
    plan_for,
    resolve_mode,
    shape_fields,
    speaks_native,
)
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

__all__ = ["LLMClient", "Messages", "complete_request"]

T = TypeVar("T")

Messages = ChatRequest | Sequence[Message] | str

complete_request = _metering.complete
"""``await complete_request(llm.provider, request)``: what `LLMClient.complete` does with a
ready `ChatRequest` and no ``output_type`` (the event's usage, tracing), without the
client's frame: for a loop that sends many requests through one client."""


@final
class LLMClient:
    """The convenience face of a provider (what agents get as ``ctx.llm``).

    ``await llm.complete([af.user("hi")], temperature=0)`` builds the `ChatRequest`:
    messages may be a `ChatRequest`, a sequence of `Message` or a plain string (one user
    message); keyword arguments are `ChatRequest` fields (``model``, ``temperature``,
    ``max_tokens``, ``tools``, ``tool_choice``, ``stop``, ``extra``, ``response_format``).

    Structured output (see ``llm.output``): ``await llm.complete(messages,
    output_type=City)`` returns a validated ``City``; ``output_mode`` (``"auto"``,
    ``"native"``, ``"tool"``, ``"prompted"``) and ``output_retries`` (re-asks after a reply
    that does not fit) default to this client's. ``native_output`` says whether the
    provider speaks the native mode (what ``auto`` picks); None asks the provider
    (`output.speaks_native`), and a provider that does not say gets the tool mode.

    Raises:
        ValueError: an unknown ``output_mode`` or a negative ``output_retries``.
    """

    __slots__ = ("native_output", "output_mode", "output_retries", "provider")

    def __init__(
        self,
        provider: Provider,
        *,
        output_mode: OutputMode = "auto",
        output_retries: int = 1,
        native_output: bool | None = None,
    ) -> None:
        check_output_settings(output_mode, output_retries)
        self.provider = provider
        self.output_mode: OutputMode = output_mode
        self.output_retries = output_retries
        native = speaks_native(provider) if native_output is None else native_output
        self.native_output = bool(native)

    @overload
    async def complete(
        self,
        messages: Messages,
        *,
        output_type: None = None,
        output_mode: OutputMode | None = None,
        output_retries: int | None = None,
        **fields: Any,
    ) -> ChatResponse: ...

    @overload
    async def complete(
        self,
        messages: Messages,
        *,
        output_type: type[T] | TypeSchema[T],
        output_mode: OutputMode | None = None,
        output_retries: int | None = None,
        **fields: Any,
    ) -> T: ...

    @overload
    async def complete(
        self,
        messages: Messages,
        *,
        output_type: object,
        output_mode: OutputMode | None = None,
        output_retries: int | None = None,
        **fields: Any,
    ) -> Any: ...

    async def complete(
        self,
        messages: Messages,
        *,
        output_type: object = None,
        output_mode: OutputMode | None = None,
        output_retries: int | None = None,
        **fields: Any,
    ) -> Any:
        """A chat completion through the provider's stack: the `ChatResponse`, or with
        ``output_type`` the validated value of that type (a type, or a `TypeSchema`).

        Raises:
            OutputValidationError: no reply fitted ``output_type`` (every reply's raw text
                in ``attempts``).
            OutputRefusedError: the model refused to give the structured answer.
            TypeError: ``output_type`` is not a supported type.
            LLMError: a model call failed.
        """
        if output_type is None:
            request = _request(messages, fields)
            if _metering.unmetered():  # nothing to meter or trace: straight to the stack
                return await self.provider.complete(request)
            return await _metering.complete(self.provider, request)
        mode, retries = self._settings(output_mode, output_retries)
        plan = plan_for(output_type)
        shaped = not isinstance(messages, ChatRequest) and shape_fields(fields, plan, mode)
        request = _request(messages, fields)  # shaped: built once, the mode's fields in it
        return await complete_output(self.provider, request, plan, mode, retries, shaped=shaped)

    def stream(
        self, messages: Messages, **fields: Any
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """``async with llm.stream(messages) as chunks: async for chunk in chunks: ...``."""
        return _metering.stream(self.provider, _request(messages, fields))

    @overload
    def stream_output(
        self,
        messages: Messages,
        *,
        output_type: type[T] | TypeSchema[T],
        output_mode: OutputMode | None = None,
        output_retries: int | None = None,
        **fields: Any,
    ) -> AbstractAsyncContextManager[OutputStream[T]]: ...

    @overload
    def stream_output(
        self,
        messages: Messages,
        *,
        output_type: object,
        output_mode: OutputMode | None = None,
        output_retries: int | None = None,
        **fields: Any,
    ) -> AbstractAsyncContextManager[OutputStream[Any]]: ...

    def stream_output(
        self,
        messages: Messages,
        *,
        output_type: object,
        output_mode: OutputMode | None = None,
        output_retries: int | None = None,
        **fields: Any,
    ) -> AbstractAsyncContextManager[OutputStream[Any]]:
        """Structured output, streamed: partial values as the reply arrives, then the
        validated value (`OutputStream`)::

            async with llm.stream_output(messages, output_type=City) as stream:
                async for partial in stream:
                    print(partial)  # {"name": "Par"}, {"name": "Paris"}, ...
                city = stream.output

        Raises:
            TypeError: ``output_type`` is not a supported type.
        """
        mode, retries = self._settings(output_mode, output_retries)
        plan = plan_for(output_type)
        return open_output_stream(self.provider, _request(messages, fields), plan, mode, retries)

    async def embed(
        self, texts: str | Sequence[str], *, model: str | None = None
    ) -> EmbeddingResponse:
        """Embeddings of ``texts`` (one vector per text, in order)."""
        inputs = (texts,) if isinstance(texts, str) else tuple(texts)
        return await _metering.embed(self.provider, EmbeddingRequest(inputs, model))

    def _settings(self, mode: str | None, retries: int | None) -> tuple[Any, int]:
        if retries is None:
            retries = self.output_retries
        elif isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"output_retries must be an int >= 0, not {retries!r}")
        return resolve_mode(mode or self.output_mode, self.native_output), retries


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
