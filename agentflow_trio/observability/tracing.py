"""OpenTelemetry tracing with the GenAI semantic conventions, free when off: the switch.

``[tracing] enabled = true`` (or `open_tracing` in code) makes spans for what a request
does, from ``serve`` through a Redis worker to the model's HTTP call::

    POST /v1/events            SERVER  http.request.method, url.path, http.response.status_code
    └── event {type}                   agentflow.event.{id,type,outcome}, queue wait, run time
        └── invoke_agent {name}        gen_ai.operation.name=invoke_agent, gen_ai.agent.name
            ├── chat {model}   CLIENT  gen_ai.operation.name=chat, gen_ai.provider.name,
            │                          gen_ai.request.model, gen_ai.response.model,
            │                          gen_ai.usage.input_tokens/output_tokens,
            │                          gen_ai.response.finish_reasons; each failed router
            │                          attempt is an event (agentflow.router.attempt)
            ├── execute_tool {name}    gen_ai.tool.name, gen_ai.tool.call.id
            │   └── tools/call {tool}  CLIENT: an MCP call (mcp.method.name, agentflow.mcp.server)
            └── event {type}           a Redis worker's, under the agent that emitted it

A span that ended early says why in its status and ``agentflow.reason`` (``timed out``,
``cancelled by caller``, ``breaker open``) with ``error.type``; other failures carry
``error.type`` (the exception's class) and an error status. Prompts, completions and tool
arguments and results are recorded only with ``capture_content``; secrets never are.

Propagation (W3C ``traceparent``): ``serve`` continues the trace a request names; model
requests (lean and httpx2 clients) carry their ``chat`` span's and Redis Streams entries
the current span's, so a worker's spans join the producer's trace; ``ctx.span("name")``
starts a user span under the event's. A ``traceparent`` from outside is bounded (55
characters, version 00) and garbage is ignored.

Off (the default), ``active`` is None: every instrumented place checks that one module
attribute and makes no span object, and neither the OpenTelemetry API nor the SDK is
imported (``bench/tracing_overhead.py`` measures both sides). The SDK and the OTLP
exporter come with the ``tracing`` extra.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ..config import Config
from ..config.sections import TracingConfig
from ..errors import ConfigError
from ._traceparent import TRACEPARENT as TRACEPARENT
from ._traceparent import parse_traceparent as parse_traceparent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from ._trace_spans import Instruments, Tracer

__all__ = [
    "TRACEPARENT",
    "TRACING_EXTRA",
    "NoSpan",
    "active",
    "current_traceparent",
    "detach",
    "open_tracing",
    "parse_traceparent",
    "span",
]

TRACING_EXTRA: Final = "pip install 'agentflow_trio[tracing]'"

active: Instruments | None = None
"""The spans of this process while tracing is open; None when off (the hot-path check)."""

_SHUTDOWN_TIMEOUT: Final = 10.0


@final
class NoSpan:
    """What `span` gives while tracing is off: every span method, doing nothing."""

    __slots__ = ()

    def __enter__(self) -> NoSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        """Ignored."""

    def set_attributes(self, attributes: Any) -> None:
        """Ignored."""

    def add_event(self, name: str, attributes: Any = None) -> None:
        """Ignored."""

    def record_exception(self, exception: BaseException, attributes: Any = None) -> None:
        """Ignored."""

    def set_status(self, status: Any, description: str | None = None) -> None:
        """Ignored."""

    def is_recording(self) -> bool:
        """Always False."""
        return False


_NO_SPAN: Final = NoSpan()


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """``with span("rank", k=3) as s:``: a span under the current one (in an agent, the
    event's); ``s`` is the OpenTelemetry span, or a `NoSpan` while tracing is off. A
    cancellation or an exception leaving the block marks it as `Instruments` marks any."""
    instruments = active
    if instruments is None:
        return _NO_SPAN
    return _user_span(instruments, name, attributes)


@contextmanager
def _user_span(instruments: Instruments, name: str, attributes: dict[str, Any]) -> Iterator[Any]:
    from ._trace_context import attach, detach
    from ._trace_spans import fail

    made = instruments.tracer.start_span(name)
    made.set_attributes(attributes)  # checked: a value OTLP cannot carry becomes text
    token = attach(made)
    try:
        yield made
    except BaseException as exc:
        fail(made, exc)
        raise
    finally:
        detach(token)
        made.end()


def _first_detach(token: object) -> None:
    """`detach` until tracing was first switched on (it never runs before: a token
    comes only from `Instruments.running`); then the context module's restore."""
    from ._trace_context import restore

    restore(token)


detach: Callable[[object], object] = _first_detach
"""Undo `Instruments.running` in the task that ran it (also once tracing is off).
`open_tracing` makes it the context module's restore itself (the context variable's
``set``): one call per event, no wrapper."""


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (inside a model call: its ``chat``
    span's); None while off or outside a span."""
    instruments = active
    return None if instruments is None else instruments.traceparent()


@asynccontextmanager
async def open_tracing(
    config: Config | TracingConfig | None = None,
    *,
    exporter: SpanExporter | None = None,
    batch: bool = True,
) -> AsyncIterator[Instruments | None]:
    """Switch tracing on for this process while the block runs (``[tracing]``); yield the
    `Instruments`, or None when ``enabled`` is false and no ``exporter`` is given.

    ``exporter`` (an SDK ``SpanExporter``, such as ``InMemorySpanExporter`` in tests)
    replaces the configured one; ``batch`` exports from a background thread in batches
    (the SDK's ``OTEL_BSP_*`` settings apply), else as each span ends. A whole `Config`
    also names each deployment's provider (``gen_ai.provider.name``). Tracing is one per
    process: while it is open, another ``open_tracing`` shares it. Leaving flushes what
    is pending (at most 10 seconds) and switches it off.

    Raises:
        ConfigError: the SDK or the OTLP exporter is not installed (the ``tracing`` extra).
    """
    global active
    settings = config.tracing if isinstance(config, Config) else config or TracingConfig()
    if active is not None or not (settings.enabled or exporter is not None):
        yield active
        return
    global detach
    tracer, shutdown = _pipeline(settings, exporter, batch)
    from ._trace_context import restore
    from ._trace_spans import Instruments

    detach = restore  # stays: a token taken while on is given back once off too

    llm = config.llm if isinstance(config, Config) else None
    active = Instruments(
        tracer,
        capture_content=settings.capture_content,
        providers={n: d.provider for n, d in llm.deployments.items()} if llm else None,
        default_provider="" if llm is None or llm.deployments else llm.provider,
    )
    try:
        yield active
    finally:
        active = None
        if shutdown is not None:
            with trio.move_on_after(_SHUTDOWN_TIMEOUT) as scope:
                scope.shield = True
                await trio.to_thread.run_sync(shutdown, abandon_on_cancel=True)


def _pipeline(
    settings: TracingConfig, exporter: SpanExporter | None, batch: bool
) -> tuple[Tracer, Callable[[], None] | None]:
    """The tracer ``settings`` ask for, and what flushes and closes its pipeline (None
    when the process's own provider makes the spans: ``exporter = "none"``)."""
    if exporter is None and settings.exporter == "none":
        from opentelemetry import trace

        return trace.get_tracer_provider().get_tracer("agentflow_trio"), None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        from ._trace_export import SpanBatcher, readable
        from ._trace_lean import Ended, LeanTracer
    except ImportError as exc:
        raise ConfigError(f"tracing needs the OpenTelemetry SDK: {TRACING_EXTRA}") from exc
    chosen = exporter if exporter is not None else _exporter(settings)
    resource = Resource.create({"service.name": settings.service_name})
    if batch:
        batcher = SpanBatcher(chosen, resource)
        return LeanTracer(batcher.add, settings.sample_ratio, batcher), batcher.shutdown
    processor = SimpleSpanProcessor(chosen)

    def finish(span: Ended) -> None:
        processor.on_end(readable(span, resource))

    return LeanTracer(finish, settings.sample_ratio), processor.shutdown


def _exporter(settings: TracingConfig) -> SpanExporter:
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(service_name=settings.service_name)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(f"the otlp-http exporter is not installed: {TRACING_EXTRA}") from exc
    return OTLPSpanExporter(endpoint=settings.endpoint or None, headers=settings.headers or None)
