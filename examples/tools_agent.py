"""A tool-calling agent against the built-in mock LLM: the model asks for two tools, they
run in parallel, the model answers. Then the same run streamed to the caller
(``runner.stream``): the model's text as it comes, each tool call as it starts and ends,
the result last. Everything runs in this process, over real HTTP.

python examples/tools_agent.py
"""

from __future__ import annotations

import json
from typing import Any

import trio

import agentflow_trio as af
from agentflow_trio.config import LLMConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.mockllm import MockReply, MockToolCall, open_mock_llm
from agentflow_trio.progress import FinalResult, TextDelta, ToolCallFinished, ToolCallStarted
from agentflow_trio.tools import ToolRegistry, tool, tool_agent


@tool
async def search(q: str, limit: int = 3) -> dict[str, Any]:
    """Search the web.

    Args:
        q: What to look for.
        limit: How many hits to return.
    """
    await trio.sleep(0.05)  # stands in for an HTTP call
    return {"hits": [f"result {i} for {q!r}" for i in range(limit)]}


@tool(timeout=2.0)
async def weather(city: str) -> dict[str, Any]:
    """Current weather for a city."""
    await trio.sleep(0.05)
    return {"city": city, "temp_c": 18, "sky": "clear"}


async def main() -> None:
    tools = ToolRegistry([search, weather])
    agent = tool_agent(tools=tools, system="Answer with the tools' help.", max_parallel_tools=4)

    async with open_mock_llm() as mock:
        # The mock answers the first request with two tool calls, the second with text.
        mock.script(
            MockReply(
                tool_calls=(
                    MockToolCall("search", {"q": "structured concurrency"}),
                    MockToolCall("weather", {"city": "Paris"}),
                )
            ),
            MockReply(text="Structured concurrency keeps tasks owned; Paris is 18C and clear."),
        )
        config = LLMConfig(provider="openai", base_url=mock.url + "/v1", api_key="sk-mock")
        async with (
            open_provider(config) as provider,
            af.Runner(agents={"ask": agent}, llm=LLMClient(provider), tools=tools) as runner,
        ):
            start = trio.current_time()
            result = await runner.call(af.Event("ask", {"query": "What is SC? Weather?"}))
            elapsed = trio.current_time() - start

        print("outcome:", result.outcome.value, f"({elapsed * 1000:.0f} ms)")
        print("answer: ", result.output["text"])
        for r in result.output["tool_results"]:
            print(f"  tool {r.name:8} {r.outcome:9} {r.duration * 1000:5.1f} ms  {r.content()}")
        print("tool messages the model received on its second call:")
        for message in mock.received[1]["messages"]:
            if message["role"] == "tool":
                print("  ", json.dumps(message)[:110])

        print("streamed:")
        mock.script(
            MockReply(tool_calls=(MockToolCall("weather", {"city": "Oslo"}),)),
            MockReply(text="Oslo is 18C and clear."),
        )
        async with (
            open_provider(config) as provider,
            af.Runner(agents={"ask": agent}, llm=LLMClient(provider), tools=tools) as runner,
            runner.stream(af.Event("ask", {"query": "Weather in Oslo?"})) as items,
        ):
            async for item in items:
                if isinstance(item, TextDelta):
                    print(f"  text     {item.text!r}")
                elif isinstance(item, ToolCallStarted):
                    print(f"  tool     {item.name} started {dict(item.arguments)}")
                elif isinstance(item, ToolCallFinished):
                    print(f"  tool     {item.name} {item.status} {item.output}")
                elif isinstance(item, FinalResult):
                    print(f"  result   {item.result.outcome.value}: {item.result.output['text']}")


if __name__ == "__main__":
    trio.run(main)
