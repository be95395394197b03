"""Per-event and per-session state: `State` (copy-on-write), the session store protocol
(`SessionBackend`) and its in-process store (`SessionStore`: bounded, TTL).

`State` is the AgentFlow guide's ``CloneIfNeeded`` done once, in one place: reading never
copies, handing out a view or a fork never copies, and the first mutation after a view or
fork copies the dict exactly once. `SessionStore` keeps states between events of a session,
bounded by entry count (LRU) and by a per-entry TTL on `trio.current_time`.

Sessions across processes: a `SessionBackend` loads a session as a `SessionSnapshot` (the
event's own copy of the state and the version it was read at) and saves it back with
compare-and-set on that version. When another event of the session committed first, the
save merges (`merge_changes`) instead of overwriting: the rule is in `SessionBackend`.
`SessionStore` is the in-process backend; ``agentflow_trio.distributed.sessions`` has the
Redis one. The conversation of a session lives under `HISTORY_KEY` (`append_history`).
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import attrs
import trio

from .errors import AgentFlowError, ConfigError

if TYPE_CHECKING:
    from .config import MemoryConfig

__all__ = [
    "HISTORY_KEY",
    "HISTORY_LIMIT",
    "SessionBackend",
    "SessionConflict",
    "SessionDataError",
    "SessionError",
    "SessionSnapshot",
    "SessionStore",
    "SessionStoreStatistics",
    "SessionTooLarge",
    "State",
    "append_history",
    "history_messages",
    "merge_changes",
]


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


_MISSING: Final = object()
_CLASH: Final = object()


# --------------------------------------------------------------------------- errors


class SessionError(AgentFlowError):
    """A session's state could not be loaded or saved; ``session_id`` names the session.

    Raised by a `SessionBackend`; the runner ends the event ``failed`` with it (its output
    kept) and writes nothing of that event.
    """

    def __init__(self, message: str, session_id: object = None) -> None:
        self.session_id = session_id
        super().__init__(message)


class SessionConflict(SessionError):
    """Another event of the session committed a change to the same ``keys`` first (or
    kept committing for every retry): this event's changes were not written."""

    def __init__(self, session_id: object, keys: Sequence[str], detail: str = "") -> None:
        self.keys = tuple(keys)
        names = ", ".join(repr(k) for k in self.keys)
        what = detail or f"another event changed {names} first"
        super().__init__(
            f"session {session_id!r}: {what}; nothing of this event was written", session_id
        )


class SessionTooLarge(SessionError, ValueError):
    """A session's encoded state is ``size`` bytes, over ``limit`` (``[memory]
    max_state_bytes``): nothing was written; shrink the state (a shorter history)."""

    def __init__(self, session_id: object, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"session {session_id!r}: the state is {size} bytes encoded, over "
            f"[memory] max_state_bytes = {limit}; nothing was written",
            session_id,
        )


class SessionDataError(SessionError, ValueError):
    """A stored session entry breaks its format or a bound (a bad header, not JSON, too big
    before or after decompression, a history of the wrong shape): refused, never a crash."""


# --------------------------------------------------------------------------- the protocol


@attrs.frozen(slots=True)
class SessionSnapshot:
    """A session as one event loaded it: what `SessionBackend.load` returns and ``save``
    takes back.

    ``state`` is the event's own copy (mutate it); ``version`` the stored version it was
    read at (``0``: no stored session; otherwise opaque: equal means unchanged, not
    ordered); ``origin`` is the store's own record of what was read (the base of a merge),
    not for callers.
    """

    session_id: Any
    state: State
    version: int = 0
    origin: Any = attrs.field(default=None, repr=False)


@runtime_checkable
class SessionBackend(Protocol):
    """Where sessions live between events: `SessionStore` (one process) or
    ``distributed.sessions.RedisSessionStore`` (every process on one Redis).

    ``load`` returns the session's state (an empty one if absent or expired) with the
    version it was read at; ``save`` writes the event's state back and returns the new
    version. The runner loads before an event's agent and saves after it, only when the
    agent ``succeeded``: a failed, timed-out, cancelled or usage-limited event's changes
    are dropped (so a retried event never applies its changes twice).

    The concurrency rule (two events of one session never overwrite each other's writes
    silently): ``save`` is a compare-and-set on the loaded version. When another event
    committed in between, the save re-reads the newer state and merges (`merge_changes`):
    this event's changed keys (those whose value differs from what it loaded, deletions
    included) are applied on top of the newer state when the other writers left them
    alone; the conversation under `HISTORY_KEY` is append-merged (both events' new
    messages kept, in commit order); a key that both changed raises `SessionConflict`
    and nothing of the later event is written (even when both wrote the same value: two
    increments of a counter both write ``n + 1``). A session that expired while the event
    ran is written back whole. The rule guards writes, not reads: an event that derives
    one key from another that a concurrent event changed still commits (keep values that
    must agree under one key).
    """

    async def load(self, session_id: Any) -> SessionSnapshot:
        """The session's state and the version it was read at."""
        ...

    async def save(self, snapshot: SessionSnapshot) -> int:
        """Commit ``snapshot.state`` (merging over a newer version); the new version.

        Raises:
            SessionConflict: a key changed by another event too (see above).
            SessionError: the state cannot be stored (too large, not encodable).
        """
        ...


