"""Waiting for stored results: one poller per `RemoteRunner`, however many callers wait.

Key mode: the poller fetches every awaited result key with ``MGET`` (500 keys a round
trip): at once when a wait starts on an idle poller, then every 1 ms, backing off to
``poll_interval`` while nothing arrives. Stream mode: the poller follows the results
stream with ``XREAD BLOCK`` from the newest entry when the runner opened, and each new
waiter's key is looked up once (in batches), which covers results stored before the
follower saw the waiter.

When Redis cannot be reached every current waiter gets `BrokerUnavailable` at once; the
poller backs off and goes on.
"""

from __future__ import annotations

import logging
from typing import Final, final

import trio

from ._bus import Bus
from ._errors import BrokerUnavailable
from ._redis import Backoff, is_outage

__all__ = ["ResultWaiter"]

_log = logging.getLogger("agentflow_trio.distributed.remote")
_FIRST_POLL: Final = 0.001


@final
class _Slot:
    __slots__ = ("cause", "done", "payload", "users")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.payload = b""
        self.cause: BaseException | None = None
        self.users = 0


@final
class ResultWaiter:
    """Resolves ``wait(event_id)`` calls from Redis, sharing one poller task."""

    def __init__(self, bus: Bus, url: str) -> None:
        self._bus = bus
        self._url = url
        self._settings = bus.settings
        self._slots: dict[str, _Slot] = {}
        self._fresh: list[str] = []  # stream mode: ids to look up once, in one MGET
        self._wake = trio.Event()
        self.resolved = 0

    @property
    def waiting(self) -> int:
        """Event ids currently awaited."""
        return len(self._slots)

    async def wait(self, event_id: str) -> bytes:
        """The stored result of ``event_id`` (JSON bytes), once there is one.

        Raises:
            BrokerUnavailable: Redis could not be reached while waiting.
        """
        slot = self._slots.get(event_id)
        if slot is None:
            slot = self._slots[event_id] = _Slot()
            self._fresh.append(event_id)
            self._wake.set()
        slot.users += 1
        try:
            await slot.done.wait()
        finally:
            slot.users -= 1
            if slot.users == 0 and self._slots.get(event_id) is slot:
                del self._slots[event_id]
        if slot.cause is not None:
            raise BrokerUnavailable(self._url, "wait for a result", slot.cause)
        return slot.payload

    def _resolve(self, event_id: str, payload: bytes) -> None:
        slot = self._slots.pop(event_id, None)
        if slot is not None:
            slot.payload = payload
            slot.done.set()
            self.resolved += 1

    def _fail_one(self, event_id: str, slot: _Slot, cause: BaseException) -> None:
        if self._slots.get(event_id) is slot:
            del self._slots[event_id]
        slot.cause = cause
        slot.done.set()

    def _fail_all(self, cause: BaseException) -> None:
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot.cause = cause
            slot.done.set()

    async def _idle(self) -> None:
        while not self._slots:
            self._wake = trio.Event()
            await self._wake.wait()

    async def _lookup(self, ids: list[str]) -> int | None:
        """One MGET of ``ids``: resolve what is stored; how many were. On an outage every
        waiter fails and this returns None."""
        try:
            with trio.fail_after(self._settings.command_timeout):
                payloads = await self._bus.get_results(ids)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._fail_all(exc)
            return None
        found = 0
        for event_id, payload in zip(ids, payloads, strict=True):
            if payload is not None:
                self._resolve(event_id, payload)
                found += 1
        return found

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The poller; runs until cancelled."""
        if self._settings.results == "stream":
            try:
                with trio.fail_after(self._settings.command_timeout):
                    after = await self._bus.last_result_id()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                after = "0-0"  # Redis is down: read from the start (at most maxlen results)
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._check_fresh)
                await self._follow_stream(after)
        else:
            task_status.started()
            await self._poll_keys()

    async def _poll_keys(self) -> None:
        delay = _FIRST_POLL
        backoff: Backoff | None = None
        while True:
            if not self._slots:
                await self._idle()
                delay = 0.0  # a wait starting on an idle runner: look at once
            await trio.sleep(delay)
            self._fresh.clear()
            found = await self._lookup(list(self._slots))
            if found is None:
                backoff = backoff or Backoff(self._settings.reconnect_max_delay)
                await trio.sleep(backoff.next())
                continue
            backoff = None
            backoff_delay = min(max(delay * 2, _FIRST_POLL), self._settings.poll_interval)
            delay = _FIRST_POLL if found else backoff_delay

    async def _check_fresh(self) -> None:
        """Stream mode: look up each new waiter's key once, in batches (results stored
        before the follower saw the waiter)."""
        while True:
            while not self._fresh:
                self._wake = trio.Event()
                await self._wake.wait()
            ids, self._fresh = self._fresh, []
            await self._lookup([i for i in ids if i in self._slots])

    async def _follow_stream(self, after: str) -> None:
        backoff: Backoff | None = None
        block = min(self._settings.block, self._settings.command_timeout)
        while True:
            try:
                with trio.fail_after(self._settings.command_timeout + block):
                    entries = await self._bus.read_results(after, block)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._fail_all(exc)
                backoff = backoff or Backoff(self._settings.reconnect_max_delay)
                await trio.sleep(backoff.next())
                continue
            backoff = None
            for entry_id, event_id, payload in entries:
                after = entry_id
                self._resolve(event_id, payload)
