"""One structured-output attempt, per mode: the request it sends, the value it reads out of
the reply, the re-ask it appends when that value does not fit, and refusals.

Modes: ``native`` sets the request's ``response_format`` and parses the reply's text;
``tool`` adds the ``final_result`` tool, forces it, and reads its arguments; ``prompted``
puts the schema in the system prompt and parses the text. Text may come in a Markdown
code fence (`unfence`). A reply that does not fit gives problems (``field``, ``expected``,
``got``, ``message``), worded for the model by `describe`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from .. import _json
from ..errors import OutputRefusedError, SchemaValidationError
from ._output_plan import FINAL_RESULT, WRAP_KEY, OutputPlan
from .types import (
    ChatRequest,
    ChatResponse,
    Message,
    ToolSpec,
    assistant,
    system,
    tool_message,
    user,
)

__all__ = [
    "Mode",
    "OutputRefusedError",
    "Problems",
    "again",
    "decode",
    "describe",
    "read",
    "reask",
    "refusal_of",
    "refused",
    "shape",
    "shape_fields",
    "unfence",
    "validate",
]

Mode = Literal["native", "tool", "prompted"]
Problems = Sequence[dict[str, Any]]

_FITS: Final[Problems] = ()
_MAX_TEXT: Final = 4 * 1024 * 1024
_MAX_GOT: Final = 80
_FENCE: Final = re.compile(r"```[A-Za-z]*[ \t]*\r?\n(.*?)\r?\n?[ \t]*```", re.S)
_SHAPE_ERRORS: Final = (KeyError, IndexError, TypeError, AttributeError)


def refused(response: ChatResponse, attempts: Sequence[str]) -> OutputRefusedError | None:
    """The error to raise when ``response`` is a refusal (see `refusal_of`), else None."""
    refusal = refusal_of(response)
    if refusal is None:
        return None
    return OutputRefusedError(
        refusal,
        finish_reason=response.finish_reason,
        attempts=attempts,
        deployment=response.deployment or None,
    )


def shape_fields(fields: dict[str, Any], plan: OutputPlan[Any], mode: Mode) -> bool:
    """Put the native or tool mode's request fields into ``fields`` (keyword arguments of
    `ChatRequest`), so the request is built once; False for the prompted mode, which
    changes the messages instead (use `shape`)."""
    if mode == "native":
        fields["response_format"] = plan.response_format
        return True
    if mode == "tool":
        fields["tools"] = (*fields.get("tools", ()), plan.tool)
        fields["tool_choice"] = FINAL_RESULT
        return True
    return False


def shape(request: ChatRequest, plan: OutputPlan[Any], mode: Mode) -> ChatRequest:
    """``request`` as the first attempt of ``mode`` sends it."""
    r = request
    if mode == "native":
        return _rebuilt(r, r.messages, r.tools, r.tool_choice, plan.response_format)
    if mode == "tool":
        return _rebuilt(r, r.messages, (*r.tools, plan.tool), FINAL_RESULT, r.response_format)
    messages = _with_instruction(r.messages, plan.instruction)
    return _rebuilt(r, messages, r.tools, r.tool_choice, r.response_format)


def again(request: ChatRequest, messages: Sequence[Message]) -> ChatRequest:
    """``request`` with ``messages`` appended (the re-ask)."""
    r = request
    return _rebuilt(r, (*r.messages, *messages), r.tools, r.tool_choice, r.response_format)


def _rebuilt(
    r: ChatRequest,
    messages: tuple[Message, ...],
    tools: tuple[ToolSpec, ...],
    tool_choice: str | Mapping[str, Any] | None,
    response_format: Mapping[str, Any] | None,
) -> ChatRequest:
    """``r`` with the fields a mode changes replaced (built directly, as
    `ChatRequest.with_model` is: a third of the cost of ``attrs.evolve``)."""
    return ChatRequest(
        messages,
        r.model,
        r.temperature,
        r.max_tokens,
        tools,
        tool_choice,
        r.stop,
        r.extra,
        response_format,
    )


def _with_instruction(messages: tuple[Message, ...], instruction: str) -> tuple[Message, ...]:
    if messages and messages[0].role == "system":
        first = messages[0]
        text = f"{first.content}\n\n{instruction}" if first.content else instruction
        return (Message("system", text, first.name), *messages[1:])
    return (system(instruction), *messages)


def read(response: ChatResponse, plan: OutputPlan[Any], mode: Mode) -> tuple[str, Any, Problems]:
    """``(raw, value, problems)`` of one reply: the raw text the model sent for its answer
    (the text, or the ``final_result`` arguments), and the typed value when ``problems``
    is empty."""
    if mode == "tool":
        return _read_call(response, plan)
    raw = response.text
    wrapped = plan.wrapped and mode == "native"
    if raw and "`" not in raw and len(raw) <= _MAX_TEXT:  # the common case, unfenced
        try:
            loaded = _json.loads(raw)
        except ValueError:
            pass
        else:
            value, problems = validate(loaded, plan, wrapped=wrapped)
            return raw, value, problems
    if not raw and response.tool_calls:
        names = ", ".join(call.name for call in response.tool_calls)
        problem = _problem(None, "a JSON reply in the message text", f"tool call(s) {names}")
        return raw, None, [problem]
    value, problems = decode(unfence(raw), plan, wrapped=wrapped)
    return raw, value, problems


def decode(text: str, plan: OutputPlan[Any], *, wrapped: bool) -> tuple[Any, Problems]:
    """``text`` parsed as JSON and validated: ``(value, [])`` or ``(None, problems)``."""
    if len(text) > _MAX_TEXT:
        size = f"{len(text)} characters"
        return None, [_problem(None, "JSON of at most 4 MiB", size, f"reply too large ({size})")]
    try:
        value = _json.loads(text)
    except ValueError as exc:
        return None, [_problem(None, "JSON", _got(text), f"not valid JSON: {exc}")]
    return validate(value, plan, wrapped=wrapped)


def validate(value: Any, plan: OutputPlan[Any], *, wrapped: bool) -> tuple[Any, Problems]:
    """A decoded JSON ``value`` as the plan's type: ``(value, [])`` or ``(None, problems)``;
    a ``wrapped`` value is taken out of its ``result`` first (problem paths say so)."""
    if wrapped:
        if type(value) is not dict or WRAP_KEY not in value:
            expected = f"an object with the key {WRAP_KEY!r}"
            return None, [_problem(None, expected, _got(value), f"expected {expected}")]
        value = value[WRAP_KEY]
    try:
        return plan.schema.validate(value), _FITS
    except SchemaValidationError as exc:
        found = [dict(p) for p in exc.problems]
    if wrapped:
        for problem in found:
            problem["field"] = _under(WRAP_KEY, problem.get("field"))
    return None, found


def _read_call(response: ChatResponse, plan: OutputPlan[Any]) -> tuple[str, Any, Problems]:
    for call in response.tool_calls:
        if call.name == FINAL_RESULT:
            break
    else:
        what = (
            "tool call(s) " + ", ".join(c.name for c in response.tool_calls)
            if response.tool_calls
            else f"text {_got(response.text)}"
        )
        expected = f"a call of the {FINAL_RESULT} tool"
        raw = response.text or _calls_text(response)
        return raw, None, [_problem(None, expected, what, f"expected {expected}, got {what}")]
    raw = call.raw_arguments or call.arguments_json()
    if call.parse_error is not None:
        expected = "a JSON object of arguments"
        return raw, None, [_problem(None, expected, _got(raw), call.parse_error)]
    arguments = call.arguments
    value, problems = validate(
        arguments if type(arguments) is dict else dict(arguments), plan, wrapped=plan.wrapped
    )
    return raw, value, problems


def _calls_text(response: ChatResponse) -> str:
    return _json.dumps_str([[c.name, c.arguments_json()] for c in response.tool_calls])


def reask(
    response: ChatResponse, problems: Problems, plan: OutputPlan[Any], mode: Mode
) -> tuple[Message, ...]:
    """The messages appended after a reply that did not fit: the reply itself, then the
    problems, as a user message (native, prompted, or a tool reply without tool calls) or
    as the answer to each of the reply's tool calls (tool)."""
    text = describe(problems, plan, mode)
    if mode != "tool" or not response.tool_calls:
        return assistant(response.text), user(text)
    calls = response.tool_calls
    return (
        assistant(response.text or None, calls),
        *(tool_message(call.id, text) for call in calls),
    )


