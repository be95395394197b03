"""Micro-batching: gather items submitted by many tasks into one call of a batch function."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, TypeVar, cast

import attrs
import trio

__all__ = ["Batcher", "BatcherStatistics", "open_batcher"]

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


@attrs.frozen
class BatcherStatistics:
    """A snapshot of a :class:`Batcher`.

    Attributes:
      batches: flush calls started.
      items: items handed to those calls.
      failed_batches: flush calls that raised or returned the wrong number of results.
    """

    batches: int
    items: int
    failed_batches: int


class _Slot(Generic[I, O]):
    """One submitted item and, once its batch is flushed, its result or error."""

    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: I):
        self.item = item
        self.done = trio.Event()
        self.result: O | None = None
        self.error: BaseException | None = None


def _settle(batch: list[_Slot[I, O]], error: BaseException) -> None:
    for slot in batch:
        if not slot.done.is_set():
            slot.error = error
            slot.done.set()


class Batcher(Generic[I, O]):
    """Sends items submitted by many tasks to ``flush`` in batches; made by :func:`open_batcher`.

    A batch starts with the first item that finds no batch forming. It takes every item
    submitted within ``batch_timeout`` seconds of that first one, and is sent at once when it
    reaches ``batch_size`` items (items already waiting join it even if ``batch_timeout``
    is 0). ``flush(items)`` must return one result per item, in the same order.

    - Each caller of :meth:`submit` gets exactly the result at its own item's position.
    - If ``flush`` raises, every caller of that batch gets that exception; a result list of
      the wrong length is a ``ValueError`` for all of them.
    - Flushes run as concurrent tasks in the batcher's nursery: a slow flush does not hold
      back the next batch. Their concurrency is not bounded here (put a limiter inside
      ``flush`` if it must be).
    - A cancelled caller cancels neither the flush nor the other callers: its item may still
      be sent, and its result is dropped.
    """

    def __init__(
        self,
        flush: Callable[[list[I]], Awaitable[Sequence[O]]],
        *,
        batch_size: int = 16,
        batch_timeout: float = 0.01,
    ):
        if batch_size < 1 or batch_timeout < 0:
            raise ValueError("batch_size must be >= 1 and batch_timeout >= 0")
        self._flush = flush
        self._size = batch_size
        self._timeout = batch_timeout
        self._send, self._receive = trio.open_memory_channel[_Slot[I, O]](batch_size)
        self._opened = False
        self._batches = 0
        self._items = 0
        self._failed = 0

    async def submit(self, item: I) -> O:
        """Add ``item`` to a batch and return its result once the batch is flushed.

        Raises:
          trio.ClosedResourceError: the batcher is closed, or closed before flushing this
            item after an error or cancellation of its ``async with`` block.
          Exception: what ``flush`` raised for this item's batch (the same object for all).
          ValueError: ``flush`` returned the wrong number of results.
          RuntimeError: the batcher was not made by :func:`open_batcher`.
        """
        if not self._opened:
            raise RuntimeError("use `async with open_batcher(...) as batcher`")
        slot: _Slot[I, O] = _Slot(item)
        try:
            await self._send.send(slot)
        except trio.BrokenResourceError:
            raise trio.ClosedResourceError("the batcher is closed") from None
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return cast(O, slot.result)

    def statistics(self) -> BatcherStatistics:
        """A :class:`BatcherStatistics` snapshot."""
        return BatcherStatistics(
            batches=self._batches, items=self._items, failed_batches=self._failed
        )

    async def _collect(self, nursery: trio.Nursery) -> None:
        # Forms batches and starts a flush task for each, until the send side is closed.
        batch: list[_Slot[I, O]] = []
        try:
            async for first in self._receive:
                batch = [first]
                self._take_ready(batch)
                if len(batch) < self._size:
                    with trio.move_on_after(self._timeout), contextlib.suppress(trio.EndOfChannel):
                        while len(batch) < self._size:
                            batch.append(await self._receive.receive())
                            self._take_ready(batch)
                self._batches += 1
                self._items += len(batch)
                nursery.start_soon(self._flush_batch, batch)
                batch = []
        finally:
            # Cancelled (an error or cancellation left the block): fail what was not sent.
            self._take_ready(batch, math.inf)
            self._receive.close()
            _settle(batch, trio.ClosedResourceError("the batcher closed before the flush"))

    def _take_ready(self, batch: list[_Slot[I, O]], end: float | None = None) -> None:
        # Append the items already waiting, until the batch holds `end` (batch_size).
        end = self._size if end is None else end
        while len(batch) < end:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def _flush_batch(self, batch: list[_Slot[I, O]]) -> None:
        try:
            results = await self._flush([slot.item for slot in batch])
            if len(results) != len(batch):
                raise ValueError(f"flush returned {len(results)} results for {len(batch)} items")
        except Exception as exc:
            self._failed += 1
            _settle(batch, exc)
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
                slot.done.set()
        finally:
            if not batch[0].done.is_set():  # cancelled: the batcher is closing after an error
                _settle(batch, trio.ClosedResourceError("the batcher closed during the flush"))


@contextlib.asynccontextmanager
async def open_batcher(
    flush: Callable[[list[I]], Awaitable[Sequence[O]]],
    *,
    batch_size: int = 16,
    batch_timeout: float = 0.01,
) -> AsyncIterator[Batcher[I, O]]:
    """Open a :class:`Batcher` whose collector and flushes run in a nursery of its own.

    Leaving the block normally closes the batcher (later :meth:`~Batcher.submit` calls
    raise ``trio.ClosedResourceError``), flushes what is pending and waits for every flush
    to finish. Leaving it with an error or cancellation cancels the flushes in progress;
    their callers, and callers whose items were not yet sent, get
    ``trio.ClosedResourceError``. An error from the block comes out unwrapped.
    """
    batcher: Batcher[I, O] = Batcher(flush, batch_size=batch_size, batch_timeout=batch_timeout)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batcher._collect, nursery)
            batcher._opened = True
            try:
                yield batcher
            finally:
                batcher._send.close()
    except BaseExceptionGroup as group:
        # Only the block can raise (the batcher's own tasks never do): unwrap its error.
        if len(group.exceptions) != 1:
            raise
        raise group.exceptions[0] from None
