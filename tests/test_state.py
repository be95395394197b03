"""Tests for agentflow_trio.state: State copy-on-write, SessionStore TTL, LRU and statistics,
the session protocol (load, compare-and-set save, merge) and the conversation history.

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
from agentflow_trio.state import (
    HISTORY_KEY,
    SessionBackend,
    SessionConflict,
    SessionDataError,
    SessionStore,
    SessionStoreStatistics,
    State,
    append_history,
    history_messages,
    merge_changes,
)

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


# --------------------------------------------------------------------------- merge rule


def test_merge_applies_disjoint_changes_on_top_of_the_newer_state() -> None:
    base = {"a": 1, "b": 2, "gone": 0}
    mine = {"a": 10, "b": 2, "new": "x"}  # changed a, added new, deleted gone
    latest = {"a": 1, "b": 20, "gone": 0, "theirs": True}
    merged = merge_changes("s", base, mine, latest, same=lambda x, y: x == y)
    assert merged == {"a": 10, "b": 20, "new": "x", "theirs": True}


def test_merge_refuses_a_key_both_changed_differently() -> None:
    with pytest.raises(SessionConflict) as caught:
        merge_changes("s1", {"n": 1, "k": 0}, {"n": 2, "k": 1}, {"n": 3, "k": 0})
    assert caught.value.keys == ("n",) and caught.value.session_id == "s1"
    assert "'n'" in str(caught.value) and "nothing of this event was written" in str(caught.value)
    with pytest.raises(SessionConflict):  # deleted by them, changed by me
        merge_changes("s", {"k": 1}, {"k": 2}, {}, same=lambda x, y: x == y)


def test_merge_refuses_the_same_value_written_twice_and_keeps_a_value_of_none() -> None:
    eq = lambda x, y: x == y  # noqa: E731
    with pytest.raises(SessionConflict):  # two increments of 1 both write 2: one is lost
        merge_changes("s", {"k": 1}, {"k": 2}, {"k": 2}, same=eq)
    assert merge_changes("s", {}, {"k": None}, {"other": 1}, same=eq) == {"k": None, "other": 1}


def history(*texts: str, appended: int | None = None, limit: int = 50) -> dict[str, Any]:
    messages = [{"role": "user", "content": t} for t in texts]
    count = len(messages) if appended is None else appended
    return {"messages": messages, "appended": count, "limit": limit}


def contents(value: Any) -> list[str]:
    return [m["content"] for m in value["messages"]]


def test_history_is_append_merged_in_commit_order() -> None:
    base = {HISTORY_KEY: history("t0")}
    mine = {HISTORY_KEY: history("t0", "mine")}
    latest = {HISTORY_KEY: history("t0", "theirs1", "theirs2")}
    merged = merge_changes("s", base, mine, latest, same=lambda x, y: x == y)
    assert contents(merged[HISTORY_KEY]) == ["t0", "theirs1", "theirs2", "mine"]
    assert merged[HISTORY_KEY]["appended"] == 4


def test_history_merge_keeps_the_bound_and_counts_trimmed_appends() -> None:
    base = {HISTORY_KEY: history("a", "b", appended=10, limit=2)}
    mine = {HISTORY_KEY: history("b", "m", appended=11, limit=2)}
    latest = {HISTORY_KEY: history("t1", "t2", appended=12, limit=2)}
    merged = merge_changes("s", base, mine, latest, same=lambda x, y: x == y)
    assert contents(merged[HISTORY_KEY]) == ["t2", "m"]
    assert merged[HISTORY_KEY]["appended"] == 13


def test_a_rewritten_history_is_an_ordinary_clash() -> None:
    base = {HISTORY_KEY: history("a")}
    latest = {HISTORY_KEY: history("a", "b")}
    for mine in ({HISTORY_KEY: history("x", appended=0)}, {HISTORY_KEY: "not a history"}, {}):
        with pytest.raises(SessionConflict):
            merge_changes("s", base, mine, latest, same=lambda x, y: x == y)


# --------------------------------------------------------------------------- history


def test_append_history_keeps_the_last_messages_and_never_starts_with_a_tool_answer() -> None:
    state = State()
    assert history_messages(state) == []
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}
    answer = {"role": "tool", "content": "42", "tool_call_id": "c"}
    append_history(state, [{"role": "user", "content": "q"}, call, answer], limit=10)
    snapshot = state.view()
    append_history(state, [{"role": "assistant", "content": "done"}], limit=2)
    assert [m["role"] for m in history_messages(state)] == ["assistant"]  # tool answer cut
    assert state[HISTORY_KEY]["appended"] == 4 and state[HISTORY_KEY]["limit"] == 2
    assert len(history_messages(snapshot)) == 3  # replaced, never mutated in place
    with pytest.raises(ValueError):
        append_history(state, [], limit=0)


@pytest.mark.parametrize(
    "value",
    ["text", {"messages": "x", "appended": 0}, {"messages": [1], "appended": 1},
     {"messages": [], "appended": True}, {"messages": [{}], "appended": 0}],
)  # fmt: skip
def test_a_value_that_is_not_a_history_is_refused(value: Any) -> None:
    state = State({HISTORY_KEY: value})
    with pytest.raises(SessionDataError):
        history_messages(state)
    with pytest.raises(SessionDataError):
        append_history(state, [{"role": "user", "content": "x"}])


# ----------------------------------------------------------------- SessionStore as a backend


async def test_store_is_a_backend_and_load_hands_out_isolated_forks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SessionStore(max_entries=10, ttl=60.0)
    assert isinstance(store, SessionBackend)
    new = await store.load("s")
    assert (new.version, dict(new.state)) == (0, {})
    assert await store.save(new) == 0 and len(store) == 0  # nothing changed: nothing stored
    new.state.set("n", 1)
    v1 = await store.save(new)
    assert v1 > 0 and store.get("s") == {"n": 1}
    first, second = await store.load("s"), await store.load("s")
    assert first.version == second.version == v1
    first.state.set("n", 2)
    assert second.state["n"] == 1 and store.get("s") == {"n": 1}  # isolated until saved
    assert await store.save(first) != v1 and store.get("s") == {"n": 2}
    assert first.state._copies == 1  # one copy-on-write per writing event


async def test_store_merges_concurrent_saves_and_refuses_a_clash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SessionStore(max_entries=10, ttl=60.0)
    store.put("s", State({"n": 0}))
    a, b, c = [await store.load("s") for _ in range(3)]
    a.state.set("a", 1)
    b.state.set("b", 2)
    c.state.set("a", 3)
    await store.save(a)
    await store.save(b)  # read before a's write: merged over it
    assert store.get("s") == {"n": 0, "a": 1, "b": 2}
    with pytest.raises(SessionConflict) as caught:
        await store.save(c)  # changed "a" differently from a
    assert caught.value.keys == ("a",)
    assert store.get("s") == {"n": 0, "a": 1, "b": 2}  # nothing of c written
    s = store.statistics()
    assert (s.merges, s.conflicts) == (1, 1)


async def test_store_save_refreshes_the_ttl_and_rewrites_an_expired_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = SessionStore(max_entries=10, ttl=10.0)
    store.put("s", State({"k": 1}))
    await trio.sleep(9.0)
    reader = await store.load("s")
    assert await store.save(reader) == reader.version  # unchanged: same version
    await trio.sleep(9.0)
    assert store.get("s") == {"k": 1}  # the save restarted the TTL
    writer = await store.load("s")
    writer.state.set("k", 2)
    await trio.sleep(10.0)  # the session expires while the event runs
    await store.save(writer)
    assert store.get("s") == {"k": 2}  # written back whole
