"""The old home of the mock LLM, kept so ``agentflow_trio.server.mock_llm`` imports work.

The mock now lives in its own room, :mod:`agentflow_trio.mockllm`; this module only
re-exports its public names. New code imports from ``agentflow_trio.mockllm``.
"""

from agentflow_trio.mockllm import RECEIVED_LIMIT as RECEIVED_LIMIT
from agentflow_trio.mockllm import MockLLM as MockLLM
from agentflow_trio.mockllm import MockLLMConfig as MockLLMConfig
from agentflow_trio.mockllm import MockLLMStats as MockLLMStats
from agentflow_trio.mockllm import MockReply as MockReply
from agentflow_trio.mockllm import MockToolCall as MockToolCall
from agentflow_trio.mockllm import open_mock_llm as open_mock_llm

__all__ = [
    "RECEIVED_LIMIT",
    "MockLLM",
    "MockLLMConfig",
    "MockLLMStats",
    "MockReply",
    "MockToolCall",
    "open_mock_llm",
]
