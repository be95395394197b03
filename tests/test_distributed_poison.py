"""Poison stream entries against a real ``redis-server`` (issue 17).

An entry a worker cannot run (``timeout: "nan"``, a missing type, wrong JSON types, an
oversized or too deep payload ...) used to crash ``agentcli worker``, once per restart,
cancelling the events it held each time. Now each one is dead-lettered on its first
delivery with the reason, and the events beside it carry on.

Rules of this module are those of tests/test_distributed.py: a real server on
127.0.0.1 and a free port, in-process workers, the real clock, every trio test body
under an absolute ``trio.fail_after``, waiting by polling ``statistics()``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import agentflow_trio as af
from agentflow_trio._json import dumps, loads
from agentflow_trio.config import Config, DistributedConfig, RunnerConfig
from agentflow_trio.distributed import RemoteRunner, Worker, run_worker
from agentflow_trio.distributed._codec import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    decode_entry,
    encode_event,
)
from agentflow_trio.errors import MalformedEntry

pytest.importorskip("coredis")

from _redis import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

TIMEOUT = 30


def config(url: str) -> Config:
    return Config(
        distributed=DistributedConfig(
            redis_url=url, claim_idle=1.0, block=0.1, retry_delay=0.0, max_deliveries=3
        ),
        runner=RunnerConfig(drain_timeout=2.0),
    )


@asynccontextmanager
async def serving(cfg: Config, agents: Mapping[str, Any]) -> AsyncIterator[Worker]:
    async with trio.open_nursery() as nursery:
        worker: Worker = await nursery.start(functools.partial(run_worker, cfg, agents))
        try:
            yield worker
        finally:
            worker.shutdown()


async def slow(ctx: af.Context, event: af.Event) -> Any:
    await trio.sleep(event.data.get("sleep", 0))
    return dict(event.data)


def _event_json(**changes: Any) -> bytes:
    """A valid event's JSON with ``changes`` applied (a value of ... drops the key)."""
    event = af.Event("slow", {"x": 1}, id=changes.pop("id", "poison"))
    obj = loads(encode_event(event))
    for key, value in changes.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    return dumps(obj)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# Each poison entry: its fields (``id`` defaults to the event id) and what the reason names.
