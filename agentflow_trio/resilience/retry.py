"""Retries with exponential backoff, Retry-After, deadlines and a shared pause per deployment."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple

import attrs
import trio

from ..errors import (
    APIStatusError,
    CircuitOpenError,
    LocalRateLimitError,
    RateLimitError,
    TransportError,
)

__all__ = ["PauseGate", "Retry", "RetryStatistics", "default_retry_on"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def default_retry_on(exc: BaseException) -> bool:
    """Whether an error is worth another attempt.

    True for transport errors (connect, read, timeouts, breaker timeouts), for HTTP errors
    whose class says ``retryable`` (429 and 5xx; never 400, 401/403 or 404) and for
    :exc:`~agentflow_trio.errors.CircuitOpenError` (which :class:`Retry` treats specially).
    False for everything else, malformed responses included.
    """
    if isinstance(exc, APIStatusError):
        return exc.retryable
    return isinstance(exc, TransportError | CircuitOpenError)


@attrs.frozen
class RetryStatistics:
    """A snapshot of a :class:`Retry`.

    Attributes:
      attempts: calls of the wrapped function.
      retries: attempts made after a failed one (each after a backoff sleep).
      giveups: calls that ended by re-raising an error (not retryable, attempts used up,
        past the deadline, or the circuit stayed open). Cancellation is not counted.
    """

    attempts: int
    retries: int
    giveups: int


class PauseGate:
    """A pause shared by every caller of one deployment.

    When the deployment answers 429 with Retry-After, :class:`Retry` calls
    :meth:`pause_until`, and every attempt through the same gate waits for the pause to end
    first: one 429 slows down all callers instead of each finding out on its own.
    """

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until = -math.inf

    @property
    def paused_until(self) -> float:
        """The ``trio.current_time()`` at which the pause ends (``-inf``: never paused)."""
        return self._until

    def pause_until(self, deadline: float) -> None:
        """Pause until ``deadline`` (absolute trio time); a shorter pause never shortens it."""
        if deadline > self._until:
            self._until = deadline

    def paused(self) -> bool:
        """Whether callers must wait now. Not a checkpoint."""
        until = self._until
        return until != -math.inf and until > trio.current_time()  # never paused: no clock read

    async def wait(self) -> None:
        """Sleep until the pause ends; a checkpoint even when there is no pause.

        A pause extended while sleeping is waited for too.

        Raises:
          LocalRateLimitError: the pause ends after the caller's deadline (raised at once,
            ``retry_after`` = seconds left in the pause).
        """
        while (until := self._until) > (now := trio.current_time()):
            if until > trio.current_effective_deadline():
                await trio.lowlevel.checkpoint_if_cancelled()
                raise LocalRateLimitError("deployment paused", retry_after=until - now)
            await trio.sleep_until(until)
        await trio.lowlevel.checkpoint()


class Retry:
    """Call an async function again when it fails with a retryable error.

    ``await retry.call(fn, *args)`` makes up to ``max_attempts`` attempts. Which errors are
    retried is ``retry_on(exc)`` (default :func:`default_retry_on`). Between attempts it
    sleeps with exponential backoff and full jitter,
    ``uniform(0, min(max_delay, base_delay * 2**n))`` before retry ``n + 1``, but at least
    the error's ``retry_after`` (Retry-After), read afresh from every error so that an
    escalating Retry-After is honoured.

    - **Retry-After is capped by** ``max_delay``: a server asking for a longer wait (an
      absurd ``Retry-After: 1000000000`` included) gets ``max_delay``, both for this
      caller's sleep and for the shared pause; a value that is not a finite number >= 0 is
      ignored. So no caller, with or without a deadline, waits longer than ``max_delay``
      between two attempts, and one bad header cannot park a deployment.

    - **Deadline**: it never sleeps past ``trio.current_effective_deadline()``. If the next
      sleep would end after it, the last error is re-raised at once. Edge values: ``-inf``
      (already cancelled) means no attempt at all (``trio.Cancelled`` is raised); ``inf``
      (no deadline) means only ``max_attempts`` limits the retries.
    - **Cancellation**: ``trio.Cancelled`` (and any ``BaseException``) propagates at once;
      nothing is retried after it.
    - **Open circuit**: a :exc:`~agentflow_trio.errors.CircuitOpenError` ends the retries
      (re-raised) at once, unless the caller has a finite deadline and the breaker's
      ``retry_after`` fits before it: then it sleeps that long and makes one last attempt
      (the probe). With no deadline an open breaker fails fast rather than parking the
      caller for the whole open timeout.
    - **Shared pause**: with a :class:`PauseGate`, every attempt first waits for the gate,
      and a provider's 429 with Retry-After pauses the gate until
      ``now + min(retry_after, max_delay)`` for every caller sharing it (even when this call
      then gives up).

    Errors are re-raised unchanged: the caller sees the last attempt's own exception.
    """

    def __init__(
        self,
        *,
        max_attempts: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        retry_on: Callable[[BaseException], bool] | None = None,
        gate: PauseGate | None = None,
        rng: random.Random | None = None,
    ):
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not (0 <= base_delay < math.inf and 0 <= max_delay < math.inf):
            raise ValueError("delays must be finite and >= 0")
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._retry_on = retry_on or default_retry_on
        self._gate = gate
        self._rng = rng or random.Random()
        self._attempts = 0
        self._retries = 0
        self._giveups = 0

    @property
    def gate(self) -> PauseGate | None:
        """The shared :class:`PauseGate`, if any."""
        return self._gate

    def statistics(self) -> RetryStatistics:
        """A :class:`RetryStatistics` snapshot."""
        return RetryStatistics(
            attempts=self._attempts, retries=self._retries, giveups=self._giveups
        )

    async def call(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """Run ``await fn(*args)``, retrying as the class docstring says.

        Raises:
          Exception: the last attempt's error (or the gate's ``LocalRateLimitError``).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        gate = self._gate
        try:
            if gate is not None and gate._until != -math.inf and gate.paused():
                await gate.wait()
            self._attempts += 1
            return await fn(*args)
        except Exception as exc:
            failed = exc
        return await self.call_after(failed, fn, *args)

    def try_first(self) -> bool:
        """Count a first attempt that its caller makes itself, in its own frame, when one
        may start at once (no shared pause in force): True. False: nothing is counted;
        use `call`. Not a checkpoint (`call` checks for cancellation first; the caller
        does the same). A failure of that attempt goes to `call_after`; a success needs
        nothing more."""
        gate = self._gate
        if gate is not None and gate._until != -math.inf and gate.paused():
            return False
        self._attempts += 1
        return True

    async def call_after(self, exc: Exception, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """The rest of a `call` whose first attempt (`call`'s own, or one begun with
        `try_first`) failed with ``exc``: ``await fn(*args)`` again after each backoff, as
        the class docstring says, until one succeeds or it gives up.

        Raises:
          Exception: the last attempt's error (``exc`` itself if it gives up at once).
        """
        gate = self._gate
        attempt = 0
        last = False
        while True:
            self._pause_gate(exc)
            delay = None if last else self._delay(exc, attempt)
            if delay is None:
                self._giveups += 1
                raise exc
            last = isinstance(exc, CircuitOpenError)
            attempt += 1
            self._retries += 1
            await trio.sleep(delay)
            try:
                if gate is not None and gate._until != -math.inf and gate.paused():
                    await gate.wait()
                self._attempts += 1
                return await fn(*args)
            except Exception as failed:
                exc = failed

    def _pause_gate(self, exc: Exception) -> None:
        if (
            self._gate is not None
            and isinstance(exc, RateLimitError)
            and not isinstance(exc, LocalRateLimitError)
        ):
            wait = self._retry_after(exc)
            if wait is not None:
                self._gate.pause_until(trio.current_time() + wait)

    def _retry_after(self, exc: Exception) -> float | None:
        # The error's Retry-After, capped by max_delay; None if absent or not a number >= 0.
        value = getattr(exc, "retry_after", None)
        if not isinstance(value, int | float) or not value >= 0:
            return None  # NaN fails the comparison too
        return min(float(value), self._max_delay)

    def _delay(self, exc: Exception, attempt: int) -> float | None:
        # The sleep before the next attempt, or None to give up now.
        if attempt + 1 >= self._max_attempts or not self._retry_on(exc):
            return None
        if isinstance(exc, CircuitOpenError):
            if trio.current_effective_deadline() == math.inf:
                return None  # no deadline to fit the open time into: fail fast
            delay = exc.retry_after
        else:
            ceiling = min(self._max_delay, self._base_delay * 2.0 ** min(attempt, 64))
            delay = self._rng.uniform(0.0, ceiling)
            retry_after = self._retry_after(exc)
            if retry_after is not None:
                delay = max(delay, retry_after)
        if trio.current_time() + delay > trio.current_effective_deadline():
            return None
        return delay
