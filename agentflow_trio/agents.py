"""Agents are plain ``async def`` trio functions: ``async def a(ctx, event) -> AgentResult``.

`agent` turns such a function into an `Agent` (a name, the function, an optional timeout).
An agent may return an `AgentResult` or any plain value (wrapped as ``AgentResult.ok``); an
exception it raises becomes a ``failed`` result with the traceback kept.

Workflow agents compose others: `sequential` (in order, sharing the context's state),
`parallel` (one nursery, results merged in declaration order) and `loop` (until a predicate
holds or ``max_iterations``). Concurrent children each take a slot of the runner's worker
pool; the parent gives its own slot back while it waits for them, so nesting can never
deadlock the pool.

An agent's error is any exception it raises, BaseException subclasses included, except
the three that are not the agent's to report: ``trio.Cancelled`` (its scope decides),
``KeyboardInterrupt`` and ``SystemExit`` (the process is stopping). Those propagate.
A `UsageLimitExceeded` (alone or in a nursery's ExceptionGroup) ends the agent
``usage_limit_exceeded`` rather than ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import trio

from ._outcome import failure, passes_through
from .errors import ConfigError
from .events import AgentResult, ErrorInfo, Event, Outcome
from .hooks import Hooks as Hooks
from .observability import tracing as _tracing
from .state import (
    HISTORY_KEY,
    HISTORY_LIMIT,
    SessionDataError,
    State,
    append_history,
    history_messages,
)
from .usage import EVENT_CONTEXT, RunUsage, UsageLimits, UsageMeter, current_meter

if TYPE_CHECKING:
    from .llm.types import Message

__all__ = [
    "Agent",
    "AgentFunction",
    "Context",
    "Hooks",
    "agent",
    "as_agent",
    "loop",
    "parallel",
    "run_concurrently",
    "sequential",
]

_log = logging.getLogger("agentflow_trio.agents")

AgentFunction = Callable[["Context", Event], Awaitable[Any]]


class _AgentLike(Protocol):
    name: str

    def __call__(self, ctx: Context, event: Event, /) -> Awaitable[Any]: ...


class _Slot(Protocol):
    """What a worker-pool slot is held on behalf of, and whether it is held right now.

    An `EventHandle` for an event's own slot, a `_ChildSlot` for a concurrent child's; one
    object is shared by an event's context and every nested call run under its slot."""

    _slot_held: bool


class _ChildSlot:
    __slots__ = ("_slot_held",)

    def __init__(self) -> None:
        self._slot_held = False


def _timeout_seconds(value: object, key: str = "timeout") -> float | None:
    """``value`` as a timeout in seconds: None (no override), a number > 0, or
    ``math.inf`` for none at all. Checked where a timeout enters, so that nothing
    trio refuses (NaN) ever reaches a cancel scope.

    Raises:
        ConfigError: NaN, zero or negative, a bool, or not a number; ``key`` names it.
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if seconds > 0:  # False for NaN
            return seconds
    raise ConfigError(
        f"expected a number of seconds > 0 (math.inf: no timeout), got {value!r}", key=key
    )


_NO_HOOKS = Hooks()


_current: ContextVar[Context | None] = EVENT_CONTEXT
"""The context of the agent running in this task (and the tasks it starts), if any: how
`Runner.call` knows it is called from inside an agent, and under whose slot to run, and
how a model call finds the event's usage meter (`agentflow_trio.usage.current_meter`)."""


