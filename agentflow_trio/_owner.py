"""Owning a nursery, written once: `NurseryOwner` and `reraise_single`.

Every class of the package whose tasks outlive its ``__aenter__`` (`Runner`, `MCPManager`,
`RemoteRunner`) derives from `NurseryOwner`, so all of them open, fail and close the same
way; functions that open a nursery of their own (``call_many``, ``open_tool_stream``) use
`reraise_single` to keep the same error policy. Shared by every room.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import NoReturn, Self, TypeVar

import trio

__all__ = ["NurseryOwner", "reraise_single"]

_T = TypeVar("_T")


def reraise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the group's only non-Cancelled exception (or its first Cancelled) bare.

    A group with several real errors is raised unchanged: nothing is dropped.
    """
    cancelled: BaseException | None = None
    real: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, trio.Cancelled):
            cancelled = cancelled or exc
        else:
            real.append(exc)
    if len(real) > 1:
        raise group
    single = real[0] if real else cancelled
    assert single is not None, "an exception group is never empty"
    context = single.__context__
    try:
        raise single
    finally:
        single.__context__ = context
        del single, context, group


class NurseryOwner:
    """Base for a class whose tasks live in one nursery from ``__aenter__`` to ``__aexit__``.

    A subclass implements `_open` and may override `_closing` and `_closed`:

    * Entering awaits `_open`, which enters what the object needs with `_enter` (outermost
      first), opens its nursery with `_open_nursery` and starts its tasks there. If `_open`
      raises, the nursery is cancelled, everything entered is left (innermost first),
      `_closed` runs and the error propagates as is.
    * Leaving awaits ``_closing(error)`` (``error``: what the body raised, or None; a runner
      drains only when it is None), then, whatever `_closing` did, cancels the nursery,
      waits for its tasks, leaves what `_open` entered and calls `_closed`. When
      ``__aexit__`` returns, no task of the object is alive.
    * Errors: the body's error propagates as itself, never wrapped (the nursery's exit sees
      no exception). An error of the object's own tasks comes out bare when it is the only
      one (`reraise_single`), as the exception group when there are several.
    * An object is entered once; entering it again raises ``RuntimeError``.
    """

    _owner_stack: AsyncExitStack | None = None
    _owner_nursery: trio.Nursery | None = None
    _owner_entered: bool = False

    async def _open(self) -> None:
        """Enter what the object needs and start its tasks (see the class docstring)."""
        raise NotImplementedError

    async def _closing(self, error: BaseException | None) -> None:
        """First step of leaving, before the nursery is cancelled; ``error`` is the body's."""

    def _closed(self) -> None:
        """Last step of leaving (or of a failed entering), after every task has ended."""

    async def _enter(self, manager: AbstractAsyncContextManager[_T]) -> _T:
        """Enter ``manager`` until the object closes; only inside `_open`."""
        assert self._owner_stack is not None, "_enter is for _open"
        return await self._owner_stack.enter_async_context(manager)

    async def _open_nursery(self) -> trio.Nursery:
        """Open the object's nursery (once, inside `_open`): cancelled when it closes."""
        assert self._owner_nursery is None, "an owner has one nursery"
        self._owner_nursery = await self._enter(trio.open_nursery())
        return self._owner_nursery

    async def __aenter__(self) -> Self:
        if self._owner_entered:
            name = type(self).__name__
            raise RuntimeError(f"this {name} was entered before: it can be entered only once")
        self._owner_entered = True
        self._owner_stack = AsyncExitStack()
        try:
            await self._open()
        except BaseException:
            await self._shut()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            await self._closing(exc)
        finally:
            await self._shut()
        return False

    async def _shut(self) -> None:
        """Cancel the nursery, leave what was entered (no exception passed in), then
        `_closed`; a lone error of the object's tasks is re-raised bare."""
        stack, nursery = self._owner_stack, self._owner_nursery
        self._owner_stack = self._owner_nursery = None
        try:
            if nursery is not None:
                nursery.cancel_scope.cancel()
            if stack is not None:
                try:
                    await stack.aclose()
                except BaseExceptionGroup as group:
                    reraise_single(group)
        finally:
            self._closed()
