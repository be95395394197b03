"""A load-test scenario for ``agentcli loadtest`` (contract: agentflow_trio/loadgen/loadtest.py).

    agentcli loadtest --script examples/loadtest_script.py --vus 20 --duration 30s
    agentcli loadtest --script examples/loadtest_script.py --stages "10s:10,20s:50,10s:0"
    agentcli loadtest --script examples/loadtest_script.py --rate 100/s --duration 30s
    agentcli loadtest --script examples/loadtest_script.py --target http://127.0.0.1:8080 ...

Without ``--target`` the events run on a local Runner serving ``agents`` below, whose LLM is
the built-in mock (or the one ``--config`` names). With ``--target`` they are posted to an
``agentcli serve`` instance, which must serve the same event types (streamed events as
server-sent events: ``POST /v1/events?stream=true``).

The streamed requests (``client.stream``) add a "streamed events" table to the report:
time to first token and inter-token latency, p50/p95/p99, which thresholds can gate::

    agentcli loadtest --script examples/loadtest_script.py --threshold "ttft_p95<200ms"
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
    """One measured request: mostly chat; one in five streams the answer as it is written
    (its tokens are timed)."""
    question = random.choice(QUESTIONS)
    if random.random() < 0.2:
        result = await client.stream(af.Event("stream", {"query": question}))
    else:
        result = await client.call(af.Event("chat", {"query": question}))
    if not result.succeeded:
        return  # the outcome is recorded already; nothing else to do
