"""Tests for agentflow_trio.state: State copy-on-write, SessionStore TTL, LRU and statistics.

SessionStore tests run under the ``autojump_clock`` fixture: virtual time, exact and instant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.config import MemoryConfig
from agentflow_trio.errors import ConfigError
from agentflow_trio.state import SessionStore, SessionStoreStatistics, State

# --------------------------------------------------------------------------- State


def test_mapping_interface() -> None:
    s = State({"a": 1, "b": 2})
    assert s["a"] == 1 and s.get("b") == 2 and s.get("zz") is None and s.get("zz", 0) == 0
    assert "a" in s and "zz" not in s
    assert len(s) == 2 and list(s) == ["a", "b"]
    assert list(s.keys()) == ["a", "b"] and list(s.items()) == [("a", 1), ("b", 2)]
    assert isinstance(s, Mapping) and s == {"a": 1, "b": 2}
    with pytest.raises(KeyError):
        s["zz"]
    assert State() == {} and len(State()) == 0
    assert not hasattr(s, "__dict__")  # __slots__


def test_unshared_state_mutates_in_place() -> None:
    s = State()
    s.set("a", 1)
    s.update({"b": 2, "c": 3})
    s.delete("c")
    assert s == {"a": 1, "b": 2}
    assert s._copies == 0


def test_only_reading_never_copies() -> None:
    data = {"a": 1}
    s = State(data)
    for _ in range(3):
        assert s["a"] == 1 and s.get("a") == 1 and "a" in s and list(s) == ["a"]
        s.view()
        s.fork()
    assert s._copies == 0
    assert s.view() == data


def test_state_from_data_copies_once_on_first_write() -> None:
    data = {"a": 1}
    s = State(data)
    s.set("b", 2)
    s.set("c", 3)
    s.delete("a")
    assert data == {"a": 1}  # the caller's dict is never written
    assert s == {"b": 2, "c": 3}
    assert s._copies == 1


def test_view_is_a_frozen_snapshot_and_copy_happens_once() -> None:
    s = State()
    s.set("a", 1)
    view = s.view()
    assert s.view() is view  # cached while unchanged
    s.set("a", 2)
    s.set("b", 3)
    s.update({"c": 4})
    assert view == {"a": 1}
    assert s == {"a": 2, "b": 3, "c": 4}
    assert s._copies == 1
    with pytest.raises(TypeError):
        view["a"] = 5  # type: ignore[index]


def test_each_new_view_costs_at_most_one_copy() -> None:
    s = State()
    views = []
    for i in range(5):
        s.set("n", i)
        views.append(s.view())
    assert [v["n"] for v in views] == [0, 1, 2, 3, 4]
    assert s._copies == 4  # the first set had nothing shared to protect


def test_fork_shares_then_isolates() -> None:
    parent = State({"a": 1})
    child = parent.fork()
    assert child == parent and child._copies == 0
    child.set("a", 2)
    parent.set("b", 3)
    assert parent == {"a": 1, "b": 3}
    assert child == {"a": 2}
    assert (parent._copies, child._copies) == (1, 1)
    child.set("c", 4)
    assert child._copies == 1


def test_view_of_parent_survives_fork_writes() -> None:
    parent = State({"a": 1})
    view = parent.view()
    child = parent.fork()
    child.delete("a")
    parent.set("a", 9)
    assert view == {"a": 1}


def test_no_op_mutations_do_not_copy() -> None:
    token = object()
    s = State({"k": token})
    s.set("k", token)  # the identical object
    s.update({})
    with pytest.raises(KeyError):
        s.delete("missing")
    assert s._copies == 0


def test_repr() -> None:
    assert repr(State({"a": 1})) == "State({'a': 1})"


_keys = st.sampled_from("abcd")
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _keys, st.integers(0, 3)),
        st.tuples(st.just("update"), st.dictionaries(_keys, st.integers(0, 3), max_size=3)),
        st.tuples(st.just("delete"), _keys),
        st.tuples(st.just("view")),
        st.tuples(st.just("fork")),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_state_behaves_like_a_dict_with_frozen_snapshots(ops: list[tuple[Any, ...]]) -> None:
    state, model = State(), {}
    snapshots: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
    shares = 0
    for op, *args in ops:
        if op == "set":
            state.set(args[0], args[1])
            model[args[0]] = args[1]
        elif op == "update":
            state.update(args[0])
            model.update(args[0])
        elif op == "delete":
            if args[0] in model:
                state.delete(args[0])
                del model[args[0]]
            else:
                with pytest.raises(KeyError):
                    state.delete(args[0])
        elif op == "view":
            snapshots.append((state.view(), dict(model)))
            shares += 1
        else:
            snapshots.append((state.fork(), dict(model)))
            shares += 1
        assert state == model
    for snapshot, expected in snapshots:
        assert dict(snapshot) == expected
    assert state._copies <= shares


# --------------------------------------------------------------------------- SessionStore


def stats(store: SessionStore) -> tuple[int, int, int, int, int]:
    s = store.statistics()
    assert isinstance(s, SessionStoreStatistics)
    return (s.entries, s.hits, s.misses, s.evictions, s.expirations)


async def test_ttl_expiry_is_exact(autojump_clock: trio.testing.MockClock) -> None:
    store = SessionStore(max_entries=10, ttl=60.0)
    state = State({"turn": 1})
    put_at = trio.current_time()
    store.put("s1", state)
    await trio.sleep(59.999)
    assert store.get("s1") is state
    await trio.sleep_until(put_at + 60.0)
    assert store.get("s1") is None
    assert len(store) == 0
    assert stats(store) == (0, 1, 1, 0, 1)


async def test_sleeping_ttl_then_miss(autojump_clock: trio.testing.MockClock) -> None:
    store = SessionStore(max_entries=10, ttl=30.0)
    store.put("s", State())
    await trio.sleep(30.0)
    assert store.get("s") is None
    assert store.statistics().expirations == 1


async def test_per_entry_ttl_and_refresh_on_put(autojump_clock: trio.testing.MockClock) -> None:
    store = SessionStore(max_entries=10, ttl=100.0)
    store.put("short", State(), ttl=5.0)
    store.put("long", State())
    await trio.sleep(5.0)
    assert store.get("short") is None
    assert store.get("long") is not None
    await trio.sleep(90.0)
    store.put("long", State({"v": 2}))  # re-putting restarts the TTL
    await trio.sleep(50.0)
    refreshed = store.get("long")
    assert refreshed is not None and refreshed["v"] == 2


async def test_get_does_not_extend_ttl(autojump_clock: trio.testing.MockClock) -> None:
    store = SessionStore(max_entries=10, ttl=10.0)
    store.put("s", State())
    for _ in range(9):
        await trio.sleep(1.0)
        assert store.get("s") is not None
    await trio.sleep(1.0)
    assert store.get("s") is None


async def test_lru_bound(autojump_clock: trio.testing.MockClock) -> None:
    store = SessionStore(max_entries=2, ttl=60.0)
    a, b, c = State(), State(), State()
    store.put("a", a)
    store.put("b", b)
    assert store.get("a") is a  # a is now the most recently used
    store.put("c", c)
    assert len(store) == 2
    assert store.get("b") is None  # evicted
    assert store.get("a") is a and store.get("c") is c
    assert stats(store) == (2, 3, 1, 1, 0)


async def test_put_existing_key_replaces_without_eviction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SessionStore(max_entries=2, ttl=60.0)
    store.put("a", State())
    store.put("b", State())
    newer = State({"x": 1})
    store.put("a", newer)
    assert len(store) == 2 and store.get("a") is newer and store.get("b") is not None
    assert store.statistics().evictions == 0


async def test_bound_holds_under_many_puts(autojump_clock: trio.testing.MockClock) -> None:
    store = SessionStore(max_entries=8, ttl=60.0)
    for i in range(100):
        store.put(f"s{i}", State())
        assert len(store) <= 8
    assert [store.get(f"s{i}") is not None for i in range(92, 100)] == [True] * 8
    assert store.statistics().evictions == 92


async def test_evicting_an_expired_entry_counts_as_expiration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SessionStore(max_entries=1, ttl=60.0)
    store.put("old", State(), ttl=1.0)
    await trio.sleep(2.0)
    store.put("new", State())
    assert stats(store) == (1, 0, 0, 0, 1)


async def test_purge_expired_and_pop(autojump_clock: trio.testing.MockClock) -> None:
    store = SessionStore(max_entries=10, ttl=10.0)
    for i in range(3):
        store.put(f"short{i}", State(), ttl=1.0)
    keep = State()
    store.put("keep", keep)
    store.put("gone", State(), ttl=1.0)
    await trio.sleep(1.0)
    assert store.pop("gone") is None  # expired: removed, counted, not returned
    assert store.purge_expired() == 3
    assert store.purge_expired() == 0
    assert len(store) == 1
    assert store.pop("keep") is keep
    assert store.pop("keep") is None
    assert stats(store) == (0, 0, 0, 0, 4)


async def test_from_config(autojump_clock: trio.testing.MockClock) -> None:
    store = SessionStore.from_config(MemoryConfig(state_cache_size=3, state_cache_ttl=2.0))
    assert (store.max_entries, store.ttl) == (3, 2.0)
    store.put("s", State())
    await trio.sleep(2.0)
    assert store.get("s") is None


@pytest.mark.parametrize(("max_entries", "ttl"), [(0, 1.0), (True, 1.0), (1, 0), (1, -1.0)])
def test_invalid_arguments(max_entries: int, ttl: float) -> None:
    with pytest.raises(ConfigError):
        SessionStore(max_entries=max_entries, ttl=ttl)


async def test_invalid_per_entry_ttl(autojump_clock: trio.testing.MockClock) -> None:
    store = SessionStore(max_entries=1, ttl=1.0)
    with pytest.raises(ConfigError):
        store.put("s", State(), ttl=0)
    assert len(store) == 0


def test_store_needs_trio() -> None:
    store = SessionStore(max_entries=1, ttl=1.0)
    with pytest.raises(RuntimeError):
        store.put("s", State())
