"""Producers' side of the Redis Streams bus: `RemoteRunner`, shaped like the local `Runner`.

``async with RemoteRunner(config) as remote`` owns a Redis client and one result poller;
``await remote.call(event)`` queues the event on the stream and returns the
`AgentResult` a worker (``agentcli worker``, `run_worker`) stored for it.

Wire layout (all names from ``[distributed]``): events go to ``stream`` (``XADD`` with
``MAXLEN ~ maxlen``; fields ``id``, ``event`` (JSON), optionally ``timeout``); results are
stored under ``{key_prefix}:result:{event id}`` for ``result_ttl`` and, with
``results = "stream"``, also appended to ``results_stream``; failures that ran out of
deliveries are appended to ``dead_letter_stream`` (fields ``id``, ``entry``, ``event``,
``error`` (JSON), ``deliveries``, ``consumer``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, final

import attrs
import trio

from .._owner import NurseryOwner
from ..config import Config
from ..errors import RunnerClosed
from ..events import AgentResult, ErrorInfo, Event
from ._bus import Bus
from ._codec import check_timeout, decode_error, decode_event, decode_result
from ._errors import BrokerUnavailable, ResultTimeout
from ._redis import check_url, is_outage, open_redis, redact
from ._waiters import ResultWaiter

__all__ = ["DeadLetter", "RemoteHandle", "RemoteRunner", "RemoteStatistics"]

_T = TypeVar("_T")


@attrs.frozen(slots=True)
class RemoteStatistics:
    """A snapshot of a `RemoteRunner`'s counters."""

    emitted: int
    results: int
    waiting: int
    timeouts: int
    broker_errors: int
    closed: bool


@attrs.frozen(slots=True)
class DeadLetter:
    """An event that used up its deliveries: what it was, and its last error.

    ``event`` is None if the entry could not be decoded (``raw_event`` keeps its text).
    """

    entry_id: str
    event_id: str
    event: Event | None
    error: ErrorInfo
    deliveries: int
    consumer: str
    source_entry: str
    raw_event: str


@final
class RemoteHandle:
    """A queued remote event. Only `RemoteRunner` makes these.

    ``entry_id`` is the stream entry; ``await handle.result()`` waits for the result.
    """

    __slots__ = ("_remote", "entry_id", "event")

    def __init__(self, remote: RemoteRunner, event: Event, entry_id: str) -> None:
        self._remote = remote
        self.event = event
        self.entry_id = entry_id

    async def result(self, *, timeout: float | None = None) -> AgentResult:
        """Wait for the stored result (see `RemoteRunner.wait_result`)."""
        return await self._remote.wait_result(self.event.id, timeout=timeout)

    def __repr__(self) -> str:
        return f"<RemoteHandle {self.event.id} {self.event.type} entry {self.entry_id}>"


