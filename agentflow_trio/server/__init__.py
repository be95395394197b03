"""Servers: the OpenAI-compatible mock LLM (and, later, the runner's HTTP app).

Importing this package is cheap: no web framework (hypercorn) is imported here.
"""

from agentflow_trio.server.mock_llm import (
    MockLLM as MockLLM,
)
from agentflow_trio.server.mock_llm import (
    MockLLMConfig as MockLLMConfig,
)
from agentflow_trio.server.mock_llm import (
    MockLLMStats as MockLLMStats,
)
from agentflow_trio.server.mock_llm import (
    MockReply as MockReply,
)
from agentflow_trio.server.mock_llm import (
    MockToolCall as MockToolCall,
)
from agentflow_trio.server.mock_llm import (
    open_mock_llm as open_mock_llm,
)

__all__ = [
    "MockLLM",
    "MockLLMConfig",
    "MockLLMStats",
    "MockReply",
    "MockToolCall",
    "open_mock_llm",
]
