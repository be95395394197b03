"""A cancel-scope-aware circuit breaker on ``trio.current_time()``.

The breaker stands between callers and one dependency. After enough consecutive failures it
*opens* and refuses calls at once, so that a failing dependency is not hammered and callers
fail fast; after ``open_timeout`` it lets a few *probe* calls through to find out whether the
dependency is back.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import TypeVar, TypeVarTuple

import attrs
import trio

from .._deadline import CALL_DEADLINE, CallDeadline
from ..errors import CircuitOpenError, LLMTimeoutError, LocalRateLimitError

__all__ = [
    "BreakerState",
    "BreakerStatistics",
    "BreakerTimeoutError",
    "CircuitBreaker",
    "default_is_failure",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class BreakerState(enum.Enum):
    """Where a :class:`CircuitBreaker` is in its cycle."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = BreakerState.CLOSED


@attrs.frozen
class BreakerStatistics:
    """A snapshot of a :class:`CircuitBreaker`.

    Attributes:
      state: the current :class:`BreakerState`.
      failures: calls counted as failures since the breaker was made (own timeouts included).
      successes: calls that returned normally.
      consecutive_failures: failures since the last success while closed (what opens it).
      rejections: calls refused with :exc:`~agentflow_trio.errors.CircuitOpenError`.
      opened_count: how many times the breaker went to open.
      open_until: the ``trio.current_time()`` at which an open breaker admits a probe;
        ``None`` unless the state is open.
    """

    state: BreakerState
    failures: int
    successes: int
    consecutive_failures: int
    rejections: int
    opened_count: int
    open_until: float | None


class BreakerTimeoutError(LLMTimeoutError):
    """A call did not finish within its breaker's ``call_timeout``.

    An :exc:`~agentflow_trio.errors.LLMTimeoutError` (so a transport timeout to retry logic),
    carrying the breaker ``name`` and the ``timeout`` that expired.
    """

    def __init__(self, name: str, timeout: float):
        self.name = name
        self.timeout = timeout
        super().__init__(f"call through circuit {name!r} took longer than {timeout:g}s")


def default_is_failure(exc: BaseException) -> bool:
    """Whether an exception is the dependency's fault, and so counts against the breaker.

    Errors with ``retryable = False`` (``BadRequestError``, ``AuthenticationError``,
    ``NotFoundError``: the request or the credentials are wrong) and
    :exc:`~agentflow_trio.resilience.LocalRateLimitError` (this process throttled itself;
    the dependency never saw the call) are not. Every other exception is.
    """
    return getattr(exc, "retryable", True) is not False and not isinstance(exc, LocalRateLimitError)


