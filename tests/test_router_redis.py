"""Cooldowns shared through a real redis-server: two routers ("workers") in one process.

Rules of this module: a fresh redis-server per test on a free loopback port (``_redis``),
the real clock, an absolute ``trio.fail_after`` around every test.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from _redis import RedisServer, redis_server

from agentflow_trio.config import (
    Config,
    DeploymentConfig,
    DistributedConfig,
    LLMConfig,
    RouterConfig,
)
from agentflow_trio.errors import ConfigError, ServerError
from agentflow_trio.llm import ChatRequest, FakeProvider, ProviderStack, open_provider, user

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

REQUEST = ChatRequest((user("hello"),))


def config(redis_url: str) -> Config:
    deployments = {n: DeploymentConfig(provider="fake", model="m") for n in ("a", "b")}
    router = RouterConfig(shared_cooldowns=True, cooldown=30.0, allowed_fails=1)
    llm = LLMConfig(provider="fake", model="m", deployments=deployments, router=router)
    return Config(llm=llm, distributed=DistributedConfig(redis_url=redis_url, key_prefix="t"))


def fakes() -> dict[str, FakeProvider]:
    dead = FakeProvider(lambda request: ServerError("HTTP 503", status=503))
    return {"a": dead, "b": FakeProvider()}


def cooling(stack: ProviderStack, name: str) -> bool:
    assert stack.router is not None
    return any(d.cooling for d in stack.router.statistics().deployments if d.name == name)


async def test_a_dead_deployment_found_by_one_worker_is_skipped_by_the_other(
    redis_server: RedisServer,
) -> None:
    one, two = fakes(), fakes()
    with trio.fail_after(20):
        async with (
            open_provider(config(redis_server.url), transports=one) as first,  # type: ignore[arg-type]
            open_provider(config(redis_server.url), transports=two) as second,  # type: ignore[arg-type]
        ):
            while not one["a"].requests:
                await first.complete(REQUEST)
            assert cooling(first, "a")
            for _ in range(100):  # the other worker reads Redis every 0.25 s
                if cooling(second, "a"):
                    break
                await trio.sleep(0.05)
            assert cooling(second, "a")
            for _ in range(50):
                assert (await second.complete(REQUEST)).deployment == "b"
    assert two["a"].requests == []  # never asked: worker one had found it dead


async def test_redis_down_only_stops_the_sharing() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    one = fakes()
    with trio.fail_after(20):
        async with open_provider(config(f"redis://127.0.0.1:{port}/0"), transports=one) as stack:  # type: ignore[arg-type]
            start = trio.current_time()
            for _ in range(50):
                assert (await stack.complete(REQUEST)).deployment == "b"
            assert trio.current_time() - start < 1.0  # no request waits for Redis
            assert cooling(stack, "a")


async def test_sharing_needs_the_distributed_section() -> None:
    llm: Any = config("redis://127.0.0.1:1/0").llm
    with pytest.raises(ConfigError, match=r"\[distributed\]"):
        async with open_provider(llm, transports=fakes()):  # type: ignore[arg-type]
            pass
