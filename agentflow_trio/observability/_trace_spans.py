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

import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping
from typing import Any, Final, Protocol, TypeVar, final

import trio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from .._json import dumps_str
from ..errors import CircuitOpenError, LLMTimeoutError
from ..events import AgentResult, Outcome
from ._trace_context import attach, current_span, detach, restore
from ._trace_model import TracedProvider
from ._traceparent import TRACEPARENT, parse_traceparent

__all__ = ["Instruments", "Tracer", "fail"]

_T = TypeVar("_T")

_CONTENT_LIMIT: Final = 16_384  # characters of a captured prompt, completion or result
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_PROVIDERS: Final = {  # agentflow provider -> gen_ai.provider.name
    "openai": "openai",
    "openai_responses": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "ollama": "ollama",
    "fake": "fake",
}
_UNTRACED_PATHS: Final = frozenset({"/healthz", "/metrics"})
_INTERNAL: Final = SpanKind.INTERNAL
_CLIENT: Final = SpanKind.CLIENT
_TIMED_OUT: Final = Outcome.TIMED_OUT  # an enum member read off its class costs a call
_CANCELLED: Final = Outcome.CANCELLED
_SUCCEEDED: Final = Outcome.SUCCEEDED
_perf_ns: Final = time.perf_counter_ns
_PLAIN: Final = frozenset({str, dict, list, tuple, int, float, bool, bytes, type(None)})
"""Types whose values carry no ``is_error``: a result of one is not asked (a failed
``getattr`` raises and catches an AttributeError, the dearest step of a span)."""
_CANCEL_REASONS: Final = {
    "deadline": "timed out",
    "explicit": "cancelled by caller",
    "nursery": "cancelled: a sibling task failed",
}


def _remote(traceparent: str | None) -> otel_context.Context | None:
    """The context of a remote parent named by a checked ``traceparent``."""
    if traceparent is None:
        return None
    return _PROPAGATOR.extract({TRACEPARENT: traceparent})


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


class Tracer(Protocol):
    """What makes the spans: an OpenTelemetry ``Tracer``, or the lean one
    (``_trace_lean``) when agentflow builds the pipeline itself. A tracer with an
    ``open_span(name, kind, attributes)`` method (the lean one) starts a span under the
    current one and makes it current in one call, returning it and the token
    ``_trace_context.restore`` takes; `Instruments` uses it where it can."""

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
    ) -> Span: ...


