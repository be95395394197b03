"""The tool-calling agent loop: model -> (parallel) tool calls -> model, up to ``max_steps``.

The transcript follows the OpenAI tool-calls format, which every provider adapter
translates: the assistant message carrying ``tool_calls``, then one ``tool`` message per
call, in the order of the calls, whatever each call's outcome (a failed, timed-out or
cancelled call still answers, so the next request is never rejected for a missing result).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ..agents import Agent, Context
from ..errors import UsageLimitExceeded
from ..events import AgentResult, ErrorInfo, Event, Outcome
from ..llm import collect_stream
from ..llm.client import LLMClient, complete_request
from ..llm.types import (
    ChatRequest,
    ChatResponse,
    Message,
    ProviderItem,
    ToolCall,
    user,
)
from ..llm.types import system as system_message
from ..progress import current_sink
from ..state import HISTORY_LIMIT
from ._result import ToolResult, cancelled_result
from .base import OnError, ToolRegistry, new_call_id
from .fanout import call_many

__all__ = ["MAX_MESSAGES", "PAUSE_TURN", "default_messages", "message_from_dict", "tool_agent"]

_PROMPT_KEYS: Final = ("query", "input", "prompt", "question")
PAUSE_TURN: Final = "pause_turn"
"""The finish reason of a turn the model paused (Anthropic's long server-tool turns): the
loop sends the conversation back as it is so that the model goes on, and the answer's text
is the paused pieces joined with the final one."""
MAX_MESSAGES: Final = 4096
"""The most messages `default_messages` takes from an event (a bound on posted input)."""


def default_messages(event: Event) -> list[Message]:
    """The conversation an event starts: ``data["messages"]``, else one user message from
    ``data["query"]``, ``"input"``, ``"prompt"`` or ``"question"`` (the first present).

    ``data["messages"]`` is a list (at most `MAX_MESSAGES`) of `Message` objects or of
    dicts, rebuilt exactly (see `message_from_dict`): a transcript posted to ``serve`` as
    JSON (the OpenAI chat shape, or the shape ``serve`` answers with) reaches the model
    as it was sent, tool calls and their answers included.

    Raises:
        ValueError: no conversation in ``data``, or a message of the wrong shape (the
            message names its index).
    """
    data = event.data
    messages = data.get("messages")
    if messages is not None:
        if not isinstance(messages, list | tuple):
            kind = type(messages).__name__
            raise ValueError(f"messages must be a list of messages, not {kind}")
        if len(messages) > MAX_MESSAGES:
            raise ValueError(f"messages holds {len(messages)} messages; at most {MAX_MESSAGES}")
        for m in messages:
            if type(m) is not Message:
                break
        else:  # every one a `Message` already (the usual case): a plain copy
            return list(messages)
        return [
            m if isinstance(m, Message) else message_from_dict(m, i) for i, m in enumerate(messages)
        ]
    for key in _PROMPT_KEYS:
        if key in data:
            return [user(str(data[key]))]
    raise ValueError(f"event {event.type!r} has none of messages, {', '.join(_PROMPT_KEYS)}")


def message_from_dict(data: Any, index: int = 0) -> Message:
    """The `Message` a JSON message stands for.

    Accepted: the OpenAI chat shape (``role``, ``content`` as a string, null or a list of
    ``{"type": "text", "text": ...}`` parts, which are joined; ``name``; ``tool_calls`` as
    ``{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}``;
    ``tool_call_id``; ``is_error`` on a failed tool result) and this package's own shape
    (a `Message` as ``serve`` sends it: tool calls as ``{"id", "name", "arguments": {...},
    "raw_arguments": "..."}``). Argument text
    is kept as sent (`ToolCall.parse`), so the model gets back exactly what it said. Other
    keys are ignored.

    Raises:
        ValueError: not a message: no ``role``, a content part that is not text, a tool
            call without an ``id`` or a name, a ``tool`` message without ``tool_call_id``.
            The message says which: ``messages[3].tool_calls[0]: ...``.
    """
    where = f"messages[{index}]"
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be an object, not {type(data).__name__}")
    role = data.get("role")
    if not isinstance(role, str) or not role:
        raise ValueError(f'{where} needs "role": a non-empty string')
    name = _optional_str(data, "name", where)
    tool_call_id = _optional_str(data, "tool_call_id", where)
    if role == "tool" and not tool_call_id:
        raise ValueError(f'{where} is a tool message without "tool_call_id"')
    raw_calls = data.get("tool_calls") or ()
    if not isinstance(raw_calls, list | tuple):
        raise ValueError(f"{where}.tool_calls must be a list, not {type(raw_calls).__name__}")
    calls = tuple(_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw_calls))
    content = _content(data.get("content"), where)
    items = _items(data.get("items"), where)
    cache_control = data.get("cache_control")
    if cache_control is not None and not isinstance(cache_control, Mapping):
        raise ValueError(f"{where}.cache_control must be an object")
    is_error = data.get("is_error", False)
    if not isinstance(is_error, bool):
        raise ValueError(f"{where}.is_error must be true or false")
    return Message(role, content, name, calls, tool_call_id, items, cache_control, is_error)


def _items(raw: Any, where: str) -> tuple[ProviderItem, ...]:
    """This package's own ``items`` (``[{"provider", "data"}]``), as `Message` stores them."""
    if not raw:
        return ()
    if not isinstance(raw, list | tuple):
        raise ValueError(f"{where}.items must be a list, not {type(raw).__name__}")
    items = []
    for j, item in enumerate(raw):
        if not (
            isinstance(item, Mapping)
            and isinstance(item.get("provider"), str)
            and isinstance(item.get("data"), Mapping)
        ):
            raise ValueError(
                f'{where}.items[{j}] needs "provider" (a string) and "data" (an object)'
            )
        items.append(ProviderItem(item["provider"], item["data"]))
    return tuple(items)


def _optional_str(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{where}.{key} must be a string, not {type(value).__name__}")


def _content(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}.content must be a string, null or a list of text parts")
    texts = []
    for j, part in enumerate(value):
        text = part.get("text") if isinstance(part, Mapping) else None
        if not isinstance(text, str) or part.get("type", "text") != "text":
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise ValueError(f"{where}.content[{j}] is not a text part ({kind!r})")
        texts.append(text)
    return "".join(texts)


def _tool_call(data: Any, where: str) -> ToolCall:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be an object, not {type(data).__name__}")
    call_id = data.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f'{where} needs "id": a non-empty string (the tool message answers it)')
    kind = data.get("type", "function")
    if kind != "function":
        raise ValueError(f'{where} has type {kind!r}; only "function" calls are supported')
    function = data.get("function")
    spec: Mapping[str, Any] = function if isinstance(function, Mapping) else data
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f'{where} needs a function "name"')
    raw = spec.get("raw_arguments") if function is None else None
    arguments = spec.get("arguments")
    if isinstance(raw, str) and raw:
        return ToolCall.parse(call_id, name, raw)
    if arguments is None or isinstance(arguments, str):
        return ToolCall.parse(call_id, name, arguments or "")
    if isinstance(arguments, Mapping):
        return ToolCall(call_id, name, dict(arguments))
    kind = type(arguments).__name__
    raise ValueError(f"{where} arguments must be JSON text or an object, not {kind}")


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
    history: int | None = HISTORY_LIMIT,
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
    or when a model call raises, except `UsageLimitExceeded`: that one propagates (the
    runner ends the event ``usage_limit_exceeded``), carrying this output as its
    ``partial_output`` attribute. ``ctx.llm`` is an `LLMClient` or a provider.

    Conversation across turns: for an event in a session (``ctx.session_id``: its
    metadata has a ``session_id`` and the runner has a session store), the session's
    history (``ctx.history``) goes between the system prompt and the event's messages,
    and a succeeded turn's new messages (the event's, every tool call and answer, the
    final answer) are remembered (``ctx.remember``), keeping the last ``history``
    messages. With a session, send only the new turn's messages. ``history=None`` turns
    this off; outside a session nothing is read or kept.

    Streaming: when a caller streams the event (`progress.current_sink` is set), each
    model step uses ``ctx.llm.stream`` folded with `collect_stream`, so the model's text
    reaches the caller as `TextDelta` items while it comes, and every tool call sends
    `ToolCallStarted` / `ToolCallFinished` (see `fanout.call_many`). Nobody streaming: one
    ``complete`` per step, as before.

    Raises:
        ValueError: ``max_steps < 1`` or ``history < 1``.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
    if history is not None and (isinstance(history, bool) or history < 1):
        raise ValueError(f"history must be None or >= 1, got {history!r}")
    fields = dict(request_fields or {})

    async def run(ctx: Context, event: Event) -> AgentResult:
        if ctx.llm is None:
            return AgentResult.failed(ErrorInfo("NoLLM", "tool_agent needs ctx.llm: pass llm="))
        transcript = [system_message(system)] if system else []
        remembering = history is not None and ctx.session_id is not None
        if remembering:
            transcript.extend(ctx.history)
        turn_start = len(transcript)
        transcript.extend(messages(event))
        results: list[ToolResult] = []
        paused: list[str] = []
        specs = tools.specs()
        llm = ctx.llm
        # Nobody streaming and the usual client: its per-call work (metering, tracing) is
        # done here without its own frame; the sink and the client stay the same all run.
        direct = current_sink() is None and type(llm) is LLMClient
        fan_out = type(tools).call_many is ToolRegistry.call_many
        for step in range(1, max_steps + 1):
            if fields:
                request = ChatRequest(tuple(transcript), tools=specs, **fields)
            else:
                request = ChatRequest(tuple(transcript), None, None, None, specs)
            try:
                if direct:
                    response = await complete_request(llm.provider, request)
                else:
                    response = await _ask(llm, request)
            except UsageLimitExceeded as exc:
                # The runner makes this the usage_limit_exceeded outcome; the transcript
                # so far rides along on the exception for it to keep as the output.
                partial = _output("", transcript, results, step)
                exc.partial_output = partial  # type: ignore[attr-defined]
                raise
            except Exception as exc:
                return AgentResult.failed(exc, _output("", transcript, results, step))
            calls = _with_ids(response.tool_calls)
            # `assistant(...)`, without its frame
            transcript.append(
                Message("assistant", response.text or None, None, calls, None, response.items)
            )
            if not calls and response.finish_reason == PAUSE_TURN and step < max_steps:
                paused.append(response.text)  # the model paused its turn: let it go on
                continue
            if not calls:
                if remembering:
                    assert history is not None
                    ctx.remember(*transcript[turn_start:], limit=history)
                text = "".join(paused) + response.text
                output = _output(text, transcript, results, step)
                return AgentResult(Outcome.SUCCEEDED, output)
            paused.clear()
            if step == max_steps:
                break
            if fan_out:  # `ToolRegistry.call_many` without its frame
                cap = tools.max_parallel if max_parallel_tools is None else max_parallel_tools
                done = await call_many(
                    tools, ctx, calls, max_parallel=cap, timeout=tool_timeout, on_error=on_error
                )
            else:
                done = await tools.call_many(
                    ctx,
                    calls,
                    max_parallel=max_parallel_tools,
                    timeout=tool_timeout,
                    on_error=on_error,
                )
            results.extend(done)
            transcript.extend([r.to_message() for r in done])
        reason = f"not run: the agent reached max_steps={max_steps}"
        unrun = [cancelled_result(c.id, c.name, reason) for c in transcript[-1].tool_calls]
        results.extend(unrun)
        transcript.extend(r.to_message() for r in unrun)
        message = f"no final answer after {max_steps} model calls (max_steps)"
        error = ErrorInfo("MaxStepsExceeded", message)
        return AgentResult.failed(error, _output("", transcript, results, max_steps))

    return Agent(run, name=name, timeout=timeout, description=f"tool-calling agent ({name})")


async def _ask(llm: Any, request: ChatRequest) -> ChatResponse:
    """One model step: ``complete``, or, when a caller streams the event, ``stream``
    folded into the same response, so the model's text reaches the caller as it comes."""
    if current_sink() is None:
        response: ChatResponse = await llm.complete(request)
        return response
    async with llm.stream(request) as chunks:
        return await collect_stream(chunks)


def _with_ids(calls: tuple[ToolCall, ...]) -> tuple[ToolCall, ...]:
    # A provider that gives no ids (or repeats one) still needs unique ids to pair replies.
    if not calls:
        return calls
    ids = {call.id for call in calls}
    if len(ids) == len(calls) and "" not in ids and None not in ids:
        return calls  # the usual case (every id given once): nothing to copy
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