def describe(problems: Sequence[Mapping[str, Any]], plan: OutputPlan[Any], mode: Mode) -> str:
    """The problems of a reply in words a model can act on: per problem the field path,
    what was expected and what was got."""
    lines = [f"Your answer does not fit the required output ({plan.name}):"]
    for problem in problems:
        field = problem.get("field")
        where = f"field {field!r}" if field else "the whole value"
        line = f"- {where}: expected {problem.get('expected')}, got {problem.get('got')}"
        message = problem.get("message")
        lines.append(f"{line} ({message})" if message else line)
    if mode == "tool":
        lines.append(f"Call the {FINAL_RESULT} tool again with corrected arguments.")
    else:
        lines.append("Answer again with only the corrected JSON.")
    return "\n".join(lines)


def refusal_of(response: ChatResponse) -> str | None:
    """The model's refusal, if it refused: its ``refusal`` message (OpenAI), or a
    ``content_filter`` finish reason (Azure's output filter)."""
    if response.refusal:
        return response.refusal
    raw = response.raw
    if raw is not None:
        try:
            refusal = raw["choices"][0]["message"].get("refusal")
        except _SHAPE_ERRORS:
            refusal = None
        if refusal:
            return str(refusal)
    if response.finish_reason == "content_filter":
        return "the provider's content filter stopped the reply"
    return None


def unfence(text: str) -> str:
    """``text`` without a Markdown code fence around the JSON (the first fenced block
    when there is one), stripped."""
    stripped = text.strip()
    if "```" not in stripped:
        return stripped
    match = _FENCE.search(stripped)
    return match.group(1).strip() if match else stripped


def _problem(field: str | None, expected: str, got: str, message: str = "") -> dict[str, Any]:
    return {
        "field": field,
        "expected": expected,
        "got": got,
        "message": message or f"expected {expected}, got {got}",
    }


def _under(key: str, field: str | None) -> str:
    if not field:
        return key
    return f"{key}{field}" if field.startswith("[") else f"{key}.{field}"


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_GOT else text[: _MAX_GOT - 3] + "..."
