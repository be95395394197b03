"""Structured output against the built-in mock LLM: ask for a type, get a validated value of
it back. A reply that does not fit goes back to the model with what is wrong, once; the
streaming variant shows the value growing as it arrives. Everything runs in this process,
over real HTTP.

python examples/structured_output.py
"""

from __future__ import annotations

import json
from typing import Literal

import attrs
import trio

import agentflow_trio as af
from agentflow_trio.config import LLMConfig
from agentflow_trio.errors import OutputValidationError
from agentflow_trio.llm import open_llm_client
from agentflow_trio.mockllm import MockReply, MockToolCall, open_mock_llm


@attrs.frozen
class City:
    name: str
    country: str
    population: int


@af.agent
async def city_facts(ctx: af.Context, event: af.Event) -> City:
    """An agent whose result is a typed value, not text."""
    return await ctx.llm.complete([af.user(event.data["question"])], output_type=City)


async def main() -> None:
    async with open_mock_llm(stream_chunks=8) as mock:
        config = LLMConfig(provider="openai", base_url=mock.url + "/v1", api_key="sk-mock")
        async with open_llm_client(config) as llm:
            # 1. The model's first answer does not fit (population is not an integer); the
            #    problem goes back to it and the second answer is returned as a City.
            mock.script(
                MockReply(text='{"name": "Paris", "country": "France", "population": "lots"}'),
                MockReply(text='{"name": "Paris", "country": "France", "population": 2102650}'),
            )
            city = await llm.complete("The capital of France?", output_type=City)
            print("native mode:", city)
            print("  the re-ask the model got:")
            for line in mock.received[-1]["messages"][-1]["content"].splitlines():
                print("   ", line)

            # 2. The same through a forced tool call, for lists and Literals too.
            mock.script(
                MockReply(tool_calls=(MockToolCall("final_result", {"result": ["yes"]}),)),
            )
            answers = await llm.complete(
                "Is Paris in France?", output_type=list[Literal["yes", "no"]], output_mode="tool"
            )
            print("tool mode:  ", answers)

            # 3. No retries left: the error keeps every raw reply.
            mock.script(MockReply(text="Paris, I believe."))
            try:
                await llm.complete("Capital?", output_type=City, output_retries=0)
            except OutputValidationError as exc:
                print("failed:     ", exc.attempts, "->", exc.problems[0]["expected"])

            # 4. Streamed: partial values as the JSON arrives, then the validated City.
            lyon = {"name": "Lyon", "country": "France", "population": 522250}
            mock.script(MockReply(text=json.dumps(lyon)))
            async with llm.stream_output("The third city of France?", output_type=City) as s:
                async for partial in s:
                    print("  partial:", partial)
                print("streamed:   ", s.output)

            # 5. In an agent: the result's output is the City.
            mock.script(MockReply(text=json.dumps(lyon)))
            async with af.Runner(agents={"facts": city_facts}, llm=llm) as runner:
                result = await runner.call(af.Event("facts", {"question": "Lyon?"}))
            print("agent:      ", result.outcome.value, result.output)


if __name__ == "__main__":
    trio.run(main)
