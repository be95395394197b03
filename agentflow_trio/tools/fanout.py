"""Parallel tool calls: one nursery, an integer cap, a timeout per call, results in order.

The registry is reached through the `Registry` protocol of ``_calls``: ``base`` imports
this module (``ToolRegistry.call_many``), never the other way round. When a caller streams
the event (`progress.current_sink`), each call's start and end are sent to it as they
happen; otherwise that costs one context-variable lookup per fan-out.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import trio

from .._owner import reraise_single
from ..llm.types import ToolCall
from ..progress import ProgressSink, ToolCallFinished, ToolCallStarted, current_sink
from ._calls import CallSpec, OnError, Registry, as_call
from ._result import ToolResult, cancelled_result

if TYPE_CHECKING:
    from ..agents import Context

__all__ = ["call_many"]


async def call_many(
    registry: Registry,
    ctx: Context | None,
    calls: Iterable[CallSpec],
    *,
    max_parallel: int | None = None,
    timeout: float | None = None,
    on_error: OnError = "continue",
) -> list[ToolResult]:
    """Run ``calls`` concurrently in one nursery; one `ToolResult` per call, in input order.

    ``calls`` holds model `ToolCall` objects and/or ``(name, args)`` or
    ``(name, args, call_id)`` tuples. At most ``max_parallel`` calls run at once (a
    ``trio.CapacityLimiter`` whose slots are taken in input order, so capped calls start
    in input order; None: no cap, every call starts at once). Each call runs under its own
    ``timeout``, counted from the moment it starts running, not while it waits for the cap;
    a tool's own smaller timeout wins.

    Failures: a call that errors or times out never affects the others with
    ``on_error="continue"`` (the default). With ``"cancel_siblings"`` the first such call
    cancels every call still running or waiting; their results say ``cancelled`` and name
    the call that failed; results that had already finished are kept as they are.

    Cancellation: cancelling the caller cancels every call, and ``trio.Cancelled``
    propagates out of this function (no results are returned). Always a checkpoint.

    Progress: when a caller streams the event, every call sends `ToolCallStarted` as it
    starts running (after its ``max_parallel`` slot) and `ToolCallFinished` as it ends,
    each as it happens, so at most one of each per call, Started first. A synchronous
    tool, which runs without yielding, is announced right after it ran (no one can tell
    the difference). Calls stopped by ``"cancel_siblings"``, the failing one included,
    are reported once the fan-out ends, in input order. A caller that reads slowly
    slows the calls down (backpressure); no item is buffered beyond the sink's bound.

    Raises:
        ValueError: ``max_parallel < 1`` or an unknown ``on_error`` policy.
    """
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1 or None, got {max_parallel!r}")
    if on_error not in ("continue", "cancel_siblings"):
        raise ValueError(f"on_error must be 'continue' or 'cancel_siblings', not {on_error!r}")
    items = [c if type(c) is ToolCall and c.id else as_call(c) for c in calls]
    if not items:
        await trio.lowlevel.checkpoint()
        return []
    run = _FanOut(registry, ctx, items, max_parallel, timeout, on_error == "cancel_siblings")
    sink = current_sink()
    await trio.lowlevel.checkpoint_if_cancelled()
    if sink is not None:
        return await run.run_reporting(sink)
    if run.run_inline():
        # Every call was answered in this task (synchronous tools, bad names or arguments):
        # no nursery, no task; still a checkpoint, as promised.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return run.collect()
    await run.run_all()
    return run.collect()


class _FanOut:
    __slots__ = (
        "cancel_siblings",
        "ctx",
        "failed",
        "items",
        "limiter",
        "pending",
        "registry",
        "reported",
        "results",
        "scope",
        "sink",
        "started",
        "timeout",
    )

    def __init__(
        self,
        registry: Registry,
        ctx: Context | None,
        items: list[ToolCall],
        max_parallel: int | None,
        timeout: float | None,
        cancel_siblings: bool,
    ) -> None:
        n = len(items)
        self.registry, self.ctx, self.items, self.timeout = registry, ctx, items, timeout
        self.limiter = (
            trio.CapacityLimiter(max_parallel) if max_parallel and max_parallel < n else None
        )
        self.cancel_siblings = cancel_siblings
        self.results: list[ToolResult | None] = [None] * n
        self.started: list[float | None] = [None] * n
        self.failed: ToolResult | None = None
        self.pending: list[tuple[int, Coroutine[Any, Any, ToolResult] | None]] = []
        self.scope: trio.CancelScope | None = None
        self.sink: ProgressSink | None = None
        self.reported: list[int] = []  # per call: 0 nothing sent, 1 started, 2 finished

    def run_inline(self) -> bool:
        """Answer, in input order and in this task, every call that never yields (see
        `ToolRegistry._call_inline`); True if that was all of them. The rest are left in
        ``pending`` for `run_all`, each with the coroutine to await if it has one."""
        inline = self.registry._call_inline
        ctx, timeout = self.ctx, self.timeout
        pending = self.pending
        for i, call in enumerate(self.items):
            result = inline(ctx, call, timeout)
            if result is None or type(result) is not ToolResult:
                pending.append((i, result))  # type: ignore[arg-type]
                continue
            self.results[i] = result
            if self.cancel_siblings and result.outcome != "ok":
                self.failed = result
                for _, started in pending:
                    if started is not None:
                        started.close()
                pending.clear()
                return True  # the calls after it never start; collect() says cancelled
        return not pending

    async def run_reporting(self, sink: ProgressSink) -> list[ToolResult]:
        """The fan-out of `call_many` with every call's start and end sent to ``sink``."""
        self.sink = sink
        self.reported = [0] * len(self.items)
        if not self.run_inline():
            try:
                for i, result in enumerate(self.results):
                    if result is not None:
                        await self._report(i, result)
            except BaseException:  # cancelled while reporting: nothing else starts
                for _, unstarted in self.pending:
                    if unstarted is not None:
                        unstarted.close()
                raise
            await self.run_all()
            results = self.collect()
            for i, result in enumerate(results):
                await self._report(i, result)
            return results
        # Every call was answered inline: a send with room may not yield, so yield here,
        # as `call_many` promises.
        results = self.collect()
        for i, result in enumerate(results):
            await self._report(i, result)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return results

    async def _report(self, i: int, result: ToolResult | None) -> None:
        """Send what call ``i`` has not yet sent: its start, then (given) its end."""
        sink, reported, call = self.sink, self.reported, self.items[i]
        assert sink is not None
        if reported[i] == 0:
            await sink.send(ToolCallStarted(call.id, call.name, call.arguments))
            reported[i] = 1
        if result is not None and reported[i] == 1:
            await sink.send(
                ToolCallFinished(
                    result.call_id,
                    result.name,
                    result.outcome,
                    result.output,
                    result.error,
                    result.duration,
                )
            )
            reported[i] = 2

    async def run_all(self) -> None:
        """Run the ``pending`` calls in a nursery of their own (``scope``, which a failing
        call cancels under ``cancel_siblings``), the first in this task; a lone error comes
        out bare."""
        try:
            async with trio.open_nursery() as nursery:
                self.scope = nursery.cancel_scope
                if self.limiter is None:
                    # Every call but the first in a task of its own; the first runs in this
                    # task, inside the nursery (so under its scope, beside the others): one
                    # spawn fewer, none for a lone asynchronous call.
                    (first, running), *rest = self.pending
                    for i, later in rest:
                        nursery.start_soon(self._call, i, later)
                    if running is None or self.sink is not None or self.cancel_siblings:
                        await self._call(first, running)
                    else:  # what `_call` does on this path, without its frame
                        self.results[first] = await running
                else:
                    await self.start_limited(nursery, self.limiter)
        except BaseExceptionGroup as group:
            reraise_single(group)

    async def start_limited(self, nursery: trio.Nursery, limiter: trio.CapacityLimiter) -> None:
        # Slots are taken here, in input order, so calls start in input order; each call's
        # task gives its slot back in a finally (release_on_behalf_of its borrower token).
        for n, (i, running) in enumerate(self.pending):
            borrower = object()
            try:
                await limiter.acquire_on_behalf_of(borrower)
            except BaseException:
                for _, unstarted in self.pending[n:]:
                    if unstarted is not None:
                        unstarted.close()
                raise
            nursery.start_soon(self._call_holding, i, running, borrower)

    async def _call_holding(
        self, i: int, running: Coroutine[Any, Any, ToolResult] | None, borrower: object
    ) -> None:
        assert self.limiter is not None
        try:
            await self._call(i, running)
        finally:
            self.limiter.release_on_behalf_of(borrower)

    async def _call(self, i: int, running: Coroutine[Any, Any, ToolResult] | None) -> None:
        if self.cancel_siblings:  # only a sibling's failure leaves a call without a result
            self.started[i] = trio.current_time()
        if self.sink is not None:
            try:
                await self._report(i, None)
            except BaseException:
                if running is not None:
                    running.close()
                raise
        if running is None:
            result = await self.registry.call(self.ctx, self.items[i], timeout=self.timeout)
        else:
            result = await running
        self.results[i] = result  # stored before any checkpoint: never lost to a cancel
        if self.cancel_siblings and result.outcome != "ok" and self.failed is None:
            self.failed = result
            assert self.scope is not None
            self.scope.cancel()  # its end is reported after the fan-out, with the siblings'
        elif self.sink is not None:
            await self._report(i, result)

    def collect(self) -> list[ToolResult]:
        results = self.results
        for result in results:
            if result is None:
                break
        else:  # every call answered (the usual case): no clock, no copy
            return results  # type: ignore[return-value]
        out: list[ToolResult] = []
        now = trio.current_time()
        for result, call, started in zip(results, self.items, self.started, strict=True):
            if result is None:
                out.append(self._cancelled(call, 0.0 if started is None else now - started))
            else:
                out.append(result)
        return out

    def _cancelled(self, call: ToolCall, duration: float) -> ToolResult:
        failed = self.failed
        reason = "cancelled"
        if failed is not None:
            reason = f"cancelled: sibling call {failed.call_id} ({failed.name}) {failed.outcome}"
        return cancelled_result(call.id, call.name, reason, duration)
