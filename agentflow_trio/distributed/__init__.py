"""Scale-out on Redis Streams: producers, workers in a consumer group, no lost events.

* `RemoteRunner`: the producers' side, shaped like `Runner` (``emit``, ``call``).
* `Worker` / `run_worker`: read the stream in a consumer group and run each event on an
  ordinary `Runner` (``agentcli worker`` is `run_worker`).
* `redis_cache`: an optional second-tier LLM cache and a rate limiter shared by every
  worker of a deployment.
* `sessions`: `RedisSessionStore`, session state and history shared by every process
  (``[memory] backend = "redis"``); `open_session_store` opens the one the config names.
* `redact`: a Redis URL with its password masked, for messages and logs.

Importing this package does not import coredis (the ``redis`` extra); opening a
`RemoteRunner` or serving a `Worker` does, and names the extra if it is missing.
"""

from __future__ import annotations

from ._errors import BrokerUnavailable as BrokerUnavailable
from ._errors import ResultTimeout as ResultTimeout
from ._redis import redact as redact
from .redis_bus import DeadLetter as DeadLetter
from .redis_bus import RemoteHandle as RemoteHandle
from .redis_bus import RemoteRunner as RemoteRunner
from .redis_bus import RemoteStatistics as RemoteStatistics
from .redis_cache import RedisCacheLayer as RedisCacheLayer
from .redis_cache import RedisCacheStatistics as RedisCacheStatistics
from .redis_cache import SharedRateLimiter as SharedRateLimiter
from .redis_cache import SharedRateLimitLayer as SharedRateLimitLayer
from .redis_cache import open_redis_client as open_redis_client
from .sessions import RedisSessionStatistics as RedisSessionStatistics
from .sessions import RedisSessionStore as RedisSessionStore
from .sessions import open_session_store as open_session_store
from .worker import Worker as Worker
from .worker import WorkerStatistics as WorkerStatistics
from .worker import default_consumer_name as default_consumer_name
from .worker import run_worker as run_worker

__all__ = [
    "BrokerUnavailable",
    "DeadLetter",
    "RedisCacheLayer",
    "RedisCacheStatistics",
    "RedisSessionStatistics",
    "RedisSessionStore",
    "RemoteHandle",
    "RemoteRunner",
    "RemoteStatistics",
    "ResultTimeout",
    "SharedRateLimitLayer",
    "SharedRateLimiter",
    "Worker",
    "WorkerStatistics",
    "default_consumer_name",
    "open_redis_client",
    "open_session_store",
    "redact",
    "run_worker",
]
