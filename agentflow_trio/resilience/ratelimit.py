"""Client-side rate limiting: token buckets for requests and tokens per minute.

Keeps this process under a deployment's quota (RPM, TPM) instead of learning it from 429s.
"""

from __future__ import annotations

import math

import attrs
import trio

from ..errors import LocalRateLimitError

__all__ = ["LocalRateLimitError", "RateLimiter", "RateLimiterStatistics"]

# Shortfalls below this many tokens count as met: float rounding must not turn into a sleep
# so short that the clock cannot move.
_EPSILON = 1e-9


@attrs.frozen
class RateLimiterStatistics:
    """A snapshot of a :class:`RateLimiter`.

    Attributes:
      requests_available: request tokens in the bucket now (negative: borrowed by an
        oversize request), ``None`` when requests are unlimited.
      tokens_available: the same for the tokens bucket.
      waiting: callers queued in :meth:`RateLimiter.acquire`.
      acquired: successful acquisitions.
      rejected: acquisitions refused with :exc:`LocalRateLimitError`.
    """

    requests_available: float | None
    tokens_available: float | None
    waiting: int
    acquired: int
    rejected: int


class _Bucket:
    """A token bucket refilled continuously; ``pending`` is the demand of queued waiters."""

    __slots__ = ("capacity", "level", "pending", "rate", "stamp")

    def __init__(self, per_minute: float, burst_seconds: float):
        self.rate = per_minute / 60.0
        self.capacity = self.rate * burst_seconds
        self.level = self.capacity
        self.stamp = -math.inf
        self.pending = 0.0

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, amount: float, ahead: float) -> float:
        # Seconds until `ahead` tokens have been taken and `amount` more may be: a request
        # larger than the bucket only needs a full bucket (then leaves it in debt).
        shortfall = ahead + min(amount, self.capacity) - self.level
        return shortfall / self.rate if shortfall > _EPSILON else 0.0


def _bucket(per_minute: float, burst_seconds: float) -> _Bucket | None:
    return _Bucket(per_minute, burst_seconds) if per_minute else None


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits, as two token buckets.

    Each bucket holds ``burst_seconds`` worth of its rate (full at first) and refills
    continuously on ``trio.current_time()``. A rate of 0 means that bucket is unlimited.

    ``await acquire(tokens)`` returns once one request token and ``tokens`` tokens have been
    taken. Guarantees:

    - **First come, first served**: waiters are served strictly in arrival order (a
      ``trio.StrictFIFOLock``), and a newcomer never overtakes a queued waiter.
    - **Bounded rate**: over any window of ``w`` seconds a bucket hands out at most
      ``max(capacity, largest single request) + rate * w``. A request larger than the bucket
      is admitted when the bucket is full and leaves it in debt, so it cannot deadlock.
    - **Deadline-aware**: if the wait (behind the waiters already queued) would end after
      ``trio.current_effective_deadline()``, :exc:`LocalRateLimitError` is raised at once,
      with ``retry_after`` set to that wait.
    - **Cancellation**: a cancelled ``acquire`` takes nothing; its place in the queue goes to
      the next waiter.
    """

    def __init__(
        self,
        *,
        requests_per_minute: float = 0,
        tokens_per_minute: float = 0,
        burst_seconds: float = 1.0,
    ):
        if requests_per_minute < 0 or tokens_per_minute < 0 or burst_seconds <= 0:
            raise ValueError("rates must be >= 0 and burst_seconds > 0")
        self._requests = _bucket(requests_per_minute, burst_seconds)
        self._tokens = _bucket(tokens_per_minute, burst_seconds)
        self._lock = trio.StrictFIFOLock()
        self._waiting = 0
        self._acquired = 0
        self._rejected = 0

    async def acquire(self, tokens: int = 1) -> None:
        """Wait for one request and ``tokens`` tokens, then take them.

        Raises:
          LocalRateLimitError: the wait would end after the caller's deadline; nothing taken.
          ValueError: ``tokens`` is negative.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        now = trio.current_time()
        wait = self._wait(tokens, now)
        if wait == 0.0 and not self._waiting:
            # Nobody queued ahead (the sum of their waits can round to zero: a newcomer must
            # still not overtake a waiter whose wake-up time rounded a hair later).
            self._take(tokens)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if now + wait > trio.current_effective_deadline():
            self._rejected += 1
            raise LocalRateLimitError("rate limit wait exceeds the deadline", retry_after=wait)
        self._queue(tokens, 1)
        try:
            async with self._lock:
                # Holding the lock, nobody else takes: one sleep fills both buckets enough.
                await trio.sleep(self._wait(tokens, trio.current_time(), queued=False))
                self._take(tokens)
        finally:
            self._queue(tokens, -1)

    def acquire_nowait(self, tokens: int = 1) -> None:
        """Take one request and ``tokens`` tokens now, or raise ``trio.WouldBlock``.

        Raises:
          trio.WouldBlock: not enough in a bucket, or other callers are waiting.
          ValueError: ``tokens`` is negative.
        """
        if self._waiting or self._wait(tokens, trio.current_time()) > 0:
            raise trio.WouldBlock
        self._take(tokens)

    def statistics(self) -> RateLimiterStatistics:
        """A :class:`RateLimiterStatistics` snapshot."""
        now = trio.current_time()
        levels: list[float | None] = []
        for bucket in (self._requests, self._tokens):
            if bucket is not None:
                bucket.refill(now)
            levels.append(None if bucket is None else bucket.level)
        return RateLimiterStatistics(
            requests_available=levels[0],
            tokens_available=levels[1],
            waiting=self._waiting,
            acquired=self._acquired,
            rejected=self._rejected,
        )

    def _wait(self, tokens: int, now: float, *, queued: bool = True) -> float:
        # Seconds until this request could be served; with `queued`, behind every waiter.
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        wait = 0.0
        for bucket, amount in ((self._requests, 1), (self._tokens, tokens)):
            if bucket is not None:
                bucket.refill(now)
                ahead = bucket.pending if queued else 0.0
                wait = max(wait, bucket.wait(amount, ahead))
        return wait

    def _queue(self, tokens: int, sign: int) -> None:
        self._waiting += sign
        if self._requests is not None:
            self._requests.pending += sign
        if self._tokens is not None:
            self._tokens.pending += sign * tokens

    def _take(self, tokens: int) -> None:
        if self._requests is not None:
            self._requests.level -= 1
        if self._tokens is not None:
            self._tokens.level -= tokens
        self._acquired += 1
