"""The runner's HTTP face: `make_app` (ASGI: ``/v1/events``, SSE, the OpenAI-compatible
face), `serve` (the project's HTTP/1.1 server on trio) and `serve_runner` (model client,
metrics, runner and HTTP face assembled in one call: what ``agentcli serve`` runs).

Importing this package is cheap: no HTTP server is imported here. The HTTP
app's names (`make_app`, `serve`, ...) load ``server.app`` on first use, `serve_runner`
and its companions load ``server.service``, ``agentcli serve --workers``'s supervisor
(`supervise_workers`) loads ``server._workers``, and the HTTP server (``server._http``,
on httptools) is imported only when `serve` runs.

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
    from agentflow_trio.server._workers import WorkerPlan as WorkerPlan
    from agentflow_trio.server._workers import bind_worker_socket as bind_worker_socket
    from agentflow_trio.server._workers import exit_with_parent as exit_with_parent
    from agentflow_trio.server._workers import supervise_workers as supervise_workers
    from agentflow_trio.server.app import MetricsRenderer as MetricsRenderer
    from agentflow_trio.server.app import ServeApp as ServeApp
    from agentflow_trio.server.app import make_app as make_app
    from agentflow_trio.server.app import result_json as result_json
    from agentflow_trio.server.app import serve as serve
    from agentflow_trio.server.service import Companion as Companion
    from agentflow_trio.server.service import HostedApp as HostedApp
    from agentflow_trio.server.service import ServedRunner as ServedRunner
    from agentflow_trio.server.service import check_host as check_host
    from agentflow_trio.server.service import listen_error as listen_error
    from agentflow_trio.server.service import only_os_error as only_os_error
    from agentflow_trio.server.service import open_hosted_app as open_hosted_app
    from agentflow_trio.server.service import serve_runner as serve_runner

__all__ = [
    "Companion",
    "HostedApp",
    "MetricsRenderer",
    "MockLLM",
    "MockLLMConfig",
    "MockLLMStats",
    "MockReply",
    "MockToolCall",
    "PreciseClock",
    "ServeApp",
    "ServedRunner",
    "WorkerPlan",
    "bind_worker_socket",
    "check_host",
    "exit_with_parent",
    "listen_error",
    "make_app",
    "only_os_error",
    "open_hosted_app",
    "open_mock_llm",
    "result_json",
    "serve",
    "serve_runner",
    "supervise_workers",
]

_LAZY = {
    "MetricsRenderer": "app",
    "ServeApp": "app",
    "make_app": "app",
    "result_json": "app",
    "serve": "app",
    "Companion": "service",
    "ServedRunner": "service",
    "check_host": "service",
    "listen_error": "service",
    "only_os_error": "service",
    "serve_runner": "service",
    "HostedApp": "service",
    "open_hosted_app": "service",
    "WorkerPlan": "_workers",
    "bind_worker_socket": "_workers",
    "exit_with_parent": "_workers",
    "supervise_workers": "_workers",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is not None:
        import importlib

        module = importlib.import_module(f"agentflow_trio.server.{module_name}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'agentflow_trio.server' has no attribute {name!r}")
