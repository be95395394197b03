"""Helpers shared by the tests that judge the mock LLM's vendor wires with an official SDK
(``test_mock_anthropic``, ``test_mock_responses``): the mock and an SDK client opened
together under an absolute deadline, a raw POST, and an SSE stream read by event name."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import httpx2
import trio

from agentflow_trio.mockllm import MockLLM, open_mock_llm

TIMEOUT = 10
"""Seconds a whole test body may take; also the clients' timeout."""

ClientT = TypeVar("ClientT", bound=AbstractAsyncContextManager[Any])


@asynccontextmanager
async def serving_with(
    make_client: Callable[[str], ClientT], **overrides: Any
) -> AsyncIterator[tuple[MockLLM, ClientT]]:
    """A mock LLM (``overrides`` of its config) and the client ``make_client`` builds from
    its URL, both closed on the way out, all under ``trio.fail_after(TIMEOUT)``."""
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(**overrides) as mock:
            client = make_client(mock.url)
            async with client:
                yield mock, client


async def post(
    mock: MockLLM, path: str, body: Any, headers: Mapping[str, str] | None = None
) -> httpx2.Response:
    """One raw JSON POST to the mock on a fresh connection, read whole: the wire as it is,
    not as the SDK forgives it."""
    async with httpx2.AsyncClient(base_url=mock.url, timeout=TIMEOUT) as http:
        return await http.post(path, json=body, headers=headers)


def sse(text: str) -> list[tuple[str, Any]]:
    """``(event name, data)`` of each server-sent event."""
    assert text.endswith("\n\n"), "an SSE stream ends with a blank line"
    events = []
    for block in text.split("\n\n")[:-1]:
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events