class Context:
    """What an agent gets besides its event; built per event, owned by the event's task.

    ``state`` is the event's (or its session's) copy-on-write `State`; ``llm``, ``tools``,
    ``mcp`` and ``metrics`` are the fields of the runner's `Services` (None if not given);
    ``previous`` is the output of the step before, inside `sequential` and `loop`;
    ``depth`` is 0 for an event emitted from outside, 1 for a call made from its agent
    through ``ctx.runner.call``, and so on; ``usage`` is what the event's model calls
    have spent so far; ``session_id`` is the event's session (None outside one).

    Conversation history: ``ctx.history`` is the session's conversation so far (the
    messages of earlier turns, oldest first) and ``ctx.remember(*messages)`` adds this
    turn's, keeping the last `HISTORY_LIMIT` (or ``limit``). Both live in ``state``
    under `HISTORY_KEY`, so they are committed with the session's state when the event
    succeeds and merged by append when two events of the session overlap::

        answer = await ctx.llm.complete([*ctx.history, af.user(q)], output_type=Answer)
        ctx.remember(af.user(q), af.assistant(json.dumps(attrs.asdict(answer))))
    """

    __slots__ = (
        "_hooks",
        "_limiter",
        "_meter",
        "_slot",
        "_state",
        "_tools",
        "agent",
        "depth",
        "event",
        "llm",
        "mcp",
        "metrics",
        "previous",
        "runner",
        "session_id",
    )

    def __init__(
        self,
        event: Event,
        *,
        state: State | None = None,
        llm: Any = None,
        tools: Any = None,
        mcp: Any = None,
        metrics: Any = None,
        runner: Any = None,
        hooks: Hooks | None = None,
        limiter: trio.CapacityLimiter | None = None,
        slot: _Slot | None = None,
        depth: int = 0,
        meter: UsageMeter | None = None,
    ) -> None:
        self.event = event
        self._state = state
        self.llm = llm
        self._tools = tools
        self.mcp = mcp
        self.metrics = metrics
        self.runner = runner
        self.agent: str | None = None
        self.previous: Any = None
        self._hooks = hooks if hooks is not None else _NO_HOOKS
        # The worker-pool slot of `limiter` this context's task runs under (held on
        # behalf of ``slot`` while ``slot._slot_held``), shared with nested calls.
        self._limiter = limiter
        self._slot = slot
        self.depth = depth
        self._meter = meter  # the event's usage meter (the runner's), shared by children
        self.session_id: Any = None

    @property
    def usage(self) -> RunUsage:
        """What the event's model calls have spent so far (nested events' included)."""
        meter = self._meter if self._meter is not None else current_meter()
        return meter.snapshot() if meter is not None else RunUsage()

    @property
    def tools(self) -> Any:
        """The runner's tools; a registry with ``bind`` is bound to this context, so agents
        write ``await ctx.tools.call_many([("search", {"q": ...})])`` without passing ctx."""
        tools = self._tools
        bind = getattr(tools, "bind", None)
        return bind(self) if bind is not None else tools

    @property
    def state(self) -> State:
        """The event's state, created on first use."""
        if self._state is None:
            self._state = State()
        return self._state

    @property
    def history(self) -> tuple[Message, ...]:
        """The session's conversation so far, oldest first (empty for a new session, and
        for an event without one unless this event remembered something).

        Raises:
            SessionDataError: ``state`` holds something else under `HISTORY_KEY`.
        """
        if self._state is None or HISTORY_KEY not in self._state:
            return ()
        return tuple(_message(m) for m in history_messages(self._state))

    def remember(self, *messages: Message, limit: int = HISTORY_LIMIT) -> None:
        """Add this turn's ``messages`` to the session's conversation, keeping the last
        ``limit`` (see the class docstring). Written with the state: only a succeeded
        event's turn is kept.

        Raises:
            ValueError: ``limit < 1``.
            SessionDataError: ``state`` holds something else under `HISTORY_KEY`.
        """
        append_history(self.state, [_message_json(m) for m in messages], limit)

    def child(self, event: Event | None = None) -> Context:
        """A context for a concurrent child: same services, a forked (copy-on-write) state."""
        ctx = Context(
            event if event is not None else self.event,
            state=self._state.fork() if self._state is not None else None,
            llm=self.llm,
            tools=self._tools,
            mcp=self.mcp,
            metrics=self.metrics,
            runner=self.runner,
            hooks=self._hooks,
            limiter=self._limiter,
            depth=self.depth,
            meter=self._meter,
        )
        ctx.previous = self.previous
        ctx.session_id = self.session_id
        return ctx

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]:
        """``with ctx.span("rank", k=3) as span:`` a tracing span of your own under the
        event's (``observability.tracing.span``; a no-op `NoSpan` while tracing is off)."""
        return _tracing.span(name, **attributes)

    async def run(
        self, agent: _AgentLike | AgentFunction, event: Event | None = None
    ) -> AgentResult:
        """Run another agent inline (in this task, under this task's worker slot)."""
        return await invoke(self, as_agent(agent), event if event is not None else self.event)


