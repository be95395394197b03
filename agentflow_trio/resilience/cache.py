"""A bounded TTL cache with single-flight misses, plus keys and TTL policies for LLM calls."""

from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Generic, TypeAlias, TypeVar, TypeVarTuple, cast

import attrs
import trio

__all__ = [
    "CREATIVE_TTL",
    "DEFAULT_TTL",
    "FACTUAL_TTL",
    "CacheStatistics",
    "TTLCache",
    "TTLPolicy",
    "default_ttl_policy",
    "make_key",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Ts = TypeVarTuple("Ts")

TTLPolicy: TypeAlias = Callable[[Any], float]
"""Maps a request to the seconds its answer may be cached."""

FACTUAL_TTL = 24 * 3600.0
CREATIVE_TTL = 5 * 60.0
DEFAULT_TTL = 3600.0

_FACTUAL = ("what is", "what are", "who is", "who was", "define", "definition of",
            "when did", "when was", "where is", "capital of", "how many")  # fmt: skip
_CREATIVE = ("write a story", "story about", "poem", "brainstorm", "imagine", "fiction",
             "song", "joke")  # fmt: skip


@attrs.frozen
class CacheStatistics:
    """A snapshot of a :class:`TTLCache`.

    Attributes:
      hits, misses: lookups answered from the cache, and not.
      evictions: live entries dropped to stay within ``max_entries`` / ``max_bytes``.
      expirations: entries dropped because their TTL had passed.
      entries, bytes: what the cache holds now (``bytes`` as measured by ``sizeof``).
      coalesced: misses that waited for another caller's call instead of making their own.
    """

    hits: int
    misses: int
    evictions: int
    expirations: int
    entries: int
    bytes: int
    coalesced: int


class _Entry(Generic[V]):
    __slots__ = ("expires", "size", "value")

    def __init__(self, value: V, expires: float, size: int):
        self.value = value
        self.expires = expires
        self.size = size


class _Flight(Generic[V]):
    """One upstream call that concurrent misses of the same key wait for."""

    __slots__ = ("done", "error", "ok", "store", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ok = False
        self.value: V | None = None
        self.error: Exception | None = None
        self.store = True


class TTLCache(Generic[K, V]):
    """An LRU cache whose entries expire after a per-entry TTL, with single-flight misses.

    - **TTL**: an entry put at ``trio.current_time()`` ``t`` with ``ttl`` is served while the
      clock is before ``t + ttl`` and never from then on.
    - **Bounded**: at most ``max_entries`` entries and ``max_bytes`` bytes (each value
      measured once by ``sizeof``, default ``sys.getsizeof``, which is shallow: pass your
      own for nested values). The least recently used entries go first; a single value
      larger than ``max_bytes`` is returned but not stored.
    - **Single-flight**: concurrent misses of one key make one upstream call. The first
      caller (the leader) calls ``fn``; the others wait and get its value, or the same
      exception object it raised.
    - **Hand-off**: if the leader is cancelled, one waiter takes over and calls ``fn``
      itself; the others keep waiting for it. A cancelled waiter just leaves.
    - **Failures are never cached**: the next miss calls ``fn`` again.
    - **Invalidation wins**: a value whose call was in flight when its key was invalidated
      (or the cache cleared) is handed to its waiters but not stored, and later callers
      start a fresh call.
    - **A hit is still a checkpoint**, like every trio ``async def``. It costs one dict
      lookup, one time comparison, a ``move_to_end`` and the checkpoint.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10000,
        max_bytes: int = 64 * 2**20,
        sizeof: Callable[[V], int] | None = None,
    ):
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("max_entries and max_bytes must be >= 0")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._sizeof: Callable[[V], int] = sizeof or sys.getsizeof
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._flights: dict[K, _Flight[V]] = {}
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0
        self._coalesced = 0

    async def get_or_call(
        self,
        key: K,
        fn: Callable[[*Ts], Awaitable[V]],
        *args: *Ts,
        ttl: float | Callable[[], float],
    ) -> V:
        """The cached value of ``key``, or ``await fn(*args)``, stored for ``ttl`` seconds.

        ``ttl`` may be a zero-argument callable: it is then evaluated only after a miss's
        call succeeds, so an elaborate TTL policy costs nothing on a hit. A TTL <= 0 means
        the value is returned but not stored.

        Raises:
          Exception: whatever the call that answered this miss raised (not cached).
        """
        entry = self._entries.get(key)
        if entry is not None and entry.expires > trio.current_time():
            self._entries.move_to_end(key)
            self._hits += 1
            await trio.lowlevel.checkpoint()
            return entry.value
        self._misses += 1
        if entry is not None:
            self._remove(key)
            self._expirations += 1
        waited = False
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, fn, args, ttl)
            if not waited:
                self._coalesced += 1
                waited = True
            await flight.done.wait()
            if flight.ok:
                return cast(V, flight.value)
            if flight.error is not None:
                raise flight.error
            # The leader was cancelled: the first waiter to get here leads next.

    def get_nowait(self, key: K) -> V | None:
        """The cached value of ``key``, or ``None`` on a miss. Never calls anything."""
        found = self._lookup(key)
        if found is None:
            self._misses += 1
            return None
        self._hits += 1
        return found[0]

    def put(self, key: K, value: V, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds, evicting least recently used entries.

        ``ttl <= 0``, or a value larger than ``max_bytes``, removes ``key`` instead.
        """
        self._remove(key)
        size = self._sizeof(value)
        if ttl <= 0 or size > self._max_bytes:
            return
        self._entries[key] = _Entry(value, trio.current_time() + ttl, size)
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.size
            self._evictions += 1

    def invalidate(self, key: K) -> None:
        """Forget ``key``; a call in flight for it will not be stored."""
        self._remove(key)
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.store = False

    def clear(self) -> None:
        """Forget everything; calls in flight will not be stored."""
        self._entries.clear()
        self._bytes = 0
        for flight in self._flights.values():
            flight.store = False
        self._flights.clear()

    def statistics(self) -> CacheStatistics:
        """A :class:`CacheStatistics` snapshot."""
        return CacheStatistics(
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
            entries=len(self._entries),
            bytes=self._bytes,
            coalesced=self._coalesced,
        )

    def _lookup(self, key: K) -> tuple[V] | None:
        # A fresh entry's value (boxed: None may be a value), dropping an expired one.
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= trio.current_time():
            self._remove(key)
            self._expirations += 1
            return None
        self._entries.move_to_end(key)
        return (entry.value,)

    def _remove(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    async def _lead(
        self,
        key: K,
        fn: Callable[[*Ts], Awaitable[V]],
        args: tuple[*Ts],
        ttl: float | Callable[[], float],
    ) -> V:
        flight: _Flight[V] = _Flight()
        self._flights[key] = flight
        try:
            value = await fn(*args)
        except Exception as exc:
            flight.error = exc
            raise
        else:
            flight.ok = True
            flight.value = value
            if flight.store:
                self.put(key, value, ttl() if callable(ttl) else ttl)
            return value
        finally:
            # Reached on every exit; neither ok nor error means cancelled: a waiter leads.
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()


def make_key(obj: Any) -> str:
    """A cache key for a JSON-able structure: the blake2b-128 hex digest of its canonical JSON.

    Canonical means sorted keys and compact separators, so equal mappings give equal keys
    whatever their insertion order. JSON's own conflations apply (a tuple and a list with
    the same items give the same key; ``1`` and ``1.0`` do not).

    Raises:
      TypeError: ``obj`` holds something JSON cannot encode.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def default_ttl_policy(request: Any) -> float:
    """How long an LLM answer may be cached, per the AgentFlow guide's TTL rules.

    Creative requests get :data:`CREATIVE_TTL` (5 minutes), factual ones
    :data:`FACTUAL_TTL` (24 hours), the rest :data:`DEFAULT_TTL` (1 hour). The request is
    read duck-typed, as attributes or mapping keys: ``temperature`` and ``messages`` (each
    with ``role`` and ``content``; content a string or a list of parts with ``text``).

    Creative: ``temperature >= 0.7``, or the last user message mentions a creative task
    ("write a story", "poem", "brainstorm", "imagine", ...). Otherwise factual:
    ``temperature == 0``, or the last user message asks a factual question ("what is",
    "define", "when did", "capital of", ...). When the signals disagree the shorter TTL
    wins: caching too briefly costs one more call, too long serves a stale answer.
    """
    temperature = _field(request, "temperature")
    if not isinstance(temperature, int | float):
        temperature = None
    text = _last_user_text(request).lower()
    if (temperature is not None and temperature >= 0.7) or any(k in text for k in _CREATIVE):
        return CREATIVE_TTL
    if temperature == 0 or any(k in text for k in _FACTUAL):
        return FACTUAL_TTL
    return DEFAULT_TTL


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _last_user_text(request: Any) -> str:
    for message in reversed(_field(request, "messages") or ()):
        if _field(message, "role") == "user":
            content = _field(message, "content")
            if isinstance(content, str):
                return content
            parts = (_field(part, "text") for part in content or ())
            return " ".join(p for p in parts if isinstance(p, str))
    return ""
