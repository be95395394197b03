"""The shape a user writes: plain trio functions as agents, one Runner that owns them.

python examples/quickstart.py
"""

from __future__ import annotations

from typing import Any

import trio

import agentflow_trio as af


@af.agent
async def classify(ctx: af.Context, event: af.Event) -> str:
    """Decide which team handles a ticket."""
    text = event.data["text"].lower()
    return "billing" if "invoice" in text or "refund" in text else "support"


@af.agent
async def draft_reply(ctx: af.Context, event: af.Event) -> str:
    """Write a reply for the team chosen by the previous step."""
    await trio.sleep(0.01)  # stands in for a model call
    return f"[{ctx.previous}] Thanks, we are on it: {event.data['text']!r}"


@af.agent
async def sentiment(ctx: af.Context, event: af.Event) -> str:
    return "angry" if "!" in event.data["text"] else "calm"


@af.agent
async def flaky(ctx: af.Context, event: af.Event) -> None:
    raise RuntimeError("this agent always fails; the runner keeps going")


async def main() -> None:
    triage = af.sequential(classify, draft_reply, name="triage")
    review = af.collaborate(triage, sentiment, name="review")  # one nursery, merged results
    config = af.Config.from_mapping({"runner": {"worker_pool_size": 8, "event_timeout": "5s"}})

    async with af.Runner(config, agents={"ticket": review, "flaky": flaky}) as runner:
        result = await runner.call(af.Event("ticket", {"text": "My invoice is wrong!"}))
        print("outcome:", result.outcome.value)
        print("output: ", result.output)

        # Fan out many events; the runner bounds concurrency and queues the rest.
        handles = [
            await runner.emit(af.Event("ticket", {"text": f"question {i}"})) for i in range(100)
        ]
        results: list[Any] = [await h.result() for h in handles]
        print("100 tickets:", sum(r.succeeded for r in results), "succeeded")

        failed = await runner.call(af.Event("flaky"))
        assert failed.error is not None
        print("flaky:", failed.outcome.value, "-", failed.error)

    print("stats:", runner.statistics())


if __name__ == "__main__":
    trio.run(main)