@final
class RemoteRunner(NurseryOwner):
    """Emits events to a Redis stream for workers, and waits for their results.

    The same shape as the local `Runner`: ``await emit(event) -> RemoteHandle``,
    ``await call(event) -> AgentResult``. ``timeout`` is, as locally, the event's run
    timeout (applied by the worker's runner); how long to *wait* for a result is
    ``result_timeout`` (default ``distributed.result_timeout``), after which
    `ResultTimeout` is raised.

    Guarantees:

    * No hang on a broken broker: every Redis command runs under
      ``distributed.command_timeout``; a refused, dropped or silent connection raises
      `BrokerUnavailable` at once, including for callers already waiting for a result.
    * Idempotent retries: emitting an event again (same ``event.id``) after an error or
      a timeout never runs it twice to completion: a worker finding its result stored
      acknowledges the entry without running it, and the first stored result is the
      only one.
    * Cancelling a caller of `call` or `wait_result` stops the wait only; the event
      stays queued and will run. Leaving the ``async with`` stops the poller and closes
      the connections; no task is left behind.
    * Backpressure is the workers' (they read only what they have room for); a backlog
      waits in the stream, bounded by ``maxlen`` (keep it above the largest backlog:
      ``MAXLEN ~`` trims unread entries too).

    Building one raises `ConfigError` if ``redis_url`` is not a Redis URL; entering it
    never fails because Redis is down (connections open on first use).
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        redis_url: str | None = None,
        stream: str | None = None,
    ) -> None:
        self.config = config if config is not None else Config()
        settings = self.config.distributed
        if redis_url:
            settings = attrs.evolve(settings, redis_url=redis_url)
        if stream:
            settings = attrs.evolve(settings, stream=stream)
        check_url(settings.redis_url)
        self.settings = settings
        self._url = redact(settings.redis_url)
        self._bus: Bus | None = None
        self._waiter: ResultWaiter | None = None
        self._accepting = False
        self._emitted = 0
        self._timeouts = 0
        self._broker_errors = 0

    # ----------------------------------------------------------------- lifecycle
    async def _open(self) -> None:
        """Enter (see `NurseryOwner`): the Redis client, then the poller in the nursery."""
        s = self.settings
        client = await self._enter(
            open_redis(s.redis_url, password=s.redis_password, connect_timeout=s.connect_timeout)
        )
        self._bus = Bus(client, s)
        self._waiter = ResultWaiter(self._bus, self._url)
        nursery = await self._open_nursery()
        await nursery.start(self._waiter.run)
        self._accepting = True

    async def _closing(self, error: BaseException | None) -> None:
        self._accepting = False

    # ----------------------------------------------------------------- emitting
    async def emit(self, event: Event, *, timeout: float | None = None) -> RemoteHandle:
        """Append ``event`` to the stream; return its handle. ``timeout`` is the run
        timeout the worker applies (default: the worker's own rules): seconds, > 0, at
        most 7 days. The event is checked against the bounds a worker applies before
        anything is sent, so that it is never dead-lettered as malformed.

        Raises:
            BrokerUnavailable: Redis refused, dropped or did not answer the ``XADD``.
            RunnerClosed: this runner is not open.
            TypeError: not an `Event`, or its data or metadata cannot be encoded as JSON.
            ConfigError: ``timeout`` is NaN, not positive, or over 7 days.
            MalformedEntry: the event is over 1 MiB as JSON, nests deeper than 64
                levels, or its type or id is not a string of 1 to 256 characters.
        """
        bus = self._require_open()
        fields = bus.entry_fields(event, timeout)
        entry_id = await self._broker("emit", bus.add, fields)
        self._emitted += 1
        return RemoteHandle(self, event, entry_id)

    async def emit_many(
        self, events: Sequence[Event], *, timeout: float | None = None
    ) -> list[RemoteHandle]:
        """`emit` for many events in one pipelined round trip; handles in order.

        Raises:
            BrokerUnavailable, RunnerClosed, TypeError, ConfigError, MalformedEntry: as
                `emit` (nothing is sent if any event is refused). On
                `BrokerUnavailable` some of the events may have been appended; emitting
                them again is safe (see the class guarantees).
        """
        bus = self._require_open()
        batch = [bus.entry_fields(e, timeout) for e in events]
        entry_ids = await self._broker("emit", bus.add_many, batch)
        self._emitted += len(events)
        return [RemoteHandle(self, e, i) for e, i in zip(events, entry_ids, strict=True)]

    async def call(
        self,
        event: Event,
        *,
        timeout: float | None = None,
        result_timeout: float | None = None,
    ) -> AgentResult:
        """Emit ``event`` and wait for its result (see `emit` and `wait_result`).

        Raises:
            BrokerUnavailable, RunnerClosed, ResultTimeout, TypeError, ConfigError,
            MalformedEntry: as `emit` and `wait_result`; a bad ``result_timeout`` is
            refused before anything is sent.
        """
        if result_timeout is not None:
            check_timeout(result_timeout, "result_timeout", upper=math.inf)
        handle = await self.emit(event, timeout=timeout)
        return await handle.result(timeout=result_timeout)

    # ----------------------------------------------------------------- results
    async def result(self, event_id: str) -> AgentResult | None:
        """The stored result of ``event_id`` now, or None if there is none (yet).

        Raises:
            BrokerUnavailable, RunnerClosed.
        """
        bus = self._require_open()
        (payload,) = await self._broker("read a result", bus.get_results, [event_id])
        return decode_result(payload) if payload is not None else None

    async def wait_result(self, event_id: str, *, timeout: float | None = None) -> AgentResult:
        """Wait up to ``timeout`` seconds (default ``result_timeout``) for the result.

        Raises:
            ResultTimeout: no result within ``timeout`` (the event may still run).
            BrokerUnavailable: Redis could not be reached while waiting.
            RunnerClosed: this runner is not open.
            ConfigError: ``timeout`` is NaN, not positive or not a number (``math.inf``
                waits for as long as it takes).
        """
        limit = self.settings.result_timeout
        if timeout is not None:
            limit = check_timeout(timeout, "timeout", upper=math.inf)
        self._require_open()
        waiter = self._waiter
        assert waiter is not None
        with trio.move_on_after(limit):
            try:
                payload = await waiter.wait(event_id)
            except BrokerUnavailable:
                self._broker_errors += 1
                raise
            return decode_result(payload)
        self._timeouts += 1
        raise ResultTimeout(event_id, limit)

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` entries of the dead-letter stream.

        Raises:
            BrokerUnavailable, RunnerClosed.
        """
        bus = self._require_open()
        entries = await self._broker("read dead letters", bus.dead_letters, count)
        limit = bus.settings.max_event_bytes
        return [_dead_letter(entry_id, fields, limit) for entry_id, fields in entries]

    def statistics(self) -> RemoteStatistics:
        """Counters for dashboards and tests; cheap, no checkpoint."""
        waiter = self._waiter
        return RemoteStatistics(
            emitted=self._emitted,
            results=waiter.resolved if waiter is not None else 0,
            waiting=waiter.waiting if waiter is not None else 0,
            timeouts=self._timeouts,
            broker_errors=self._broker_errors,
            closed=not self._accepting,
        )

    # ----------------------------------------------------------------- internals
    def _require_open(self) -> Bus:
        if not self._accepting or self._bus is None:
            raise RunnerClosed("the RemoteRunner is not open")
        return self._bus

    async def _broker(self, operation: str, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """One Redis command under ``command_timeout``; an outage becomes
        `BrokerUnavailable`."""
        try:
            with trio.fail_after(self.settings.command_timeout):
                return await call(*args)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._broker_errors += 1
            raise BrokerUnavailable(self._url, operation, exc) from exc


def _dead_letter(entry_id: str, fields: dict[bytes, bytes], max_bytes: int) -> DeadLetter:
    def text(name: bytes) -> str:
        return fields.get(name, b"").decode("utf-8", "replace")

    raw_event = text(b"event")
    try:
        event: Event | None = decode_event(raw_event.encode(), max_bytes=max_bytes)
    except ValueError:
        event = None
    try:
        error = decode_error(fields.get(b"error", b""))
    except ValueError:
        error = ErrorInfo("Error", text(b"error"))
    return DeadLetter(
        entry_id=entry_id,
        event_id=text(b"id"),
        event=event,
        error=error,
        deliveries=int(text(b"deliveries") or 0),
        consumer=text(b"consumer"),
        source_entry=text(b"entry"),
        raw_event=raw_event,
    )
