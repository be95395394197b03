"""Provider-agnostic resilience for async callables: breaker, retry, cache, batching, limits.

Each piece wraps ``await fn(*args)`` and states its cancellation guarantees. Around an LLM
provider they stack, outermost first: cache -> retry -> breaker -> rate limit -> batching.
"""

from ..errors import LocalRateLimitError as LocalRateLimitError
from .batching import Batcher as Batcher
from .batching import BatcherStatistics as BatcherStatistics
from .batching import open_batcher as open_batcher
from .breaker import BreakerState as BreakerState
from .breaker import BreakerStatistics as BreakerStatistics
from .breaker import BreakerTimeoutError as BreakerTimeoutError
from .breaker import CircuitBreaker as CircuitBreaker
from .breaker import default_is_failure as default_is_failure
from .cache import CREATIVE_TTL as CREATIVE_TTL
from .cache import DEFAULT_TTL as DEFAULT_TTL
from .cache import FACTUAL_TTL as FACTUAL_TTL
from .cache import CacheStatistics as CacheStatistics
from .cache import TTLCache as TTLCache
from .cache import TTLPolicy as TTLPolicy
from .cache import default_ttl_policy as default_ttl_policy
from .cache import make_key as make_key
from .ratelimit import RateLimiter as RateLimiter
from .ratelimit import RateLimiterStatistics as RateLimiterStatistics
from .retry import PauseGate as PauseGate
from .retry import Retry as Retry
from .retry import RetryStatistics as RetryStatistics
from .retry import default_retry_on as default_retry_on

__all__ = [
    "CREATIVE_TTL",
    "DEFAULT_TTL",
    "FACTUAL_TTL",
    "Batcher",
    "BatcherStatistics",
    "BreakerState",
    "BreakerStatistics",
    "BreakerTimeoutError",
    "CacheStatistics",
    "CircuitBreaker",
    "LocalRateLimitError",
    "PauseGate",
    "RateLimiter",
    "RateLimiterStatistics",
    "Retry",
    "RetryStatistics",
    "TTLCache",
    "TTLPolicy",
    "default_is_failure",
    "default_retry_on",
    "default_ttl_policy",
    "make_key",
    "open_batcher",
]
