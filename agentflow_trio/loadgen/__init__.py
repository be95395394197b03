"""The load generator behind ``agentcli benchmark`` and ``agentcli loadtest``.

`parse_stages` turns ``"5m:100,10m:500"`` into a `Plan`; `run_closed` (virtual users) and
`run_open` (scheduled arrivals) drive any ``async`` target with it and record latency from
each request's intended start; `run_benchmark` and `run_loadtest` put a runner, the
built-in mock LLM and the statistics around them. Streamed events (``--stream``,
`LoadClient.stream`) add time to first token and inter-token latency (`StreamingFigures`,
recorded in a `TokenTimes`).
"""

from ._client import LoadClient as LoadClient
from ._client import SSEConnector as SSEConnector
from ._example import EXAMPLE_AGENTS as EXAMPLE_AGENTS
from ._example import example_agents as example_agents
from ._example import example_event as example_event
from ._generators import Recorder as Recorder
from ._generators import RunSummary as RunSummary
from ._generators import run_closed as run_closed
from ._generators import run_open as run_open
from ._streaming import StreamingFigures as StreamingFigures
from ._streaming import TokenTimes as TokenTimes
from .benchmark import BenchmarkOptions as BenchmarkOptions
from .benchmark import run_benchmark as run_benchmark
from .console import LoadReport as LoadReport
from .console import StageReport as StageReport
from .loadtest import LoadTestOptions as LoadTestOptions
from .loadtest import Scenario as Scenario
from .loadtest import ScriptError as ScriptError
from .loadtest import load_scenario as load_scenario
from .loadtest import run_loadtest as run_loadtest
from .stages import Plan as Plan
from .stages import Stage as Stage
from .stages import StageError as StageError
from .stages import parse_rate as parse_rate
from .stages import parse_stages as parse_stages

__all__ = [
    "EXAMPLE_AGENTS",
    "BenchmarkOptions",
    "LoadClient",
    "LoadReport",
    "LoadTestOptions",
    "Plan",
    "Recorder",
    "RunSummary",
    "SSEConnector",
    "Scenario",
    "ScriptError",
    "Stage",
    "StageError",
    "StageReport",
    "StreamingFigures",
    "TokenTimes",
    "example_agents",
    "example_event",
    "load_scenario",
    "parse_rate",
    "parse_stages",
    "run_benchmark",
    "run_closed",
    "run_loadtest",
    "run_open",
]
