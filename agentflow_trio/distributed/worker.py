"""The worker: Redis Streams in, the ordinary `Runner` in the middle, results out.

``agentcli worker`` runs `run_worker`; embed a `Worker` to own it from your own nursery.
See `Worker` for what it guarantees.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar, Unpack, final

import attrs
import trio

from ..config import Config, DistributedConfig
from ..errors import MalformedEntry, Overloaded, RunnerClosed
from ..events import AgentResult, ErrorInfo, Event, Outcome
from ..runner import EventHandle, Runner, RunnerStatistics
from ..services import ServiceKeywords, Services
from ._bus import Bus, Op, RawEntry, dead_record
from ._codec import decode_entry, decode_error, encode_error, encode_result, entry_event_id
from ._redis import Backoff, check_url, is_missing_group, is_outage, open_redis, redact

__all__ = ["Worker", "WorkerStatistics", "default_consumer_name", "run_worker"]

_FINAL: Final = (Outcome.SUCCEEDED, Outcome.USAGE_LIMIT_EXCEEDED)  # stored, never retried

_log = logging.getLogger("agentflow_trio.distributed.worker")
_T = TypeVar("_T")

_NEW, _RUNNING, _DRAINING, _STOPPED = range(4)
_COMMIT_BATCH: Final = 256
_EXCERPT: Final = 64 * 1024  # bytes of a malformed entry kept in its dead letter


def default_consumer_name() -> str:
    """``host-pid-random``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@attrs.frozen(slots=True)
class WorkerStatistics:
    """A snapshot of a worker's counters (see `Worker.statistics`).

    ``read`` counts new entries and ``reclaimed`` entries taken over from idle consumers;
    each ends once as ``stored`` (a result this worker stored first), ``duplicates`` (a
    result was already stored: acknowledged, not run), ``retried`` (failed or timed out:
    offered again), ``dead_lettered``, ``released`` (handed back unrun at shutdown) or is
    still ``held``. ``lost`` entries were trimmed (``MAXLEN``) before anyone could run them.
    """

    consumer: str
    read: int
    reclaimed: int
    held: int
    stored: int
    duplicates: int
    retried: int
    dead_lettered: int
    released: int
    lost: int
    redis_errors: int
    reconnects: int
    connected: bool
    runner: RunnerStatistics | None


@final
class _Held:
    """One entry this worker holds, from the read to the commit of its outcome.

    Decoded and checked at once (`decode_entry`): a malformed entry keeps its reason in
    ``problem`` (and at most ``_EXCERPT`` bytes of itself for the dead letter), and is
    never handed to the runner.
    """

    __slots__ = (
        "deliveries",
        "entry_id",
        "event",
        "event_id",
        "payload",
        "problem",
        "timeout",
        "token",
    )

    def __init__(self, entry: RawEntry, token: object, max_bytes: int) -> None:
        self.token = token
        self.entry_id = entry.entry_id
        self.deliveries = entry.deliveries
        fields = entry.fields
        self.payload = fields.get(b"event", b"")
        self.event_id = entry_event_id(fields, entry.entry_id)
        self.event: Event | None = None
        self.timeout: float | None = None
        self.problem: MalformedEntry | None = None
        try:
            self.event, self.timeout = decode_entry(fields, self.event_id, max_bytes=max_bytes)
        except MalformedEntry as exc:
            self.problem = exc
            self.payload = (self.payload or repr(fields).encode())[:_EXCERPT]
            _log.error("malformed stream entry %s: %s", entry.entry_id, exc)


