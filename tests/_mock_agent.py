"""One event run by an agent against the built-in mock LLM scripted with its replies:
shared by the end-to-end tool-loop tests."""

from __future__ import annotations

from typing import Literal

import agentflow_trio as af
from agentflow_trio.config import RetryConfig
from agentflow_trio.llm import LLMClient, open_provider
from agentflow_trio.mockllm import MockLLM, MockReply, open_mock_llm
from agentflow_trio.testing import mock_llm_config


async def call_on_mock(
    agent: af.Agent,
    event: af.Event,
    *replies: MockReply,
    dialect: Literal["openai", "azure", "ollama"] = "openai",
) -> tuple[af.AgentResult, MockLLM]:
    """``event``'s result from a runner with ``agent`` as ``event.type``, its model the mock
    LLM (on 127.0.0.1 port 0, spoken to in ``dialect``, no retries) scripted with
    ``replies``; and the mock, closed (``mock.received``: the requests it was sent).
    Real I/O: call it under an absolute ``trio.fail_after``."""
    async with (
        open_mock_llm() as mock,
        open_provider(mock_llm_config(mock, dialect, retry=RetryConfig(enabled=False))) as provider,
    ):
        mock.script(*replies)
        async with af.Runner(agents={event.type: agent}, llm=LLMClient(provider)) as runner:
            result = await runner.call(event)
    return result, mock
