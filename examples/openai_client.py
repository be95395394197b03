"""Talk to an agent with the official ``openai`` SDK: ``serve``'s OpenAI-compatible face
makes every agent a "model" (its name), so any OpenAI client or chat UI can use it.

This serves a tool-calling agent in this process (against the built-in mock LLM, over
real HTTP on a free loopback port, behind an API key), then, from a worker thread as any
synchronous program would, asks it a question, streams an answer and lists the models.
The same client works against ``agentcli serve --app mymod:app`` (with ``--api-key``):
point ``base_url`` at ``http://HOST:PORT/v1``.

python examples/openai_client.py
"""

from __future__ import annotations

import functools
from typing import Any

import openai
import trio

import agentflow_trio as af
from agentflow_trio.config import LLMConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.mockllm import MockReply, MockToolCall, open_mock_llm
from agentflow_trio.server import make_app, serve
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

API_KEY = "sk-local-example"  # in real life: agentcli serve --api-key / AGENTFLOW_API_KEY


@tool
async def weather(city: str) -> dict[str, Any]:
    """Current weather for a city."""
    return {"city": city, "temp_c": 18, "sky": "sunny"}


def talk(base_url: str) -> None:
    """What a plain OpenAI program does; the "model" is the agent's name."""
    client = openai.OpenAI(base_url=base_url, api_key=API_KEY, timeout=30)
    question = [{"role": "user", "content": "What is the weather in Oslo?"}]

    completion = client.chat.completions.create(model="weather", messages=question)
    print("answer:", completion.choices[0].message.content)
    print("usage: ", completion.usage)

    print("streamed: ", end="")
    with client.chat.completions.create(
        model="weather",
        messages=[*question, {"role": "user", "content": "And tomorrow?"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as chunks:
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
            elif chunk.usage is not None:
                print(f"\nstreamed usage: {chunk.usage.total_tokens} tokens")

    print("models:", [model.id for model in client.models.list()])
    try:
        client.chat.completions.create(model="gpt-4o", messages=question)
    except openai.NotFoundError as exc:
        print("unknown model:", exc.code)


async def main() -> None:
    agent = tool_agent(tools=ToolRegistry([weather]), system="You report the weather.")
    async with open_mock_llm(stream_chunks=8, stream_delay=0.02) as mock:
        # The mock plays the model: ask for the tool, then answer (twice: two questions).
        call = MockToolCall("weather", {"city": "Oslo"}, id="w1")
        mock.script(
            MockReply(tool_calls=(call,)),
            MockReply(text="It is 18 degrees and sunny in Oslo."),
            MockReply(tool_calls=(call,)),
            MockReply(text="Tomorrow looks just as sunny in Oslo."),
        )
        llm = LLMConfig(base_url=mock.url + "/v1", api_key="sk-mock")
        async with (
            open_provider(llm) as provider,
            af.Runner(agents={"weather": agent}, llm=LLMClient(provider)) as runner,
            trio.open_nursery() as nursery,
        ):
            app = make_app(runner, api_key=API_KEY)
            port = await nursery.start(functools.partial(serve, app, port=0))
            await trio.to_thread.run_sync(talk, f"http://127.0.0.1:{port}/v1")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