@final
class Worker:
    """Reads events from a Redis stream in a consumer group and runs them on a `Runner`.

    ``await worker.serve()`` (or ``await nursery.start(worker.serve)``, which returns the
    worker once it reads) runs until `shutdown` has finished or it is cancelled.

    Guarantees:

    1. Backpressure: the worker holds at most ``runner.max_concurrent_events`` entries
       (read, not yet settled) and reads only as many as it has room for.
    2. Store, then acknowledge: an entry is ``XACK``ed in the same atomic script that
       stores its result (``SET NX``: the first result stored for an event id is the only
       one). A result already stored for the event id is acknowledged without running
       the event again (idempotency). Execution is at least once, results exactly once.
    3. Failures: a ``failed`` or ``timed_out`` outcome keeps its error and is offered
       again after ``retry_delay`` (not ``usage_limit_exceeded``: a run again would
       spend again; it is stored, with its usage, like a success); at the
       ``max_deliveries``-th delivery it goes to ``dead_letter_stream`` with its last
       error, and that failure is stored as the event's result (a producer waiting on
       it gets it). A malformed entry (not an event, a field of the wrong type, a
       ``timeout`` that is NaN, not positive or over 7 days, an event over 1 MiB,
       nesting deeper than 64, an id or type over 256 characters: the bounds of
       ``_codec``) goes there on its first delivery, with the reason as a
       `MalformedEntry` error, and never reaches the runner: no crash, no retry,
       nothing else held is touched.
    4. Dead workers: entries idle for ``claim_idle`` (their worker died) are reclaimed
       with ``XAUTOCLAIM``, delivery counts kept. Entries this worker holds are refreshed
       every ``claim_idle / 3``, so a slow event is never taken from a live worker.
    5. Outages: every Redis command is retried with exponential backoff (up to
       ``reconnect_max_delay``) until Redis answers; a stream or group lost with a
       restarted Redis is created again. Events already running carry on meanwhile.
    6. Shutdown: `shutdown` stops reading, hands back entries not yet started (delivery
       not counted, claimable at once), lets running ones finish for up to
       ``runner.drain_timeout`` (the rest are cancelled and handed back), commits, and
       returns. Cancelling `serve` instead abandons what it holds: those entries stay
       pending and another worker reclaims them after ``claim_idle``. Nothing is lost
       either way.

    Building a worker raises `ConfigError` if ``redis_url`` is not a Redis URL; nothing
    connects before `serve`. ``services`` (or the keyword form, see `Services.build`) go
    to the worker's `Runner` unchanged.
    """

    def __init__(
        self,
        config: Config | None = None,
        agents: Mapping[str, Any] | None = None,
        *,
        redis_url: str | None = None,
        stream: str | None = None,
        group: str | None = None,
        consumer: str | None = None,
        services: Services | None = None,
        **keywords: Unpack[ServiceKeywords],
    ) -> None:
        self.config = config if config is not None else Config()
        self.settings = _override(self.config.distributed, redis_url, stream, group)
        check_url(self.settings.redis_url)
        self.consumer = consumer or self.settings.consumer or default_consumer_name()
        self._agents = agents
        self.services = Services.build(services, **keywords)
        self._slots = trio.CapacityLimiter(self.config.runner.max_concurrent_events)
        self._reserved = 0  # slots taken for a read in progress, not yet an entry's
        self._state = _NEW
        self._stop = trio.Event()
        self._hard_stop = trio.CancelScope()
        self._bus: Bus | None = None
        self._runner: Runner | None = None
        self._waiters: trio.Nursery | None = None
        self._ops: trio.MemorySendChannel[tuple[Op, _Held]] | None = None
        self._holding: dict[str, _Held] = {}  # entry id -> held entry, for the heartbeat
        self._next_claim = -math.inf
        self._claim_wake = trio.Event()
        self._connected = True
        self._counts = dict.fromkeys(
            (
                "read",
                "reclaimed",
                "stored",
                "duplicates",
                "retried",
                "dead_lettered",
                "released",
                "lost",
                "redis_errors",
                "reconnects",
            ),
            0,
        )

    # ----------------------------------------------------------------- public face
    async def serve(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the worker until `shutdown` completes or the caller cancels it.

        Waits (with backoff) for Redis if it is down at start. ``task_status.started``
        reports the worker once its consumer group exists and reading has begun. With
        ``handle_signals`` (what ``agentcli worker`` uses) the first SIGINT or SIGTERM
        calls `shutdown` and a second one stops at once (as a cancellation would).

        Raises:
            RuntimeError: the worker was already served (a worker runs once).
        """
        if self._state != _NEW:
            raise RuntimeError("a Worker can be served only once")
        self._state = _RUNNING
        s = self.settings
        try:
            with self._hard_stop:
                async with open_redis(
                    s.redis_url, password=s.redis_password, connect_timeout=s.connect_timeout
                ) as client:
                    self._bus = Bus(client, s)
                    await self._redis("create the consumer group", self._bus.ensure_group)
                    await self._redis("join the consumer group", self._bus.join, self.consumer)
                    await self._serve(task_status, handle_signals)
        finally:
            self._state = _STOPPED

    def shutdown(self) -> None:
        """Ask for a graceful stop (see guarantee 6); `serve` returns when it is done.

        Not a checkpoint; idempotent; does nothing once the worker has stopped.
        """
        self._stop.set()

    def statistics(self) -> WorkerStatistics:
        """Counters for dashboards and tests; cheap, no checkpoint."""
        c = self._counts
        return WorkerStatistics(
            consumer=self.consumer,
            read=c["read"],
            reclaimed=c["reclaimed"],
            held=int(self._slots.borrowed_tokens) - self._reserved,
            stored=c["stored"],
            duplicates=c["duplicates"],
            retried=c["retried"],
            dead_lettered=c["dead_lettered"],
            released=c["released"],
            lost=c["lost"],
            redis_errors=c["redis_errors"],
            reconnects=c["reconnects"],
            connected=self._connected,
            runner=self._runner.statistics() if self._runner is not None else None,
        )

    # ----------------------------------------------------------------- structure
    async def _serve(self, task_status: trio.TaskStatus[Worker], handle_signals: bool) -> None:
        send, receive = trio.open_memory_channel[tuple[Op, _Held]](math.inf)  # <= capacity
        self._ops = send
        committed = trio.Event()
        async with trio.open_nursery() as services:
            services.start_soon(self._commit_loop, receive, committed)
            services.start_soon(self._heartbeat_loop)
            if handle_signals:
                await services.start(self._stop_on_signals)
            async with trio.open_nursery() as waiters:
                self._waiters = waiters
                async with Runner(self.config, self._agents, services=self.services) as runner:
                    self._runner = runner
                    metrics = self.services.metrics
                    if metrics is not None:  # as serve's: event hooks, runner figures
                        metrics.attach(runner)
                    async with trio.open_nursery() as intake:
                        intake.start_soon(self._read_loop)
                        intake.start_soon(self._claim_loop)
                        task_status.started(self)
                        await self._stop.wait()
                        self._state = _DRAINING
                        intake.cancel_scope.cancel()
                # The runner has drained or cancelled every event: each waiter now
                # queues its entry's outcome and ends.
            send.close()
            with trio.move_on_after(self.settings.command_timeout):
                await committed.wait()
            services.cancel_scope.cancel()

    # ----------------------------------------------------------------- intake
    async def _reserve(self, count: int, *, wait: bool) -> list[object]:
        """Up to ``count`` slots (at least one if ``wait``), one borrower token each."""
        tokens: list[object] = []
        if wait:
            token = object()
            await self._slots.acquire_on_behalf_of(token)
            tokens.append(token)
        while len(tokens) < count:
            token = object()
            try:
                self._slots.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                break
            tokens.append(token)
        self._reserved += len(tokens)
        return tokens

    def _unreserve(self, tokens: list[object], used: int) -> None:
        """After a read: ``used`` tokens now belong to entries; free the others."""
        self._reserved -= len(tokens)
        for token in tokens[used:]:
            self._slots.release_on_behalf_of(token)

    async def _read_loop(self) -> None:
        bus, s = self._bus, self.settings
        assert bus is not None
        while True:
            tokens = await self._reserve(s.batch, wait=True)
            entries: list[RawEntry] = []
            try:
                entries = await self._redis("read", bus.read, self.consumer, len(tokens), s.block)
            finally:
                self._unreserve(tokens, len(entries))
            self._counts["read"] += len(entries)
            if entries:
                await self._admit(entries, tokens)

    async def _claim_loop(self) -> None:
        bus, s = self._bus, self.settings
        assert bus is not None
        interval = max(0.01, s.claim_idle / 2)
        while True:
            while trio.current_time() < self._next_claim:
                self._claim_wake = trio.Event()
                with trio.move_on_at(self._next_claim):
                    await self._claim_wake.wait()
            self._next_claim = trio.current_time() + interval
            cursor = "0-0"
            while True:
                # Waits for room: a full worker claims nothing (others may), and a scan
                # cut short by a full worker resumes as soon as a slot frees.
                tokens = await self._reserve(s.batch, wait=True)
                entries: list[RawEntry] = []
                try:
                    cursor, entries, lost = await self._redis(
                        "reclaim", bus.claim, self.consumer, s.claim_idle, cursor, len(tokens)
                    )
                finally:
                    self._unreserve(tokens, len(entries))
                self._counts["lost"] += lost
                self._counts["reclaimed"] += len(entries)
                if entries:
                    await self._admit(entries, tokens)
                if cursor == "0-0":
                    break

    def _schedule_claim(self, delay: float) -> None:
        at = trio.current_time() + delay
        if at < self._next_claim:
            self._next_claim = at
            self._claim_wake.set()

    async def _admit(self, entries: list[RawEntry], tokens: list[object]) -> None:
        """Settle or start each entry; whatever is not started when this is cancelled
        (shutdown) or when the runner sheds load (`Overloaded`: then reading pauses for
        ``memory_check_interval``) is handed back. Each entry gets exactly one outcome op."""
        bus, runner, waiters = self._bus, self._runner, self._waiters
        assert bus is not None and runner is not None and waiters is not None
        limit = self.settings.max_event_bytes
        held = [_Held(e, t, limit) for e, t in zip(entries, tokens, strict=False)]
        for h in held:
            self._holding[h.entry_id] = h
        settled = 0
        try:
            flags = await self._redis("inspect", bus.inspect, [h.event_id for h in held])
            for h, (stored, last_error) in zip(held, flags, strict=True):
                if h.event is None:
                    self._queue(self._dead(h, _malformed(h.problem)))
                elif stored:
                    self._queue((Op("ack", h.entry_id, h.event_id), h))
                elif h.deliveries > self.settings.max_deliveries:
                    self._queue(self._dead(h, _last_error(last_error, h.deliveries)))
                else:
                    try:
                        handle = await runner.emit(h.event, timeout=h.timeout)
                    except (TypeError, ValueError) as exc:  # refused as bad input: poison
                        self._queue(self._dead(h, _malformed(exc)))
                    else:
                        waiters.start_soon(self._settle, h, handle)
                settled += 1
        except RunnerClosed:
            pass
        except Overloaded as exc:  # over the memory limit: hand the rest back, pause
            _log.warning("%s: %s; handing back %d entries", self.consumer, exc, len(held) - settled)
            for h in held[settled:]:
                self._queue(self._release(h))
            settled = len(held)
            await trio.sleep(self.config.runtime.memory_check_interval)
        finally:
            for h in held[settled:]:
                self._queue(self._release(h))

    async def _settle(self, held: _Held, handle: EventHandle) -> None:
        queued = False
        try:
            result = await handle.result()
            self._queue(self._outcome(held, result))
            queued = True
        finally:
            if not queued:  # cancelled outright: the entry stays pending in Redis
                self._slots.release_on_behalf_of(held.token)

    # ----------------------------------------------------------------- outcomes
    def _queue(self, item: tuple[Op, _Held]) -> None:
        held = item[1]
        self._holding.pop(held.entry_id, None)
        assert self._ops is not None
        self._ops.send_nowait(item)

    def _outcome(self, held: _Held, result: AgentResult) -> tuple[Op, _Held]:
        if result.outcome in _FINAL:
            try:
                payload = encode_result(result)
            except TypeError as exc:
                error = ErrorInfo("TypeError", f"the agent's output cannot be stored: {exc}")
                payload = encode_result(AgentResult(Outcome.FAILED, None, error, *_ids(result)))
            return Op("done", held.entry_id, held.event_id, payload), held
        if result.outcome is Outcome.CANCELLED and self._state >= _DRAINING:
            return self._release(held)
        error = result.error or ErrorInfo(result.outcome.value, "")
        if held.deliveries >= self.settings.max_deliveries:
            return self._dead(held, error, result)
        idle = max(0.0, self.settings.claim_idle - self.settings.retry_delay)
        extra = str(round(idle * 1000)).encode()
        return Op("retry", held.entry_id, held.event_id, encode_error(error), extra), held

    def _dead(
        self, held: _Held, error: ErrorInfo, result: AgentResult | None = None
    ) -> tuple[Op, _Held]:
        final = AgentResult(
            Outcome.FAILED if result is None else result.outcome,
            None,
            error,
            held.event_id,
            None if result is None else result.agent,
            None if result is None else result.usage,
        )
        record = dead_record(
            held.entry_id,
            held.event_id,
            held.payload,
            encode_error(error),
            held.deliveries,
            self.consumer,
        )
        return Op("dead", held.entry_id, held.event_id, encode_result(final), record), held

    def _release(self, held: _Held) -> tuple[Op, _Held]:
        """Hand an entry back unrun: claimable at once, this delivery not counted."""
        idle = str(max(1, round(self.settings.claim_idle * 1000))).encode()
        uncount = str(max(0, held.deliveries - 1)).encode()
        return Op("release", held.entry_id, held.event_id, idle, uncount), held

    async def _commit_loop(
        self, receive: trio.MemoryReceiveChannel[tuple[Op, _Held]], committed: trio.Event
    ) -> None:
        bus = self._bus
        assert bus is not None
        try:
            async for first in receive:
                batch = [first]
                while len(batch) < _COMMIT_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                ops = [op for op, _ in batch]
                try:
                    stored = await self._redis("commit", bus.commit, self.consumer, ops)
                finally:
                    for _, held in batch:
                        self._slots.release_on_behalf_of(held.token)
                self._count(ops, stored)
            committed.set()
        finally:
            # Cancelled with outcomes still queued: their entries stay pending in Redis
            # (reclaimed after claim_idle); their slots are returned all the same.
            while True:
                try:
                    _, held = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self._slots.release_on_behalf_of(held.token)
            receive.close()

    def _count(self, ops: list[Op], stored: int) -> None:
        c = self._counts
        c["stored"] += stored
        for op in ops:
            if op.kind == "ack":
                c["duplicates"] += 1
            elif op.kind == "retry":
                c["retried"] += 1
                self._schedule_claim(self.settings.retry_delay)
            elif op.kind == "dead":
                c["dead_lettered"] += 1
            elif op.kind == "release":
                c["released"] += 1

    async def _stop_on_signals(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Started (not start_soon) so that the handlers are in place before the worker
        # reports ready: a Ctrl-C right after start-up stops it gracefully.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if not self._stop.is_set():
                    _log.info("%s: signal %d: shutting down gracefully", self.consumer, signum)
                    self.shutdown()
                else:
                    _log.warning("%s: second signal: stopping now", self.consumer)
                    self._hard_stop.cancel()
                    return

    async def _heartbeat_loop(self) -> None:
        bus = self._bus
        assert bus is not None
        interval = max(0.01, self.settings.claim_idle / 3)
        while True:
            await trio.sleep(interval)
            ids = list(self._holding)
            if not ids:
                continue
            try:
                await bus.heartbeat(self.consumer, ids)
            except Exception as exc:
                if not is_outage(exc) and not is_missing_group(exc):
                    _log.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)

    # ----------------------------------------------------------------- Redis calls
    async def _redis(self, what: str, call: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """``await call(*args)`` until Redis answers: back off on outages, recreate a lost
        group, log anything else and try again. Cancellation ends it at once."""
        backoff: Backoff | None = None
        while True:
            try:
                result = await call(*args)
            except Exception as exc:
                self._counts["redis_errors"] += 1
                backoff = backoff or Backoff(self.settings.reconnect_max_delay)
                await self._recover(what, exc)
                await trio.sleep(backoff.next())
                continue
            if not self._connected:
                self._connected = True
                self._counts["reconnects"] += 1
                _log.info("%s: Redis answers again (%s)", self.consumer, what)
            return result

    async def _recover(self, what: str, exc: Exception) -> None:
        assert self._bus is not None
        if is_missing_group(exc):
            _log.warning("%s: %s: stream or group missing; creating it", self.consumer, what)
            try:
                await self._bus.ensure_group()
                await self._bus.join(self.consumer)
            except Exception as again:
                if not is_outage(again):
                    _log.warning("creating the group failed: %s", again)
        elif is_outage(exc):
            if self._connected:
                url = redact(self.settings.redis_url)
                _log.warning("%s: Redis at %s unreachable (%s): %s", self.consumer, url, what, exc)
            self._connected = False
        else:
            _log.error("%s: Redis error (%s): %s: %s", self.consumer, what, type(exc).__name__, exc)


def _override(
    settings: DistributedConfig, redis_url: str | None, stream: str | None, group: str | None
) -> DistributedConfig:
    if redis_url:
        settings = attrs.evolve(settings, redis_url=redis_url)
    if stream:
        settings = attrs.evolve(settings, stream=stream)
    if group:
        settings = attrs.evolve(settings, group=group)
    return settings


def _ids(result: AgentResult) -> tuple[str | None, str | None]:
    return result.event_id, result.agent


def _malformed(problem: BaseException | None) -> ErrorInfo:
    """The dead letter's error for an entry refused as malformed: the reason, no retry."""
    return ErrorInfo("MalformedEntry", str(problem) if problem is not None else "malformed")


def _last_error(payload: bytes, deliveries: int) -> ErrorInfo:
    if payload:
        try:
            return decode_error(payload)
        except ValueError:
            pass
    message = f"delivered {deliveries} times without a result (did its worker die running it?)"
    return ErrorInfo("DeliveryLimit", message)


async def run_worker(
    config: Config | None = None,
    agents: Mapping[str, Any] | None = None,
    *,
    redis_url: str | None = None,
    stream: str | None = None,
    group: str | None = None,
    consumer: str | None = None,
    handle_signals: bool = False,
    services: Services | None = None,
    task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
    **keywords: Unpack[ServiceKeywords],
) -> WorkerStatistics:
    """Run a `Worker` until it is shut down or cancelled; return its final statistics.

    ``redis_url``, ``stream`` and ``group`` override ``config.distributed``; ``consumer``
    names this worker in the group (default: ``distributed.consumer``, else
    ``host-pid-random``). With ``handle_signals`` (what ``agentcli worker`` uses) the first
    SIGINT or SIGTERM shuts the worker down gracefully and a second one cancels it.
    ``task_status.started`` reports the `Worker` once it reads. ``services`` (or the
    keyword form, see `Services.build`) go to the worker's `Runner`.
    """
    worker = Worker(
        config,
        agents,
        redis_url=redis_url,
        stream=stream,
        group=group,
        consumer=consumer,
        services=Services.build(services, **keywords),
    )
    await worker.serve(handle_signals=handle_signals, task_status=task_status)
    return worker.statistics()
