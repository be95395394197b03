"""A load-test scenario for ``agentcli loadtest`` (contract: agentflow_trio/loadgen/loadtest.py).

    agentcli loadtest --script examples/loadtest_script.py --vus 20 --duration 30s
    agentcli loadtest --script examples/loadtest_script.py --stages "10s:10,20s:50,10s:0"
    agentcli loadtest --script examples/loadtest_script.py --rate 100/s --duration 30s
    agentcli loadtest --script examples/loadtest_script.py --target http://127.0.0.1:8080 ...

Without ``--target`` the events run on a local Runner serving ``agents`` below, whose LLM is
the built-in mock (or the one ``--config`` names). With ``--target`` they are posted to an
``agentcli serve`` instance, which must serve the same event types.
"""

from __future__ import annotations

import random

import agentflow_trio as af
from agentflow_trio.loadgen import EXAMPLE_AGENTS, LoadClient

# The agents a local runner serves: the built-in examples ("chat", "stream", "noop").
agents = dict(EXAMPLE_AGENTS)

QUESTIONS = [
    "What is the capital of France?",
    "Summarise the plot of Hamlet in one line.",
    "Give me a synonym for 'fast'.",
    "How many legs does a spider have?",
]


def think_time() -> float:
    """A user reads the answer for 0-20 ms before asking again (closed model only)."""
    return random.uniform(0.0, 0.02)


async def request(client: LoadClient) -> None:
    """One measured request: mostly chat, one in five streamed."""
    kind = "stream" if random.random() < 0.2 else "chat"
    question = random.choice(QUESTIONS)
    result = await client.call(af.Event(kind, {"query": question}))
    if not result.succeeded:
        return  # the outcome is recorded already; nothing else to do
