"""The bus: every Redis command the producers and workers send, in one place.

`Bus` knows the key names (stream, group, results, dead letters, per-event keys) and
turns coredis replies into plain values. It never retries and never sleeps: callers
decide (producers raise `BrokerUnavailable`, workers back off and try again).

Entry fields: ``id`` (the event id), ``event`` (the event as JSON) and, if the producer
set one, ``timeout`` (seconds, the event's run timeout on the worker); their bounds are
`_codec`'s, checked when an entry is made and again when it is read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from .._json import dumps
from ..config import DistributedConfig
from ..events import Event
from . import _scripts
from ._codec import entry_fields

if TYPE_CHECKING:
    from coredis import Redis

__all__ = ["Bus", "Op", "RawEntry", "dead_record"]

_CHUNK: Final = 500  # keys per MGET / ids per XCLAIM

OpKind = Literal["done", "dead", "ack", "retry", "release"]


@attrs.frozen(slots=True)
class RawEntry:
    """A stream entry as read: its id, its raw fields, and how often it was delivered."""

    entry_id: str
    fields: dict[bytes, bytes]
    deliveries: int


@attrs.frozen(slots=True)
class Op:
    """One change for `Bus.commit` (see the `COMMIT` script for the kinds)."""

    kind: OpKind
    entry_id: str
    event_id: str
    payload: bytes = b""
    extra: bytes = b""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _fields(values: Mapping[Any, Any]) -> dict[bytes, bytes]:
    return {_bytes(k): _bytes(v) for k, v in values.items()}


class Bus:
    """The Redis side of the distributed runner, over one coredis client."""

    def __init__(self, client: Redis[bytes], settings: DistributedConfig) -> None:
        self.client = client
        self.settings = settings
        self.stream = settings.stream
        self.group = settings.group
        self._prefix = settings.key_prefix
        self._ttl_ms = str(max(1, round(settings.result_ttl * 1000)))
        self._maxlen = str(settings.maxlen)
        self._inspect = client.register_script(_scripts.INSPECT)
        self._claim = client.register_script(_scripts.CLAIM)
        self._commit = client.register_script(_scripts.COMMIT)

    # ------------------------------------------------------------------ names
    def result_key(self, event_id: str) -> str:
        """Where the result of ``event_id`` is stored."""
        return f"{self._prefix}:result:{event_id}"

    def error_key(self, event_id: str) -> str:
        """Where the last error of ``event_id`` is kept between deliveries."""
        return f"{self._prefix}:error:{event_id}"

    # ------------------------------------------------------------------ producers
    def entry_fields(self, event: Event, timeout: float | None) -> dict[str | bytes, bytes | str]:
        """The stream fields of ``event``, within the bounds workers apply (the size bound
        is ``settings.max_event_bytes``; see `_codec.entry_fields` for what it raises)."""
        return entry_fields(event, timeout, max_bytes=self.settings.max_event_bytes)

    async def add(self, fields: dict[str | bytes, bytes | str]) -> str:
        """``XADD`` one entry (``MAXLEN ~``); return its entry id."""
        from coredis.tokens import PureToken

        entry_id = await self.client.xadd(
            self.stream,
            fields,
            trim_strategy=PureToken.MAXLEN,
            threshold=self._maxlen,
            trim_operator=PureToken.APPROXIMATELY,
        )
        assert entry_id is not None
        return _text(entry_id)

    async def add_many(self, entries: Sequence[dict[str | bytes, bytes | str]]) -> list[str]:
        """``XADD`` several entries in one pipelined round trip; their entry ids in order."""
        from coredis.tokens import PureToken

        async with self.client.pipeline(transaction=False) as pipe:
            requests = [
                pipe.xadd(
                    self.stream,
                    fields,
                    trim_strategy=PureToken.MAXLEN,
                    threshold=self._maxlen,
                    trim_operator=PureToken.APPROXIMATELY,
                )
                for fields in entries
            ]
        return [_text(await r or b"") for r in requests]

    async def get_results(self, event_ids: Sequence[str]) -> list[bytes | None]:
        """The stored results of ``event_ids`` (``None`` where there is none), in order."""
        out: list[bytes | None] = []
        for start in range(0, len(event_ids), _CHUNK):
            keys = [self.result_key(e) for e in event_ids[start : start + _CHUNK]]
            out.extend(await self.client.mget(keys))
        return out

    async def last_result_id(self) -> str:
        """The id of the newest entry of the results stream (``0-0`` if there is none)."""
        newest = await self.client.xrevrange(self.settings.results_stream, count=1)
        return _text(newest[0].identifier) if newest else "0-0"

    async def read_results(self, after: str, block: float) -> list[tuple[str, str, bytes]]:
        """Results-stream entries after ``after`` as ``(entry id, event id, result)``,
        blocking up to ``block`` seconds for the first one."""
        reply = await self.client.xread(
            {self.settings.results_stream: after}, count=1000, block=max(1, round(block * 1000))
        )
        if not reply:
            return []
        out: list[tuple[str, str, bytes]] = []
        for entries in reply.values():
            for e in entries:
                fields = _fields(e.field_values)
                out.append(
                    (_text(e.identifier), _text(fields.get(b"id", b"")), fields.get(b"result", b""))
                )
        return out

    async def dead_letters(self, count: int) -> list[tuple[str, dict[bytes, bytes]]]:
        """The oldest ``count`` dead-letter entries as ``(entry id, fields)``."""
        entries = await self.client.xrange(self.settings.dead_letter_stream, count=count)
        return [(_text(e.identifier), _fields(e.field_values)) for e in entries]

    # ------------------------------------------------------------------ workers
    async def ensure_group(self) -> None:
        """Create the stream and the consumer group (reading from the first entry) unless
        they exist: events emitted before any worker started are processed too."""
        from coredis.exceptions import StreamDuplicateConsumerGroupError

        with contextlib.suppress(StreamDuplicateConsumerGroupError):
            await self.client.xgroup_create(self.stream, self.group, "0", mkstream=True)

    async def join(self, consumer: str) -> None:
        """Create ``consumer`` in the group (Redis >= 6.2), so operators see an idle
        worker in ``XINFO CONSUMERS`` before it has read anything."""
        from coredis.exceptions import CommandNotSupportedError

        with contextlib.suppress(CommandNotSupportedError):
            await self.client.xgroup_createconsumer(self.stream, self.group, consumer)

    async def read(self, consumer: str, count: int, block: float) -> list[RawEntry]:
        """``XREADGROUP`` up to ``count`` new entries, blocking up to ``block`` seconds."""
        reply = await self.client.xreadgroup(
            self.group,
            consumer,
            {self.stream: ">"},
            count=count,
            block=max(1, round(block * 1000)),
        )
        if not reply:
            return []
        return [
            RawEntry(_text(e.identifier), _fields(e.field_values), 1)
            for entries in reply.values()
            for e in entries
        ]

    async def claim(
        self, consumer: str, min_idle: float, cursor: str, count: int
    ) -> tuple[str, list[RawEntry], int]:
        """``XAUTOCLAIM`` up to ``count`` entries idle for ``min_idle`` seconds, from
        ``cursor``: the next cursor (``0-0`` at the end), the entries, how many were lost."""
        args = (self.group, consumer, max(1, round(min_idle * 1000)), cursor, count)
        reply: Any = await self._claim(keys=[self.stream], args=args)
        entries: list[RawEntry] = []
        for i in range(2, len(reply), 3):
            flat = reply[i + 2]
            fields = {flat[j]: flat[j + 1] for j in range(0, len(flat), 2)}
            entries.append(RawEntry(_text(reply[i]), fields, int(reply[i + 1])))
        return _text(reply[0]), entries, int(reply[1])

    async def inspect(self, event_ids: Sequence[str]) -> list[tuple[bool, bytes]]:
        """For each event: is a result stored, and its last error (``b""`` if none)."""
        keys: list[str] = []
        for event_id in event_ids:
            keys += (self.result_key(event_id), self.error_key(event_id))
        reply: Any = await self._inspect(keys=keys, args=[])
        return [(bool(reply[i]), reply[i + 1] or b"") for i in range(0, len(reply), 2)]

    async def commit(self, consumer: str, ops: Iterable[Op]) -> int:
        """Apply ``ops`` atomically (the `COMMIT` script); the number of results stored."""
        s = self.settings
        keys: list[str | bytes] = [self.stream, s.results_stream, s.dead_letter_stream]
        args: list[str | bytes] = [self.group, consumer, self._ttl_ms, s.results, self._maxlen]
        for op in ops:
            keys += (self.result_key(op.event_id), self.error_key(op.event_id))
            args += (op.kind, op.entry_id, op.event_id, op.payload, op.extra)
        stored: Any = await self._commit(keys=keys, args=args)
        return int(stored)

    async def heartbeat(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries this worker still holds (``XCLAIM ... JUSTID``),
        so that no one reclaims an event that is merely slow."""
        for start in range(0, len(entry_ids), _CHUNK):
            chunk = entry_ids[start : start + _CHUNK]
            await self.client.xclaim(self.stream, self.group, consumer, 0, chunk, justid=True)


def dead_record(
    entry_id: str, event_id: str, event: bytes, error: bytes, deliveries: int, consumer: str
) -> bytes:
    """The fields of a dead-letter entry, as the JSON array the `COMMIT` script unpacks."""
    return dumps(
        [
            "id", event_id,
            "entry", entry_id,
            "event", event.decode("utf-8", "replace"),
            "error", error.decode("utf-8", "replace"),
            "deliveries", str(deliveries),
            "consumer", consumer,
        ]
    )  # fmt: skip
