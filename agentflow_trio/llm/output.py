"""Structured output: a Python type in, a validated value of that type out of a model call.

``await llm.complete(messages, output_type=City)`` returns a ``City`` (``LLMClient`` calls
`complete_output`); ``llm.stream_output(...)`` streams partial values (`OutputStream`).
The type's JSON schema and validator are the shared `agentflow_trio.schema.TypeSchema`,
built once per type (``_output_plan``). Three modes (``_output_reply``):

========== ====================================================================
native     the provider's JSON-schema reply format: OpenAI/Azure
           ``response_format={"type": "json_schema", "json_schema": {name, schema,
           strict}}`` (``strict`` only when the schema qualifies), the Responses API
           the same as ``text.format`` (flattened), Ollama ``format``
tool       a forced call of one tool, ``final_result``, whose parameters are the schema
prompted   the schema in the system prompt; the reply's text parsed as JSON (a
           Markdown code fence is tolerated)
auto       native when every transport that may answer speaks it, else tool
========== ====================================================================

A type whose schema is not an object (``list[X]``, a ``Literal``, a union) is wrapped as
``{"result": <schema>}`` in the native and tool modes and unwrapped from the reply.

How ``auto`` knows: a transport declares ``native_output = True`` (`OpenAIProvider` for
OpenAI and Azure, ``ResponsesProvider``, `OllamaProvider`, `FakeProvider`); `speaks_native`
reads it from a provider or from a `ProviderStack`'s ``transport``; a `Router` does not
say, so ``open_llm_client`` decides from the config instead (every deployment's
``provider`` one of `NATIVE_PROVIDERS`; Anthropic's Messages API has no JSON-schema reply
format, so a group with an Anthropic deployment uses the tool mode).
``LLMClient(provider, native_output=...)`` overrides both.

Re-ask: a reply that is not JSON, does not fit the type, or (tool mode) does not call
``final_result`` is followed by the reply itself and its problems (field path, expected,
got) in the mode's shape (a user message; in tool mode the answer to the tool call), and
the model is called again, at most ``output_retries`` times; then `OutputValidationError`
carries the raw text of every reply. A refusal (OpenAI's ``refusal``, a
``content_filter`` finish) raises `OutputRefusedError` at once. Every attempt is one model
call through ``_metering`` (the event's usage and budget count each).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal, TypeVar, cast

from ..errors import OutputValidationError
from . import _metering
from ._output_plan import FINAL_RESULT as FINAL_RESULT
from ._output_plan import OutputPlan as OutputPlan
from ._output_plan import plan_for as plan_for
from ._output_plan import strict_qualifies as strict_qualifies
from ._output_reply import Mode, again, read, reask, refused, shape, shape_fields
from ._output_reply import OutputRefusedError as OutputRefusedError
from ._output_stream import OutputStream as OutputStream
from .base import Provider
from .types import ChatRequest

__all__ = [
    "FINAL_RESULT",
    "OUTPUT_MODES",
    "OutputMode",
    "OutputPlan",
    "OutputRefusedError",
    "OutputStream",
    "check_output_settings",
    "complete_output",
    "open_output_stream",
    "plan_for",
    "resolve_mode",
    "shape_fields",
    "speaks_native",
    "strict_qualifies",
]

T = TypeVar("T")

OutputMode = Literal["auto", "native", "tool", "prompted"]
OUTPUT_MODES: Final = ("auto", "native", "tool", "prompted")
_CONCRETE: Final = frozenset({"native", "tool", "prompted"})
NATIVE_PROVIDERS: Final = frozenset({"openai", "azure", "ollama", "fake", "openai_responses"})
"""``[llm] provider`` values whose wire has a JSON-schema reply format."""


def speaks_native(provider: object) -> bool | None:
    """Whether ``provider`` answers the native mode: its ``native_output``, or its
    ``transport``'s (a `ProviderStack`); None when neither says (a `Router`)."""
    value = getattr(provider, "native_output", None)
    if value is None:
        value = getattr(getattr(provider, "transport", None), "native_output", None)
    return None if value is None else bool(value)


def check_output_settings(mode: str, retries: int) -> None:
    """Raises ``ValueError`` for an unknown mode or a negative retry count."""
    if mode not in OUTPUT_MODES:
        raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, not {mode!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"output_retries must be an int >= 0, not {retries!r}")


def resolve_mode(mode: str, native: bool) -> Mode:
    """The concrete mode of ``mode``: ``auto`` is native when ``native``, else tool.

    Raises:
        ValueError: an unknown mode.
    """
    if mode == "auto":
        return "native" if native else "tool"
    if mode in _CONCRETE:
        return cast(Mode, mode)
    raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, not {mode!r}")


async def complete_output(
    provider: Provider,
    request: ChatRequest,
    plan: OutputPlan[T],
    mode: Mode,
    retries: int,
    *,
    shaped: bool = False,
) -> T:
    """The validated value of ``plan``'s type from ``provider``: up to ``retries`` re-asks.
    ``shaped``: ``request`` is already the mode's (built with `shape_fields`).

    Raises:
        OutputValidationError: no reply fitted (``attempts``: every reply's raw text).
        OutputRefusedError: the model refused (at once, no re-ask).
        LLMError: a model call failed (as plain ``complete``).
    """
    if not shaped:
        request = shape(request, plan, mode)
    attempts: list[str] = []
    while True:
        response = await _metering.complete(provider, request)
        refusal = refused(response, attempts)
        if refusal is not None:
            raise refusal
        raw, value, problems = read(response, plan, mode)
        attempts.append(raw)
        if not problems:
            result: T = value
            return result
        if len(attempts) > retries:
            raise OutputValidationError(attempts, problems)
        request = again(request, reask(response, problems, plan, mode))


@asynccontextmanager
async def open_output_stream(
    provider: Provider, request: ChatRequest, plan: OutputPlan[T], mode: Mode, retries: int
) -> AsyncIterator[OutputStream[T]]:
    """An `OutputStream` of ``plan``'s type; the model stream is closed on every exit."""
    stream = OutputStream(provider, shape(request, plan, mode), plan, mode, retries)
    try:
        yield stream
    except BaseException as exc:
        await stream.aclose(exc)
        raise
    await stream.aclose()
