"""Which model the CLI's runners talk to: the built-in mock LLM, or the configured endpoint.

The rule (documented in the README and in ``agentcli benchmark --help``):

* no config file: the built-in mock LLM is started in this process on 127.0.0.1, port 0;
* a config whose ``llm.base_url`` is empty: the same mock stands in for the provider, with
  the config's model, pool and resilience settings (a benchmark never spends money on a
  real provider by accident); with ``[llm.deployments]``, it stands in for each
  deployment whose ``base_url`` is empty (each keeps its model name, so the mock's
  ``by_model`` counts and per-model faults tell deployments apart);
* ``llm.provider = "fake"``: the in-process `FakeProvider`, no HTTP at all;
* ``llm.base_url`` set: that endpoint, for real. OpenAI and Azure then need ``llm.api_key``
  unless the URL is on this machine (a local ``agentcli mock-llm``, vLLM, ...).

`open_llm_services` owns the mock (if any) and the LLM client: both are closed, and no
task is left, when its block exits.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Final, TypeVar

import attrs

from agentflow_trio.config import API_KEY_VARIABLES, Config, DeploymentConfig, LLMConfig, redact_url
from agentflow_trio.errors import ConfigError
from agentflow_trio.mockllm._faults import Fault
from agentflow_trio.mockllm._values import is_loopback
from agentflow_trio.mockllm.server import MockLLM, open_mock_llm

if TYPE_CHECKING:
    from agentflow_trio.llm import LLMClient

__all__ = ["LLMServices", "check_llm_target", "open_llm_services", "uses_mock"]

_MOCK_KEY: Final = "mock-key"
_D = TypeVar("_D", bound=DeploymentConfig)


@attrs.frozen(slots=True)
class LLMServices:
    """What `open_llm_services` yields: the effective config, the client, the mock if any.

    ``target`` says in words where model calls go (for the report).
    """

    config: Config
    llm: LLMClient
    mock: MockLLM | None
    target: str


def _members(llm: LLMConfig) -> Mapping[str, DeploymentConfig]:
    """What calls go to: each deployment by name, or the ``[llm]`` table itself."""
    return llm.deployments if llm.deployments else {"": llm}


def _mocked(dep: DeploymentConfig) -> bool:
    return dep.provider != "fake" and not dep.base_url


def uses_mock(config: Config) -> bool:
    """True when the built-in mock LLM stands in for ``config``'s provider (or, with
    deployments, for at least one of them)."""
    return any(_mocked(dep) for dep in _members(config.llm).values())


def check_llm_target(config: Config, source: str | None = None) -> None:
    """Refuse a config that would call a remote OpenAI, Azure, Responses or Anthropic
    endpoint without a key (the rule `config.check_config` applies too).

    Raises:
        ConfigError: naming ``source`` and ``llm.api_key`` (``llm.deployments.NAME.api_key``).
    """
    for name, dep in _members(config.llm).items():
        variable = API_KEY_VARIABLES.get(dep.provider)
        if _mocked(dep) or variable is None or dep.api_key:
            continue
        if is_loopback(urllib.parse.urlsplit(dep.base_url).hostname or ""):
            continue
        where = f"llm.deployments.{name}" if name else "llm"
        raise ConfigError(
            f"is empty, but {where}.base_url sends requests to {redact_url(dep.base_url)}; set it "
            f'(api_key = "${{{variable}}}") or remove {where}.base_url to use the '
            "built-in mock LLM",
            source=source,
            key=f"{where}.api_key",
        )


def _pointed_at_mock(dep: _D, url: str) -> _D:
    if not _mocked(dep):
        return dep
    base = url + "/v1" if dep.provider in ("openai", "openai_responses") else url
    return attrs.evolve(dep, base_url=base, api_key=dep.api_key or _MOCK_KEY)


def _with_mock(llm: LLMConfig, url: str) -> LLMConfig:
    """``llm`` with the mock standing in wherever no ``base_url`` is set."""
    if not llm.deployments:
        return _pointed_at_mock(llm, url)
    deployments = {name: _pointed_at_mock(dep, url) for name, dep in llm.deployments.items()}
    return attrs.evolve(llm, deployments=deployments)


def _describe(llm: LLMConfig, mock: MockLLM | None, latency: float) -> str:
    """Where model calls go, in words (for the report)."""
    at_mock = f"built-in mock LLM at {mock.url} ({latency * 1000:g} ms latency)" if mock else ""
    if not llm.deployments:
        if at_mock:
            return at_mock
        if llm.provider == "fake":
            return "in-process fake provider"
        return f"{llm.provider} at {redact_url(llm.base_url)}"
    parts = []
    for name, dep in llm.deployments.items():
        if mock is not None and dep.base_url.startswith(mock.url):
            where = "the mock"
        elif dep.provider == "fake":
            where = "the fake provider"
        else:
            where = f"{dep.provider} at {redact_url(dep.base_url)}"
        parts.append(f"{name} ({dep.model_group}: {dep.model}) -> {where}")
    head = f"router over {len(parts)} deployments"
    return f"{head}{'; ' + at_mock if at_mock else ''}: {', '.join(parts)}"


@asynccontextmanager
async def open_llm_services(
    config: Config | None = None,
    *,
    source: str | None = None,
    mock_latency: float = 0.0,
    mock_faults: Mapping[str, Sequence[Fault]] | None = None,
) -> AsyncIterator[LLMServices]:
    """Start the mock LLM if the rule above asks for it and open the LLM client.

    ``mock_latency`` (seconds) is the mock's added latency per model request;
    ``mock_faults`` its fault rules by model name (`MockLLMConfig.faults`), to watch a
    router fail over without a real outage.

    Raises:
        ConfigError: see `check_llm_target`.
    """
    from agentflow_trio.llm import open_llm_client  # the HTTP stack, loaded when needed

    config = config if config is not None else Config()
    check_llm_target(config, source)
    async with AsyncExitStack() as stack:
        mock: MockLLM | None = None
        if uses_mock(config):
            mock = await stack.enter_async_context(
                open_mock_llm(latency=mock_latency, faults=dict(mock_faults or {}))
            )
            config = attrs.evolve(config, llm=_with_mock(config.llm, mock.url))
        target = _describe(config.llm, mock, mock_latency)
        client = await stack.enter_async_context(open_llm_client(config))
        yield LLMServices(config, client, mock, target)
