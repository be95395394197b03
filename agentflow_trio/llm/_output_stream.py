"""`OutputStream`: a structured reply as it streams (partial JSON values), then the typed
value, with the same validation and re-ask as a plain structured call.

Partials come from the incomplete reply text (or the ``final_result`` arguments in tool
mode) parsed by ``jiter`` in ``trailing-strings`` mode; a partial is a plain JSON value
(dict, list, str...) that grows, never a `T`: only the whole reply is validated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Generic, TypeVar, final

import jiter

from .. import progress
from ..errors import OutputValidationError
from . import _metering
from ._accumulate import StreamAccumulator
from ._output_plan import FINAL_RESULT, WRAP_KEY, OutputPlan
from ._output_reply import Mode, again, read, reask, refused
from .base import Provider
from .types import ChatRequest, StreamChunk

__all__ = ["OutputStream"]

T = TypeVar("T")

_NOTHING: Final = object()


@final
class OutputStream(Generic[T]):
    """Partial values of a structured reply as it streams, then the validated ``T``::

        async with llm.stream_output(messages, output_type=City) as stream:
            async for partial in stream:  # {"name": "Pa"}, {"name": "Paris"}, ...
                ...
            city = stream.output  # the City (or: city = await stream.result())

    Each partial is a new plain JSON value parsed from the reply so far (an unchanged one
    is not repeated); when the event has a progress sink it is also sent there as
    `progress.PartialOutput`. When the reply ends it is validated: a reply that does not
    fit goes back to the model with its problems while ``output_retries`` allow, and the
    iteration goes on with the re-ask's partials (from nothing again; ``attempt`` counts
    the model calls); then the iteration raises `OutputValidationError`. A refusal raises
    `OutputRefusedError` at once. Every attempt is one call through the event's metering.

    ``output`` is the ``T`` once the iteration has ended (a `RuntimeError` before; the
    iteration's error after a failure); ``await result()`` reads what is left (without
    yielding it) and returns the same. Only use it inside its ``async with`` block, which
    closes the model stream on every exit, cancellation included.
    """

    __slots__ = (
        "_acc",
        "_chunks",
        "_cm",
        "_done",
        "_error",
        "_index",
        "_last",
        "_mode",
        "_output",
        "_plan",
        "_provider",
        "_raised",
        "_request",
        "_retries",
        "_sink",
        "_text",
        "attempt",
        "attempts",
    )

    def __init__(
        self,
        provider: Provider,
        request: ChatRequest,
        plan: OutputPlan[T],
        mode: Mode,
        retries: int,
    ) -> None:
        self._provider = provider
        self._request = request
        self._plan = plan
        self._mode = mode
        self._retries = retries
        self._sink = progress.current_sink()
        self._cm: AbstractAsyncContextManager[AsyncIterator[StreamChunk]] | None = None
        self._chunks: AsyncIterator[StreamChunk] | None = None
        self._acc = StreamAccumulator()
        self._text = ""
        self._index: int | None = None
        self._last: Any = _NOTHING
        self._done = False
        self._raised = False
        self._output: Any = None
        self._error: BaseException | None = None
        self.attempt = 0
        """Model calls made so far (1 while the first reply streams)."""
        self.attempts: list[str] = []
        """The raw text of each finished reply, in order."""

    def __aiter__(self) -> OutputStream[T]:
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._done:
                if self._error is not None and not self._raised:
                    self._raised = True
                    raise self._error
                raise StopAsyncIteration
            chunks = self._chunks
            if chunks is None:
                chunks = await self._open()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                await self._close(None)
                self._judge()
                continue
            except BaseException as exc:
                await self._close(exc)
                raise
            partial = self._add(chunk)
            if partial is not _NOTHING:
                if self._sink is not None:
                    await self._sink.send(progress.PartialOutput(partial))
                return partial

    async def result(self) -> T:
        """The validated value, after reading whatever has not been read yet.

        Raises:
            OutputValidationError: the last allowed reply did not fit.
            OutputRefusedError: the model refused.
        """
        async for _ in self:
            pass
        return self.output

    @property
    def output(self) -> T:
        """The validated value (see the class docstring).

        Raises:
            RuntimeError: the stream has not ended yet.
            OutputValidationError, OutputRefusedError: the stream ended with that error.
        """
        if not self._done:
            raise RuntimeError("the stream has not ended: iterate it to the end, or result()")
        if self._error is not None:
            raise self._error
        value: T = self._output
        return value

    async def aclose(self, exc: BaseException | None = None) -> None:
        """Close the model stream of the current attempt (if one is open). Idempotent."""
        await self._close(exc)

    # -- one attempt --

    async def _open(self) -> AsyncIterator[StreamChunk]:
        self.attempt += 1
        cm = _metering.stream(self._provider, self._request)
        chunks = await cm.__aenter__()
        self._cm, self._chunks = cm, chunks
        return chunks

    async def _close(self, exc: BaseException | None) -> None:
        cm = self._cm
        if cm is None:
            return
        self._cm = self._chunks = None
        if exc is None:
            await cm.__aexit__(None, None, None)
        else:
            await cm.__aexit__(type(exc), exc, exc.__traceback__)

    def _add(self, chunk: StreamChunk) -> Any:
        self._acc.add(chunk)
        if self._mode == "tool":
            piece = ""
            for delta in chunk.tool_call_deltas:
                if delta.name == FINAL_RESULT and self._index is None:
                    self._index = delta.index
                if delta.index == self._index:
                    piece += delta.arguments
        else:
            piece = chunk.delta_text
        if not piece:
            return _NOTHING
        self._text += piece
        value = _partial(self._text)
        if value is _NOTHING:
            return _NOTHING
        if self._plan.wrapped and self._mode != "prompted":
            if type(value) is not dict or WRAP_KEY not in value:
                return _NOTHING
            value = value[WRAP_KEY]
        if value == self._last:
            return _NOTHING
        self._last = value
        return value

    def _judge(self) -> None:
        response = self._acc.response()
        refusal = refused(response, self.attempts)
        if refusal is not None:
            self._finish(error=refusal)
            return
        raw, value, problems = read(response, self._plan, self._mode)
        self.attempts.append(raw)
        if not problems:
            self._finish(output=value)
        elif self.attempt > self._retries:
            self._finish(error=OutputValidationError(self.attempts, problems))
        else:
            self._request = again(self._request, reask(response, problems, self._plan, self._mode))
            self._acc = StreamAccumulator()
            self._text, self._index, self._last = "", None, _NOTHING

    def _finish(self, *, output: Any = None, error: BaseException | None = None) -> None:
        self._done = True
        self._output = output
        self._error = error


def _partial(text: str) -> Any:
    data = text.lstrip()
    fenced = data.startswith("```")
    if fenced:
        newline = data.find("\n")
        if newline < 0:
            return _NOTHING
        data = data[newline + 1 :]
    data = data.rstrip()
    if fenced:
        data = data.rstrip("`")
    if data and data[-1] in _NUMBER_CHARS and not _in_string(data):
        # A number still streaming ("21" of 2100000) is left out until it ends.
        data = data.rstrip(_NUMBER_CHARS)
    if not data:
        return _NOTHING
    try:
        return jiter.from_json(data.encode(), partial_mode="trailing-strings")
    except ValueError:
        return _NOTHING


_NUMBER_CHARS: Final = "0123456789.-+eE"


def _in_string(data: str) -> bool:
    """Whether ``data`` (JSON cut short) ends inside a string."""
    inside = escaped = False
    for char in data:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = inside
        elif char == '"':
            inside = not inside
    return inside
