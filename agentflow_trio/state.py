"""Per-event and per-session state: `State` (copy-on-write) and `SessionStore` (bounded, TTL).

`State` is the AgentFlow guide's ``CloneIfNeeded`` done once, in one place: reading never
copies, handing out a view or a fork never copies, and the first mutation after a view or
fork copies the dict exactly once. `SessionStore` keeps states between events of a session,
bounded by entry count (LRU) and by a per-entry TTL on `trio.current_time`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import ItemsView, Iterator, KeysView, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import MemoryConfig

__all__ = ["SessionStore", "SessionStoreStatistics", "State"]


class State(Mapping[str, Any]):
    """A mutable string-keyed mapping with copy-on-write snapshots.

    Guarantees:

    * Reads (``get``, ``[]``, ``in``, iteration, ``view``, ``fork``) never copy.
    * `view` and `fork` mark the underlying dict *shared*. A state whose dict is not shared
      mutates in place; the first mutation of a shared one copies the dict once, after
      which the state owns its copy again. So a view or a fork never changes after it was
      taken, whatever anyone mutates later, and a state that is only read is never copied.
    * ``State(data)`` does not copy ``data`` either: it is treated as shared and copied on
      the first mutation. The caller must not mutate ``data`` afterwards.

    ``keys()`` and ``items()`` are live views of the current contents, like a dict's; take
    `view` for a snapshot. Not safe for use from several threads (trio tasks are fine).
    """

    __slots__ = ("_copies", "_data", "_shared", "_view")

    _data: Mapping[str, Any]
    _shared: bool
    _view: Mapping[str, Any] | None
    _copies: int

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = {} if data is None else data
        self._shared = data is not None
        self._view = None
        self._copies = 0

    # Reads -------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value for ``key``, or ``default``."""
        return self._data.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def keys(self) -> KeysView[str]:
        """A live view of the keys (see the class docstring)."""
        return self._data.keys()

    def items(self) -> ItemsView[str, Any]:
        """A live view of the items (see the class docstring)."""
        return self._data.items()

    def view(self) -> Mapping[str, Any]:
        """A read-only snapshot: a `types.MappingProxyType` over the current dict, no copy.

        The snapshot never changes: a later mutation of this state copies first.
        """
        self._shared = True
        if self._view is None:
            self._view = MappingProxyType(self._data)
        return self._view

    def fork(self) -> State:
        """A new state sharing this one's dict (no copy); each copies on its first write."""
        self._shared = True
        other = State.__new__(State)
        other._data = self._data
        other._shared = True
        other._view = self._view
        other._copies = 0
        return other

    # Mutations ---------------------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """Bind ``key`` to ``value``. Re-binding the identical object is a no-op (no copy)."""
        if self._data.get(key, _MISSING) is value:
            return
        self._own()[key] = value

    def update(self, mapping: Mapping[str, Any]) -> None:
        """Bind every key of ``mapping``; an empty mapping is a no-op (no copy)."""
        if mapping:
            self._own().update(mapping)

    def delete(self, key: str) -> None:
        """Remove ``key``.

        Raises:
            KeyError: ``key`` is absent (nothing is copied then).
        """
        if key not in self._data:
            raise KeyError(key)
        del self._own()[key]

    def _own(self) -> dict[str, Any]:
        """The dict to mutate: copied once if shared, else the one we already own."""
        if self._shared:
            self._data = dict(self._data)
            self._shared = False
            self._view = None
            self._copies += 1
        data = self._data
        assert isinstance(data, dict)
        return data

    def __repr__(self) -> str:
        return f"State({dict(self._data)!r})"


_MISSING = object()


@attrs.frozen
class SessionStoreStatistics:
    """A snapshot of a `SessionStore`.

    ``entries``: stored states (expired ones not yet removed included); ``hits`` and
    ``misses``: `SessionStore.get` outcomes (an expired entry is a miss); ``evictions``:
    live entries dropped for room (LRU); ``expirations``: entries dropped past their TTL.
    """

    entries: int
    hits: int
    misses: int
    evictions: int
    expirations: int


