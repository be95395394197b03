"""A testing kit for agents, runners and schedulers built on agentflow_trio.

- `TraceRecorder` records any runner through its hooks into a `Trace`; `check_trace`
  checks the five invariants (conservation, bounds, timeouts, order, shutdown) and raises
  `InvariantViolation` naming the invariant, the rule and the event id.
- `Workload` / `EventSpec` describe traffic; `replay` runs one under the autojump clock
  (`drive` inside a running trio run) and returns its trace.
- `FakeLLM`, `LLMBehaviour`, `ToolBehaviour`, `scripted_tool`, `MCPTestServer`: scripted
  models, faulty mock-LLM settings, misbehaving tools and a real MCP server.
- ``strategies`` (hypothesis, imported on first use): `workloads`, `event_specs`,
  `events`, `llm_behaviours`, `mock_replies`, `fake_replies`, `tool_behaviours` ...
- ``plugin`` (pytest, loaded by the ``pytest11`` entry point): the ``runner_factory``,
  ``fake_llm``, ``mock_llm`` and ``mcp_server`` fixtures.
"""

from typing import TYPE_CHECKING, Any

from .factory import TEARDOWN_INVARIANTS as TEARDOWN_INVARIANTS
from .factory import RunnerFactory as RunnerFactory
from .factory import runner_config as runner_config
from .fakes import FakeLLM as FakeLLM
from .fakes import LLMBehaviour as LLMBehaviour
from .fakes import ScriptItem as ScriptItem
from .fakes import ToolBehaviour as ToolBehaviour
from .fakes import ToolBehaviourError as ToolBehaviourError
from .fakes import delayed as delayed
from .fakes import mock_llm_config as mock_llm_config
from .fakes import scripted_tool as scripted_tool
from .hosting import open_test_app as open_test_app
from .hosting import pointed_at as pointed_at
from .invariants import ALL_INVARIANTS as ALL_INVARIANTS
from .invariants import Invariant as Invariant
from .invariants import InvariantViolation as InvariantViolation
from .invariants import Violation as Violation
from .invariants import check_trace as check_trace
from .invariants import find_violations as find_violations
from .recorder import TraceRecorder as TraceRecorder
from .servers import MCP_SERVER_SCRIPT as MCP_SERVER_SCRIPT
from .servers import MCP_TEST_TOOLS as MCP_TEST_TOOLS
from .servers import MCPTestServer as MCPTestServer
from .trace import Bounds as Bounds
from .trace import EventRecord as EventRecord
from .trace import Phase as Phase
from .trace import PriorityOrder as PriorityOrder
from .trace import Sample as Sample
from .trace import Step as Step
from .trace import Trace as Trace
from .workload import EmitMode as EmitMode
from .workload import EventSpec as EventSpec
from .workload import RunnerBuilder as RunnerBuilder
from .workload import Workload as Workload
from .workload import WorkloadFailure as WorkloadFailure
from .workload import drive as drive
from .workload import replay as replay
from .workload import workload_agent as workload_agent

if TYPE_CHECKING:
    from .strategies import event_specs as event_specs
    from .strategies import events as events
    from .strategies import fake_replies as fake_replies
    from .strategies import json_values as json_values
    from .strategies import llm_behaviours as llm_behaviours
    from .strategies import mock_llm_configs as mock_llm_configs
    from .strategies import mock_replies as mock_replies
    from .strategies import tool_behaviours as tool_behaviours
    from .strategies import workloads as workloads

__all__ = [
    "ALL_INVARIANTS",
    "MCP_SERVER_SCRIPT",
    "MCP_TEST_TOOLS",
    "TEARDOWN_INVARIANTS",
    "Bounds",
    "EmitMode",
    "EventRecord",
    "EventSpec",
    "FakeLLM",
    "Invariant",
    "InvariantViolation",
    "LLMBehaviour",
    "MCPTestServer",
    "Phase",
    "PriorityOrder",
    "RunnerBuilder",
    "RunnerFactory",
    "Sample",
    "ScriptItem",
    "Step",
    "ToolBehaviour",
    "ToolBehaviourError",
    "Trace",
    "TraceRecorder",
    "Violation",
    "Workload",
    "WorkloadFailure",
    "check_trace",
    "delayed",
    "drive",
    "event_specs",
    "events",
    "fake_replies",
    "find_violations",
    "json_values",
    "llm_behaviours",
    "mock_llm_config",
    "mock_llm_configs",
    "mock_replies",
    "open_test_app",
    "pointed_at",
    "replay",
    "runner_config",
    "scripted_tool",
    "tool_behaviours",
    "workload_agent",
    "workloads",
]

_STRATEGIES = frozenset(
    {
        "event_specs",
        "events",
        "fake_replies",
        "json_values",
        "llm_behaviours",
        "mock_llm_configs",
        "mock_replies",
        "tool_behaviours",
        "workloads",
    }
)


def __getattr__(name: str) -> Any:
    if name in _STRATEGIES:  # hypothesis is a dev dependency: import it on first use
        from . import strategies

        value = getattr(strategies, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agentflow_trio.testing' has no attribute {name!r}")
