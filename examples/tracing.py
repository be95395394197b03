"""Tracing a tool-calling agent with OpenTelemetry: one trace per event, the GenAI
attributes on each span, sent to any OTLP collector (or printed).

The App below runs a tool agent against the built-in mock LLM. ``[tracing]`` in its
config turns the spans on; with ``--endpoint`` they go to an OTLP/HTTP collector (Jaeger,
Tempo, the OpenTelemetry Collector, Honeycomb...: anything that takes
``POST /v1/traces``), without it this script collects them in memory and prints the tree::

    python examples/tracing.py
    python examples/tracing.py --endpoint http://127.0.0.1:4318/v1/traces

The same table in ``agentflow.toml`` does it for ``agentcli serve`` and ``agentcli
worker``; ``traceparent`` headers and Redis entries carry the trace between them::

    [tracing]
    enabled = true
    exporter = "otlp-http"
    endpoint = "http://127.0.0.1:4318/v1/traces"
    sample_ratio = 1.0
    capture_content = false   # prompts and completions stay out of the spans
"""

from __future__ import annotations

import argparse
from typing import Any

import trio

import agentflow_trio as af
from agentflow_trio.config import LLMConfig
from agentflow_trio.config.sections import TracingConfig
from agentflow_trio.mockllm import MockReply, MockToolCall, open_mock_llm
from agentflow_trio.observability.tracing import open_tracing
from agentflow_trio.tools import ToolRegistry, tool, tool_agent


@tool
async def weather(city: str) -> dict[str, Any]:
    """Current weather for a city."""
    await trio.sleep(0.01)
    return {"city": city, "temp_c": 18}


async def ask(ctx: af.Context, event: af.Event) -> Any:
    """The tool agent, with a span of our own around it."""
    with ctx.span("plan", question=event.data["query"]):
        answer = tool_agent(tools=ToolRegistry([weather]), request_fields={"model": "gpt-4o-mini"})
        return await ctx.run(answer)


async def main(endpoint: str | None) -> None:
    async with open_mock_llm() as mock:
        mock.script(
            MockReply(tool_calls=(MockToolCall("weather", {"city": "Paris"}),)),
            MockReply(text="Paris is 18C."),
        )
        tracing = TracingConfig(enabled=True, endpoint=endpoint or "", service_name="example")
        config = af.Config(
            llm=LLMConfig(base_url=mock.url + "/v1", api_key="sk-mock"), tracing=tracing
        )
        app = af.App(agents={"ask": ask}, config=config)
        if endpoint:  # the App opens [tracing] itself: OTLP over HTTP, flushed at the end
            async with app.open(monitoring=False) as runner:
                result = await runner.call(af.Event("ask", {"query": "Weather in Paris?"}))
            print("outcome:", result.outcome.value, "- spans sent to", endpoint)
            return
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        spans = InMemorySpanExporter()
        async with (
            open_tracing(config, exporter=spans, batch=False),
            app.open(monitoring=False) as runner,
        ):
            result = await runner.call(af.Event("ask", {"query": "Weather in Paris?"}))
    print("outcome:", result.outcome.value)
    _print_tree(spans.get_finished_spans())


def _print_tree(finished: Any) -> None:
    """Each span under its parent, with its GenAI attributes."""
    children: dict[int | None, list[Any]] = {}
    ids = {s.context.span_id for s in finished}
    for s in sorted(finished, key=lambda s: s.start_time):
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        children.setdefault(parent, []).append(s)

    def show(parent: int | None, depth: int) -> None:
        for s in children.get(parent, []):
            shown = {k: v for k, v in (s.attributes or {}).items() if k.startswith("gen_ai.")}
            print(f"span: {'  ' * depth}{s.name}  {shown}")
            show(s.context.span_id, depth + 1)

    show(None, 0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--endpoint", help="an OTLP/HTTP traces URL; default: print the tree")
    trio.run(main, parser.parse_args().endpoint)
