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

from .agents import Agent as Agent
from .agents import Context as Context
from .agents import Hooks as Hooks
from .agents import agent as agent
from .agents import loop as loop
from .agents import parallel as parallel
from .agents import sequential as sequential
from .config import Config as Config
from .config import load_config as load_config
from .errors import AgentError as AgentError
from .errors import AgentFailed as AgentFailed
from .errors import AgentFlowError as AgentFlowError
from .errors import CircuitOpenError as CircuitOpenError
from .errors import ConfigError as ConfigError
from .errors import LLMError as LLMError
from .errors import Overloaded as Overloaded
from .errors import QueueFull as QueueFull
from .errors import RunnerClosed as RunnerClosed
from .errors import RunnerError as RunnerError
from .errors import UnknownAgent as UnknownAgent
from .events import AgentResult as AgentResult
from .events import ErrorInfo as ErrorInfo
from .events import Event as Event
from .events import Outcome as Outcome
from .orchestrators import collaborate as collaborate
from .orchestrators import route as route
from .runner import EventHandle as EventHandle
from .runner import Runner as Runner
from .runner import RunnerStatistics as RunnerStatistics
from .state import SessionStore as SessionStore
from .state import State as State

__version__ = "0.1.0.dev0"

__all__ = [
    "Agent",
    "AgentError",
    "AgentFailed",
    "AgentFlowError",
    "AgentResult",
    "CircuitOpenError",
    "Config",
    "ConfigError",
    "Context",
    "ErrorInfo",
    "Event",
    "EventHandle",
    "Hooks",
    "LLMError",
    "Outcome",
    "Overloaded",
    "QueueFull",
    "Runner",
    "RunnerClosed",
    "RunnerError",
    "RunnerStatistics",
    "SessionStore",
    "State",
    "UnknownAgent",
    "__version__",
    "agent",
    "collaborate",
    "load_config",
    "loop",
    "parallel",
    "route",
    "sequential",
]


def _fixup_module_metadata() -> None:
    # Tracebacks say agentflow_trio.RunnerClosed, not agentflow_trio.errors.RunnerClosed.
    # Only exceptions: other classes keep their module so string annotations resolve.
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and issubclass(obj, BaseException):
            obj.__module__ = __name__


_fixup_module_metadata()