class Agent:
    """An agent: a name, an ``async def (ctx, event)`` function, an optional timeout and
    optional usage limits.

    ``timeout`` is in seconds, > 0; ``math.inf`` means none (not even ``event_timeout``);
    NaN, zero, a negative number or a non-number raises `ConfigError` at once, whether
    given here or set later. ``limits`` (`UsageLimits`) bound the model calls of each
    event this agent handles as the top-level agent (tightened by ``[limits]`` and the
    event's own; ``TypeError`` for anything else).

    Calling it (``await a(ctx, event)``) runs the function directly; the runner instead goes
    through `invoke`, which applies hooks and turns exceptions into results.
    """

    __slots__ = ("__wrapped__", "description", "fn", "limits", "name", "timeout")

    def __init__(
        self,
        fn: AgentFunction,
        *,
        name: str | None = None,
        timeout: float | None = None,
        description: str = "",
        limits: UsageLimits | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"an agent needs an async function, got {fn!r}")
        self.fn = fn
        self.__wrapped__ = fn
        self.name: str = name or str(getattr(fn, "__name__", "agent"))
        self.timeout: float | None = timeout
        self.limits: UsageLimits | None = limits
        self.description = description or (getattr(fn, "__doc__", None) or "").strip()

    def __setattr__(self, name: str, value: Any) -> None:
        # ``timeout`` and ``limits`` are checked however they are set (the runner trusts
        # them at run time).
        if name == "timeout":
            value = _timeout_seconds(value)
        elif name == "limits" and value is not None and not isinstance(value, UsageLimits):
            raise TypeError(f"limits must be a UsageLimits, got {value!r}")
        object.__setattr__(self, name, value)

    def __call__(self, ctx: Context, event: Event, /) -> Awaitable[Any]:
        if _tracing.active is not None:  # an ``invoke_agent`` span around the run
            return _tracing.active.agent(self.name, self.fn(ctx, event))
        return self.fn(ctx, event)

    def __repr__(self) -> str:
        return f"<Agent {self.name}>"


@overload
def agent(fn: AgentFunction, /) -> Agent: ...
@overload
def agent(
    *,
    name: str | None = None,
    timeout: float | None = None,
    description: str = "",
    limits: UsageLimits | None = None,
) -> Callable[[AgentFunction], Agent]: ...
def agent(
    fn: AgentFunction | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    description: str = "",
    limits: UsageLimits | None = None,
) -> Agent | Callable[[AgentFunction], Agent]:
    """Decorate ``async def f(ctx, event)`` as an `Agent`; usable bare or with arguments.

    ``timeout`` (seconds, > 0, ``math.inf`` for none) overrides the runner's
    ``event_timeout`` for events this agent handles as the top-level agent; ``limits``
    (`UsageLimits`) bound those events' model calls.

    Raises:
        ConfigError: ``timeout`` is NaN, not positive, or not a number.
        TypeError: ``limits`` is not a `UsageLimits`.
    """

    def wrap(f: AgentFunction) -> Agent:
        return Agent(f, name=name, timeout=timeout, description=description, limits=limits)

    return wrap(fn) if fn is not None else wrap


def as_agent(obj: _AgentLike | AgentFunction) -> _AgentLike:
    """Accept an `Agent`, anything with a ``name`` that is callable, or a bare function."""
    if isinstance(obj, Agent) or hasattr(obj, "name"):
        return obj
    return Agent(obj)


async def invoke(ctx: Context, agent: _AgentLike, event: Event) -> AgentResult:
    """Run one agent: hooks around it, a plain return value wrapped, an exception kept.

    Any exception becomes a ``failed`` result, BaseException subclasses included (a
    `UsageLimitExceeded`: ``usage_limit_exceeded``); ``trio.Cancelled``,
    ``KeyboardInterrupt`` and ``SystemExit`` propagate untouched.
    """
    hooks = ctx._hooks
    name = agent.name
    ctx.agent = name
    if hooks.before_agent:
        refused = hooks.run_before(hooks.before_agent, "before_agent", name, event)
        if refused is not None:
            return AgentResult(Outcome.FAILED, None, ErrorInfo.from_exception(refused), None, name)
    try:
        value = await agent(ctx, event)
    except BaseException as exc:
        if passes_through(exc):
            raise
        if hooks.on_error:
            hooks.run_after(hooks.on_error, "on_error", event, exc)
        result = failure(exc, name)
    else:
        if type(value) is AgentResult:
            result = value if value.agent is not None else _named(value, name)
        else:
            result = AgentResult(Outcome.SUCCEEDED, value, None, None, name)
    if hooks.after_agent:
        hooks.run_after(hooks.after_agent, "after_agent", name, event, result)
    return result