def merge_changes(
    session_id: object,
    base: Mapping[str, Any],
    mine: Mapping[str, Any],
    latest: Mapping[str, Any],
    *,
    same: Callable[[Any, Any], bool] = operator.is_,
) -> dict[str, Any]:
    """``latest`` with the changes ``mine`` made to ``base`` applied on top (the rule of
    `SessionBackend`). ``same(a, b)`` says two values are equal (identity by default, as
    `State` compares; ``operator.eq`` for decoded JSON).

    Raises:
        SessionConflict: a key ``mine`` changed was changed in ``latest`` too.
    """
    merged = dict(latest)
    clashes: list[str] = []
    changed = [k for k in mine if not _same(base.get(k, _MISSING), mine[k], same)]
    changed += [k for k in base if k not in mine]
    for key in changed:
        ours, theirs = mine.get(key, _MISSING), latest.get(key, _MISSING)
        if _same(base.get(key, _MISSING), theirs, same):
            joined = ours
        elif key == HISTORY_KEY:
            joined = _append_merge(base.get(key), ours, theirs)
        else:
            joined = _CLASH
        if joined is _CLASH:
            clashes.append(key)
        elif joined is _MISSING:
            merged.pop(key, None)
        else:
            merged[key] = joined
    if clashes:
        raise SessionConflict(session_id, clashes)
    return merged


def _same(a: Any, b: Any, same: Callable[[Any, Any], bool]) -> bool:
    if a is _MISSING or b is _MISSING:
        return a is b
    return bool(same(a, b))


# --------------------------------------------------------------------------- history

HISTORY_KEY: Final = "history"
"""The state key of a session's conversation: ``{"messages": [...], "appended": n,
"limit": n}`` (messages as JSON objects; ``appended`` counts every message ever added)."""

HISTORY_LIMIT: Final = 50
"""The default number of messages a session's history keeps (the most recent)."""


def history_messages(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The session's conversation (oldest first) as stored: JSON message objects.

    Raises:
        SessionDataError: the value under `HISTORY_KEY` is not a history.
    """
    value = state.get(HISTORY_KEY)
    return [] if value is None else list(_history(value)[0])


def append_history(
    state: State, messages: Sequence[Mapping[str, Any]], limit: int = HISTORY_LIMIT
) -> None:
    """Add ``messages`` (JSON message objects) to the conversation in ``state`` and keep
    the last ``limit``; a leading ``tool`` message whose call was cut is dropped too. The
    value is replaced, never mutated in place (copy-on-write snapshots stay intact).

    Raises:
        ValueError: ``limit < 1``.
        SessionDataError: the value under `HISTORY_KEY` is not a history.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"the history limit must be an integer >= 1, got {limit!r}")
    value = state.get(HISTORY_KEY)
    old, appended = ([], 0) if value is None else _history(value)
    kept = _trim([*old, *messages], limit)
    state.set(HISTORY_KEY, {"messages": kept, "appended": appended + len(messages), "limit": limit})


def _history(value: Any) -> tuple[list[Mapping[str, Any]], int]:
    """The messages and the append count of a stored history, checked."""
    if isinstance(value, Mapping):
        messages, appended = value.get("messages"), value.get("appended")
        if (
            isinstance(messages, list)
            and all(isinstance(m, Mapping) for m in messages)
            and isinstance(appended, int)
            and not isinstance(appended, bool)
            and appended >= len(messages)
        ):
            return messages, appended
    raise SessionDataError(f"the state's {HISTORY_KEY!r} is not a conversation history")


