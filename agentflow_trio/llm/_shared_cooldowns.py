"""Cooldowns shared through Redis (``[llm.router] shared_cooldowns = true``, with
``[distributed]``): every worker skips a dead deployment once one of them found it dead.

Each cooldown a router starts is queued (never awaited on the request's path; a full queue
drops it) and written by a background task as ``{key_prefix}:cooldown:{deployment}`` =
the wall-clock time it ends, expiring then. The same task reads every deployment's key
every ``interval`` and cools the local router down until that time too (trio time and
wall-clock time are converted at the moment of reading). Redis being down only stops the
sharing: requests never wait for Redis, and each worker keeps its own cooldowns. coredis
is imported here only, when sharing is on (the ``redis`` extra).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import DistributedConfig
    from .router import Router

__all__ = ["CooldownShare", "open_shared_cooldowns"]

_log = logging.getLogger("agentflow_trio.router")
_QUEUE: Final = 256  # cooldowns waiting to be written; more are dropped (the next one comes)
_BACKOFF: Final = 1.0  # seconds between attempts while Redis is unreachable


@final
class CooldownShare:
    """The link between one `Router` and Redis: `announce` is the router's
    ``on_cooldown``; `attach` gives it the router whose cooldowns it keeps in step."""

    def __init__(self, prefix: str, names: Sequence[str]) -> None:
        self._keys = [f"{prefix}:cooldown:{name}" for name in names]
        self._names = list(names)
        self._send, self._receive = trio.open_memory_channel[tuple[str, float]](_QUEUE)
        self._router: Router | None = None
        self._attached = trio.Event()
        self.written = 0
        self.applied = 0
        self.dropped = 0

    def announce(self, name: str, until: float) -> None:
        """Queue a cooldown of deployment ``name`` to ``until`` (trio time). Not a
        checkpoint, never blocks: a full queue drops it."""
        wall = time.time() + (until - trio.current_time())
        try:
            self._send.send_nowait((name, wall))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1

    def attach(self, router: Router) -> None:
        """Start keeping ``router``'s cooldowns in step with the others'."""
        self._router = router
        self._attached.set()

    async def run(self, client: Any, interval: float) -> None:
        """Write queued cooldowns and read the others', until cancelled."""
        await self._attached.wait()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, client)
            while True:
                try:
                    await self._read(client)
                except Exception as exc:
                    _log.warning("shared cooldowns: cannot read Redis: %s", exc)
                    await trio.sleep(_BACKOFF)
                await trio.sleep(interval)

    async def _write(self, client: Any) -> None:
        async for name, wall in self._receive:
            ttl = math.ceil((wall - time.time()) * 1000)
            if ttl <= 0:
                continue
            key = self._keys[self._names.index(name)]
            try:
                await client.set(key, repr(wall), px=ttl)
                self.written += 1
            except Exception as exc:
                _log.warning("shared cooldowns: cannot write %s: %s", key, exc)

    async def _read(self, client: Any) -> None:
        values = await client.mget(self._keys)
        router = self._router
        assert router is not None
        now_wall, now = time.time(), trio.current_time()
        for name, value in zip(self._names, values, strict=True):
            if value is None:
                continue
            try:
                wall = float(value)
            except ValueError:
                continue
            if math.isfinite(wall) and wall > now_wall:
                router.cool_down(name, now + (wall - now_wall))
                self.applied += 1


@asynccontextmanager
async def open_shared_cooldowns(
    distributed: DistributedConfig | None, names: Sequence[str], *, interval: float = 0.25
) -> AsyncIterator[CooldownShare]:
    """A `CooldownShare` for deployments ``names``, with its Redis client and background
    task (reading every ``interval`` seconds) living inside this block.

    Raises:
        ConfigError: no ``[distributed]`` section (pass the whole `Config`), or its
            ``redis_url`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL.
        ImportError: coredis is not installed (the ``redis`` extra).
    """
    if distributed is None:
        raise ConfigError(
            "shared_cooldowns needs the [distributed] section: pass the whole Config",
            key="llm.router.shared_cooldowns",
        )
    if not distributed.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            "expected a redis://, rediss:// or unix:// URL", key="distributed.redis_url"
        )
    try:
        import coredis
    except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
        raise ImportError(
            "shared_cooldowns needs coredis: pip install 'agentflow_trio[redis]'"
        ) from exc
    extra: dict[str, Any] = (
        {"password": distributed.redis_password} if distributed.redis_password else {}
    )
    client = coredis.Redis.from_url(
        distributed.redis_url,
        decode_responses=True,
        connect_timeout=distributed.connect_timeout,
        stream_timeout=distributed.command_timeout,
        **extra,
    )
    share = CooldownShare(distributed.key_prefix, names)
    await client.__aenter__()
    try:
        # The task lives in a nursery left with no exception, so an error of the body
        # comes out as itself, never inside an ExceptionGroup of this background task.
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        try:
            nursery.start_soon(share.run, client, interval)
            yield share
        finally:
            nursery.cancel_scope.cancel()
            await manager.__aexit__(None, None, None)
    finally:
        # No scope of ours around this: the client's own task group, opened by its
        # __aenter__, must be the next scope to close.
        await client.__aexit__(None, None, None)
