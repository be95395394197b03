"""A load test of the example App, imported from the module next to this script.

    agentcli loadtest --script examples/app_loadtest.py --vus 10 --duration 10s
    agentcli serve --app examples.app:app --port 8080 &
    agentcli loadtest --script examples/app_loadtest.py --target http://127.0.0.1:8080

``agentcli loadtest`` puts this script's folder on the import path, so ``from app import
app`` finds ``examples/app.py``. Without ``--target`` the local runner hosts that App (its
MCP server, sessions and lifespan included); with ``--target`` the server does.
"""

from __future__ import annotations

from app import app as agents  # the App the local runner hosts

from agentflow_trio.loadgen import LoadClient

__all__ = ["agents", "request", "thresholds"]

QUESTIONS = ("What is trio?", "Tell me about MCP.", "Why Redis?")

thresholds = ["errors<1%"]


async def request(client: LoadClient) -> None:
    """One measured request: a question to ``chat``, then a note in this user's session."""
    question = QUESTIONS[client.index % len(QUESTIONS)]
    result = await client.call("chat", {"query": question})
    if result.succeeded:
        session = {"session_id": f"user-{client.index}"}
        await client.call("notes", {"note": question}, metadata=session)