@attrs.frozen
class _Entry:
    state: State
    expires_at: float


class SessionStore:
    """Session id -> `State`, bounded to ``max_entries`` (LRU) with a per-entry TTL.

    An entry put at time *t* with TTL *ttl* is a hit strictly before *t + ttl* and gone from
    *t + ttl* on (times from `trio.current_time`, so tests run it under `MockClock`). Expired
    entries are removed when touched (`get`, `pop`, eviction) or by `purge_expired`. The store
    never holds more than ``max_entries``; putting into a full store drops the least
    recently used entry (a `get` hit or a `put` counts as use).

    The methods are synchronous and never checkpoint, but read the trio clock: call them from
    inside `trio.run`. `get` returns the stored `State` itself; ``fork()`` it to isolate
    concurrent events of one session.
    """

    __slots__ = ("_entries", "_evictions", "_expirations", "_hits", "_misses", "max_entries", "ttl")

    def __init__(self, max_entries: int, ttl: float) -> None:
        """Raises: ConfigError: ``max_entries < 1`` or ``ttl <= 0``."""
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigError(f"expected an integer >= 1, got {max_entries!r}", key="max_entries")
        _check_ttl(ttl)
        self.max_entries = max_entries
        self.ttl = float(ttl)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._hits = self._misses = self._evictions = self._expirations = 0

    @classmethod
    def from_config(cls, cfg: MemoryConfig) -> SessionStore:
        """A store sized by ``[memory] state_cache_size`` and ``state_cache_ttl``."""
        return cls(max_entries=cfg.state_cache_size, ttl=cfg.state_cache_ttl)

    def get(self, session_id: str) -> State | None:
        """The session's state (and mark it recently used), or None if absent or expired."""
        entry = self._entries.get(session_id)
        if entry is None:
            self._misses += 1
            return None
        if trio.current_time() >= entry.expires_at:
            del self._entries[session_id]
            self._expirations += 1
            self._misses += 1
            return None
        self._entries.move_to_end(session_id)
        self._hits += 1
        return entry.state

    def put(self, session_id: str, state: State, ttl: float | None = None) -> None:
        """Store ``state`` for ``ttl`` seconds (default: the store's), replacing any old one.

        Raises: ConfigError: ``ttl <= 0``.
        """
        if ttl is not None:
            _check_ttl(ttl)
        expires_at = trio.current_time() + (self.ttl if ttl is None else ttl)
        self._entries[session_id] = _Entry(state, expires_at)
        self._entries.move_to_end(session_id)
        if len(self._entries) > self.max_entries:
            _, oldest = self._entries.popitem(last=False)
            if trio.current_time() >= oldest.expires_at:
                self._expirations += 1
            else:
                self._evictions += 1

    def pop(self, session_id: str) -> State | None:
        """Remove the session and return its state, or None if absent or expired."""
        entry = self._entries.pop(session_id, None)
        if entry is None:
            return None
        if trio.current_time() >= entry.expires_at:
            self._expirations += 1
            return None
        return entry.state

    def purge_expired(self) -> int:
        """Remove every expired entry (O(entries)); return how many were removed."""
        now = trio.current_time()
        expired = [sid for sid, entry in self._entries.items() if now >= entry.expires_at]
        for sid in expired:
            del self._entries[sid]
        self._expirations += len(expired)
        return len(expired)

    def __len__(self) -> int:
        """Stored entries, including expired ones not yet removed."""
        return len(self._entries)

    def statistics(self) -> SessionStoreStatistics:
        """Counters since creation, and the current number of entries."""
        return SessionStoreStatistics(
            entries=len(self._entries),
            hits=self._hits,
            misses=self._misses,
            evictions=self._evictions,
            expirations=self._expirations,
        )


def _check_ttl(ttl: float) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ConfigError(f"expected a TTL > 0 seconds, got {ttl!r}", key="ttl")
