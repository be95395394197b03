"""The pytest plugin of the testing kit: fixtures for testing agents, runners and schedulers.

Fixtures:

- ``runner_factory``: a `RunnerFactory`. An async test using it runs under
  ``MockClock(autojump_threshold=0)`` (virtual time, exact and instant), unless it also
  uses ``mock_llm`` or ``mcp_server``, which do real I/O and need the real clock. At
  teardown every runner it built is checked for conservation, bounds and order (skipped
  when the test itself failed; ``runner_factory(..., check=False)`` opts a runner out).
- ``fake_llm``: a `FakeLLM` (scripted `FakeProvider`, recorded requests, ``.client``).
- ``mock_llm``: a running `MockLLM` (real HTTP on 127.0.0.1, a free port) for the test;
  ``@pytest.mark.mock_llm(latency=0.05, error_rate=0.1, replies=[MockReply(...)])`` sets
  its `MockLLMConfig` fields and scripted replies; ``mock_llm.config = ...`` and
  ``mock_llm.script(...)`` change them during the test. `mock_llm_config` points an
  ``[llm]`` section at it.
- ``mcp_server``: an `MCPTestServer` (a real MCP server run as stdio subprocesses by
  `MCPManager`); the test is skipped when the ``mcp`` extra is not installed.
- ``app_runner``: the open `Runner` of your `App`, hosted as ``agentcli serve`` hosts it
  (`open_test_app`: lifespan, MCP servers and their tools in ``ctx.tools``, session
  store, metrics; model calls to the built-in mock LLM unless the config names an
  endpoint), closed after the test. Name the App with a fixture ``agentflow_app`` (an
  `App`, or a dict of agents); a fixture ``agentflow_config`` (default None: the App's
  own) replaces its config, for example to point it at the scripted ``mock_llm``::

      @pytest.fixture
      def agentflow_app():
          return myproject.app

      @pytest.fixture
      def agentflow_config(mock_llm):
          return pointed_at(myproject.app.config, mock_llm)   # testing.hosting

      async def test_answer(app_runner, mock_llm):
          mock_llm.script(MockReply(text="Paris"))
          result = await app_runner.call(af.Event("answer", {"query": "capital?"}))
          assert result.unwrap()["text"] == "Paris"

  ``hosted_app`` is the same opening as a `HostedApp` (its ``running.state``, ``mock``,
  ``services``). Both do real I/O: the test runs on the real clock.

Registration: the ``pytest11`` entry point is named after this module, so loading it
again with ``-p agentflow_trio.testing.plugin`` or ``pytest_plugins = [...]`` finds it
registered and does nothing (pytest refuses one module under two names).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing

from .factory import RunnerFactory
from .fakes import FakeLLM
from .servers import MCPTestServer

if TYPE_CHECKING:
    from ..app import App
    from ..config import Config
    from ..mockllm import MockLLM
    from ..runner import Runner
    from ..server.service import HostedApp

__all__ = [
    "agentflow_app",
    "agentflow_config",
    "app_runner",
    "fake_llm",
    "hosted_app",
    "mcp_server",
    "mock_llm",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_makereport",
    "run_with_autojump",
    "runner_factory",
]

_REAL_IO = frozenset({"mock_llm", "mcp_server", "hosted_app", "app_runner"})
_CALL_FAILED = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``mock_llm`` marker (``--strict-markers`` safe)."""
    config.addinivalue_line(
        "markers",
        "mock_llm(**settings): MockLLMConfig fields and replies=[MockReply, ...] "
        "for the mock_llm fixture (agentflow_trio.testing)",
    )


def run_with_autojump(fn: Callable[..., Any], *args: Any, clock: Any = None, **kwargs: Any) -> Any:
    """``trio.run`` with ``MockClock(autojump_threshold=0)`` unless a clock is given; the
    runner pytest-trio uses for tests that take ``runner_factory``."""
    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(fn, *args, clock=clock, **kwargs)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give async tests that use ``runner_factory`` (and no real-I/O fixture) the autojump
    clock, through pytest-trio's ``trio(run=...)`` marker."""
    if not any(line.startswith("trio:") for line in config.getini("markers")):
        return  # pytest-trio is not loaded: nothing runs async tests
    for item in items:
        if _wants_autojump(item):
            item.add_marker(pytest.mark.trio(run=run_with_autojump), append=False)


