"""Usage and budgets: what each event's model calls spent, and a budget that stops a
looping agent before its next call. Runs against the built-in mock LLM, in this process,
over real HTTP.

python examples/usage_limits.py
"""

from __future__ import annotations

from typing import Any

import trio

import agentflow_trio as af
from agentflow_trio.config import Config, LLMConfig, PriceConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.mockllm import MockReply, MockToolCall, open_mock_llm
from agentflow_trio.tools import ToolRegistry, tool, tool_agent
from agentflow_trio.usage import UsageLimits


@tool
async def search(q: str) -> dict[str, Any]:
    """Search the web."""
    await trio.sleep(0.01)  # stands in for an HTTP call
    return {"hits": [f"{q}: result {i}" for i in range(3)]}


def replies() -> list[MockReply]:
    """The model looks things up twice, then answers (the mock reports each call's usage)."""
    return [
        MockReply(tool_calls=(MockToolCall("search", {"q": "trio nurseries"}),)),
        MockReply(tool_calls=(MockToolCall("search", {"q": "cancel scopes"}),)),
        MockReply(text="Nurseries own tasks; cancel scopes bound them.", cached_tokens=4),
    ]


def show(label: str, result: af.AgentResult) -> None:
    usage = result.usage
    assert usage is not None
    cost = "unknown" if usage.cost is None else f"${usage.cost:.8f}"
    print(f"{label}: {result.outcome.value}")
    print(f"  {usage.requests} requests, {usage.input_tokens} in ({usage.cached_tokens} cached),")
    print(f"  {usage.output_tokens} out, {usage.total_tokens} total, cost {cost}")
    print(f"  by model: {', '.join(usage.by_model)}")
    if result.error is not None:
        print(f"  error: {result.error}")


async def main() -> None:
    agent = tool_agent(tools=ToolRegistry([search]), system="Use the tools, then answer.")
    prices = {"gpt-4o-mini": PriceConfig(input=0.15, output=0.60, cached_input=0.075)}
    async with open_mock_llm() as mock:
        llm = LLMConfig(base_url=mock.url + "/v1", api_key="sk-mock", prices=prices)
        # Every event may make at most 10 model calls, unless told tighter.
        config = Config.from_mapping({"limits": {"max_requests": 10}})
        config = af.Config(runner=config.runner, limits=config.limits, llm=llm)
        async with (
            open_provider(llm) as provider,
            af.Runner(config, agents={"ask": agent}, llm=LLMClient(provider)) as runner,
        ):
            mock.script(*replies())
            event = af.Event("ask", {"query": "How does trio keep tasks owned?"})
            done = await runner.call(event)
            show("no budget", done)

            # The same question with a token budget below what the loop needs: room for
            # the first call (its estimate counts the tool's schema), not for the second.
            mock.reset()
            mock.script(*replies())
            assert done.usage is not None
            budget = UsageLimits(max_total_tokens=done.usage.total_tokens * 2 // 3)
            stopped = await runner.call(event, limits=budget)
            show(f"max_total_tokens={budget.max_total_tokens}", stopped)
            print(f"  the mock saw {mock.stats().chat} request(s) this time")
            print("runner:", runner.statistics().usage_limit_exceeded, "over budget")


if __name__ == "__main__":
    trio.run(main)
