"""agentflow_trio: high-throughput LLM agent systems on Trio, where nothing runs unowned.

Layers (dependencies point down only)::

    cli -> loadgen / server / distributed
        -> runner, orchestrators, llm, tools, mcp
        -> resilience, observability
        -> agents, events, state, errors, config

This module only re-exports the public API; heavy optional dependencies (mcp, coredis,
hypercorn) are imported by the subpackages that need them, never here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .agents import Agent as Agent
from .agents import Context as Context
from .agents import Hooks as Hooks
from .agents import agent as agent
from .agents import loop as loop
from .agents import parallel as parallel
from .agents import sequential as sequential
from .config import Config as Config
from .config import DeploymentConfig as DeploymentConfig
from .config import MCPConfig as MCPConfig
from .config import MCPServerConfig as MCPServerConfig
from .config import TracingConfig as TracingConfig
from .config import load_config as load_config
from .errors import AgentError as AgentError
from .errors import AgentFailed as AgentFailed
from .errors import AgentFlowError as AgentFlowError
from .errors import BrokerUnavailable as BrokerUnavailable
from .errors import CircuitOpenError as CircuitOpenError
from .errors import ConfigError as ConfigError
from .errors import LLMError as LLMError
from .errors import LocalRateLimitError as LocalRateLimitError
from .errors import MCPError as MCPError
from .errors import OutputRefusedError as OutputRefusedError
from .errors import OutputValidationError as OutputValidationError
from .errors import Overloaded as Overloaded
from .errors import QueueFull as QueueFull
from .errors import ResultTimeout as ResultTimeout
from .errors import RunnerClosed as RunnerClosed
from .errors import RunnerError as RunnerError
from .errors import SchemaValidationError as SchemaValidationError
from .errors import ToolArgumentError as ToolArgumentError
from .errors import ToolError as ToolError
from .errors import UnknownAgent as UnknownAgent
from .errors import UnknownTool as UnknownTool
from .errors import UsageLimitExceeded as UsageLimitExceeded
from .events import AgentResult as AgentResult
from .events import ErrorInfo as ErrorInfo
from .events import Event as Event
from .events import Outcome as Outcome
from .orchestrators import collaborate as collaborate
from .orchestrators import route as route
from .progress import FinalResult as FinalResult
from .progress import PartialOutput as PartialOutput
from .progress import ProgressItem as ProgressItem
from .progress import TextDelta as TextDelta
from .progress import ToolCallFinished as ToolCallFinished
from .progress import ToolCallStarted as ToolCallStarted
from .runner import EventHandle as EventHandle
from .runner import Runner as Runner
from .runner import RunnerStatistics as RunnerStatistics
from .services import Services as Services
from .state import SessionBackend as SessionBackend
from .state import SessionConflict as SessionConflict
from .state import SessionDataError as SessionDataError
from .state import SessionError as SessionError
from .state import SessionSnapshot as SessionSnapshot
from .state import SessionStore as SessionStore
from .state import SessionTooLarge as SessionTooLarge
from .state import State as State
from .usage import RunUsage as RunUsage
from .usage import UsageLimits as UsageLimits

if TYPE_CHECKING:
    from .app import App as App
    from .app import RunningApp as RunningApp
    from .distributed import RemoteRunner as RemoteRunner
    from .distributed import Worker as Worker
    from .distributed import run_worker as run_worker
    from .llm import ChatRequest as ChatRequest
    from .llm import ChatResponse as ChatResponse
    from .llm import FakeProvider as FakeProvider
    from .llm import LLMClient as LLMClient
    from .llm import Message as Message
    from .llm import OutputStream as OutputStream
    from .llm import Provider as Provider
    from .llm import Router as Router
    from .llm import RouterStatistics as RouterStatistics
    from .llm import StreamChunk as StreamChunk
    from .llm import ToolCall as ToolCall
    from .llm import ToolSpec as ToolSpec
    from .llm import Usage as Usage
    from .llm import assistant as assistant
    from .llm import open_llm_client as open_llm_client
    from .llm import open_provider as open_provider
    from .llm import system as system
    from .llm import tool_message as tool_message
    from .llm import user as user
    from .mcp import MCPManager as MCPManager
    from .schema import TypeSchema as TypeSchema
    from .tools import BoundTools as BoundTools
    from .tools import FunctionTool as FunctionTool
    from .tools import ToolRegistry as ToolRegistry
    from .tools import ToolResult as ToolResult
    from .tools import call_many as call_many
    from .tools import open_tool_stream as open_tool_stream
    from .tools import paged_tool as paged_tool
    from .tools import tool as tool
    from .tools import tool_agent as tool_agent
    from .tools import walk_pages as walk_pages

__version__ = "0.1.0.dev0"

# Names re-exported on first use, so `import agentflow_trio` stays cheap (httpx2 is only
# imported by code that talks to a model, the mcp SDK only by code that uses MCP).
_LAZY: dict[str, str] = {
    "BoundTools": "agentflow_trio.tools",
    "FunctionTool": "agentflow_trio.tools",
    "ToolRegistry": "agentflow_trio.tools",
    "ToolResult": "agentflow_trio.tools",
    "call_many": "agentflow_trio.tools",
    "open_tool_stream": "agentflow_trio.tools",
    "paged_tool": "agentflow_trio.tools",
    "tool": "agentflow_trio.tools",
    "tool_agent": "agentflow_trio.tools",
    "walk_pages": "agentflow_trio.tools",
    "MCPManager": "agentflow_trio.mcp",
    "App": "agentflow_trio.app",
    "RunningApp": "agentflow_trio.app",
    "TypeSchema": "agentflow_trio.schema",
    "open_tracing": "agentflow_trio.observability.tracing",
}
_LAZY |= {name: "agentflow_trio.distributed" for name in ("RemoteRunner", "Worker", "run_worker")}
_LAZY |= {
    name: "agentflow_trio.llm"
    for name in (
        "ChatRequest",
        "ChatResponse",
        "FakeProvider",
        "LLMClient",
        "Message",
        "OutputStream",
        "Provider",
        "ProviderItem",
        "Router",
        "RouterStatistics",
        "StreamChunk",
        "ToolCall",
        "ToolSpec",
        "Usage",
        "assistant",
        "open_llm_client",
        "open_provider",
        "system",
        "tool_message",
        "user",
    )
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentflow_trio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Agent",
    "AgentError",
    "AgentFailed",
    "AgentFlowError",
    "AgentResult",
    "App",
    "BoundTools",
    "BrokerUnavailable",
    "ChatRequest",
    "ChatResponse",
    "CircuitOpenError",
    "Config",
    "ConfigError",
    "Context",
    "DeploymentConfig",
    "ErrorInfo",
    "Event",
    "EventHandle",
    "FakeProvider",
    "FinalResult",
    "FunctionTool",
    "Hooks",
    "LLMClient",
    "LLMError",
    "LocalRateLimitError",
    "MCPConfig",
    "MCPError",
    "MCPManager",
    "MCPServerConfig",
    "Message",
    "Outcome",
    "OutputRefusedError",
    "OutputStream",
    "OutputValidationError",
    "Overloaded",
    "PartialOutput",
    "ProgressItem",
    "Provider",
    "ProviderItem",
    "QueueFull",
    "RemoteRunner",
    "ResultTimeout",
    "Router",
    "RouterStatistics",
    "RunUsage",
    "Runner",
    "RunnerClosed",
    "RunnerError",
    "RunnerStatistics",
    "RunningApp",
    "SchemaValidationError",
    "Services",
    "SessionBackend",
    "SessionConflict",
    "SessionDataError",
    "SessionError",
    "SessionSnapshot",
    "SessionStore",
    "SessionTooLarge",
    "State",
    "StreamChunk",
    "TextDelta",
    "ToolArgumentError",
    "ToolCall",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "ToolSpec",
    "TracingConfig",
    "TypeSchema",
    "UnknownAgent",
    "UnknownTool",
    "Usage",
    "UsageLimitExceeded",
    "UsageLimits",
    "Worker",
    "__version__",
    "agent",
    "assistant",
    "call_many",
    "collaborate",
    "load_config",
    "loop",
    "open_llm_client",
    "open_provider",
    "open_tool_stream",
    "open_tracing",
    "paged_tool",
    "parallel",
    "route",
    "run_worker",
    "sequential",
    "system",
    "tool",
    "tool_agent",
    "tool_message",
    "user",
    "walk_pages",
]


def _fixup_module_metadata() -> None:
    # Tracebacks say agentflow_trio.RunnerClosed, not agentflow_trio.errors.RunnerClosed.
    # Only exceptions: other classes keep their module so string annotations resolve.
    for name in __all__:
        obj = globals().get(name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            obj.__module__ = __name__


_fixup_module_metadata()
