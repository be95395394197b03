"""The tool-calling agent loop: model -> (parallel) tool calls -> model, up to ``max_steps``.

The transcript follows the OpenAI tool-calls format, which every provider adapter
translates: the assistant message carrying ``tool_calls``, then one ``tool`` message per
call, in the order of the calls, whatever each call's outcome (a failed, timed-out or
cancelled call still answers, so the next request is never rejected for a missing result).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..agents import Agent, Context
from ..events import AgentResult, ErrorInfo, Event, Outcome
from ..llm.types import ChatRequest, ChatResponse, Message, ToolCall, assistant, user
from ..llm.types import system as system_message
from ._result import ToolResult, cancelled_result
from .base import OnError, ToolRegistry, new_call_id

__all__ = ["default_messages", "tool_agent"]

_PROMPT_KEYS = ("query", "input", "prompt", "question")


def default_messages(event: Event) -> list[Message]:
    """The conversation an event starts: ``data["messages"]`` (`Message` objects or
    ``{"role", "content"}`` dicts), else one user message from ``data["query"]``,
    ``"input"``, ``"prompt"`` or ``"question"`` (the first present)."""
    data = event.data
    messages = data.get("messages")
    if messages is not None:
        return [
            m if isinstance(m, Message) else Message(m["role"], m.get("content")) for m in messages
        ]
    for key in _PROMPT_KEYS:
        if key in data:
            return [user(str(data[key]))]
    raise ValueError(f"event {event.type!r} has none of messages, {', '.join(_PROMPT_KEYS)}")


def tool_agent(
    *,
    tools: ToolRegistry,
    system: str | None = None,
    max_steps: int = 8,
    max_parallel_tools: int | None = None,
    tool_timeout: float | None = None,
    on_error: OnError = "continue",
    name: str = "tool_agent",
    messages: Callable[[Event], Sequence[Message]] = default_messages,
    request_fields: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Agent:
    """An `Agent` that lets ``ctx.llm`` call ``tools`` until it answers in text.

    Each step is one model call with every tool's schema; if the reply asks for tools,
    they run concurrently (`ToolRegistry.call_many`: at most ``max_parallel_tools`` at
    once, each under ``tool_timeout``, with the ``on_error`` policy), their results are
    appended as ``tool`` messages, and the model is called again. ``request_fields`` are
    extra `ChatRequest` fields (``model``, ``temperature``, ``tool_choice``...).

    The output is a dict: ``text`` (the final answer), ``transcript`` (every message, as a
    tuple), ``tool_results`` (every `ToolResult`, in order) and ``steps`` (model calls).
    The result is ``failed`` with the transcript kept as output when the model still asks
    for tools after ``max_steps`` calls (those calls are answered ``cancelled``, not run)
    or when a model call raises. ``ctx.llm`` is anything with
    ``async complete(ChatRequest) -> ChatResponse``: an `LLMClient` or a provider.

    Raises:
        ValueError: ``max_steps < 1``.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
    fields = dict(request_fields or {})

    async def run(ctx: Context, event: Event) -> AgentResult:
        if ctx.llm is None:
            return AgentResult.failed(ErrorInfo("NoLLM", "tool_agent needs ctx.llm: pass llm="))
        transcript = ([system_message(system)] if system else []) + list(messages(event))
        results: list[ToolResult] = []
        specs = tools.specs()
        for step in range(1, max_steps + 1):
            request = ChatRequest(tuple(transcript), tools=specs, **fields)
            try:
                response: ChatResponse = await ctx.llm.complete(request)
            except Exception as exc:
                return AgentResult.failed(exc, _output("", transcript, results, step))
            calls = _with_ids(response.tool_calls)
            transcript.append(assistant(response.text or None, calls))
            if not calls:
                output = _output(response.text, transcript, results, step)
                return AgentResult(Outcome.SUCCEEDED, output)
            if step == max_steps:
                break
            done = await tools.call_many(
                ctx, calls, max_parallel=max_parallel_tools, timeout=tool_timeout, on_error=on_error
            )
            results.extend(done)
            transcript.extend(r.to_message() for r in done)
        reason = f"not run: the agent reached max_steps={max_steps}"
        unrun = [cancelled_result(c.id, c.name, reason) for c in transcript[-1].tool_calls]
        results.extend(unrun)
        transcript.extend(r.to_message() for r in unrun)
        message = f"no final answer after {max_steps} model calls (max_steps)"
        error = ErrorInfo("MaxStepsExceeded", message)
        return AgentResult.failed(error, _output("", transcript, results, max_steps))

    return Agent(run, name=name, timeout=timeout, description=f"tool-calling agent ({name})")


def _with_ids(calls: tuple[ToolCall, ...]) -> tuple[ToolCall, ...]:
    # A provider that gives no ids (or repeats one) still needs unique ids to pair replies.
    seen: set[str] = set()
    out = []
    for call in calls:
        if not call.id or call.id in seen:
            call = ToolCall(
                new_call_id(), call.name, call.arguments, call.raw_arguments, call.parse_error
            )
        seen.add(call.id)
        out.append(call)
    return tuple(out)


def _output(
    text: str, transcript: list[Message], results: list[ToolResult], steps: int
) -> dict[str, Any]:
    return {
        "text": text,
        "transcript": tuple(transcript),
        "tool_results": tuple(results),
        "steps": steps,
    }
