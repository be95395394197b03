"""A model group across vendors: OpenAI first, Anthropic when OpenAI fails.

The config (the TOML below, as it would sit in ``agentflow.toml``) has an ``[llm.openai]``
deployment serving the model group ``smart`` and an ``[llm.anthropic]`` one (the Messages
API, spoken natively) as that group's fallback. Two built-in mock LLMs stand in for the
two vendors, in this process, over real HTTP on free loopback ports. The script asks the
group while OpenAI is healthy, then makes the OpenAI mock answer 429 and asks again,
plainly and streamed: each answer says which deployment and model served it, and its
usage is that vendor's alone. An agent then runs a tool turn on the same group: the calls
run, the answer comes back, and the run's usage names the model that answered.

python examples/anthropic_failover.py

Against the real APIs, drop ``base_url`` from both tables and give the keys
(``api_key``, or ``AGENTFLOW_LLM__...`` environment variables, as in the README).
"""

from __future__ import annotations

import tomllib
from typing import Any

import attrs
import trio

import agentflow_trio as af
from agentflow_trio.llm import open_llm_client
from agentflow_trio.mockllm import Fault, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

CONFIG = """
[llm.openai]
model = "gpt-4o-mini"
group = "smart"            # callers ask for the model group "smart"
api_key = "sk-test"
base_url = "{openai}/v1"

[llm.anthropic]
model = "claude-sonnet-4-5"
group = "claude"
api_key = "sk-ant-test"
base_url = "{anthropic}"

[llm.router.groups.smart]
fallbacks = ["claude"]     # when OpenAI fails (429, 5xx, reset, timeout...), ask Anthropic
"""
QUESTION = "In one sentence: why do structured concurrency and fail-over go together?"


@tool
async def weather(city: str) -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temp_c": 18}


def describe(response: Any) -> str:
    usage = response.usage
    tokens = f"{usage.prompt_tokens} in / {usage.completion_tokens} out" if usage else "-"
    return f"{response.deployment} ({response.model}), usage {tokens}: {response.text!r}"


async def main() -> None:
    async with (
        open_mock_llm() as openai_mock,
        open_mock_llm(stream_chunks=6) as anthropic_mock,
    ):
        text = CONFIG.format(openai=openai_mock.url, anthropic=anthropic_mock.url)
        config = af.Config.from_mapping(tomllib.loads(text))
        async with open_llm_client(config.llm) as llm:
            healthy = await llm.complete(QUESTION, model="smart")
            print("healthy:", describe(healthy))

            # OpenAI starts answering 429 (rate limited, Retry-After 30 s)
            faults = {"gpt-4o-mini": (Fault("rate_limit", retry_after=30.0),)}
            openai_mock.config = attrs.evolve(openai_mock.config, faults=faults)
            failed_over = await llm.complete(QUESTION, model="smart")
            print("openai rate limited:", describe(failed_over))

            async with llm.stream(QUESTION, model="smart") as chunks:
                pieces = [chunk async for chunk in chunks]
            last = pieces[-1]
            streamed = "".join(c.delta_text for c in pieces)
            print(f"streamed: {last.deployment} ({last.model}) in {len(pieces)} chunks:", streamed)

            anthropic_mock.script(
                MockReply(tool_calls=(MockToolCall("weather", {"city": "Paris"}),)),
                MockReply(text="Paris is 18C."),
            )
            agent = tool_agent(tools=ToolRegistry([weather]), request_fields={"model": "smart"})
            async with af.Runner(agents={"ask": agent}, llm=llm) as runner:
                result = await runner.call(af.Event("ask", {"query": "Weather in Paris?"}))
            usage = result.usage
            models = sorted(usage.by_model) if usage is not None else []
            print(f"tool agent: {result.output['text']!r} after {result.output['steps']} steps;")
            print("tool agent models:", ", ".join(models))

        print("openai mock:", dict(openai_mock.stats().by_status))
        print("anthropic mock:", dict(anthropic_mock.stats().by_path))


if __name__ == "__main__":
    trio.run(main)
