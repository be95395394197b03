"""Which model the CLI's runners talk to: the built-in mock LLM, or the configured endpoint.

The rule (documented in the README and in ``agentcli benchmark --help``):

* no config file: the built-in mock LLM is started in this process on 127.0.0.1, port 0;
* a config whose ``llm.base_url`` is empty: the same mock stands in for the provider, with
  the config's model, pool and resilience settings (a benchmark never spends money on a
  real provider by accident);
* ``llm.provider = "fake"``: the in-process `FakeProvider`, no HTTP at all;
* ``llm.base_url`` set: that endpoint, for real. OpenAI and Azure then need ``llm.api_key``
  unless the URL is on this machine (a local ``agentcli mock-llm``, vLLM, ...).

`open_llm_services` owns the mock (if any) and the LLM client: both are closed, and no
task is left, when its block exits.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Final

import attrs

from agentflow_trio.config import Config, LLMConfig
from agentflow_trio.errors import ConfigError
from agentflow_trio.mockllm._values import is_loopback
from agentflow_trio.mockllm.server import MockLLM, open_mock_llm

if TYPE_CHECKING:
    from agentflow_trio.llm import LLMClient

__all__ = ["LLMServices", "check_llm_target", "open_llm_services", "uses_mock"]

_MOCK_KEY: Final = "mock-key"


@attrs.frozen(slots=True)
class LLMServices:
    """What `open_llm_services` yields: the effective config, the client, the mock if any.

    ``target`` says in words where model calls go (for the report).
    """

    config: Config
    llm: LLMClient
    mock: MockLLM | None
    target: str


def uses_mock(config: Config) -> bool:
    """True when the built-in mock LLM stands in for ``config``'s provider."""
    return config.llm.provider != "fake" and not config.llm.base_url


def check_llm_target(config: Config, source: str | None = None) -> None:
    """Refuse a config that would call a remote OpenAI/Azure endpoint without a key.

    Raises:
        ConfigError: naming ``source`` and ``llm.api_key``.
    """
    llm = config.llm
    if uses_mock(config) or llm.provider not in ("openai", "azure") or llm.api_key:
        return
    if is_loopback(urllib.parse.urlsplit(llm.base_url).hostname or ""):
        return
    raise ConfigError(
        f"is empty, but llm.base_url sends requests to {llm.base_url}; set it "
        '(api_key = "${OPENAI_API_KEY}") or remove llm.base_url to use the built-in mock LLM',
        source=source,
        key="llm.api_key",
    )


def _pointed_at_mock(llm: LLMConfig, url: str) -> LLMConfig:
    base = url + "/v1" if llm.provider == "openai" else url
    return attrs.evolve(llm, base_url=base, api_key=llm.api_key or _MOCK_KEY)


@asynccontextmanager
async def open_llm_services(
    config: Config | None = None,
    *,
    source: str | None = None,
    mock_latency: float = 0.0,
) -> AsyncIterator[LLMServices]:
    """Start the mock LLM if the rule above asks for it and open the LLM client.

    ``mock_latency`` (seconds) is the mock's added latency per model request.

    Raises:
        ConfigError: see `check_llm_target`.
    """
    from agentflow_trio.llm import open_llm_client  # the HTTP stack, loaded when needed

    config = config if config is not None else Config()
    check_llm_target(config, source)
    async with AsyncExitStack() as stack:
        mock: MockLLM | None = None
        if uses_mock(config):
            mock = await stack.enter_async_context(open_mock_llm(latency=mock_latency))
            config = attrs.evolve(config, llm=_pointed_at_mock(config.llm, mock.url))
            target = f"built-in mock LLM at {mock.url} ({mock_latency * 1000:g} ms latency)"
        elif config.llm.provider == "fake":
            target = "in-process fake provider"
        else:
            target = f"{config.llm.provider} at {config.llm.base_url}"
        client = await stack.enter_async_context(open_llm_client(config))
        yield LLMServices(config, client, mock, target)
