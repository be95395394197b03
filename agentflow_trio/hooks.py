"""`Hooks`: plain synchronous callables the runner calls around events and agents.

The runner calls them where it cannot wait (``emit_nowait`` calls ``on_accept``), so a
hook is never awaited: an ``async def`` hook is refused with ``TypeError`` when it is
added, however it is added, and one that returns an awaitable anyway is a failing hook.
A failing hook is logged and counted, never the runner's end. Floor 4, beside
``agents.py``, which re-exports `Hooks`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, SupportsIndex

from ._outcome import stops_process

if TYPE_CHECKING:
    from .events import AgentResult, Event

__all__ = ["Hooks"]

_log = logging.getLogger("agentflow_trio.agents")

_HOOK_KINDS: Final = (
    "after_agent",
    "after_event",
    "before_agent",
    "before_event",
    "on_accept",
    "on_error",
)


def _sync_hook(kind: str, hook: Any) -> Any:
    """``hook`` if it is a plain callable; hooks run synchronously, never awaited.

    Raises:
        TypeError: ``hook`` is not callable or is an ``async def`` function.
    """
    if not callable(hook):
        raise TypeError(f"{kind} hook {hook!r} is not callable")
    if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(
        getattr(hook, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        raise TypeError(
            f"{kind} hook {hook!r} is an async function: hooks run synchronously inside the "
            "runner and are never awaited; make it a plain def (start async work elsewhere)"
        )
    return hook


class _HookList(list[Any]):
    """A hook list that refuses an ``async def`` hook however it is added."""

    __slots__ = ("kind",)

    def __init__(self, kind: str, hooks: Iterable[Any] = ()) -> None:
        self.kind = kind
        super().__init__(_sync_hook(kind, h) for h in hooks)

    def append(self, hook: Any) -> None:
        super().append(_sync_hook(self.kind, hook))

    def extend(self, hooks: Iterable[Any]) -> None:
        super().extend([_sync_hook(self.kind, h) for h in hooks])

    def insert(self, index: SupportsIndex, hook: Any) -> None:
        super().insert(index, _sync_hook(self.kind, hook))

    def __iadd__(self, hooks: Iterable[Any]) -> _HookList:  # type: ignore[misc]
        self.extend(hooks)
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = [_sync_hook(self.kind, h) for h in value]
        else:
            value = _sync_hook(self.kind, value)
        super().__setitem__(index, value)


class Hooks:
    """Plain synchronous callables run around events and agents.

    ``before_event(event)``, ``after_event(event, result)``, ``before_agent(name, event)``,
    ``after_agent(name, event, result)``, ``on_error(event, exc)``, and ``on_accept(event)``
    (called by the runner the moment an event is accepted). A hook that raises is
    never swallowed silently: it is logged with its traceback, counted in
    ``Runner.statistics().hook_failures``, and a failing ``before_*`` hook fails the event
    (the agent does not run) with the hook's error kept in the result.

    Hooks are never awaited (some run where the runner cannot wait, such as inside
    ``emit_nowait``): an ``async def`` hook is refused with ``TypeError`` however it is
    added (the constructor, ``append``, ``extend``, ``insert``, assignment), and a hook
    that returns an awaitable anyway counts as a failing hook (the awaitable is closed).
    A hook raising anything (a BaseException too, except KeyboardInterrupt and
    SystemExit) is a failing hook, never the runner's end.
    """

    __slots__ = (
        "after_agent",
        "after_event",
        "before_agent",
        "before_event",
        "failures",
        "on_accept",
        "on_error",
    )

    def __init__(
        self,
        *,
        before_event: Iterable[Callable[[Event], object]] = (),
        after_event: Iterable[Callable[[Event, AgentResult], object]] = (),
        before_agent: Iterable[Callable[[str, Event], object]] = (),
        after_agent: Iterable[Callable[[str, Event, AgentResult], object]] = (),
        on_error: Iterable[Callable[[Event, BaseException], object]] = (),
        on_accept: Iterable[Callable[[Event], object]] = (),
    ) -> None:
        self.before_event = before_event  # type: ignore[assignment]  # see __setattr__
        self.after_event = after_event  # type: ignore[assignment]
        self.before_agent = before_agent  # type: ignore[assignment]
        self.after_agent = after_agent  # type: ignore[assignment]
        self.on_error = on_error  # type: ignore[assignment]
        self.on_accept = on_accept  # type: ignore[assignment]
        self.failures = 0

    before_event: list[Callable[[Event], object]]
    after_event: list[Callable[[Event, AgentResult], object]]
    before_agent: list[Callable[[str, Event], object]]
    after_agent: list[Callable[[str, Event, AgentResult], object]]
    on_error: list[Callable[[Event, BaseException], object]]
    on_accept: list[Callable[[Event], object]]

    def __setattr__(self, name: str, value: Any) -> None:
        # Reading a hook list stays a plain slot read (the runner does it per event);
        # only setting one goes through here, to keep async hooks out.
        if name in _HOOK_KINDS:
            value = _HookList(name, value)
        object.__setattr__(self, name, value)

    def _report(self, kind: str, hook: object, exc: BaseException) -> None:
        self.failures += 1
        _log.error("%s hook %r failed", kind, hook, exc_info=exc)

    def _call(
        self, hook: Callable[..., object], kind: str, args: tuple[Any, ...]
    ) -> BaseException | None:
        """Call one hook; return None, or what it raised (reported)."""
        try:
            returned = hook(*args)
            if returned is not None and inspect.isawaitable(returned):
                close = getattr(returned, "close", None)
                if close is not None:
                    close()  # no "never awaited" warning: it is reported here instead
                raise TypeError(f"{kind} hook {hook!r} returned an awaitable; hooks are sync")
        except BaseException as exc:
            if stops_process(exc):
                raise
            self._report(kind, hook, exc)
            return exc
        return None

    def run_after(self, hooks: Sequence[Callable[..., object]], kind: str, *args: Any) -> None:
        """Run after-hooks; a failure is reported and the next hook still runs."""
        for hook in hooks:
            self._call(hook, kind, args)

    def run_before(
        self, hooks: Sequence[Callable[..., object]], kind: str, *args: Any
    ) -> BaseException | None:
        """Run before-hooks; return the first failure (reported), which fails the event."""
        for hook in hooks:
            failure = self._call(hook, kind, args)
            if failure is not None:
                return failure
        return None
