"""Streaming to the caller: a chat-style caller prints the model's text as it arrives,
while the agent itself reads the same stream. Runs against the built-in mock LLM (a
small delay between chunks, like a real model), in this process, over real HTTP.

python examples/streaming_caller.py
"""

from __future__ import annotations

import trio

import agentflow_trio as af
from agentflow_trio.config import LLMConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.mockllm import MockReply, open_mock_llm
from agentflow_trio.progress import FinalResult, TextDelta, ToolCallFinished, ToolCallStarted


@af.agent
async def storyteller(ctx: af.Context, event: af.Event) -> dict[str, object]:
    """Streams a reply; every chunk also reaches whoever streams this event."""
    text = []  # nothing to do for the caller: ctx.llm.stream sends the text on by itself
    async with ctx.llm.stream(event.data["prompt"]) as chunks:
        async for chunk in chunks:
            text.append(chunk.delta_text)
    return {"words": len("".join(text).split()), "tokens": ctx.usage.total_tokens}


async def main() -> None:
    story = (
        "Once upon a time a nursery owned every task it started, and when the user "
        "walked away, every task stopped with it."
    )
    async with open_mock_llm(stream_chunks=12, stream_delay=0.04) as mock:
        llm = LLMConfig(base_url=mock.url + "/v1", api_key="sk-mock")
        async with (
            open_provider(llm) as provider,
            af.Runner(agents={"story": storyteller}, llm=LLMClient(provider)) as runner,
        ):
            mock.script(MockReply(text=story))
            start = trio.current_time()
            first: float | None = None
            async with runner.stream(af.Event("story", {"prompt": "a story"})) as items:
                async for item in items:
                    if isinstance(item, TextDelta):
                        first = first if first is not None else trio.current_time() - start
                        print(item.text, end="", flush=True)
                    elif isinstance(item, ToolCallStarted | ToolCallFinished):
                        print(f"\n[{type(item).__name__} {item.name}]")
                    elif isinstance(item, FinalResult):
                        total = trio.current_time() - start
                        print(f"\n\nresult: {item.result.outcome.value} {item.result.output}")
                        print(f"first text after {first or 0:.3f}s, the whole answer {total:.3f}s")

            # Leaving early cancels the event: nothing of it keeps running.
            mock.script(MockReply(text=story))
            async with runner.stream(af.Event("story", {"prompt": "again"})) as items:
                async for item in items:
                    if isinstance(item, TextDelta):
                        print(f"\nfirst piece only: {item.text!r}; leaving")
                        break
            print("cancelled:", runner.statistics().cancelled)


if __name__ == "__main__":
    trio.run(main)
