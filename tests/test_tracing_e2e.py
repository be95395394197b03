"""One trace across serve -> Redis -> a worker -> the mock LLM, exported as OTLP over HTTP.

Loopback only, port 0 everywhere, the real clock and an absolute ``fail_after``. The
pieces are real: ``serve_runner`` (hypercorn), a ``redis-server``, `run_worker`, the mock
LLM behind a byte-recording TCP proxy (the proof that the model request carried the
``traceparent``), and a small OTLP receiver (a thread) that decodes each
``ExportTraceServiceRequest`` with ``opentelemetry-proto``. They share this process, so the
only way the worker's spans can join the trace is the ``traceparent`` field of the Redis
entry: the worker emits each event from its own task, outside any span.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest
import trio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentflow_trio as af
from agentflow_trio.config import DistributedConfig, LLMConfig, RetryConfig, RunnerConfig
from agentflow_trio.config.sections import TracingConfig
from agentflow_trio.distributed import RemoteRunner, run_worker
from agentflow_trio.llm import open_llm_client
from agentflow_trio.mockllm import MockReply, MockToolCall, open_mock_llm
from agentflow_trio.observability import tracing
from agentflow_trio.server import serve_runner
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

pytest.importorskip("coredis")
from _redis import RedisServer, redis_server
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

TIMEOUT = 60
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, list[Any]]]:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 (a free port); yields its URL and the
    list every received span is appended to."""
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    received.extend(scope.spans)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@asynccontextmanager
async def recording_proxy(port: int) -> AsyncIterator[tuple[int, bytearray]]:
    """A TCP proxy to 127.0.0.1:``port``; yields its own port and every byte clients sent."""
    sent = bytearray()

    async def pump(source: trio.SocketStream, sink: trio.SocketStream, record: bool) -> None:
        async for data in source:
            if record:
                sent.extend(data)
            await sink.send_all(data)
        await sink.send_eof()

    async def handle(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", port) as upstream:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, upstream, True)
                nursery.start_soon(pump, upstream, client, False)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1], sent
        nursery.cancel_scope.cancel()


def weather_tools() -> ToolRegistry:
    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": city, "temp_c": 18}

    return ToolRegistry([weather])


async def test_one_trace_from_the_served_request_to_the_model_call(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TIMEOUT), otlp_receiver() as (endpoint, spans):
        async with open_mock_llm() as mock, recording_proxy(mock.port) as (proxy_port, sent):
            mock.script(
                MockReply(tool_calls=(MockToolCall("weather", {"city": "Paris"}, id="call_w"),)),
                MockReply(text="Sunny in Paris."),
            )
            config = af.Config(
                llm=LLMConfig(
                    base_url=f"http://127.0.0.1:{proxy_port}/v1",
                    api_key="sk-test",
                    retry=RetryConfig(enabled=False),
                ),
                distributed=DistributedConfig(redis_url=redis_server.url, block=0.05),
                runner=RunnerConfig(drain_timeout=2.0),
                tracing=TracingConfig(enabled=True, endpoint=endpoint, service_name="e2e"),
            )
            answer = await _serve_and_ask(config)
            assert answer["outcome"] == "succeeded", answer
            assert answer["output"] == "Sunny in Paris."
        # open_tracing has been left: the batch exporter flushed to the receiver.
    shape = _shape(spans)
    assert shape == {
        "POST /v1/events": "<client>",
        "event front": "POST /v1/events",
        "invoke_agent front": "event front",
        "event ask": "invoke_agent front",
        "invoke_agent tool_agent": "event ask",
        "chat m": "invoke_agent tool_agent",
        "execute_tool weather": "invoke_agent tool_agent",
    }
    chats = [s for s in spans if s.name == "chat m" and s.trace_id.hex() == TRACE_ID]
    assert len(chats) == 2
    for chat in chats:  # each model request carried its own span as the parent
        expected = f"traceparent: 00-{TRACE_ID}-{chat.span_id.hex()}-01".encode()
        assert expected in bytes(sent).lower()


async def _serve_and_ask(config: af.Config) -> Any:
    """Serve a ``front`` agent that hands the question to a Redis worker running a tool
    agent; POST one event with a client's traceparent; return the answer's JSON."""
    async with (
        tracing.open_tracing(config),  # this test's spans, flushed when it ends
        open_llm_client(config) as llm,
        RemoteRunner(config) as remote,
        trio.open_nursery() as nursery,
    ):

        async def front(ctx: af.Context, event: af.Event) -> Any:
            result = await remote.call(af.Event("ask", {"query": "weather in Paris?"}))
            return result.output["text"]

        asker = tool_agent(tools=weather_tools(), request_fields={"model": "m"})
        worker = await nursery.start(functools.partial(run_worker, config, {"ask": asker}, llm=llm))
        served = await nursery.start(
            functools.partial(serve_runner, config, {"front": front}, port=0)
        )
        headers = {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
        async with httpx2.AsyncClient(base_url=served.url, timeout=TIMEOUT) as client:
            reply = await client.post("/v1/events", json={"type": "front"}, headers=headers)
        worker.shutdown()
        nursery.cancel_scope.cancel()
        return reply.json()


def _shape(spans: list[Any]) -> dict[str, str]:
    """Each span name of the client's trace -> its parent's name (``<client>``: the
    client's own span); every span of the trace, and only those, are there."""
    ours = [s for s in spans if s.trace_id.hex() == TRACE_ID]
    names = {s.span_id: s.name for s in ours}
    shape: dict[str, str] = {}
    for s in ours:
        parent = s.parent_span_id.hex()
        shape[s.name] = "<client>" if parent == CLIENT_SPAN else names.get(s.parent_span_id, parent)
    assert len(ours) == 8, sorted(s.name for s in ours)  # two chat spans
    return shape


@pytest.mark.parametrize("transport", ["lean", "httpx2"])
@pytest.mark.parametrize("stream", [False, True])
async def test_each_http_client_sends_the_model_span_as_traceparent(
    transport: str, stream: bool
) -> None:
    exporter = InMemorySpanExporter()
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, recording_proxy(mock.port) as (proxy_port, sent):
            llm = LLMConfig(
                base_url=f"http://127.0.0.1:{proxy_port}/v1",
                api_key="sk-test",
                transport=transport,  # type: ignore[arg-type]
                retry=RetryConfig(enabled=False),
            )
            settings = TracingConfig(enabled=True)
            async with (
                tracing.open_tracing(settings, exporter=exporter, batch=False),
                open_llm_client(llm) as client,
            ):
                if stream:
                    async with client.stream("hi", model="m") as chunks:
                        assert [c async for c in chunks]
                else:
                    await client.complete("hi", model="m")
    (chat,) = exporter.get_finished_spans()
    context = chat.context
    expected = f"traceparent: 00-{context.trace_id:032x}-{context.span_id:016x}-"
    assert expected.encode() in bytes(sent).lower()