def _named(result: AgentResult, name: str) -> AgentResult:
    return AgentResult(
        result.outcome, result.output, result.error, result.event_id, name, result.usage
    )


async def run_concurrently(
    ctx: Context,
    agents: Sequence[_AgentLike],
    event: Event,
    *,
    on_error: Literal["continue", "cancel"] = "continue",
) -> list[AgentResult]:
    """Run ``agents`` on ``event`` in one nursery; results in declaration order.

    Each child runs with a forked context and takes its own worker slot; the calling task
    hands its slot back while it waits. With ``on_error="cancel"`` the first failure cancels
    the siblings still running (their results say ``cancelled``); finished results are kept.
    Cancelling the caller cancels every child.
    """
    results: list[AgentResult | None] = [None] * len(agents)
    limiter = ctx._limiter
    slot = ctx._slot
    # Several tasks may share one slot (nested calls made concurrently from one agent):
    # only the one that finds it held gives it back and takes it again.
    holding = limiter is not None and slot is not None and slot._slot_held
    if holding:
        assert limiter is not None and slot is not None
        limiter.release_on_behalf_of(slot)
        slot._slot_held = False

    async def run_one(i: int, child_agent: _AgentLike, scope: trio.CancelScope) -> None:
        child = ctx.child(event)
        _current.set(child)  # this task's own context copy: nested calls use its slot
        if limiter is None:
            results[i] = await invoke(child, child_agent, event)
        else:
            token = child._slot = _ChildSlot()
            await limiter.acquire_on_behalf_of(token)
            token._slot_held = True
            try:
                results[i] = await invoke(child, child_agent, event)
            finally:
                if token._slot_held:
                    limiter.release_on_behalf_of(token)
                    token._slot_held = False
        result = results[i]
        if on_error == "cancel" and result is not None and result.outcome is not Outcome.SUCCEEDED:
            scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            for i, child_agent in enumerate(agents):
                nursery.start_soon(run_one, i, child_agent, nursery.cancel_scope)
    finally:
        if holding:
            assert limiter is not None and slot is not None
            # Take a slot again before going on; if cancelled meanwhile, hold nothing.
            await limiter.acquire_on_behalf_of(slot)
            slot._slot_held = True
    return [
        r
        if r is not None
        else AgentResult(Outcome.CANCELLED, None, _SIBLING_CANCELLED, None, a.name)
        for r, a in zip(results, agents, strict=True)
    ]


_SIBLING_CANCELLED = ErrorInfo("Cancelled", "cancelled after a sibling failed")


def merge_outputs(results: Sequence[AgentResult]) -> dict[str, Any]:
    """Outputs keyed by agent name, in declaration order (a repeated name gets ``#2``...)."""
    merged: dict[str, Any] = {}
    for r in results:
        key = r.agent or "agent"
        n = 2
        while key in merged:
            key = f"{r.agent}#{n}"
            n += 1
        merged[key] = r.output
    return merged


def summarize_failures(results: Sequence[AgentResult]) -> ErrorInfo | None:
    """One ErrorInfo naming every child that did not succeed, or None if all did."""
    bad = [r for r in results if r.outcome is not Outcome.SUCCEEDED]
    if not bad:
        return None
    text = "; ".join(f"{r.agent}: {r.outcome.value}: {r.error}" for r in bad)
    tb = "\n".join(r.error.traceback for r in bad if r.error is not None and r.error.traceback)
    return ErrorInfo("ChildAgentsFailed", text, tb)


def sequential(*agents: _AgentLike | AgentFunction, name: str = "sequential") -> Agent:
    """Run ``agents`` one after another in the same task, sharing ``ctx.state``.

    Each step sees the previous step's output as ``ctx.previous``. The first result that is
    not ``succeeded`` ends the sequence and is returned; otherwise the last result is.
    """
    steps = [as_agent(a) for a in agents]
    if not steps:
        raise ValueError("sequential() needs at least one agent")

    async def run(ctx: Context, event: Event) -> AgentResult:
        result = AgentResult.ok()
        for step in steps:
            result = await invoke(ctx, step, event)
            if result.outcome is not Outcome.SUCCEEDED:
                return _named(result, f"{name}/{result.agent}")
            ctx.previous = result.output
        return AgentResult(Outcome.SUCCEEDED, result.output, None, None, name)

    return Agent(run, name=name)