class CircuitBreaker:
    """Fail fast in front of a dependency that keeps failing.

    ``await breaker.call(fn, *args)`` runs ``await fn(*args)`` inside the breaker's own
    ``trio.move_on_after(call_timeout)`` scope (no scope at all when ``call_timeout`` is
    ``None`` or an enclosing deadline ends sooner; see below) and sorts the outcome:

    - ``fn`` returns: a success. It resets the consecutive-failure count; a probe's success
      closes the breaker.
    - **Expiry of this breaker's own scope counts as a failure** and raises
      :exc:`BreakerTimeoutError` (an ``LLMTimeoutError``). Only the scope's
      ``cancelled_caught`` decides this: if an enclosing scope is cancelled at the same
      moment, trio delivers the enclosing cancellation instead.
    - **``trio.Cancelled`` from an enclosing scope propagates uncounted**: it is neither a
      failure nor a success (nor is any other ``BaseException``, such as
      ``KeyboardInterrupt``).
    - An ordinary exception is re-raised unchanged. It counts as a failure when
      ``is_failure(exc)`` is true (default :func:`default_is_failure`: everything except
      errors with ``retryable = False`` and local rate-limit refusals). Otherwise it is
      neutral: the dependency is not to blame, and nothing is counted.

    States: *closed* admits everything; ``failure_threshold`` consecutive failures open it.
    *Open* refuses every call at once with ``CircuitOpenError(name, retry_after)`` without
    calling ``fn``. After ``open_timeout`` seconds it is *half-open*: at most
    ``half_open_max_calls`` probes run at the same time, and other callers are refused. A
    probe's success closes the breaker, a probe's failure re-opens it for another
    ``open_timeout``; a neutral or cancelled probe leaves it half-open. **The half-open
    permit is always released** (in a ``finally``, on every exit path including
    cancellation), so a cancelled probe frees its slot for the next caller.

    A call that started while closed and ends after the breaker opened does not change the
    state: only probes may close or re-open it.

    The breaker takes no locks: trio is single-threaded and there is no ``await`` between a
    check and the state change it leads to. The closed-state success path allocates nothing
    beyond the cancel scope. A refused call is still a checkpoint.

    **No scope when it could never fire**: if an enclosing deadline (an event timeout, a
    caller's ``fail_after``) already ends no later than ``now + call_timeout``, the
    breaker opens no scope of its own (a scope costs several microseconds on the hot
    path): the enclosing cancellation would win in any case, uncounted. The one
    difference: if that enclosing deadline is later moved past ``now + call_timeout``
    while the call runs, ``call_timeout`` does not apply to this call.
    """

    def __init__(
        self,
        name: str = "default",
        *,
        failure_threshold: int = 5,
        open_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        call_timeout: float | None = 60.0,
        is_failure: Callable[[BaseException], bool] = default_is_failure,
    ):
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if half_open_max_calls < 1:
            raise ValueError("half_open_max_calls must be >= 1")
        if open_timeout < 0 or (call_timeout is not None and call_timeout <= 0):
            raise ValueError("open_timeout must be >= 0 and call_timeout > 0 (or None)")
        self.name = name
        self._threshold = failure_threshold
        self._open_timeout = open_timeout
        self._max_probes = half_open_max_calls
        self._call_timeout = call_timeout
        self._is_failure = is_failure
        self._state = BreakerState.CLOSED
        self._open_until = -math.inf
        self._probes = 0
        self._consecutive = 0
        self._failures = 0
        self._successes = 0
        self._rejections = 0
        self._opened_count = 0

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker whose timeout has passed reads half-open)."""
        self._refresh()
        return self._state

    def retry_after(self) -> float:
        """Seconds until this breaker would admit a call.

        0 when closed, or half-open with a free probe slot. While open, the time left until
        the probe window. Half-open with every probe slot taken, ``open_timeout``: the
        probes decide, and if one fails the breaker stays shut that long.
        """
        self._refresh()
        if self._state is BreakerState.OPEN:
            return self._open_until - trio.current_time()
        if self._state is BreakerState.HALF_OPEN and self._probes >= self._max_probes:
            return self._open_timeout
        return 0.0

    def statistics(self) -> BreakerStatistics:
        """A :class:`BreakerStatistics` snapshot."""
        state = self.state
        return BreakerStatistics(
            state=state,
            failures=self._failures,
            successes=self._successes,
            consecutive_failures=self._consecutive,
            rejections=self._rejections,
            opened_count=self._opened_count,
            open_until=self._open_until if state is BreakerState.OPEN else None,
        )

    async def call(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """Run ``await fn(*args)`` through the breaker; see the class docstring.

        Raises:
          CircuitOpenError: the breaker is open, or half-open with every probe slot taken;
            ``fn`` was not called.
          BreakerTimeoutError: ``fn`` ran longer than ``call_timeout`` (counted).
          Exception: whatever ``fn`` raised, unchanged.
        """
        probe = False
        if self._state is not _CLOSED:
            await trio.lowlevel.checkpoint()
            probe = self._admit_probe()
        timed_out = False
        try:
            timeout = self._call_timeout
            deadline = math.inf if timeout is None else trio.current_time() + timeout
            if deadline >= trio.current_effective_deadline():  # ours could never fire first
                result = await fn(*args)
            else:
                with trio.CancelScope(deadline=deadline) as scope:
                    result = await fn(*args)
                timed_out = scope.cancelled_caught
        except Exception as exc:
            if self._is_failure(exc):
                self._record_failure(probe)
            raise
        finally:
            if probe:
                self._probes -= 1
        if timed_out:
            self._record_failure(probe)
            raise BreakerTimeoutError(self.name, self._call_timeout or math.inf)
        self._successes += 1
        self._consecutive = 0
        if probe and self._state is BreakerState.HALF_OPEN:
            self._state = BreakerState.CLOSED
        return result

    async def call_bounded(self, fn: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """`call` for an ``fn`` that bounds every wait of its own by the `CALL_DEADLINE`
        it finds (the lean HTTP session's ``post_json`` does, and so every provider's
        ``complete`` on it): the breaker sets ``now + call_timeout`` there instead of
        opening a cancel scope, which saves the scope's cost on every call.

        Same outcomes as `call`: when ``fn`` reports that this deadline ended one of its
        waits (``CallDeadline.fired``), whatever it raised counts as a failure and
        `BreakerTimeoutError` is raised from it. Only for such an ``fn``: one that waits
        on anything else (a lock, a sleep) would not be bounded by ``call_timeout``.
        """
        timeout = self._call_timeout
        if timeout is None:
            return await self.call(fn, *args)
        probe = False
        if self._state is not _CLOSED:
            await trio.lowlevel.checkpoint()
            probe = self._admit_probe()
        deadline = CallDeadline(trio.current_time() + timeout)
        token = CALL_DEADLINE.set(deadline)
        try:
            result = await fn(*args)
        except Exception as exc:
            error = self._bounded_failure(deadline, exc, probe)
            if error is exc:
                raise
            raise error from exc
        finally:
            CALL_DEADLINE.reset(token)
            if probe:
                self._probes -= 1
        self._successes += 1
        self._consecutive = 0
        if probe and self._state is BreakerState.HALF_OPEN:
            self._state = BreakerState.CLOSED
        return result

    def bound_nowait(self) -> tuple[CallDeadline, Token[CallDeadline | None]] | None:
        """The start of `call_bounded` for a caller that awaits its ``fn`` in its own frame
        (a stream's opening): when the breaker is closed and has a call timeout,
        `CALL_DEADLINE` is set to ``now + call_timeout`` and returned with its token (reset
        it in a ``finally``, then report the outcome: `bounded_failure` or
        `bounded_success`). None otherwise: use `call_bounded`. Not a checkpoint."""
        timeout = self._call_timeout
        if timeout is None or self._state is not _CLOSED:
            return None
        deadline = CallDeadline(trio.current_time() + timeout)
        return deadline, CALL_DEADLINE.set(deadline)

    def bounded_failure(self, deadline: CallDeadline, exc: Exception) -> Exception:
        """Count ``exc``, raised by a call begun with `bound_nowait`, as `call_bounded`
        counts it; the error to raise: `BreakerTimeoutError` (chained to ``exc``) when the
        call's deadline ended it, else ``exc``."""
        return self._bounded_failure(deadline, exc, False)

    def bounded_success(self) -> None:
        """Count a call begun with `bound_nowait` that succeeded, as `call_bounded` does
        (the breaker was closed: no probe to settle)."""
        self._successes += 1
        self._consecutive = 0

    def _bounded_failure(self, deadline: CallDeadline, exc: Exception, probe: bool) -> Exception:
        if deadline.fired:
            self._record_failure(probe)
            error = BreakerTimeoutError(self.name, self._call_timeout or math.inf)
            error.__cause__ = exc  # as ``raise error from exc``
            return error
        if self._is_failure(exc):
            self._record_failure(probe)
        return exc

    def _refresh(self) -> None:
        if self._state is BreakerState.OPEN and trio.current_time() >= self._open_until:
            self._state = BreakerState.HALF_OPEN

    def _admit_probe(self) -> bool:
        # Called only when not closed; returns True (a probe permit is held) or raises.
        self._refresh()
        if self._state is BreakerState.CLOSED:
            return False
        if self._state is BreakerState.HALF_OPEN and self._probes < self._max_probes:
            self._probes += 1
            return True
        self._rejections += 1
        raise CircuitOpenError(self.name, self.retry_after())

    def _record_failure(self, probe: bool) -> None:
        self._failures += 1
        if self._state is BreakerState.CLOSED:
            self._consecutive += 1
            if self._consecutive >= self._threshold:
                self._open()
        elif probe and self._state is BreakerState.HALF_OPEN:
            self._open()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._open_until = trio.current_time() + self._open_timeout
        self._opened_count += 1
        self._consecutive = 0
