"""The configured provider: a transport plus the stack the config turns on.

`open_transport` opens the bottom layer ``[llm] provider`` names (OpenAI, Azure, Ollama or
the in-process fake); `open_provider` stacks the configured layers on it (``stack``: cache
-> retry -> breaker -> rate limit -> batching), or, with deployments, puts the cache over a
`Router` whose deployments each have their own stack (`open_router`); `open_llm_client`
wraps one in the `LLMClient` (``client``) agents get as ``ctx.llm``. The seam they share,
`Provider`, is in ``base``; names this module held before (`LLMClient`, `Provider`,
`ProviderStack`, `StackStatistics`, `open_stack`, `deployment_gate`,
`configured_ttl_policy`) are re-exported here.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs

from ..errors import ConfigError
from ._shared_cooldowns import open_shared_cooldowns
from .azure import open_azure
from .base import Provider as Provider
from .client import LLMClient as LLMClient
from .fake import FakeProvider
from .ollama import open_ollama
from .openai import open_openai
from .output import (
    NATIVE_PROVIDERS,
    OUTPUT_MODES,
    OutputMode,
    check_output_settings,
    speaks_native,
)
from .router import Router
from .stack import ProviderStack as ProviderStack
from .stack import StackStatistics as StackStatistics
from .stack import cache_layer
from .stack import configured_ttl_policy as configured_ttl_policy
from .stack import deployment_gate as deployment_gate
from .stack import open_stack as open_stack

if TYPE_CHECKING:
    from ..config import Config, DistributedConfig, LLMConfig, PerformanceConfig

__all__ = [
    "LLMClient",
    "Provider",
    "ProviderStack",
    "StackStatistics",
    "configured_ttl_policy",
    "deployment_gate",
    "open_llm_client",
    "open_provider",
    "open_router",
    "open_stack",
    "open_transport",
]


@asynccontextmanager
async def open_transport(llm: LLMConfig) -> AsyncIterator[Provider]:
    """The bottom layer for ``llm.provider``, closed on exit.

    Raises:
        ConfigError: an unknown provider, or Azure without ``base_url``.
    """
    opener: Callable[[LLMConfig], AbstractAsyncContextManager[Provider]]
    if llm.provider == "openai":
        opener = open_openai
    elif llm.provider == "azure":
        opener = open_azure
    elif llm.provider == "ollama":
        opener = open_ollama
    elif llm.provider == "anthropic":
        from .anthropic import open_anthropic  # the Messages API (issue #21)

        opener = open_anthropic
    elif llm.provider == "openai_responses":
        from .responses import open_responses  # the Responses API (issue #21)

        opener = open_responses
    elif llm.provider == "fake":
        fake = FakeProvider(model=llm.model)
        try:
            yield fake
        finally:
            await fake.aclose()
        return
    else:
        raise ConfigError(f"unknown provider {llm.provider!r}", key="llm.provider")
    async with opener(llm) as transport:
        yield transport


def _sections(
    config: LLMConfig | Config, performance: PerformanceConfig | None
) -> tuple[LLMConfig, PerformanceConfig | None]:
    llm = getattr(config, "llm", None)
    if llm is not None:
        return llm, performance if performance is not None else getattr(config, "performance", None)
    return config, performance  # type: ignore[return-value]


@asynccontextmanager
async def open_provider(
    config: LLMConfig | Config,
    performance: PerformanceConfig | None = None,
    *,
    transport: Provider | None = None,
    transports: Mapping[str, Provider] | None = None,
    ttl_policy: Callable[[Any], float] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[ProviderStack]:
    """The full provider for a config: the transport plus every layer turned on.

    ``config`` is the ``[llm]`` section or a whole `Config` (whose ``performance`` is used
    unless one is passed). ``transport`` replaces the configured one (it is then not closed
    here); ``ttl_policy`` replaces `configured_ttl_policy`; ``rng`` seeds retry jitter.
    On exit pending batches are flushed, then the transport's client is closed.

    With ``[llm.deployments]`` (or ``[llm.router.groups]``) the stack is the cache over a
    `Router` (`open_router`; ``stack.router``): ``transports`` then replaces deployments'
    transports by name, and ``transport`` those of the others.

    Raises:
        ConfigError: an unknown provider, Azure without ``base_url``, or router settings
            naming a group no deployment serves.
    """
    llm, perf = _sections(config, performance)
    async with AsyncExitStack() as stack:
        if llm.uses_router():
            given = dict(transports or {})
            if transport is not None:
                for name in llm.deployment_configs():
                    given.setdefault(name, transport)
            distributed = getattr(config, "distributed", None)
            router = await stack.enter_async_context(
                open_router(llm, perf, transports=given, rng=rng, distributed=distributed)
            )
            if perf is not None and perf.enable_caching:
                layer = cache_layer(router, perf, ttl_policy)
                yield ProviderStack([layer, router], cache=layer.cache)
            else:
                yield ProviderStack([router])
            return
        if transport is None:
            transport = await stack.enter_async_context(open_transport(llm))
        yield await stack.enter_async_context(
            open_stack(transport, llm, perf, ttl_policy=ttl_policy, rng=rng)
        )


@asynccontextmanager
async def open_router(
    llm: LLMConfig,
    performance: PerformanceConfig | None = None,
    *,
    transports: Mapping[str, Provider] | None = None,
    rng: random.Random | None = None,
    distributed: DistributedConfig | None = None,
) -> AsyncIterator[Router]:
    """A `Router` over ``llm``'s deployments (the ``[llm]`` table itself when it has none).

    Each deployment gets its transport (``transports[name]``, not closed here, or the
    configured one) and its own stack (`open_stack`: breaker, rate limit, batching)
    without the retry layer and without the cache: the router decides the retries (with
    each deployment's ``[retry]`` settings) and any cache belongs above the router. On exit
    each stack is left and each opened transport closed. With ``[llm.router]
    shared_cooldowns``, cooldowns go through the Redis of ``distributed`` too.

    Raises:
        ConfigError: as `open_provider`; ``shared_cooldowns`` without ``distributed``.
    """
    plain = attrs.evolve(performance, enable_caching=False) if performance is not None else None
    given = transports or {}
    async with AsyncExitStack() as stack:
        members: dict[str, tuple[LLMConfig, Provider]] = {}
        statistics: dict[str, Callable[[], Any]] = {}
        for name, dep in llm.deployment_configs().items():
            transport = given.get(name)
            if transport is None:
                transport = await stack.enter_async_context(open_transport(dep))
            no_retry = attrs.evolve(dep, retry=attrs.evolve(dep.retry, enabled=False))
            own = await stack.enter_async_context(
                open_stack(transport, no_retry, plain, rng=rng, name=name)
            )
            members[name] = (dep, own)
            statistics[name] = own.statistics
        share = None
        if llm.router.shared_cooldowns:
            share = await stack.enter_async_context(
                open_shared_cooldowns(distributed, list(members))
            )
        router = Router(
            members,
            llm.router,
            statistics=statistics,
            rng=rng,
            on_cooldown=share.announce if share is not None else None,
        )
        if share is not None:
            share.attach(router)
        yield router


@asynccontextmanager
async def open_llm_client(
    config: LLMConfig | Config, performance: PerformanceConfig | None = None, **kwargs: Any
) -> AsyncIterator[LLMClient]:
    """`open_provider` wrapped in an `LLMClient`.

    Structured output's defaults come from ``[llm] output_mode`` and ``output_retries``
    (``"auto"`` and 1 when the config has no such keys). Whether ``auto`` means the native
    mode is asked of the transport (``native_output``); through a router, which does not
    say, it is decided by the config: native when every deployment's ``provider`` has a
    JSON-schema reply format (openai, azure, ollama, fake), else the tool mode.

    Raises:
        ConfigError: as `open_provider`; a bad ``output_mode`` or ``output_retries``.
    """
    llm, _ = _sections(config, performance)
    mode = getattr(llm, "output_mode", "auto")
    retries = getattr(llm, "output_retries", 1)
    try:
        check_output_settings(mode, retries)
    except ValueError as exc:
        key = "llm.output_mode" if mode not in OUTPUT_MODES else "llm.output_retries"
        raise ConfigError(str(exc), key=key) from None
    async with open_provider(config, performance, **kwargs) as provider:
        native = speaks_native(provider)
        if native is None:
            native = _config_speaks_native(llm)
        yield LLMClient(
            provider,
            output_mode=cast(OutputMode, mode),
            output_retries=retries,
            native_output=native,
        )


def _config_speaks_native(llm: LLMConfig) -> bool:
    if llm.uses_router():
        deployments = llm.deployment_configs().values()
        return all(dep.provider in NATIVE_PROVIDERS for dep in deployments)
    return llm.provider in NATIVE_PROVIDERS
