"""Streaming tool results: a producer task sends items in batches through a bounded channel.

::

    async def produce(sink: StreamSink[dict]) -> None:
        async for row in database.rows(query):
            await sink.send(row)            # batched: a channel send every batch_size items

    async with open_tool_stream(produce, batch_size=100, buffer=8) as batches:
        async for batch in batches:
            if isinstance(batch, StreamError):
                ...                         # the producer failed; always the last item
            else:
                handle(batch)               # a list of at most batch_size items, in order

The producer runs in a nursery owned by the ``async with`` block, the shape of
``trio.as_safe_channel``: no async generator crosses a nursery.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeAlias, TypeVar, TypeVarTuple, final

import attrs
import trio

from .._owner import reraise_single

__all__ = ["Batch", "StreamError", "StreamSink", "open_tool_stream"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@attrs.frozen(slots=True)
class StreamError:
    """The final item of a stream whose producer raised: the exception's class name and
    message (``traceback`` is for logs; it takes no part in equality)."""

    type: str
    message: str
    traceback: str = attrs.field(default="", eq=False, repr=False)

    @classmethod
    def from_exception(cls, exc: BaseException) -> StreamError:
        """Keep ``exc``'s class name, message and formatted traceback."""
        return cls(type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))


Batch: TypeAlias = list[T] | StreamError
"""What the consumer receives: a list of items, or (last) a `StreamError`."""


@final
class StreamSink(Generic[T]):
    """The producer's end of a tool stream.

    `send` adds one item to the current batch and, once it holds ``batch_size`` items,
    sends the batch, waiting while the channel's buffer is full (backpressure): only that
    send is a checkpoint, so per-item cost stays a list append. `send_batch` sends a ready
    list. Items pending in a partial batch are sent when the producer returns, and before
    the `StreamError` when it raises. Once the consumer is gone, sending raises
    ``trio.BrokenResourceError`` (and the producer is being cancelled anyway).
    """

    __slots__ = ("_batch", "_channel", "batch_size", "closed", "items_sent")

    def __init__(self, channel: trio.MemorySendChannel[Any], batch_size: int) -> None:
        self._channel = channel
        self._batch: list[T] = []
        self.batch_size = batch_size
        self.items_sent = 0
        self.closed = False

    async def send(self, item: T) -> None:
        """Add ``item``; sends the batch when it is full. A checkpoint only then."""
        batch = self._batch
        batch.append(item)
        if len(batch) >= self.batch_size:
            await self.flush()

    async def send_batch(self, items: Iterable[T]) -> None:
        """Send pending items, then ``items`` as batches of at most ``batch_size``.

        A list of at most ``batch_size`` items is sent as is (not copied): do not change
        it afterwards. Any other iterable is read lazily, one batch at a time. Always a
        checkpoint.
        """
        if self._batch:
            await self.flush()
        size = self.batch_size
        if isinstance(items, list):
            if len(items) <= size:
                await self._put(items)
                return
            for start in range(0, len(items), size):
                await self._put(items[start : start + size])
            return
        iterator = iter(items)
        sent = False
        while chunk := list(itertools.islice(iterator, size)):
            await self._put(chunk)
            sent = True
        if not sent:
            await trio.lowlevel.checkpoint()

    async def flush(self) -> None:
        """Send the partial batch now (nothing if it is empty, but still a checkpoint)."""
        batch = self._batch
        if not batch:
            await trio.lowlevel.checkpoint()
            return
        self._batch = []
        await self._put(batch)

    async def _put(self, batch: list[T]) -> None:
        try:
            await self._channel.send(batch)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
            raise trio.BrokenResourceError("the tool stream's consumer has gone") from None
        self.items_sent += len(batch)


@asynccontextmanager
async def open_tool_stream(
    producer: Callable[[StreamSink[T], *Ts], Awaitable[None]],
    *args: *Ts,
    batch_size: int = 100,
    buffer: int = 8,
) -> AsyncIterator[trio.MemoryReceiveChannel[list[T] | StreamError]]:
    """Run ``producer(sink, *args)`` in a task of its own; yield the receive channel.

    Guarantees:

    - Order: batches arrive in the order the producer sent them; each holds at most
      ``batch_size`` items.
    - Bound: at most ``buffer`` batches wait in the channel; a producer sending into a full
      buffer waits for the consumer (backpressure). ``buffer=0`` hands each batch over.
    - Errors: if the producer raises an ``Exception``, its pending items are sent, then one
      `StreamError` as the final item; nothing is raised into the consumer's loop. The
      channel then ends (``async for`` stops).
    - Leaving the block (early, by an error, or by cancellation) closes the receive
      channel and cancels the producer; when the block is left no task is running and
      the send end is closed. An exception from the block comes out as itself.

    Raises:
        ValueError: ``batch_size < 1`` or ``buffer < 0``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if buffer < 0:
        raise ValueError(f"buffer must be >= 0, got {buffer!r}")
    send, receive = trio.open_memory_channel[list[T] | StreamError](buffer)
    sink: StreamSink[T] = StreamSink(send, batch_size)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_produce, producer, sink, send, args)
            with receive:
                yield receive
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        reraise_single(group)


async def _produce(
    producer: Callable[..., Awaitable[None]],
    sink: StreamSink[Any],
    send: trio.MemorySendChannel[Any],
    args: tuple[Any, ...],
) -> None:
    with send:  # closed synchronously on every way out: the consumer sees the end
        try:
            await producer(sink, *args)
            await sink.flush()
        except trio.BrokenResourceError as exc:
            if not sink.closed:  # the producer's own I/O broke, not our channel
                await _fail(sink, send, exc)
        except Exception as exc:
            await _fail(sink, send, exc)


async def _fail(sink: StreamSink[Any], send: trio.MemorySendChannel[Any], exc: Exception) -> None:
    error = StreamError.from_exception(exc)
    try:
        await sink.flush()
        await send.send(error)
    except trio.BrokenResourceError:
        pass  # the consumer left: nobody to tell
