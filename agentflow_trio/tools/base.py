"""Function tools: the `FunctionTool` protocol, the `tool` decorator and `ToolRegistry`.

A tool is a name, a description, the JSON schema of its arguments object and
``async call(ctx, args) -> dict``. `tool` builds one from a typed ``async def`` and its
docstring. `ToolRegistry` holds tools by name and calls them so that nothing a model can do
ends the event: unknown names, arguments that do not fit the schema (checked with
``jsonschema`` before the tool runs), a tool that raises or runs past its timeout: each
becomes a `ToolResult` whose ``error`` tells the model what went wrong.
"""

from __future__ import annotations

import functools
import inspect
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, final, overload

import trio

from ..errors import ToolArgumentError, UnknownTool
from ..llm.types import ToolCall, ToolSpec
from ..observability import tracing as _tracing
from ..schema import ArgumentValidator, Converter, invalid_arguments
from ._calls import CallSpec, OnError
from ._result import ToolResult, new_call_id
from ._schema import function_schema
from .fanout import call_many as _fan_out

if TYPE_CHECKING:
    from ..agents import Context

__all__ = [
    "BoundTools",
    "CallSpec",
    "FunctionTool",
    "OnError",
    "Tool",
    "ToolRegistry",
    "new_call_id",
    "to_spec",
    "tool",
]


