"""The spans agentflow makes, bound to one OpenTelemetry tracer: `Instruments`.

Only ``observability.tracing`` imports this module, and only once tracing is switched on,
so the OpenTelemetry API is imported then and never on a process that traces nothing.
Every instrumented place in the package calls one method of the `Instruments` that
``tracing.active`` holds; with tracing off it is None and nothing here runs.

Names follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``; see
``tracing``'s docstring for the table). A span interrupted by cancellation says why in its
status and in ``agentflow.reason``: ``timed out`` (a deadline), ``cancelled by caller`` (an
explicit cancel), ``breaker open`` (a `CircuitOpenError`), never as a generic error.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping
from typing import Any, Final, TypeVar, final

import trio
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .._json import dumps_str
from ..errors import CircuitOpenError, LLMTimeoutError
from ._trace_context import (
    CHAT,
    SPAN_KEY,
    attach,
    current_context,
    current_span,
    detach,
    restore,
)
from ._trace_events import EventSpans, Tracer, _remote
from ._trace_model import TracedProvider
from ._trace_names import CHAT_NAMES, INVOKE_NAMES, TOOL_NAMES
from ._traceparent import TRACEPARENT, parse_traceparent

__all__ = ["Instruments", "Tracer", "fail"]

_T = TypeVar("_T")

_CONTENT_LIMIT: Final = 16_384  # characters of a captured prompt, completion or result
_PROVIDERS: Final = {  # agentflow provider -> gen_ai.provider.name
    "openai": "openai",
    "openai_responses": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
    "fake": "fake",
}
_TOOL_CALL: Final = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.type": "function"}
"""An ``execute_tool`` span's fixed attributes; each span's start as a copy (a small
dict's copy and two stores cost half of a literal or ``{**_TOOL_CALL, ...}``)."""
_CHAT_CALL: Final = {"gen_ai.operation.name": "chat"}
_UNTRACED_PATHS: Final = frozenset({"/healthz", "/metrics"})
_INTERNAL: Final = SpanKind.INTERNAL
_CLIENT: Final = SpanKind.CLIENT
_time_ns: Final = time.time_ns
_random_bits: Final = random.getrandbits
_PLAIN: Final = frozenset({str, dict, list, tuple, int, float, bool, bytes, type(None)})
"""Types whose values carry no ``is_error``: a result of one is not asked (a failed
``getattr`` raises and catches an AttributeError, the dearest step of a span)."""
_CANCEL_REASONS: Final = {
    "deadline": "timed out",
    "explicit": "cancelled by caller",
    "nursery": "cancelled: a sibling task failed",
}


def _reason(exc: BaseException) -> tuple[str, str]:
    """(``error.type``, reason) of what ended a span early."""
    if isinstance(exc, trio.Cancelled):
        return "cancelled", _CANCEL_REASONS.get(str(exc.source), "cancelled")
    if isinstance(exc, CircuitOpenError):
        return type(exc).__name__, "breaker open"
    if isinstance(exc, LLMTimeoutError | TimeoutError | trio.TooSlowError):
        return type(exc).__name__, "timed out"
    return type(exc).__qualname__, ""


def fail(span: Span, exc: BaseException) -> None:
    """Mark ``span`` as ended by ``exc`` (a cancellation, a timeout or an error)."""
    kind, reason = _reason(exc)
    span.set_attribute("error.type", kind)
    if reason:
        span.set_attribute("agentflow.reason", reason)
        span.set_status(Status(StatusCode.ERROR, reason))
    else:
        span.set_status(Status(StatusCode.ERROR, f"{kind}: {exc}"[:200]))


_FINISH_REASONS: Final[dict[str, tuple[str]]] = {}


def _reasons(finish: str) -> tuple[str]:
    """``(finish,)``, one tuple per reason: the garbage collector stops tracking it at its
    first pass, and then a span's attributes holding it are never tracked either."""
    found = _FINISH_REASONS.get(finish)
    if found is None:
        found = (finish,)
        if len(_FINISH_REASONS) < 64:
            _FINISH_REASONS[finish] = found
    return found


def _content(value: Any) -> str:
    text = value if isinstance(value, str) else dumps_str(value)
    return text[:_CONTENT_LIMIT]


def _messages(messages: Any) -> str:
    shown = [
        {"role": getattr(m, "role", ""), "content": getattr(m, "content", "")} for m in messages
    ]
    return _content(shown)


@final
class Instruments(EventSpans):
    """The spans of one process while tracing is on (``tracing.active``).

    ``tracer`` makes every span; ``capture_content`` adds prompts, completions and tool
    arguments and results (cut at 16 KiB each); ``providers`` maps a deployment name to
    its agentflow provider (``gen_ai.provider.name``), ``default_provider`` for the rest.
    """

    __slots__ = (
        "_events",
        "_lean",
        "_open",
        "_traced",
        "capture_content",
        "default_provider",
        "providers",
        "tracer",
    )

    def __init__(
        self,
        tracer: Tracer,
        *,
        capture_content: bool = False,
        providers: Mapping[str, str] | None = None,
        default_provider: str = "",
    ) -> None:
        self.tracer = tracer
        self.capture_content = capture_content
        self.providers = {k: _PROVIDERS.get(v, v) for k, v in (providers or {}).items()}
        self.default_provider = _PROVIDERS.get(default_provider, default_provider)
        # an event's span and when it was accepted; once it runs, when it started, its
        # queue wait (s) and maybe its agent's span: one entry, one lookup. Times are the
        # spans' own clock (``time_ns``), read once for each span that starts or ends then
        self._events: dict[object, tuple[Any, ...]] = {}
        self._traced: TracedProvider | None = None  # the last provider wrapped
        opener = getattr(tracer, "open_span", None)
        self._open: Callable[[str, SpanKind, dict[str, Any]], tuple[Span, object]] = (
            opener if opener is not None else self._open_any
        )
        # the lean tracer's span class: its ids are read directly (no SpanContext)
        self._lean: type[Any] | None = getattr(tracer, "span_type", None)

    failed = staticmethod(fail)
    """`fail`: mark a span ended by an exception (for the model spans' wrappers)."""

    def _open_any(
        self, name: str, kind: SpanKind, attributes: dict[str, Any]
    ) -> tuple[Span, object]:
        """A span under the current one, made current: the span and `restore`'s token
        (any tracer; the lean one does this itself, in one frame)."""
        made = self.tracer.start_span(name, None, kind, attributes)
        return made, attach(made)

    # ------------------------------------------------------------------ propagation
    def traceparent(self) -> str | None:
        """The current span's W3C ``traceparent``, None outside a valid span."""
        span = current_span()
        record = self._chat_of(span)
        if record is not None:  # a model call's (`open_chat`): its trace and span ids
            return "00-%032x-%016x-01" % (record[1], record[2])  # noqa: UP031 (faster)
        if type(span) is self._lean:  # sampled, ids as ints
            return "00-%032x-%016x-01" % (span.trace_id, span.span_id)  # noqa: UP031 (faster)
        found = trace.get_current_span().get_span_context()
        if not found.is_valid:
            return None
        return f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}"

    def _chat_of(self, span: Any) -> list[Any] | None:
        """The model call in progress under ``span`` (the current span), if any: `CHAT`'s
        record while ``span`` is still the span current when it began, so a span made
        current inside the call (a provider's own) is not hidden by it."""
        held = CHAT.get()
        return None if held is None or held[1] is not span else held[0]

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add ``traceparent`` to outgoing ``headers`` (an httpx2 request's)."""
        value = self.traceparent()
        if value is not None:
            headers[TRACEPARENT] = value

    def request_head(self, prefix: bytes) -> bytes:
        """A lean request prefix (ending ``content-length: ``) with ``traceparent``."""
        if not prefix.endswith(b"content-length: "):
            return prefix
        span: Any = current_context().get(SPAN_KEY)
        held = CHAT.get()  # (`_chat_of`, inline)
        if held is not None and held[1] is span:  # a model call's (`open_chat`): its ids
            ids = (prefix[:-16], held[0][1], held[0][2])
            return b"%btraceparent: 00-%032x-%016x-01\r\ncontent-length: " % ids
        if type(span) is self._lean:  # one formatting, straight to bytes
            ids = (prefix[:-16], span.trace_id, span.span_id)
            return b"%btraceparent: 00-%032x-%016x-01\r\ncontent-length: " % ids
        value = self.traceparent()
        if value is None:
            return prefix
        return b"%btraceparent: %b\r\ncontent-length: " % (prefix[:-16], value.encode())

    # ------------------------------------------------------------------ agents, tools, MCP
    def agent(self, name: str, running: Awaitable[_T]) -> Coroutine[Any, Any, _T]:
        """Await an agent's run under an ``invoke_agent`` span."""
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name}
        return self._under(INVOKE_NAMES[name], attributes, running, _INTERNAL, False)

    def open_tool(self, name: str, call_id: str, args: Mapping[str, Any]) -> tuple[Span, object]:
        """An ``execute_tool`` span, made the current one, for a call its caller awaits
        in its own frame: the span and the token `close_tool` takes."""
        attributes = self._tool_attributes(name, call_id, args)
        return self._open(TOOL_NAMES[name], _INTERNAL, attributes)

    def close_tool(
        self, opened: tuple[Span, object], result: Any, exc: BaseException | None
    ) -> None:
        """End `open_tool`'s span: its `ToolResult` says how the call went, or ``exc``
        (a cancellation) what ended it."""
        span, token = opened
        restore(token)
        if exc is None and getattr(result, "outcome", None) == "ok" and not self.capture_content:
            span.end()  # the usual case: nothing to note
            return
        try:
            if exc is not None:
                fail(span, exc)
            else:
                self._tool_result(span, result)
        finally:
            span.end()

    def sync_tool(
        self, name: str, call_id: str, args: Mapping[str, Any], call: Callable[[], _T]
    ) -> _T:
        """Run a synchronous tool call (the registry's inline path) under a span; its
        `ToolResult` says whether it failed."""
        parent: Any = current_context().get(SPAN_KEY)
        if type(parent) is self._lean and not self.capture_content:
            # the lean tracer's common case: nothing holds the span, so no span is made
            # unless the call fails; a good one's fields go straight to the batch
            attributes = self._tool_attributes(name, call_id, args)  # (no content here)
            start = _time_ns()
            try:
                result = call()
            except BaseException as exc:
                self._ended_tool(name, attributes, start, None, exc)
                raise
            if getattr(result, "outcome", None) == "ok":
                self.tracer.record(  # type: ignore[attr-defined]
                    TOOL_NAMES[name], parent.trace_id, _random_bits(64) or 1,
                    parent.span_id, parent.state, start, _time_ns(), attributes,
                )  # fmt: skip
            else:
                self._ended_tool(name, attributes, start, result, None)
            return result
        span = self.tracer.start_span(
            f"execute_tool {name}", attributes=self._tool_attributes(name, call_id, args)
        )
        try:
            result = call()
        except BaseException as exc:
            fail(span, exc)
            raise
        else:
            self._tool_result(span, result)
        finally:
            span.end()
        return result

    def _ended_tool(
        self, name: str, attributes: dict[str, Any], start: int, result: Any, exc: Any
    ) -> None:
        """The span of a synchronous tool call that did not go well, made now."""
        span = self.tracer.start_span(
            "execute_tool " + name, None, _INTERNAL, attributes, start_time=start
        )
        if exc is not None:
            fail(span, exc)
        else:
            self._tool_result(span, result)
        span.end()

    def _tool_result(self, span: Span, result: Any) -> None:
        """A `ToolResult`'s outcome on its span: ``timed_out`` and errors as statuses (a
        plain function that returned an awaitable gives a coroutine instead: the span
        then covers the call that made it)."""
        outcome = getattr(result, "outcome", None)
        if outcome is None:
            return
        if outcome == "ok":
            if self.capture_content and result.output is not None:
                span.set_attribute("gen_ai.tool.call.result", _content(result.output))
            return
        error = getattr(result, "error", None) or {}
        kind = str(error.get("exception") or error.get("type") or outcome)
        reason = "timed out" if outcome == "timed_out" else ""
        self._status(span, kind, reason)
        if not reason:
            message = str(error.get("message", outcome))
            span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}"[:200]))

    def _tool_attributes(self, name: str, call_id: str, args: Mapping[str, Any]) -> dict[str, Any]:
        attributes: dict[str, Any] = _TOOL_CALL.copy()
        attributes["gen_ai.tool.name"] = name
        attributes["gen_ai.tool.call.id"] = call_id
        if self.capture_content:
            attributes["gen_ai.tool.call.arguments"] = _content(dict(args))
        return attributes

    def mcp(self, server: str, tool: str, running: Awaitable[_T]) -> Coroutine[Any, Any, _T]:
        """Await one MCP ``tools/call`` under a client span; a result with ``isError``
        marks it failed."""
        attributes = {
            "mcp.method.name": "tools/call",
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "agentflow.mcp.server": server,
        }
        return self._under("tools/call " + tool, attributes, running, _CLIENT, True)

    async def _under(
        self,
        name: str,
        attributes: dict[str, Any],
        running: Awaitable[_T],
        kind: SpanKind,
        result: bool,
    ) -> _T:
        span, token = self._open(name, kind, attributes)
        try:
            value = await running
        except BaseException as exc:
            fail(span, exc)
            span.end()
            raise
        finally:
            restore(token)
        try:
            if type(value) not in _PLAIN and (
                getattr(value, "is_error", False) or getattr(value, "isError", False)
            ):
                self._status(span, "tool_error", "")
                span.set_status(Status(StatusCode.ERROR, "the tool reported an error"))
            elif result and self.capture_content:
                span.set_attribute("gen_ai.tool.call.result", _content(_plain(value)))
        finally:
            span.end()
        return value

    # ------------------------------------------------------------------ model calls
    def provider(self, provider: Any) -> TracedProvider:
        """``provider`` with a ``chat`` span around each call and stream."""
        traced = self._traced
        if traced is None or traced._inner is not provider:
            traced = self._traced = TracedProvider(self, provider)
        return traced

    def open_chat(self, request: Any) -> tuple[Span, object]:
        """A ``chat`` span for a call its caller awaits in its own frame, made the current
        one (the model request carries its ``traceparent``, a failed router attempt is
        its event): the span and the token `close_chat` takes. With the lean tracer the
        span is a record (``LeanTracer.begin``) named by `CHAT` instead: no span object
        and no new context, as nothing runs user code inside a model call."""
        name, attributes = self._chat(request, False)
        if self._lean is not None:
            parent = current_context().get(SPAN_KEY)
            record = self.tracer.begin(name, _CLIENT, attributes, parent)  # type: ignore[attr-defined]
            if record is not None:
                return record, CHAT.set((record, parent))
        return self._open(name, _CLIENT, attributes)

    def close_chat(self, opened: Any, response: Any, exc: BaseException | None) -> None:
        """End `open_chat`'s span (in the task that opened it): what the model answered,
        or the exception that ended the call."""
        span, token = opened
        if type(span) is list:  # a record (`open_chat`)
            CHAT.reset(token)
            if exc is None:  # the usual case: the answer's attributes, and it ends
                self._answer(
                    span[8],  # (the record's attributes)
                    response.model,
                    response.deployment,
                    response.finish_reason,
                    response.usage,
                    response.text,
                )
                self.tracer.close(span)  # type: ignore[attr-defined]
                return
            span = self.tracer.held(span)  # type: ignore[attr-defined]
        else:
            restore(token)
        try:
            if exc is not None:
                fail(span, exc)
            else:
                self.answered(
                    span,
                    response.model,
                    response.deployment,
                    response.finish_reason,
                    response.usage,
                    response.text,
                )
        finally:
            span.end()

    def chat_span(self, request: Any, streaming: bool) -> Span:
        """A ``chat`` span for ``request``, not made current (a stream's)."""
        name, attributes = self._chat(request, streaming)
        outer = self._chat_of(current_span())
        if outer is not None:  # opened inside a model call (a provider's own): under it
            ids = (outer[1], _random_bits(64) or 1, outer[2], current_span().state)
            made: Span = self.tracer.span(name, ids, _CLIENT, attributes, 0)  # type: ignore[attr-defined]
            return made
        return self.tracer.start_span(name, None, _CLIENT, attributes)

    def _chat(self, request: Any, streaming: bool) -> tuple[str, dict[str, Any]]:
        """A ``chat`` span's name and first attributes."""
        model = request.model or ""
        attributes: dict[str, Any] = _CHAT_CALL.copy()
        attributes["gen_ai.request.model"] = model
        if self.default_provider:
            attributes["gen_ai.provider.name"] = self.default_provider
        value = request.temperature  # (a `ChatRequest`: both fields always there)
        if value is not None:
            attributes["gen_ai.request.temperature"] = value
        value = request.max_tokens
        if value is not None:
            attributes["gen_ai.request.max_tokens"] = value
        if streaming:
            attributes["agentflow.stream"] = True
        if self.capture_content:
            attributes["gen_ai.input.messages"] = _messages(request.messages)
        return CHAT_NAMES[model] if model else "chat", attributes

    def answered(
        self, span: Span, model: str, deployment: str, finish: str | None, usage: Any, text: str
    ) -> None:
        """What the model answered, on its ``chat`` span (a lean one's own dict is
        written: text and counts need no checks, and a dict and a call less)."""
        lean = type(span) is self._lean  # (never ended yet here)
        attributes: dict[str, Any] = span._attributes if lean else {}  # type: ignore[attr-defined]
        self._answer(attributes, model, deployment, finish, usage, text)
        if not lean:
            span.set_attributes(attributes)  # one call, not one per attribute

    def _answer(
        self,
        attributes: dict[str, Any],
        model: str,
        deployment: str,
        finish: str | None,
        usage: Any,
        text: str,
    ) -> None:
        """Write what the model answered into a ``chat`` span's ``attributes``."""
        if model:
            attributes["gen_ai.response.model"] = model
        if deployment:
            attributes["agentflow.deployment"] = deployment
            provider = self.providers.get(deployment)
            if provider:
                attributes["gen_ai.provider.name"] = provider
        if finish:
            reasons = _FINISH_REASONS.get(finish)
            attributes["gen_ai.response.finish_reasons"] = reasons or _reasons(finish)
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if self.capture_content:
            output = [{"role": "assistant", "content": text}]
            attributes["gen_ai.output.messages"] = _content(output)

    def attempt_failed(self, deployment: str, kind: str, exc: BaseException) -> None:
        """A router attempt failed: an event on the current (``chat``) span naming the
        deployment and the failure class, the reason the request moves on or ends."""
        attributes = {
            "agentflow.deployment": deployment,
            "agentflow.attempt.outcome": "failed",
            "agentflow.failover.reason": kind,
            "error.type": type(exc).__qualname__,
        }
        span = current_span()
        record = self._chat_of(span)
        if record is not None:  # a model call's record (`open_chat`)
            self.tracer.note_event(record, "agentflow.router.attempt", attributes)  # type: ignore[attr-defined]
            return
        if span is not None and span.is_recording():
            span.add_event("agentflow.router.attempt", attributes)

    # ------------------------------------------------------------------ the server
    async def serve(
        self,
        scope: Mapping[str, Any],
        receive: Any,
        send: Callable[[Any], Awaitable[None]],
        app: Callable[[Any, Any, Any], Awaitable[None]],
    ) -> None:
        """Run one HTTP request of ``serve`` under a server span, the child of the
        request's ``traceparent`` (bounded; garbage ignored). ``/healthz`` and
        ``/metrics`` (probes and scrapes) make no span."""
        if scope.get("path") in _UNTRACED_PATHS:
            return await app(scope, receive, send)
        sent = None
        for name, value in scope.get("headers", ()):
            if name == b"traceparent":
                sent = parse_traceparent(value)
        method, path = scope.get("method", ""), scope.get("path", "")
        attributes = {
            "http.request.method": method,
            "url.path": path[:200],
            "url.scheme": scope.get("scheme", "http"),
        }
        span = self.tracer.start_span(
            f"{method} {path[:100]}", _remote(sent), SpanKind.SERVER, attributes
        )
        token = attach(span)

        async def send_noting(message: Any) -> None:
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 0))
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            await send(message)

        try:
            await app(scope, receive, send_noting)
        except BaseException as exc:
            fail(span, exc)
            raise
        finally:
            detach(token)
            span.end()


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value