@final
class Instruments:
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
        # an event's span, and when it was accepted (ns), or, once it runs, when it
        # started running (negated), its queue wait (s) and maybe its agent's span: one
        # entry, one lookup
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
        if type(span) is self._lean:  # sampled, ids as ints
            return "00-%032x-%016x-01" % (span.trace_id, span.span_id)  # noqa: UP031 (faster)
        found = trace.get_current_span().get_span_context()
        if not found.is_valid:
            return None
        return f"00-{found.trace_id:032x}-{found.span_id:016x}-{found.trace_flags:02x}"

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add ``traceparent`` to outgoing ``headers`` (an httpx2 request's)."""
        value = self.traceparent()
        if value is not None:
            headers[TRACEPARENT] = value

    def request_head(self, prefix: bytes) -> bytes:
        """A lean request prefix (ending ``content-length: ``) with ``traceparent``."""
        if not prefix.endswith(b"content-length: "):
            return prefix
        span = current_span()
        if type(span) is self._lean:  # one formatting, straight to bytes
            ids = (prefix[:-16], span.trace_id, span.span_id)
            return b"%btraceparent: 00-%032x-%016x-01\r\ncontent-length: " % ids
        value = self.traceparent()
        if value is None:
            return prefix
        return b"%btraceparent: %b\r\ncontent-length: " % (prefix[:-16], value.encode())

    # ------------------------------------------------------------------ events
    def accepted(self, handle: Any) -> None:
        """An event was queued: its span starts now, under the emitter's span or, when
        none is current, under the ``traceparent`` of its metadata (a Redis entry's)."""
        event = handle.event
        parent = None
        metadata = event.metadata
        if metadata:  # usually empty: no lookup, no current span read
            sent = metadata.get(TRACEPARENT)
            if sent is not None and current_span() is None:
                parent = _remote(parse_traceparent(sent))
        attributes = {"agentflow.event.type": event.type, "agentflow.event.id": event.id}
        span = self.tracer.start_span("event " + event.type, parent, _INTERNAL, attributes)
        self._events[handle] = (span, _perf_ns(), 0.0)

    def _event_span(self, event: Any, parent: otel_context.Context | None) -> Span:
        attributes = {"agentflow.event.type": event.type, "agentflow.event.id": event.id}
        return self.tracer.start_span("event " + event.type, parent, _INTERNAL, attributes)

    def running(self, handle: Any, parent: object, agent: str | None = None) -> object:
        """The event starts running in this task: its span becomes the current one (a
        nested call's, one with a ``parent`` context, starts now under the current span).
        Returns the token `tracing.detach` takes.

        ``agent``: the event's agent runs right away, awaited here (the runner's plain
        path): its ``invoke_agent`` span starts now under the event's and is the current
        one instead, and `finished` ends it from the result (one context change, not two,
        and no coroutine around the agent's)."""
        found = self._events.get(handle)
        now = _perf_ns()
        if found is None:
            metadata = handle.event.metadata.get(TRACEPARENT)
            remote = None if parent is not None else _remote(parse_traceparent(metadata))
            span = self._event_span(handle.event, remote)
            wait = 0.0
        else:  # the queue wait is noted when the span ends, with the run time
            span = found[0]
            wait = (now - found[1]) / 1e9
        if agent is None:
            self._events[handle] = (span, -now, wait)
            return attach(span)
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
        held: Any = span  # read as the lean span it is
        lean = self._lean
        if type(held) is lean:  # the child of a span in hand: no context to read
            running = lean(
                self.tracer, "invoke_agent " + agent, held.trace_id, held.span_id, held.state,
                None, _INTERNAL, attributes,
            )  # fmt: skip
        else:
            inside = trace.set_span_in_context(span)
            running = self.tracer.start_span("invoke_agent " + agent, inside, _INTERNAL, attributes)
        self._events[handle] = (span, -now, wait, running)
        return attach(running)

    def finished(self, handle: Any, result: AgentResult) -> None:
        """The event ended: its outcome, run time and status, and its span ends (the
        agent's first, when `running` started it)."""
        found = self._events.pop(handle, None)
        if found is None:
            return
        outcome = result.outcome
        error = result.error
        if len(found) == 4:
            agent = found[3]
            if outcome is not _SUCCEEDED:
                self._outcome(agent, outcome, error)
            agent.end()
        span, since, wait = found[0], found[1], found[2]
        attributes: dict[str, Any] = {
            "agentflow.event.outcome": str(outcome),
            "agentflow.queue_wait_s": wait,
            "agentflow.run_time_s": (_perf_ns() + since) / 1e9 if since < 0 else 0.0,
        }
        if result.agent:
            attributes["gen_ai.agent.name"] = result.agent
        if type(span) is self._lean:  # its own dict, still open: no frame, no checks
            span._attributes.update(attributes)
        else:
            span.set_attributes(attributes)  # one call, not one per attribute
        if outcome is _TIMED_OUT:
            self._status(span, "timeout", "timed out")
        elif outcome is not _SUCCEEDED:
            self._outcome(span, outcome, error)
        span.end()

    def _outcome(self, span: Span, outcome: Outcome, error: Any) -> None:
        """The status of a span whose event ended other than well: timed out, cancelled
        (and by whom), or the error's type and message."""
        if outcome is _TIMED_OUT:
            self._status(span, "cancelled", "timed out")
        elif outcome is _CANCELLED:
            why = error.message if error is not None else "cancelled"
            self._status(span, "cancelled", "cancelled by caller" if "caller" in why else why)
        elif error is not None:
            self._status(span, error.type, "")
            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"[:200]))

    @staticmethod
    def _status(span: Span, kind: str, reason: str) -> None:
        span.set_attribute("error.type", kind)
        if reason:
            span.set_attribute("agentflow.reason", reason)
            span.set_status(Status(StatusCode.ERROR, reason))

    # ------------------------------------------------------------------ agents, tools, MCP
    def agent(self, name: str, running: Awaitable[_T]) -> Coroutine[Any, Any, _T]:
        """Await an agent's run under an ``invoke_agent`` span."""
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name}
        return self._under("invoke_agent " + name, attributes, running, _INTERNAL, False)

    def open_tool(self, name: str, call_id: str, args: Mapping[str, Any]) -> tuple[Span, object]:
        """An ``execute_tool`` span, made the current one, for a call its caller awaits
        in its own frame: the span and the token `close_tool` takes."""
        attributes = self._tool_attributes(name, call_id, args)
        return self._open("execute_tool " + name, _INTERNAL, attributes)

    def close_tool(
        self, opened: tuple[Span, object], result: Any, exc: BaseException | None
    ) -> None:
        """End `open_tool`'s span: its `ToolResult` says how the call went, or ``exc``
        (a cancellation) what ended it."""
        span, token = opened
        restore(token)
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
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
        }
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
        its event): the span and the token `_trace_context.restore` takes."""
        name, attributes = self._chat(request, False)
        return self._open(name, _CLIENT, attributes)

    def chat_span(self, request: Any, streaming: bool) -> Span:
        """A ``chat`` span for ``request``, not made current (a stream's)."""
        name, attributes = self._chat(request, streaming)
        return self.tracer.start_span(name, None, _CLIENT, attributes)

    def _chat(self, request: Any, streaming: bool) -> tuple[str, dict[str, Any]]:
        """A ``chat`` span's name and first attributes."""
        model = request.model or ""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
        }
        if self.default_provider:
            attributes["gen_ai.provider.name"] = self.default_provider
        value = getattr(request, "temperature", None)
        if value is not None:
            attributes["gen_ai.request.temperature"] = value
        value = getattr(request, "max_tokens", None)
        if value is not None:
            attributes["gen_ai.request.max_tokens"] = value
        if streaming:
            attributes["agentflow.stream"] = True
        if self.capture_content:
            attributes["gen_ai.input.messages"] = _messages(request.messages)
        return "chat " + model if model else "chat", attributes

    def answered(
        self, span: Span, model: str, deployment: str, finish: str | None, usage: Any, text: str
    ) -> None:
        """What the model answered, on its ``chat`` span (a lean one's own dict is
        written: text and counts need no checks, and a dict and a call less)."""
        lean = type(span) is self._lean  # (never ended yet here)
        attributes: dict[str, Any] = span._attributes if lean else {}  # type: ignore[attr-defined]
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
        if not lean:
            span.set_attributes(attributes)  # one call, not one per attribute

    def attempt_failed(self, deployment: str, kind: str, exc: BaseException) -> None:
        """A router attempt failed: an event on the current (``chat``) span naming the
        deployment and the failure class, the reason the request moves on or ends."""
        span = current_span()
        if span is not None and span.is_recording():
            span.add_event(
                "agentflow.router.attempt",
                {
                    "agentflow.deployment": deployment,
                    "agentflow.attempt.outcome": "failed",
                    "agentflow.failover.reason": kind,
                    "error.type": type(exc).__qualname__,
                },
            )

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
