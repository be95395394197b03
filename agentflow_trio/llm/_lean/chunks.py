"""`BodyChunks`: the parsed payloads of a lean stream's body, as its caller iterates them.

`LeanSession.open_stream` hands one out once the answer's head is in (it is built while
the server works on that answer). Each wait for the next piece of the body is bounded by
the session's ``request_timeout``: the session's `Watchdog` when the connection can be
aborted, else a cancel scope when no enclosing deadline ends sooner. A transport failure is
the `errors` class `to_llm_error` maps it to; a body that is not the expected stream is
`ResponseFormatError`, and its connection is not reused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import trio

from ...errors import ResponseFormatError
from .._accumulate import passthrough
from .._bodies import Decompressor, decompressor
from .._session import LineDecoder
from ._watchdog import Watchdog
from .connection import Connection
from .exceptions import LeanHTTPError, ReadTimeout
from .exchange import own_deadline
from .mapping import to_llm_error

__all__ = ["BodyChunks"]

T = TypeVar("T")
_DRAIN_LIMIT: Final = 65536


class BodyChunks(Generic[T]):
    """Async iterator over the parsed payloads of a streamed response body.

    The first piece of the body is decoded in two steps: up to its first blank line (the
    first server-sent event), then the rest once that event's chunk has been taken, so
    the first chunk is handed out without waiting for a whole burst to be parsed.

    ``ready`` holds the payloads decoded but not yet handed out; a wrapper may pop from
    it directly (`GuardedChunks` does) and call ``__anext__`` only when it is empty.
    """

    __slots__ = (
        "_backlog",
        "_conn",
        "_decoder",
        "_deployment",
        "_expired",
        "_first",
        "_parse",
        "_timeout",
        "_unzip",
        "_watchdog",
        "ready",
    )

    def __init__(
        self,
        conn: Connection,
        decoder: LineDecoder,
        parse: Callable[[Any], T | None],
        deployment: str,
        timeout: float,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._conn = conn
        self._watchdog = watchdog  # times each wait for a part (else a cancel scope does)
        self._expired = False
        self._decoder = decoder
        self._parse: Callable[[Any], T | None] | None = None if parse is passthrough else parse
        self._deployment = deployment
        self._timeout = timeout
        self.ready: deque[T] = deque()
        self._backlog = b""  # the rest of the first piece, not decoded yet
        self._first = True
        self._unzip: Decompressor | None = None

    def unzip(self, coding: bytes, max_body: int) -> None:
        """Decode the body's ``coding`` (its Content-Encoding) as it arrives, the decoded
        body bounded by ``max_body``; called once the head is in, before the first read.

        Raises:
            ResponseFormatError: a coding this client cannot decode.
        """
        self._unzip = self._checked(decompressor, coding, max_body)

    def __aiter__(self) -> BodyChunks[T]:
        return self

    async def __anext__(self) -> T:
        pending = self.ready
        conn = self._conn
        try:
            while not pending:
                decoder = self._decoder
                if self._backlog:
                    rest, self._backlog = self._backlog, b""
                    items = self._checked(decoder.feed, rest)
                elif decoder.done:
                    await self._drain()
                    raise StopAsyncIteration
                elif (data := conn.part_nowait()) is None and (
                    conn.complete or (data := await self._receive()) is None
                ):  # read already (or the end): no wait, no frame of `_receive`
                    tail = self._unzip.flush() if self._unzip is not None else b""
                    items = self._checked(decoder.feed, tail) if tail else []
                    items += self._checked(decoder.finish)
                else:
                    if self._unzip is not None:
                        data = self._checked(self._unzip.feed, data)
                    if self._first:
                        self._first = False
                        cut = data.find(b"\n\n") + 2
                        if 1 < cut < len(data):
                            data, self._backlog = data[:cut], data[cut:]
                    try:  # `_checked`, without its frame: every piece of the body comes here
                        items = decoder.feed(data)
                    except ResponseFormatError as exc:
                        conn.discard()
                        exc.deployment = self._deployment
                        raise
                parse = self._parse
                if parse is None:  # `passthrough`: the decoder made the chunks already
                    pending.extend(items)
                    continue
                for item in items:
                    chunk = parse(item)
                    if chunk is not None:
                        pending.append(chunk)
        except LeanHTTPError as exc:
            # Only `part_nowait` lets one out: it parses a piece `receive_head` held back,
            # which may be malformed (`_receive` and `_drain` map or end their own).
            raise to_llm_error(exc, self._deployment) from exc
        return pending.popleft()

    async def _receive(self) -> bytes | None:
        # The next piece of the body, waited for (`__anext__` found none read already).
        conn = self._conn
        try:
            watchdog = self._watchdog
            if watchdog is not None:
                watchdog.watch(self, trio.current_time() + self._timeout)
                try:
                    return await conn.receive_part()
                except LeanHTTPError:
                    if not self._expired:
                        raise
                    raise ReadTimeout(f"no stream data for {self._timeout}s") from None
                finally:
                    watchdog.unwatch(self)
            deadline = own_deadline(self._timeout)
            if deadline is None:
                return await conn.receive_part()
            with trio.CancelScope(deadline=deadline):
                return await conn.receive_part()
            raise ReadTimeout(f"no stream data for {self._timeout}s")
        except LeanHTTPError as exc:
            raise to_llm_error(exc, self._deployment) from exc

    def expire(self) -> None:
        """The wait for the next part passed ``timeout`` (the `Watchdog` calls this): the
        connection is aborted, so the waiting reader wakes and reports a timeout."""
        self._expired = True
        self._conn.abort()

    def _checked(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except ResponseFormatError as exc:
            self._conn.discard()
            exc.deployment = self._deployment
            raise

    async def _drain(self) -> None:
        # After the terminator only the end of the body should follow: read it (bounded),
        # so the connection goes back to the pool instead of being closed.
        left = _DRAIN_LIMIT
        conn = self._conn
        if conn.complete:
            return  # the end came with the terminator: nothing to read, no scope to open
        with trio.move_on_after(self._timeout):
            try:
                while left >= 0:
                    part = await conn.receive_part()
                    if part is None:
                        return
                    left -= len(part)
            except LeanHTTPError:
                return  # the answer is complete; the connection is simply not reused