class FunctionTool(Protocol):
    """What the registry needs from a tool.

    ``parameters`` is the JSON schema (Draft 2020-12) of the arguments object. ``call``
    gets arguments that already passed that schema; it returns a dict (any other value is
    wrapped as ``{"result": value}``). It may raise: the registry turns the exception into
    an error result. A ``timeout`` attribute (seconds or None), if present, caps each call.
    """

    @property
    def name(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def parameters(self) -> Mapping[str, Any]: ...
    async def call(self, ctx: Context | None, args: Mapping[str, Any]) -> dict[str, Any]: ...


def to_spec(t: FunctionTool) -> ToolSpec:
    """The `ToolSpec` a model is shown for ``t``."""
    return ToolSpec(t.name, t.description, t.parameters)


@final
class Tool:
    """A `FunctionTool` made from a function by `tool`; calling it calls the function."""

    __slots__ = (
        "__wrapped__",
        "_converters",
        "_ctx",
        "_is_async",
        "description",
        "fn",
        "name",
        "parameters",
        "timeout",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        derived = function_schema(fn)
        self.fn = fn
        self.__wrapped__ = fn
        self.name: str = name or fn.__name__
        self.description: str = description if description is not None else derived.description
        self.parameters: Mapping[str, Any] = derived.parameters
        self.timeout = timeout
        self._converters: dict[str, Converter] = derived.converters
        self._ctx = derived.ctx_parameter is not None
        self._is_async = inspect.iscoroutinefunction(fn)

    async def call(self, ctx: Context | None, args: Mapping[str, Any]) -> dict[str, Any]:
        """Call the function with ``args`` (converted to the annotated Python types).

        A synchronous function runs inline, in this task: keep it quick.
        """
        kwargs = dict(args)
        for key, convert in self._converters.items():
            if key in kwargs:
                kwargs[key] = convert(kwargs[key])
        value = self.fn(ctx, **kwargs) if self._ctx else self.fn(**kwargs)
        if self._is_async or inspect.isawaitable(value):
            value = await value
        else:
            await trio.lowlevel.checkpoint()
        return value if isinstance(value, dict) else {"result": value}

    def _call_sync(
        self,
        ctx: Context | None,
        args: dict[str, Any],
        call_id: str,
        timeout: float | None,
        start: float,
    ) -> ToolResult | Coroutine[Any, Any, ToolResult]:
        """Run a synchronous function inline and wrap what it did as a `ToolResult`; the
        registry's fast path for `call_many` (see `ToolRegistry._call_inline`). If the
        function returned an awaitable, the coroutine that settles it is returned instead,
        for the caller to await in a task of its own."""
        name = self.name
        try:
            kwargs = dict(args)
            for key, convert in self._converters.items():
                if key in kwargs:
                    kwargs[key] = convert(kwargs[key])
            value = self.fn(ctx, **kwargs) if self._ctx else self.fn(**kwargs)
        except Exception as exc:
            return _failure(name, call_id, exc, trio.current_time() - start)
        if inspect.isawaitable(value):
            # A plain function that returned an awaitable: the caller awaits it in a task.
            return _settle(name, call_id, _as_dict(value), timeout, start)
        duration = trio.current_time() - start
        if timeout is not None and duration >= timeout:
            return _timed_out(name, call_id, timeout, duration)
        output = value if isinstance(value, dict) else {"result": value}
        return ToolResult(call_id, name, "ok", output, None, duration)

    async def _call_settled(
        self, ctx: Context | None, args: dict[str, Any], call_id: str, timeout: float | None
    ) -> ToolResult:
        """`call` of an ``async def`` settled as `_settle` does, in one frame instead of
        three: the registry's path for the usual tool (`ToolRegistry._call_inline`, tracing
        off). ``args`` passed the schema; the duration counts from this coroutine's start."""
        start = trio.current_time()
        try:
            if self._converters:
                kwargs = dict(args)
                for key, convert in self._converters.items():
                    if key in kwargs:
                        kwargs[key] = convert(kwargs[key])
                args = kwargs
            running = self.fn(ctx, **args) if self._ctx else self.fn(**args)
            if timeout is None:  # no cancel scope to enter and leave (most calls)
                value = await running
            else:
                with trio.move_on_after(timeout) as scope:
                    value = await running
                if scope.cancelled_caught:
                    return _timed_out(self.name, call_id, timeout, trio.current_time() - start)
        except Exception as exc:
            return _failure(self.name, call_id, exc, trio.current_time() - start)
        output = value if isinstance(value, dict) else {"result": value}
        return ToolResult(call_id, self.name, "ok", output, None, trio.current_time() - start)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def to_spec(self) -> ToolSpec:
        """The `ToolSpec` a model is shown for this tool."""
        return to_spec(self)

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *, name: str | None = None, description: str | None = None, timeout: float | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a `Tool` from a typed function; bare (``@tool``) or with arguments.

    The schema comes from the type hints (see ``_schema`` for what is supported;
    parameters with a default are optional), the description from the docstring's first
    paragraph and each parameter's description from its ``Args:`` (Google) or
    ``Parameters`` (NumPy) entry. A first parameter named ``ctx`` or annotated `Context`
    receives the caller's context and is not part of the schema. ``timeout`` caps every
    call of this tool (a smaller per-call timeout still wins).

    Raises:
        TypeError: an annotation cannot be expressed as JSON schema.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(f, name=name, description=description, timeout=timeout)

    return wrap(fn) if fn is not None else wrap


class ToolRegistry:
    """Tools by name, and the one place where calls are checked, timed and contained.

    Guarantees of `call` (and so of `call_many` and the tool loop): it returns a
    `ToolResult` for every call; it never raises for anything the model or the tool did
    (unknown name, malformed or ill-typed arguments, a tool exception, a timeout);
    ``trio.Cancelled`` from an enclosing scope is never caught and propagates. Arguments
    are validated against the tool's schema before the tool runs.
    """

    __slots__ = ("_specs", "_tools", "_validators", "default_timeout", "max_parallel")

    def __init__(
        self,
        tools: Iterable[FunctionTool | Callable[..., Any]] = (),
        *,
        default_timeout: float | None = None,
        max_parallel: int | None = None,
    ) -> None:
        """``default_timeout`` applies to calls given no timeout; ``max_parallel`` is the
        default cap of `call_many`."""
        self._tools: dict[str, FunctionTool] = {}
        self._validators: dict[str, ArgumentValidator] = {}
        self._specs: tuple[ToolSpec, ...] | None = None  # `specs`, made again on a change
        self.default_timeout = default_timeout
        self.max_parallel = max_parallel
        for t in tools:
            self.register(t)

    def register(self, t: FunctionTool | Callable[..., Any]) -> FunctionTool:
        """Add a tool (a plain function is made one with `tool`); return it.

        Usable as a decorator. Raises ``ValueError`` if the name is taken or the
        schema is not valid JSON schema.
        """
        made: FunctionTool = t if _is_tool(t) else tool(t)  # type: ignore[assignment,arg-type]
        if made.name in self._tools:
            raise ValueError(f"a tool named {made.name!r} is already registered")
        self._validators[made.name] = ArgumentValidator(made.name, made.parameters)
        self._tools[made.name] = made
        self._specs = None
        return made

    def unregister(self, name: str) -> FunctionTool:
        """Remove tool ``name`` and return it (calls already running are not affected).

        Raises:
            UnknownTool: no tool has that name.
        """
        made = self.get(name)
        del self._tools[name], self._validators[name]
        self._specs = None
        return made

    def get(self, name: str) -> FunctionTool:
        """The tool called ``name``.

        Raises:
            UnknownTool: no tool has that name.
        """
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownTool(_unknown_message(name, self._tools)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[FunctionTool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._tools)

    def specs(self) -> tuple[ToolSpec, ...]:
        """The `ToolSpec` of every tool, in registration order (for ``ChatRequest.tools``).

        The same tuple each time while the tools and their name, description and schema
        stay the same objects (checked by identity: cheaper than making the specs again,
        once per model call of a tool loop), so a wire's cache of encoded specs hits.
        """
        specs = self._specs
        if specs is None or not _same_specs(specs, self._tools.values()):
            specs = self._specs = tuple(to_spec(t) for t in self._tools.values())
        return specs

    def check_arguments(self, name: str, args: Mapping[str, Any]) -> None:
        """Validate ``args`` for tool ``name`` without calling it.

        Raises:
            UnknownTool: no tool has that name.
            ToolArgumentError: the arguments do not fit; ``field`` names the first culprit.
        """
        self.get(name)
        error = self._validators[name].check(args)
        if error is not None:
            raise ToolArgumentError(error["message"], tool=name, field=error["field"])

    async def call(
        self,
        ctx: Context | None,
        call: str | ToolCall,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Call one tool and return its `ToolResult` (see the class guarantees).

        ``call`` is a tool name (with ``args``) or a model's `ToolCall` (its id, name and
        parsed arguments; a ``parse_error`` gives an ``invalid_arguments`` result). The
        effective timeout is the smaller of ``timeout`` (else ``default_timeout``) and the
        tool's own. Always a checkpoint.
        """
        parse_error: str | None = None
        if isinstance(call, ToolCall):
            name, args, parse_error = call.name, call.arguments, call.parse_error
            call_id = call_id or call.id
        else:
            name = call
        return await self._call(
            ctx,
            name,
            args if args is not None else {},
            call_id or new_call_id(),
            self.default_timeout if timeout is None else timeout,
            parse_error,
        )

    async def call_many(
        self,
        ctx: Context | None,
        calls: Iterable[CallSpec],
        *,
        max_parallel: int | None = None,
        timeout: float | None = None,
        on_error: OnError = "continue",
    ) -> list[ToolResult]:
        """`fanout.call_many` on this registry; ``max_parallel`` defaults to the registry's."""
        cap = self.max_parallel if max_parallel is None else max_parallel
        return await _fan_out(
            self, ctx, calls, max_parallel=cap, timeout=timeout, on_error=on_error
        )

    def bind(self, ctx: Context | None) -> BoundTools:
        """A view that passes ``ctx`` for you: ``await ctx.tools.call("search", {...})``."""
        return BoundTools(self, ctx)

    async def _call(
        self,
        ctx: Context | None,
        name: str,
        args: Mapping[str, Any],
        call_id: str,
        timeout: float | None,
        parse_error: str | None,
    ) -> ToolResult:
        start = trio.current_time()
        checked = self._check(name, args, call_id, parse_error, start)
        if isinstance(checked, ToolResult):
            await trio.lowlevel.checkpoint()
            return checked
        t, args = checked
        limit = _smaller(timeout, _own_timeout(t))
        if type(t) is not Tool:
            return await _run(t, ctx, args, call_id, limit, start)
        if t._is_async:
            if _tracing.active is not None:  # its span is current while it runs
                return await _run(t, ctx, args, call_id, limit, start)
            return await t._call_settled(ctx, args, call_id, limit)
        # a synchronous function runs inline, as `call_many` runs it (`_call_inline`):
        # one frame, and with tracing its span is recorded as it returns
        done: ToolResult | Coroutine[Any, Any, ToolResult]
        if _tracing.active is not None:
            run = functools.partial(t._call_sync, ctx, args, call_id, limit, start)
            done = _tracing.active.sync_tool(t.name, call_id, args, run)
        else:  # (the form `bench/tracing_overhead.py`'s baseline builder takes out)
            done = t._call_sync(ctx, args, call_id, limit, start)
        if isinstance(done, ToolResult):
            await trio.lowlevel.checkpoint()
            return done
        return await done  # a plain function that returned an awaitable: settle it

    def _check(
        self,
        name: str,
        args: Mapping[str, Any],
        call_id: str,
        parse_error: str | None,
        start: float | None,
    ) -> ToolResult | tuple[FunctionTool, dict[str, Any]]:
        """The tool and its validated arguments, or the error result that answers the call
        (its duration counted from ``start``; None: 0, the clock is not read)."""
        t = self._tools.get(name)
        if t is None:
            return ToolResult(call_id, name, "error", None, self._unknown(name), _since(start))
        if type(args) is not dict:  # JSON schema "object" means dict (not MappingProxyType)
            args = dict(args)
        error: dict[str, Any] | None
        if parse_error is not None:
            error = invalid_arguments(name, None, "a JSON object", parse_error)
        else:
            error = self._validators[name].check(args)
        if error is not None:
            return ToolResult(call_id, name, "error", None, error, _since(start))
        return t, args

    def _call_inline(
        self, ctx: Context | None, call: ToolCall, timeout: float | None
    ) -> ToolResult | Coroutine[Any, Any, ToolResult] | None:
        """``call``'s result computed in this task without a checkpoint; or, for an
        asynchronous tool (or a plain function that returned an awaitable), the coroutine
        that runs it, to await in a task of its own (never None from this registry).

        Only a synchronous `Tool` (or an unknown name, or arguments that do not fit) is
        answered here: such a call never yields, so running it in a task of its own would
        change nothing but the cost. Its timeout is applied as the task path applies it: a
        call whose function ran past its deadline is ``timed_out``. The arguments are
        checked here once, whichever way the call goes on; an asynchronous tool's duration
        counts from when its coroutine starts (not while it waits for a ``max_parallel``
        slot), as `call`'s does.
        """
        checked = self._check(call.name, call.arguments, call.id, call.parse_error, None)
        if type(checked) is ToolResult:
            return checked
        t, args = checked  # type: ignore[misc]
        limit = self.default_timeout if timeout is None else timeout
        own = getattr(t, "timeout", None)  # `_smaller(limit, _own_timeout(t))`, inline
        if isinstance(own, (int, float)):
            limit = own if limit is None else min(limit, own)
        if type(t) is not Tool or t._is_async:
            if type(t) is Tool and _tracing.active is None:
                return t._call_settled(ctx, args, call.id, limit)  # one frame, not three
            return _run(t, ctx, args, call.id, limit, None)
        start = trio.current_time()
        if _tracing.active is not None:  # an ``execute_tool`` span around the call
            run = functools.partial(t._call_sync, ctx, args, call.id, limit, start)
            return _tracing.active.sync_tool(t.name, call.id, args, run)
        return t._call_sync(ctx, args, call.id, limit, start)

    def _unknown(self, name: str) -> dict[str, Any]:
        message = _unknown_message(name, self._tools)
        return {"type": "unknown_tool", "tool": name, "message": message, "known": self.names()}

    def __repr__(self) -> str:
        return f"<ToolRegistry {self.names()}>"


@final
class BoundTools:
    """A registry seen from one context: the same calls without the ``ctx`` argument.

    Cheap to make (two slots); made per event by ``Context.tools``.
    """

    __slots__ = ("ctx", "registry")

    def __init__(self, registry: ToolRegistry, ctx: Context | None) -> None:
        self.registry = registry
        self.ctx = ctx

    async def call(
        self,
        call: str | ToolCall,
        args: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """`ToolRegistry.call` with this view's context."""
        return await self.registry.call(self.ctx, call, args, timeout=timeout, call_id=call_id)

    async def call_many(
        self,
        calls: Iterable[CallSpec],
        *,
        max_parallel: int | None = None,
        timeout: float | None = None,
        on_error: OnError = "continue",
    ) -> list[ToolResult]:
        """`ToolRegistry.call_many` with this view's context."""
        return await self.registry.call_many(
            self.ctx, calls, max_parallel=max_parallel, timeout=timeout, on_error=on_error
        )

    def get(self, name: str) -> FunctionTool:
        """The tool called ``name`` (raises `UnknownTool`)."""
        return self.registry.get(name)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return self.registry.names()

    def specs(self) -> tuple[ToolSpec, ...]:
        """Every tool's `ToolSpec`."""
        return self.registry.specs()

    def __contains__(self, name: object) -> bool:
        return name in self.registry


async def _run(
    t: FunctionTool,
    ctx: Context | None,
    args: Mapping[str, Any],
    call_id: str,
    timeout: float | None,
    start: float | None,
) -> ToolResult:
    """Run ``t`` and settle it; ``start`` None: the call starts now."""
    if start is None:
        start = trio.current_time()
    if _tracing.active is not None:  # an ``execute_tool`` span around the call, current
        active = _tracing.active  # (the span is opened and closed in this frame: no
        opened = active.open_tool(t.name, call_id, args)  # coroutine of its own)
        try:
            result = await _settle(t.name, call_id, t.call(ctx, args), timeout, start)
        except BaseException as exc:
            active.close_tool(opened, None, exc)
            raise
        active.close_tool(opened, result, None)
        return result
    return await _settle(t.name, call_id, t.call(ctx, args), timeout, start)


async def _as_dict(value: Awaitable[Any]) -> dict[str, Any]:
    result = await value
    return result if isinstance(result, dict) else {"result": result}


async def _settle(
    name: str,
    call_id: str,
    running: Awaitable[dict[str, Any]],
    timeout: float | None,
    start: float,
) -> ToolResult:
    """Await a tool's call under its timeout and wrap what happened as a `ToolResult`."""
    try:
        if timeout is None:  # no cancel scope to enter and leave (most calls)
            value = await running
        else:
            with trio.move_on_after(timeout) as scope:
                value = await running
            if scope.cancelled_caught:
                return _timed_out(name, call_id, timeout, trio.current_time() - start)
    except Exception as exc:
        return _failure(name, call_id, exc, trio.current_time() - start)
    duration = trio.current_time() - start
    output = value if isinstance(value, dict) else {"result": value}
    return ToolResult(call_id, name, "ok", output, None, duration)


def _failure(name: str, call_id: str, exc: Exception, duration: float) -> ToolResult:
    """The result of a tool that raised: its own argument complaint, or a tool error."""
    if isinstance(exc, ToolArgumentError):  # the tool found its arguments wrong (a bad token)
        expected = getattr(exc, "expected", None) or "a valid value"
        got = getattr(exc, "got", None)
        error = invalid_arguments(name, exc.field, expected, str(exc), got=got)
        return ToolResult(call_id, name, "error", None, error, duration)
    error = {"type": "tool_error", "exception": type(exc).__name__, "message": str(exc)}
    tb = "".join(traceback.format_exception(exc))
    return ToolResult(call_id, name, "error", None, error, duration, tb)


def _timed_out(name: str, call_id: str, timeout: float, duration: float) -> ToolResult:
    message = f"tool {name!r} did not finish within {timeout:g}s"
    error = {"type": "timed_out", "timeout": timeout, "message": message}
    return ToolResult(call_id, name, "timed_out", None, error, duration)


def _since(start: float | None) -> float:
    return 0.0 if start is None else trio.current_time() - start


def _own_timeout(t: FunctionTool) -> float | None:
    value = getattr(t, "timeout", None)
    return value if isinstance(value, (int, float)) else None


def _smaller(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _same_specs(specs: tuple[ToolSpec, ...], tools: Iterable[FunctionTool]) -> bool:
    """Whether ``specs`` still shows ``tools`` (same objects, in the same order)."""
    for spec, t in zip(specs, tools, strict=True):
        if spec.name is not t.name or spec.description is not t.description:
            return False
        if spec.parameters is not t.parameters:
            return False
    return True


def _is_tool(obj: object) -> bool:
    return all(hasattr(obj, attr) for attr in ("name", "parameters", "call"))


def _unknown_message(name: str, tools: Mapping[str, FunctionTool] | Sequence[str]) -> str:
    known = ", ".join(tools) or "(none)"
    return f"no tool named {name!r}; known tools: {known}"
