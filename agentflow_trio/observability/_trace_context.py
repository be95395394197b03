"""The current span of OpenTelemetry's context, read and set without the API's layers.

Why: ``trace.get_current_span()`` and ``context.attach(trace.set_span_in_context(s))``
each go through four or five Python calls (and an ABC ``isinstance``); an invocation does
about a dozen of them. With the contextvars runtime, the one the API loads unless
``OTEL_PYTHON_CONTEXT`` names another, these functions use its ``ContextVar`` and the
API's span key directly: the same values, so a span set here is the API's current span
and the other way round. With another runtime they call the API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace import Span

__all__ = [
    "CHAT",
    "RUNTIME",
    "SPAN_KEY",
    "attach",
    "current_context",
    "current_span",
    "detach",
    "restore",
]


def _runtime() -> tuple[ContextVar[Context], str] | None:
    """The API's context variable and span key, when it keeps the context in one."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    key = getattr(trace.propagation, "_SPAN_KEY", None)
    if not isinstance(runtime, ContextVarsRuntimeContext) or not isinstance(key, str):
        return None
    return (var, key) if isinstance(var, ContextVar) else None


CHAT: Final[ContextVar[tuple[list[Any], Any] | None]] = ContextVar(
    "agentflow_trio_chat", default=None
)
"""The model call in progress in this task, when the lean tracer keeps its span as a
record (``LeanTracer.begin``), and the span current when it began: while that span is
still the current one, the request's ``traceparent`` names the call and a failed router
attempt becomes its event. It is not the API's current span: no user code runs inside a
model call, and setting this variable is one call, not a new context and its dict."""

RUNTIME: Final = _runtime()
"""The API's context variable and span key (None with another runtime): `LeanTracer`
reads the parent and sets the new current span with one lookup of each."""


SPAN_KEY: Final[str] = RUNTIME[1] if RUNTIME is not None else "current-span"
"""The key of the current span in `current_context`'s mapping (the API's own key with the
contextvars runtime): ``current_context().get(SPAN_KEY)`` is the current span or None,
one call cheaper than `current_span` where the caller then checks the span's type."""

if RUNTIME is not None:
    _VAR, _KEY = RUNTIME
    _get = _VAR.get

    current_context: Callable[[], Mapping[str, Any]] = _get
    """The current OpenTelemetry context: the runtime variable's own ``get`` (no frame)."""

    restore: Callable[[Any], object] = _VAR.set
    """`detach` of a token `attach` gave (the replaced context): the variable's own
    ``set``, no Python frame. A ``Token`` from the API's attach needs `detach`."""

    def current_span() -> Any:
        """The current span (the API's ``get_current_span()``), or None."""
        return _get().get(_KEY)

    def attach(span: Span) -> object:
        """Make ``span`` the current one; `detach` takes the token back (the context
        replaced: keeping it rather than a ``Token`` is one object less per span, alive
        as long as the span, which the garbage collector would count)."""
        previous = _get()
        _VAR.set(Context({**previous, _KEY: span} if previous else {_KEY: span}))
        return previous

    def detach(token: object) -> None:
        """Restore the context `attach` replaced (in the task that attached)."""
        if type(token) is Context:
            _VAR.set(token)
        else:  # a Token from the API's attach
            otel_context.detach(token)  # type: ignore[arg-type]

else:  # pragma: no cover - another runtime context was configured

    def current_context() -> Mapping[str, Any]:
        """The current span under `SPAN_KEY` (the API's span key is not known here)."""
        return {SPAN_KEY: current_span()}

    def current_span() -> Any:
        """The current span (the API's ``get_current_span()``), or None."""
        found = trace.get_current_span()
        return found if found.get_span_context().is_valid else None

    def attach(span: Span) -> object:
        """Make ``span`` the current one; `detach` takes the token back."""
        return otel_context.attach(trace.set_span_in_context(span))

    def detach(token: object) -> None:
        """Restore the context `attach` replaced (in the task that attached)."""
        otel_context.detach(token)  # type: ignore[arg-type]

    restore = detach
