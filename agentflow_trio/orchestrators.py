"""Orchestrators: agents that decide which agents handle an event.

`route` picks one agent by the event's type or a routing key; `collaborate` runs several
agents on one event in one nursery and merges their results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from .agents import Agent, AgentFunction, Context, _AgentLike, as_agent, invoke, parallel
from .errors import UnknownAgent
from .events import AgentResult, ErrorInfo, Event, Outcome

__all__ = ["collaborate", "route"]


def route(
    routes: Mapping[str, _AgentLike | AgentFunction],
    *,
    key: str | Callable[[Event], str | None] | None = None,
    default: _AgentLike | AgentFunction | None = None,
    name: str = "route",
) -> Agent:
    """An agent that hands the event to the one agent its routing key names.

    ``key`` is ``None`` (route on ``event.type``), a metadata/data key name (looked up in
    ``event.metadata`` then ``event.data``), or a function of the event. An unknown route
    goes to ``default`` if given, else ends ``failed`` with an `UnknownAgent` error that
    lists the known routes.
    """
    table = {k: as_agent(v) for k, v in routes.items()}
    fallback = as_agent(default) if default is not None else None
    pick = _key_function(key)

    async def run(ctx: Context, event: Event) -> AgentResult:
        chosen = table.get(pick(event) or "", fallback)
        if chosen is None:
            error = UnknownAgent(str(pick(event)), list(table))
            return AgentResult(Outcome.FAILED, None, ErrorInfo.from_exception(error), None, name)
        return await invoke(ctx, chosen, event)

    return Agent(run, name=name)


def _key_function(key: str | Callable[[Event], str | None] | None) -> Callable[[Event], Any]:
    if key is None:
        return lambda event: event.type
    if callable(key):
        return key
    field = key

    def lookup(event: Event) -> Any:
        value = event.metadata.get(field)
        return value if value is not None else event.data.get(field)

    return lookup


def collaborate(
    *agents: _AgentLike | AgentFunction,
    on_error: Literal["continue", "cancel"] = "continue",
    merge: Callable[[Sequence[AgentResult]], Any] | None = None,
    name: str = "collaborate",
) -> Agent:
    """An agent that runs ``agents`` together on one event and merges what they return.

    All run in one nursery, each under its own worker slot. With ``on_error="continue"``
    (the default) one agent's failure does not cancel the others; with ``"cancel"`` the
    first failure cancels the rest. Either way the result reports every agent that did not
    succeed (outcome ``failed``) and keeps the outputs of those that did. ``merge`` turns
    the per-agent results into the output (default: ``{agent name: output}`` in
    declaration order).
    """
    return parallel(*agents, name=name, on_error=on_error, merge=merge)
