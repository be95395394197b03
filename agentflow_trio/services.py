"""`Services`: the one typed, frozen value of what every event's `Context` sees.

``Runner(config, agents, services=Services(llm=client, tools=registry))`` gives each
event's context the model client, the tools, the MCP manager, the metrics and the session
store, and runs the hooks around every event. `Worker` and `run_worker` take the same value
and hand it to their runner unchanged.

The keyword form (``Runner(config, agents, llm=client)``) still works everywhere:
`Services.build` turns it into a `Services`.

Floor 4, beside ``agents.py``: this module names the types of ``llm/``, ``tools/``,
``mcp/`` and ``observability/`` and none of them imports it. Those types are imported for
type checkers only, so that ``import agentflow_trio`` (which imports the runner, and so this
module) stays without httpx2 and prometheus_client (see tests/test_exports.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypedDict, Unpack, final

import attrs

from ._outcome import failure
from .agents import Context, Hooks, _AgentLike, invoke
from .events import AgentResult, ErrorInfo, Event, Outcome
from .state import SessionBackend

if TYPE_CHECKING:
    from .llm import LLMClient, Provider
    from .mcp import MCPManager
    from .observability.metrics import RunnerMetrics
    from .tools import ToolRegistry

__all__ = ["ServiceKeywords", "Services", "run_in_session"]


def _as_client(llm: Any) -> Any:
    """A bare `Provider` given as ``llm`` is wrapped in an `LLMClient`, so that every
    model call an agent makes is metered (usage, budgets) and streamed to a listening
    caller; an `LLMClient`, None, or an object that is not a provider is kept as it is."""
    if llm is None or not all(callable(getattr(llm, m, None)) for m in _PROVIDER_METHODS):
        return llm
    from .llm.client import LLMClient

    return llm if isinstance(llm, LLMClient) else LLMClient(llm)


_PROVIDER_METHODS = ("complete", "stream", "embed", "aclose")


@final
@attrs.frozen(kw_only=True)
class Services:
    """What a runner hands to every event: hooks, model, tools, MCP, metrics, sessions.

    ``hooks`` run around every event and agent (a fresh `Hooks` by default; the runner and
    the tools that attach to it add to its lists). ``llm`` is what agents call as
    ``ctx.llm`` (an `LLMClient`, or a bare `Provider`); ``tools`` is bound to each context
    (``ctx.tools.call_many(...)``); ``mcp`` and ``metrics`` are handed to agents as they
    are (``ctx.mcp``, ``ctx.metrics``), and ``metrics`` is also served on the debug
    server's ``/metrics``. With ``sessions`` (a `SessionBackend`: the in-process
    `SessionStore`, or the Redis store of ``distributed.sessions`` shared by every
    process), an event whose metadata has a ``session_id`` starts from that session's
    `State` and commits it back when its agent succeeds (by the backend's
    compare-and-set and merge rule; a failed, timed-out or cancelled event's changes are
    dropped). None: the event does without.

    Frozen: a runner's services are fixed for its life (the objects themselves may
    change: hooks are appended to, tools registered). ``hooks`` must be a `Hooks`
    (``TypeError`` otherwise, at once rather than inside the runner).
    """

    hooks: Hooks = attrs.field(factory=Hooks, validator=attrs.validators.instance_of(Hooks))
    llm: LLMClient | Provider | None = attrs.field(default=None, converter=_as_client)
    tools: ToolRegistry | None = None
    mcp: MCPManager | None = None
    metrics: RunnerMetrics | None = None
    sessions: SessionBackend | None = None

    @classmethod
    def build(
        cls, services: Services | None = None, **keywords: Unpack[ServiceKeywords]
    ) -> Services:
        """``services`` (default: none but fresh hooks) with each keyword that is not None
        in place of its field: what ``Runner(..., services=..., llm=...)`` gets.

        Raises:
            TypeError: a keyword that names no field.
        """
        unknown = keywords.keys() - _FIELDS
        if unknown:
            names = ", ".join(sorted(unknown))
            raise TypeError(f"unexpected service keyword(s) {names}; services are {_NAMES}")
        given: dict[str, Any] = {k: v for k, v in keywords.items() if v is not None}
        base = services if services is not None else cls()
        return attrs.evolve(base, **given) if given else base


class ServiceKeywords(TypedDict, total=False):
    """The keyword form of `Services` that `Runner`, `Worker` and `run_worker` accept.

    ``Runner(config, agents, llm=client)`` is ``Runner(config, agents,
    services=Services(llm=client))``; a keyword given as None is left out.
    """

    hooks: Hooks | None
    llm: LLMClient | Provider | None
    tools: ToolRegistry | None
    mcp: MCPManager | None
    metrics: RunnerMetrics | None
    sessions: SessionBackend | None


async def run_in_session(
    sessions: SessionBackend, session_id: Any, ctx: Context, agent: _AgentLike, event: Event
) -> AgentResult:
    """Run ``agent`` on its session (what the runner does for an event with a
    ``session_id`` when it has ``sessions``): load the state before, commit it after a
    success.

    A failed, timed-out, cancelled or usage-limited event's changes are dropped (nothing
    is written; a retry starts from the committed state). A session that cannot be loaded
    or saved (`SessionConflict`, `SessionTooLarge`, Redis down...) ends the event
    ``failed`` with that error, the agent's output kept.
    """
    try:
        snapshot = await sessions.load(session_id)
    except Exception as exc:
        return failure(exc, agent.name, event.id)
    ctx._state = snapshot.state
    ctx.session_id = session_id
    result = await invoke(ctx, agent, event)
    if result.outcome is not Outcome.SUCCEEDED:
        return result
    try:
        await sessions.save(snapshot)
    except Exception as exc:
        error = ErrorInfo.from_exception(exc)
        return AgentResult(Outcome.FAILED, result.output, error, event.id, result.agent)
    return result


_FIELDS: Final = frozenset(attrs.fields_dict(Services))
_NAMES: Final = ", ".join(attrs.fields_dict(Services))
