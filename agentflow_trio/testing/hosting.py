"""Hosting an `App` in a test, as ``agentcli`` hosts it: `open_test_app`.

What the ``hosted_app`` and ``app_runner`` fixtures of the pytest plugin run, usable on
its own in any trio test::

    async with open_test_app(app) as hosted, hosted.running.runner() as runner:
        result = await runner.call(af.Event("chat", {"query": "hi"}))

The App opens every service it has (lifespan, MCP servers and their tools, session store,
metrics) through `agentflow_trio.server.service.open_hosted_app`: the model calls go to the
built-in mock LLM where the config names no endpoint, or to ``mock_llm`` (a `MockLLM`
the test scripts, such as the ``mock_llm`` fixture's). Nothing listens on a fixed port:
the monitoring services (the Prometheus endpoint of its own, the performance report,
logging) are not started. Real sockets and subprocesses: use the real clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs

from ..app import App
from ..config import Config

if TYPE_CHECKING:
    from ..mockllm import MockLLM
    from ..server.service import HostedApp

__all__ = ["open_test_app", "pointed_at"]


def pointed_at(config: Config, mock: MockLLM) -> Config:
    """``config`` with its ``[llm]`` answered by ``mock`` (OpenAI wire; the model, retry
    and other settings kept). A config with ``[llm.deployments]`` is returned as is: each
    deployment names its own endpoint (the built-in mock stands in for those without)."""
    llm = config.llm
    if llm.deployments:
        return config
    pointed = attrs.evolve(
        llm, provider="openai", base_url=mock.url + "/v1", api_key=llm.api_key or "sk-test"
    )
    return attrs.evolve(config, llm=pointed)


@asynccontextmanager
async def open_test_app(
    app: App | Mapping[str, Any],
    config: Config | None = None,
    *,
    mock_llm: MockLLM | None = None,
) -> AsyncIterator[HostedApp]:
    """Host ``app`` (an `App`, or a dict of agents made one) for a test; see the module.

    ``config`` replaces the App's own (neither: every default); ``mock_llm`` answers the
    model calls instead of the built-in mock. Leaving closes everything (every MCP
    subprocess has exited).

    Raises:
        ConfigError, MCPError: as `App.open`.
    """
    from ..server.service import open_hosted_app

    hosted = App.coerce(app)
    chosen = config if config is not None else hosted.config
    if mock_llm is not None:
        chosen = pointed_at(chosen if chosen is not None else Config(), mock_llm)
    async with open_hosted_app(hosted, chosen) as opened:
        yield opened