def _trim(messages: list[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    kept = messages[-limit:]
    start = 0
    while start < len(kept) and kept[start].get("role") == "tool":
        start += 1  # its assistant turn (the call) was cut: a model would refuse it
    return kept[start:]


def _append_merge(base: Any, ours: Any, theirs: Any) -> Any:
    """``theirs`` history followed by the messages ``ours`` added to ``base``; `_CLASH`
    when either is not an append to ``base`` (then it is an ordinary clash)."""
    try:
        start = 0 if base is None else _history(base)[1]
        our_messages, our_count = _history(ours)
        their_messages, their_count = _history(theirs)
    except SessionDataError:
        return _CLASH
    added = our_count - start
    if added < 0 or their_count < start:
        return _CLASH
    new = our_messages[len(our_messages) - min(added, len(our_messages)) :]
    limit = ours.get("limit")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        limit = max(len(our_messages), len(their_messages), 1)
    kept = _trim([*their_messages, *new], limit)
    return {"messages": kept, "appended": their_count + added, "limit": limit}


# --------------------------------------------------------------------------- in-process


@attrs.frozen
class SessionStoreStatistics:
    """A snapshot of a `SessionStore`.

    ``entries``: stored states (expired ones not yet removed included); ``hits`` and
    ``misses``: `SessionStore.get` and ``load`` outcomes (an expired entry is a miss);
    ``evictions``: live entries dropped for room (LRU); ``expirations``: entries dropped
    past their TTL; ``merges``: saves that found a newer version and merged over it;
    ``conflicts``: saves refused with `SessionConflict`.
    """

    entries: int
    hits: int
    misses: int
    evictions: int
    expirations: int
    merges: int = 0
    conflicts: int = 0


@attrs.frozen
class _Entry:
    state: State
    expires_at: float
    version: int


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

    It is also the in-process `SessionBackend` the runner uses: ``load`` hands each event a
    fork (copy-on-write: no copy until it writes) and ``save`` commits it by
    compare-and-set, merging over a newer version by the protocol's rule, so concurrent
    events of one session in this process never lose each other's writes. Values are
    compared by identity: set a new value rather than mutating a stored one in place.
    ``save`` refreshes the entry's TTL even when the event changed nothing.
    """

    __slots__ = (
        "_conflicts",
        "_entries",
        "_evictions",
        "_expirations",
        "_hits",
        "_merges",
        "_misses",
        "_version",
        "max_entries",
        "ttl",
    )

    def __init__(self, max_entries: int, ttl: float) -> None:
        """Raises: ConfigError: ``max_entries < 1`` or ``ttl <= 0``."""
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigError(f"expected an integer >= 1, got {max_entries!r}", key="max_entries")
        _check_ttl(ttl)
        self.max_entries = max_entries
        self.ttl = float(ttl)
        self._entries: OrderedDict[Any, _Entry] = OrderedDict()
        self._hits = self._misses = self._evictions = self._expirations = 0
        self._merges = self._conflicts = 0
        self._version = 0

    @classmethod
    def from_config(cls, cfg: MemoryConfig) -> SessionStore:
        """A store sized by ``[memory] state_cache_size`` and ``state_cache_ttl``."""
        return cls(max_entries=cfg.state_cache_size, ttl=cfg.state_cache_ttl)

    def get(self, session_id: Any) -> State | None:
        """The session's state (and mark it recently used), or None if absent or expired."""
        entry = self._live(session_id)
        return None if entry is None else entry.state

    def put(self, session_id: Any, state: State, ttl: float | None = None) -> None:
        """Store ``state`` for ``ttl`` seconds (default: the store's), replacing any old one.

        Raises: ConfigError: ``ttl <= 0``.
        """
        if ttl is not None:
            _check_ttl(ttl)
        self._insert(session_id, state, ttl)

    async def load(self, session_id: Any) -> SessionSnapshot:
        """`SessionBackend.load`: a fork of the stored state (counted as a `get`)."""
        await trio.lowlevel.checkpoint()
        entry = self._live(session_id)
        if entry is None:
            return SessionSnapshot(session_id, State(), 0, _EMPTY)
        mine = entry.state.fork()  # marks the stored dict shared: it never changes now
        return SessionSnapshot(session_id, mine, entry.version, entry.state._data)

    async def save(self, snapshot: SessionSnapshot) -> int:
        """`SessionBackend.save`: compare-and-set, merging over a newer version.

        Raises:
            SessionConflict: another event changed one of this event's keys too.
        """
        await trio.lowlevel.checkpoint()  # the rest is synchronous: atomic among tasks
        session_id, mine, base = snapshot.session_id, snapshot.state, snapshot.origin
        entry = self._entries.get(session_id)
        if entry is not None and trio.current_time() >= entry.expires_at:
            entry = None
        if mine._data is base or (not mine and not base):  # the event changed nothing
            if entry is None:
                return 0
            self._insert(session_id, entry.state, None, entry.version)
            return entry.version
        if entry is not None and entry.version != snapshot.version:
            try:
                merged = merge_changes(session_id, base, mine, entry.state)
            except SessionConflict:
                self._conflicts += 1
                raise
            self._merges += 1
            return self._insert(session_id, State(merged), None)
        return self._insert(session_id, mine.fork(), None)

    def pop(self, session_id: Any) -> State | None:
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
            merges=self._merges,
            conflicts=self._conflicts,
        )

    def _live(self, session_id: Any) -> _Entry | None:
        """The unexpired entry (marked recently used, a hit), or None (a miss)."""
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
        return entry

    def _insert(
        self, session_id: Any, state: State, ttl: float | None, version: int | None = None
    ) -> int:
        """Store ``state`` as the newest entry (a new version unless given); evict the LRU."""
        if version is None:
            self._version += 1
            version = self._version
        expires_at = trio.current_time() + (self.ttl if ttl is None else ttl)
        self._entries[session_id] = _Entry(state, expires_at, version)
        self._entries.move_to_end(session_id)
        if len(self._entries) > self.max_entries:
            _, oldest = self._entries.popitem(last=False)
            if trio.current_time() >= oldest.expires_at:
                self._expirations += 1
            else:
                self._evictions += 1
        return version


_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def _check_ttl(ttl: float) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ConfigError(f"expected a TTL > 0 seconds, got {ttl!r}", key="ttl")
