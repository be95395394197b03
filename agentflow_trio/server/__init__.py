"""The runner's HTTP face: `make_app` (ASGI: ``/v1/events``, SSE, the OpenAI-compatible
face) and `serve` (hypercorn on trio).

Importing this package is cheap: no web framework (hypercorn) is imported here. The HTTP
app's names (`make_app`, `serve`, ...) load ``server.app`` on first use, and hypercorn
itself is imported only when `serve` runs.

The mock LLM moved to its own room, :mod:`agentflow_trio.mockllm`; its names (`open_mock_llm`,
`MockReply`, `PreciseClock`, ...) are still re-exported here, as are the modules
``server.mock_llm`` and ``server.clock``, so old imports keep working.
"""

from typing import TYPE_CHECKING, Any

from agentflow_trio.mockllm import MockLLM as MockLLM
from agentflow_trio.mockllm import MockLLMConfig as MockLLMConfig
from agentflow_trio.mockllm import MockLLMStats as MockLLMStats
from agentflow_trio.mockllm import MockReply as MockReply
from agentflow_trio.mockllm import MockToolCall as MockToolCall
from agentflow_trio.mockllm import PreciseClock as PreciseClock
from agentflow_trio.mockllm import open_mock_llm as open_mock_llm

if TYPE_CHECKING:
    from agentflow_trio.server.app import MetricsRenderer as MetricsRenderer
    from agentflow_trio.server.app import ServeApp as ServeApp
    from agentflow_trio.server.app import make_app as make_app
    from agentflow_trio.server.app import result_json as result_json
    from agentflow_trio.server.app import serve as serve

__all__ = [
    "MetricsRenderer",
    "MockLLM",
    "MockLLMConfig",
    "MockLLMStats",
    "MockReply",
    "MockToolCall",
    "PreciseClock",
    "ServeApp",
    "make_app",
    "open_mock_llm",
    "result_json",
    "serve",
]

_LAZY = frozenset({"MetricsRenderer", "ServeApp", "make_app", "result_json", "serve"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from agentflow_trio.server import app

        value = getattr(app, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agentflow_trio.server' has no attribute {name!r}")
