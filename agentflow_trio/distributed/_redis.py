"""Opening a coredis client under trio, telling broker outages from other errors, backoff.

coredis is imported here, inside functions only, so ``import agentflow_trio.distributed``
works without the ``redis`` extra; the import error then names the extra to install.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import trio

from ..config import redact_url
from ..errors import ConfigError

if TYPE_CHECKING:
    from coredis import Redis

__all__ = ["Backoff", "check_url", "is_missing_group", "is_outage", "open_redis", "redact"]

_SCHEMES: Final = ("redis://", "rediss://", "unix://")


def _coredis() -> Any:
    try:
        import coredis
    except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
        raise ImportError(
            "agentflow_trio.distributed needs coredis: pip install 'agentflow_trio[redis]'"
        ) from exc
    return coredis


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs
    (`agentflow_trio.config.redact_url`: one masking rule for the whole package)."""
    return redact_url(url)


def check_url(url: str) -> None:
    """Raise `ConfigError` (key ``distributed.redis_url``) unless ``url`` is a Redis URL."""
    if not url.startswith(_SCHEMES):
        raise ConfigError(
            f"expected a redis://, rediss:// or unix:// URL, got {redact(url)!r}",
            key="distributed.redis_url",
        )


@asynccontextmanager
async def open_redis(
    url: str, *, password: str = "", connect_timeout: float = 5.0
) -> AsyncIterator[Redis[bytes]]:
    """A coredis client (bytes replies) whose connection pool lives inside this block.

    Connections are opened lazily: entering never fails because the server is down. An
    error raised by the body comes out as itself, never wrapped in the pool's task group.

    Raises:
        ConfigError: ``url`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL.
    """
    check_url(url)
    coredis = _coredis()
    extra: dict[str, Any] = {"password": password} if password else {}
    client: Redis[bytes] = coredis.Redis.from_url(
        url, decode_responses=False, connect_timeout=connect_timeout, **extra
    )
    await client.__aenter__()
    try:
        yield client
    finally:
        # Exit the pool's task group with no exception: the body's error (or Cancelled)
        # then propagates unwrapped instead of inside an ExceptionGroup.
        await client.__aexit__(None, None, None)


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean "the broker is unreachable": refused, reset, timed out,
    still loading its data set after a restart."""
    coredis = _coredis()
    return isinstance(
        exc,
        coredis.exceptions.ConnectionError
        | TimeoutError
        | trio.TooSlowError
        | OSError
        | trio.BrokenResourceError
        | trio.ClosedResourceError,
    )


def is_missing_group(exc: BaseException) -> bool:
    """True when the stream or its consumer group does not exist (a restarted Redis
    without persistence, or a group deleted by hand): create it and try again."""
    coredis = _coredis()
    if isinstance(exc, coredis.exceptions.StreamConsumerGroupError):
        return True
    return isinstance(exc, coredis.exceptions.RedisError) and "NOGROUP" in str(exc)


class Backoff:
    """Exponential backoff with full jitter: 10 ms, then doubling up to ``maximum``."""

    __slots__ = ("_delay", "maximum")

    def __init__(self, maximum: float, first: float = 0.01) -> None:
        self.maximum = maximum
        self._delay = min(first, maximum)

    def next(self) -> float:
        """The next delay to sleep (a random point of the current window), then widen it."""
        delay = random.uniform(self._delay / 2, self._delay)
        self._delay = min(self._delay * 2, self.maximum)
        return delay
