"""Parallel tool calls: one nursery, an integer cap, a timeout per call, results in order.

The registry is reached through the `Registry` protocol of ``_calls``: ``base`` imports
this module (``ToolRegistry.call_many``), never the other way round.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import trio

from .._owner import reraise_single
from ..llm.types import ToolCall
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

    Raises:
        ValueError: ``max_parallel < 1`` or an unknown ``on_error`` policy.
    """
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1 or None, got {max_parallel!r}")
    if on_error not in ("continue", "cancel_siblings"):
        raise ValueError(f"on_error must be 'continue' or 'cancel_siblings', not {on_error!r}")
    items = [as_call(c) for c in calls]
    if not items:
        await trio.lowlevel.checkpoint()
        return []
    run = _FanOut(registry, ctx, items, max_parallel, timeout, on_error == "cancel_siblings")
    await trio.lowlevel.checkpoint_if_cancelled()
    if run.run_inline():
        # Every call was answered in this task (synchronous tools, bad names or arguments):
        # no nursery, no task; still a checkpoint, as promised.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return run.collect()
    try:
        async with trio.open_nursery() as nursery:
            run.scope = nursery.cancel_scope
            await run.start_all(nursery)
    except BaseExceptionGroup as group:
        reraise_single(group)
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
        "results",
        "scope",
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

    def run_inline(self) -> bool:
        """Answer, in input order and in this task, every call that never yields (see
        `ToolRegistry._call_inline`); True if that was all of them. The rest are left in
        ``pending`` for `start_all`, each with the coroutine to await if it has one."""
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

    async def start_all(self, nursery: trio.Nursery) -> None:
        limiter = self.limiter
        if limiter is None:
            for i, running in self.pending:
                nursery.start_soon(self._call, i, running)
            return
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
        self.started[i] = trio.current_time()
        if running is None:
            result = await self.registry.call(self.ctx, self.items[i], timeout=self.timeout)
        else:
            result = await running
        self.results[i] = result  # stored before any checkpoint: never lost to a cancel
        if self.cancel_siblings and result.outcome != "ok" and self.failed is None:
            self.failed = result
            assert self.scope is not None
            self.scope.cancel()

    def collect(self) -> list[ToolResult]:
        out: list[ToolResult] = []
        now = trio.current_time()
        for result, call, started in zip(self.results, self.items, self.started, strict=True):
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