def parallel(
    *agents: _AgentLike | AgentFunction,
    name: str = "parallel",
    on_error: Literal["continue", "cancel"] = "continue",
    merge: Callable[[Sequence[AgentResult]], Any] | None = None,
) -> Agent:
    """Run ``agents`` concurrently in one nursery and merge their outputs.

    The output is ``merge(results)``, by default a dict of agent name -> output in
    declaration order. If any child did not succeed the result is ``failed`` (or
    ``usage_limit_exceeded`` when a child ran out of the event's usage budget, which the
    children share), its error names each such child, and the outputs of the others are
    still in ``output``. With ``on_error="cancel"`` the first failure cancels the
    siblings still running.
    """
    children = [as_agent(a) for a in agents]
    if not children:
        raise ValueError(f"{name}() needs at least one agent")
    if on_error not in ("continue", "cancel"):
        raise ValueError(f'on_error must be "continue" or "cancel", got {on_error!r}')
    merger = merge if merge is not None else merge_outputs

    async def run(ctx: Context, event: Event) -> AgentResult:
        results = await run_concurrently(ctx, children, event, on_error=on_error)
        error = summarize_failures(results)
        outcome = Outcome.SUCCEEDED if error is None else Outcome.FAILED
        if any(r.outcome is Outcome.USAGE_LIMIT_EXCEEDED for r in results):
            outcome = Outcome.USAGE_LIMIT_EXCEEDED
        return AgentResult(outcome, merger(results), error, None, name)

    return Agent(run, name=name)


def loop(
    body: _AgentLike | AgentFunction,
    *,
    until: Callable[[AgentResult], bool] | None = None,
    max_iterations: int = 10,
    name: str = "loop",
) -> Agent:
    """Run ``body`` repeatedly until ``until(result)`` is true or ``max_iterations`` runs.

    A result that is not ``succeeded`` ends the loop and is returned. The returned output is
    the last iteration's; ``ctx.previous`` carries each output into the next iteration.
    """
    step = as_agent(body)
    if not isinstance(max_iterations, int) or isinstance(max_iterations, bool):
        raise TypeError(f"max_iterations must be an int, got {max_iterations!r}")
    if max_iterations < 1:
        raise ValueError("max_iterations must be >= 1")

    async def run(ctx: Context, event: Event) -> AgentResult:
        result = AgentResult.ok()
        for _ in range(max_iterations):
            result = await invoke(ctx, step, event)
            if result.outcome is not Outcome.SUCCEEDED:
                return _named(result, f"{name}/{result.agent}")
            ctx.previous = result.output
            if until is not None and until(result):
                break
        return AgentResult(Outcome.SUCCEEDED, result.output, None, None, name)

    return Agent(run, name=name)


def _message_json(m: Message) -> dict[str, Any]:
    """A `Message` as the JSON object a session's history stores."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "name": c.name,
                "arguments": dict(c.arguments),
                "raw_arguments": c.raw_arguments,
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.is_error:
        out["is_error"] = True
    return out


def _message(data: Mapping[str, Any]) -> Message:
    """The `Message` a stored history object stands for (the shape `_message_json`
    writes), checked: a stored entry is never trusted.

    Raises:
        SessionDataError: not that shape.
    """
    from .llm.types import Message, ToolCall

    role, content = data.get("role"), data.get("content")
    name, call_id = data.get("name"), data.get("tool_call_id")
    calls = data.get("tool_calls") or []
    is_error = data.get("is_error", False)
    ok = all(v is None or isinstance(v, str) for v in (content, name, call_id))
    ok = ok and isinstance(is_error, bool)
    ok = ok and isinstance(calls, list) and all(_is_call(c) for c in calls)
    if not (ok and isinstance(role, str)):
        raise SessionDataError(f"a message of the session's history has a bad shape: {data!r:.200}")
    tool_calls = tuple(
        ToolCall(c["id"], c["name"], c["arguments"], c["raw_arguments"]) for c in calls
    )
    return Message(role, content, name, tool_calls, call_id, (), None, is_error)


def _is_call(c: Any) -> bool:
    return (
        isinstance(c, Mapping)
        and isinstance(c.get("id"), str)
        and isinstance(c.get("name"), str)
        and isinstance(c.get("arguments"), Mapping)
        and isinstance(c.get("raw_arguments"), str)
    )


AgentMap = Mapping[str, _AgentLike | AgentFunction]
