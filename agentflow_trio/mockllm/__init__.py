"""The offline mock LLM: a lean trio HTTP server that answers like a model provider.

One job: stand in for a real provider, offline and fast enough never to be the bottleneck.
`open_mock_llm` (or `MockLLM.serve` with ``nursery.start``) speaks the OpenAI chat, Azure
OpenAI, Ollama, Anthropic Messages and OpenAI Responses wires on one loopback port, with
scripted replies (`MockReply`) and fault injection (`Fault`, per model name in
`MockLLMConfig` or per scripted reply); `PreciseClock` makes its latencies end on time.
The service helpers (`open_llm_services`, `check_llm_target`) decide, for the CLI and the
load generator, whether that mock or a configured endpoint answers.

`Fault` (its docstring has the table of kinds) is exported from here only. Public modules:
``mockllm.server`` (the server and its values), ``mockllm.clock`` (`PreciseClock`),
``mockllm.services`` (the CLI's and load generator's model target). The old paths
``agentflow_trio.server.mock_llm`` and ``agentflow_trio.server.clock`` re-export them.
"""

from agentflow_trio.mockllm._faults import Fault as Fault
from agentflow_trio.mockllm.clock import PreciseClock as PreciseClock
from agentflow_trio.mockllm.server import RECEIVED_LIMIT as RECEIVED_LIMIT
from agentflow_trio.mockllm.server import MockLLM as MockLLM
from agentflow_trio.mockllm.server import MockLLMConfig as MockLLMConfig
from agentflow_trio.mockllm.server import MockLLMStats as MockLLMStats
from agentflow_trio.mockllm.server import MockReply as MockReply
from agentflow_trio.mockllm.server import MockToolCall as MockToolCall
from agentflow_trio.mockllm.server import open_mock_llm as open_mock_llm
from agentflow_trio.mockllm.services import LLMServices as LLMServices
from agentflow_trio.mockllm.services import check_llm_target as check_llm_target
from agentflow_trio.mockllm.services import open_llm_services as open_llm_services
from agentflow_trio.mockllm.services import uses_mock as uses_mock

__all__ = [
    "RECEIVED_LIMIT",
    "Fault",
    "LLMServices",
    "MockLLM",
    "MockLLMConfig",
    "MockLLMStats",
    "MockReply",
    "MockToolCall",
    "PreciseClock",
    "check_llm_target",
    "open_llm_services",
    "open_mock_llm",
    "uses_mock",
]

Fault.__module__ = __name__  # tracebacks and reprs name the public path
