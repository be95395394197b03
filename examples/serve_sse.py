"""Streaming an event over HTTP as Server-Sent Events: ``serve_runner`` (what ``agentcli
serve`` runs) serves an agent that streams its model's reply (``ctx.llm.stream``); a client
POSTs ``/v1/events?stream=true`` and prints each SSE event as it arrives, the result last.
The model is the built-in mock LLM (a small delay between chunks, like a real model);
everything runs in this process, over real HTTP on free loopback ports.

python examples/serve_sse.py
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import trio

import agentflow_trio as af
from agentflow_trio.mockllm import MockReply, open_mock_llm
from agentflow_trio.server import ServedRunner, serve_runner

STORY = "A nursery owned every task it started, and when the caller left, every task stopped."


@af.agent
async def storyteller(ctx: af.Context, event: af.Event) -> dict[str, Any]:
    """Streams a reply; every chunk also reaches whoever streams this event."""
    text = []
    async with ctx.llm.stream(event.data["prompt"]) as chunks:
        async for chunk in chunks:
            text.append(chunk.delta_text)
    return {"story": "".join(text), "words": len("".join(text).split())}


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[int, str, Any]]:
    """Each SSE event as ``(id, event name, decoded data)``; a blank line ends an event."""
    fields: dict[str, str] = {}
    async for line in lines:
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif fields:
            yield int(fields["id"]), fields["event"], json.loads(fields["data"])
            fields = {}


async def main() -> None:
    async with open_mock_llm(stream_chunks=10, stream_delay=0.02) as mock:
        mock.script(MockReply(text=STORY))
        config = af.Config.from_mapping({"llm": {"base_url": mock.url + "/v1", "api_key": "sk"}})
        async with trio.open_nursery() as nursery:
            served: ServedRunner = await nursery.start(
                functools.partial(serve_runner, config, {"story": storyteller}, port=0)
            )
            print("serving on", served.url)
            body = {"type": "story", "data": {"prompt": "Tell me a story."}}
            async with (
                httpx2.AsyncClient(base_url=served.url, timeout=30) as client,
                client.stream("POST", "/v1/events?stream=true", json=body) as response,
            ):
                print("status:", response.status_code, response.headers["content-type"])
                async for number, name, data in sse_events(response.aiter_lines()):
                    if name == "result":
                        output = json.dumps(data["output"])
                        print(f"event {number} result:", data["outcome"], output)
                        print("usage: ", json.dumps(data["usage"]))
                    else:
                        print(f"event {number} {name}: {json.dumps(data)}")
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