POISON: dict[str, tuple[dict[str, Any], str]] = {
    "nan_timeout": ({"event": _event_json(), "timeout": b"nan"}, "timeout"),
    "inf_timeout": ({"event": _event_json(), "timeout": b"inf"}, "timeout"),
    "negative_timeout": ({"event": _event_json(), "timeout": b"-1"}, "timeout"),
    "huge_timeout": ({"event": _event_json(), "timeout": b"1e300"}, "timeout"),
    "text_timeout": ({"event": _event_json(), "timeout": b"soon"}, "timeout"),
    "binary_timeout": ({"event": _event_json(), "timeout": b"\xff\xfe"}, "timeout"),
    "missing_type": ({"event": _event_json(type=...)}, "type"),
    "type_not_a_string": ({"event": _event_json(type=["slow"])}, "type"),
    "empty_type": ({"event": _event_json(type="")}, "type"),
    "long_type": ({"event": _event_json(type="t" * 10_000)}, "MAX_NAME_LENGTH"),
    "data_not_an_object": ({"event": _event_json(data=[1, 2])}, "data"),
    "metadata_a_string": ({"event": _event_json(metadata="x")}, "metadata"),
    "created_at_text": ({"event": _event_json(created_at="now")}, "created_at"),
    "created_at_bool": ({"event": _event_json(created_at=True)}, "created_at"),
    "created_at_huge": ({"event": _event_json(created_at=0).replace(b":0}", b":1e999}")}, "JSON"),
    "not_json": ({"event": b"{not json"}, "JSON"),
    "json_array": ({"event": b"[1, 2]"}, "JSON"),
    "missing_event": ({}, "event field"),
    "too_deep": ({"event": _event_json(data={"d": _nested(MAX_DEPTH + 5)})}, "MAX_DEPTH"),
    "very_deep": ({"event": b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"}, "MAX_"),
    "oversized": (
        {"event": _event_json(data={"blob": "x" * (MAX_EVENT_BYTES + 1)})},
        "MAX_EVENT_BYTES",
    ),
    "id_mismatch": ({"event": _event_json(id="other")}, "id"),
    "missing_id_field": ({"id": None, "event": _event_json()}, "id"),
    "long_id_field": ({"id": "i" * 5000, "event": _event_json(id="i" * 5000)}, "id"),
}


def _fields(name: str) -> dict[str | bytes, bytes | str]:
    fields, _ = POISON[name]
    out: dict[str | bytes, bytes | str] = {"id": f"poison-{name}"}
    for key, value in fields.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    if "event" in out and out.get("id") == f"poison-{name}" and isinstance(out["event"], bytes):
        out["event"] = out["event"].replace(b'"id":"poison"', f'"id":"poison-{name}"'.encode())
    return out


@pytest.mark.parametrize("name", sorted(POISON))
def test_decode_entry_names_what_is_wrong(name: str) -> None:
    fields = {
        (k if isinstance(k, bytes) else k.encode()): (v if isinstance(v, bytes) else v.encode())
        for k, v in _fields(name).items()
    }
    event_id = fields.get(b"id", b"1-0").decode()
    if len(event_id) > 256:
        event_id = "1-0"
    with pytest.raises(MalformedEntry) as info:
        decode_entry(fields, event_id)
    assert POISON[name][1] in str(info.value) or POISON[name][1] == info.value.bound
    assert isinstance(info.value, ValueError)


async def test_poison_entries_are_dead_lettered_on_first_delivery(
    redis_server: RedisServer,
) -> None:
    cfg = config(redis_server.url)
    names = sorted(POISON)
    with trio.fail_after(TIMEOUT):
        async with serving(cfg, {"slow": slow}) as worker, RemoteRunner(cfg) as remote:
            bus = remote._bus
            assert bus is not None
            beside = await remote.emit(af.Event("slow", {"sleep": 1.0}))
            await trio.sleep(0.2)  # it runs on the worker while the poison comes in
            entry_ids = [await bus.add(_fields(name)) for name in names]
            good = await remote.call(af.Event("slow", {"after": True}))
            assert (await beside.result()).succeeded  # never cancelled by a crash
            assert good.succeeded

            while worker.statistics().dead_lettered < len(names):  # noqa: ASYNC110
                await trio.sleep(0.02)
            dead = await remote.dead_letters(count=1000)
            stats = worker.statistics()
    assert stats.dead_lettered == len(names)
    # Stored: beside and good, and each poison entry's failure (for whoever waits on it).
    assert stats.retried == 0 and stats.stored == 2 + len(names)
    assert stats.runner is not None and stats.runner.accepted == 2  # no poison reached it
    by_entry = {d.source_entry: d for d in dead}
    for name, entry_id in zip(names, entry_ids, strict=True):
        letter = by_entry[entry_id]
        assert letter.deliveries == 1, name  # the first delivery, not max_deliveries
        assert letter.error.type == "MalformedEntry", name
        assert POISON[name][1] in letter.error.message, (name, letter.error.message)
        assert len(letter.raw_event) <= 64 * 1024, name  # an excerpt, not the whole entry


async def test_a_nan_timeout_entry_leaves_a_waiting_producer_an_answer(
    redis_server: RedisServer,
) -> None:
    cfg = config(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with serving(cfg, {"slow": slow}), RemoteRunner(cfg) as remote:
            bus = remote._bus
            assert bus is not None
            event = af.Event("slow")
            fields = bus.entry_fields(event, 5.0)
            fields["timeout"] = "nan"  # what a careless producer in another language sends
            await bus.add(fields)
            result = await remote.wait_result(event.id)
    assert result.outcome is af.Outcome.FAILED
    assert result.error is not None and result.error.type == "MalformedEntry"
    assert "timeout" in result.error.message


# --------------------------------------------------------------------------- producers


@pytest.mark.parametrize("timeout", [math.nan, -1.0, 0, math.inf, 8 * 86400.0, "5", True])
async def test_remote_emit_refuses_a_bad_timeout_before_sending(
    redis_server: RedisServer, timeout: Any
) -> None:
    cfg = config(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with RemoteRunner(cfg) as remote:
            with pytest.raises(af.ConfigError, match="timeout"):
                await remote.emit(af.Event("slow"), timeout=timeout)
            with pytest.raises(af.ConfigError, match="timeout"):
                await remote.emit_many([af.Event("slow")], timeout=timeout)
            if timeout not in (math.inf, 8 * 86400.0):  # a long wait is allowed
                with pytest.raises(af.ConfigError, match="result_timeout"):
                    await remote.call(af.Event("slow"), result_timeout=timeout)
                with pytest.raises(af.ConfigError, match="timeout"):
                    await remote.wait_result("some-id", timeout=timeout)
            assert remote.statistics().emitted == 0


@pytest.mark.parametrize(
    "event",
    [
        af.Event("slow", {"blob": "x" * MAX_EVENT_BYTES}),
        af.Event("slow", {"deep": _nested(MAX_DEPTH + 1)}),
        af.Event("t" * 257),
        af.Event("slow", id=""),
        af.Event("slow", created_at=math.nan),
        af.Event("slow", data=None),  # type: ignore[arg-type]
    ],
    ids=["oversized", "too_deep", "long_type", "empty_id", "nan_created_at", "data_none"],
)
async def test_remote_emit_refuses_an_event_a_worker_would_refuse(
    redis_server: RedisServer, event: af.Event
) -> None:
    cfg = config(redis_server.url)
    with trio.fail_after(TIMEOUT):
        async with RemoteRunner(cfg) as remote:
            with pytest.raises(MalformedEntry):
                await remote.emit(event)
            with pytest.raises(TypeError, match="Event"):
                await remote.emit("not an event")  # type: ignore[arg-type]
            assert remote.statistics().emitted == 0


async def test_a_worker_over_its_memory_limit_hands_entries_back_and_lives(
    redis_server: RedisServer,
) -> None:
    from agentflow_trio.config import RuntimeConfig

    base = config(redis_server.url)
    cfg = Config(
        distributed=base.distributed,
        runner=base.runner,
        runtime=RuntimeConfig(memory_limit=1, memory_check_interval=0.05),  # always over
    )
    with trio.fail_after(TIMEOUT):
        async with serving(cfg, {"slow": slow}) as worker, RemoteRunner(cfg) as remote:
            await remote.emit(af.Event("slow"))
            while worker.statistics().released < 2:  # noqa: ASYNC110
                await trio.sleep(0.02)
            stats = worker.statistics()
    assert stats.runner is not None and stats.runner.accepted == 0
    assert stats.runner.refused >= 2 and stats.dead_lettered == 0


async def test_a_configured_max_event_bytes_is_honoured(redis_server: RedisServer) -> None:
    base = config(redis_server.url)
    small = attrs.evolve(base, distributed=attrs.evolve(base.distributed, max_event_bytes=2048))
    event = af.Event("slow", {"blob": "x" * 4096})  # well within the default 1 MiB
    with trio.fail_after(TIMEOUT):
        async with RemoteRunner(small) as strict:
            with pytest.raises(MalformedEntry, match="max_event_bytes") as info:
                await strict.emit(event)  # refused before sending, with the configured bound
            assert info.value.limit == 2048
        async with serving(small, {"slow": slow}) as worker, RemoteRunner(base) as remote:
            result = await remote.call(event)  # the default producer sends it
            dead = await remote.dead_letters()
            stats = worker.statistics()
    assert result.outcome is af.Outcome.FAILED
    assert result.error is not None and result.error.type == "MalformedEntry"
    assert "over the bound of 2048" in result.error.message
    assert stats.dead_lettered == 1 and stats.runner is not None and stats.runner.accepted == 0
    (letter,) = dead
    assert letter.deliveries == 1 and "max_event_bytes" in letter.error.message


def test_deep_json_is_refused_by_the_stdlib_fallback_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from agentflow_trio.distributed import _codec

    monkeypatch.setattr(_codec, "loads", json.loads)  # as without orjson: RecursionError
    deep = b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MalformedEntry, match="MAX_DEPTH"):
        _codec.decode_event(deep)
    with pytest.raises(ValueError, match="too deep"):
        _codec.decode_error(b"[" * 100_000)