def _wants_autojump(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    if "runner_factory" not in names or names & _REAL_IO:
        return False
    function = getattr(item, "obj", None)
    inner = getattr(getattr(function, "hypothesis", None), "inner_test", function)
    if not inspect.iscoroutinefunction(inner):
        return False
    return all(m.kwargs.get("run") in (None, trio.run) for m in item.iter_markers("trio"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether the test body failed (the teardown check then stays quiet)."""
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


@pytest.fixture
def runner_factory(request: pytest.FixtureRequest) -> Iterator[RunnerFactory]:
    """Builds recorded Runners; checks their invariants at teardown (see the module)."""
    factory = RunnerFactory(autojump=not (_REAL_IO & set(request.fixturenames)))
    yield factory
    if factory.check_at_teardown and not request.node.stash.get(_CALL_FAILED, False):
        factory.check_all()


@pytest.fixture
def fake_llm() -> FakeLLM:
    """A `FakeLLM`: script replies with ``fake_llm.script(...)``, pass ``fake_llm.client``
    as the runner's ``llm``, read ``fake_llm.requests``."""
    return FakeLLM()


@pytest.fixture
async def mock_llm(request: pytest.FixtureRequest) -> AsyncIterator[MockLLM]:
    """A `MockLLM` serving on 127.0.0.1 (free port) for the test; configured by the
    ``mock_llm`` marker. Real sockets: the test must use the real clock."""
    from ..mockllm import open_mock_llm

    if "autojump_clock" in request.fixturenames:
        pytest.fail(
            "mock_llm serves real HTTP, and the autojump clock would fire timeouts while "
            "requests are in flight: drop autojump_clock, or use fake_llm"
        )
    marker = request.node.get_closest_marker("mock_llm")
    settings = dict(marker.kwargs) if marker is not None else {}
    replies = settings.pop("replies", ())
    async with open_mock_llm(**settings) as mock:
        mock.script(*replies)
        yield mock


def _has_mcp() -> bool:
    try:
        return importlib.util.find_spec("mcp") is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture
def mcp_server() -> MCPTestServer:
    """An `MCPTestServer`; ``mcp_server.manager()`` starts it. Skips without ``mcp``."""
    if not _has_mcp():
        pytest.skip("mcp_server needs the mcp extra: pip install 'agentflow_trio[mcp]'")
    return MCPTestServer()


@pytest.fixture
def agentflow_app() -> App | Mapping[str, Any]:
    """The App ``app_runner`` hosts: define a fixture of this name returning yours."""
    pytest.fail(
        "app_runner hosts the App a fixture named agentflow_app returns: define one "
        "(@pytest.fixture def agentflow_app(): return my_app)"
    )


@pytest.fixture
def agentflow_config() -> Config | None:
    """The config ``app_runner`` hosts the App with (None: the App's own); override it."""
    return None


@pytest.fixture
async def hosted_app(
    request: pytest.FixtureRequest,
    agentflow_app: App | Mapping[str, Any],
    agentflow_config: Config | None,
) -> AsyncIterator[HostedApp]:
    """The App of ``agentflow_app``, open for the test (`open_test_app`); real I/O."""
    from .hosting import open_test_app

    _refuse_autojump(request, "hosted_app")
    async with open_test_app(agentflow_app, agentflow_config) as hosted:
        yield hosted


@pytest.fixture
async def app_runner(hosted_app: HostedApp) -> AsyncIterator[Runner]:
    """The open `Runner` of ``hosted_app`` (drained and closed after the test)."""
    async with hosted_app.running.runner() as runner:
        yield runner


def _refuse_autojump(request: pytest.FixtureRequest, name: str) -> None:
    if "autojump_clock" in request.fixturenames:
        pytest.fail(
            f"{name} does real I/O (HTTP, subprocesses), and the autojump clock would fire "
            "timeouts while it is in flight: drop autojump_clock"
        )
