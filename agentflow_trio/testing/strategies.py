"""Hypothesis strategies for agents, runners and schedulers.

- `events`: `Event` values with JSON-like data.
- `event_specs`, `workloads`: traffic for a runner (arrival times, agent durations,
  failures, events over their usage budget, emit modes, callers giving up, emit
  timeouts, priorities) plus runner settings, as `Workload` values to `replay`.
- `mock_llm_configs`, `mock_replies`, `llm_behaviours`: the mock LLM server's latency,
  429s, 5xx and truncated streams (`MockLLMConfig`, `MockReply`, `LLMBehaviour`).
- `fake_replies`: the same faults for `FakeLLM` (text, `RateLimitError`, `ServerError`,
  timeouts, malformed answers, delayed replies).
- `tool_behaviours`: tool latency, failures and wrong outputs (`ToolBehaviour`).

Times are whole virtual seconds and timeouts end in ``.5``, so under the autojump clock an
agent's sleep never ties with a timeout and every outcome is unambiguous.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from hypothesis import strategies as st

from ..errors import (
    LLMReadError,
    LLMTimeoutError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
)
from ..events import Event
from ..mockllm import MockLLMConfig, MockReply
from .fakes import LLMBehaviour, ScriptItem, ToolBehaviour, delayed
from .workload import EmitMode, EventSpec, Workload

__all__ = [
    "event_specs",
    "events",
    "fake_replies",
    "json_values",
    "llm_behaviours",
    "mock_llm_configs",
    "mock_replies",
    "tool_behaviours",
    "workloads",
]

_T = TypeVar("_T")
_IntLike = int | st.SearchStrategy[int]
_FloatLike = float | st.SearchStrategy[float]

_MODES: tuple[EmitMode, ...] = ("emit", "emit_nowait", "call")
_WORKERS = st.integers(1, 4)
_MAX_IN_FLIGHT = st.integers(1, 10)
_BUFFER = st.integers(0, 5)
_HALF_SECONDS = st.integers(1, 6).map(lambda t: t + 0.5)  # never ties with whole seconds
_DRAIN = st.integers(0, 12).map(float)
_SHUTDOWN_AT = st.integers(0, 30).map(float)
_RATES = (0.0, 0.1, 0.3, 1.0)


def _strategy(value: _T | st.SearchStrategy[_T]) -> st.SearchStrategy[_T]:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """JSON-like values (None, bools, ints, short text, lists and string-keyed dicts)."""
    scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=12)
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def events(
    types: Sequence[str] | st.SearchStrategy[str] = ("work",),
    *,
    data: st.SearchStrategy[dict[str, Any]] | None = None,
) -> st.SearchStrategy[Event]:
    """`Event` values of the given ``types`` with JSON-like ``data`` and ``metadata``."""
    type_strategy = types if isinstance(types, st.SearchStrategy) else st.sampled_from(list(types))
    mapping = st.dictionaries(st.text(min_size=1, max_size=8), json_values(), max_size=4)
    return st.builds(
        Event,
        type=type_strategy,
        data=data if data is not None else mapping,
        metadata=st.dictionaries(
            st.sampled_from(["session_id", "trace", "tenant"]), st.text(max_size=8), max_size=2
        ),
    )


def event_specs(
    *,
    max_arrival: int = 20,
    max_duration: int = 8,
    failures: bool = True,
    budgets: bool = True,
    modes: Sequence[EmitMode] = _MODES,
    cancellations: bool = True,
    timeouts: bool = True,
    priorities: int = 0,
    types: Sequence[str] = ("work",),
) -> st.SearchStrategy[EventSpec]:
    """One event of a workload: arrival in ``0..max_arrival`` s, agent work in
    ``0..max_duration`` s, failing or not, over its usage budget or not (``budgets``),
    any of ``modes``, a caller that may give up after 0 to 6 s, an emit timeout of 1.5 to
    6.5 s, a priority in ``0..priorities``."""
    return st.builds(
        EventSpec,
        arrival=st.integers(0, max_arrival).map(float),
        duration=st.integers(0, max_duration).map(float),
        fails=st.booleans() if failures else st.just(False),
        mode=st.sampled_from(list(modes)),
        cancel_after=(st.none() | st.integers(0, 6).map(float)) if cancellations else st.none(),
        timeout=(st.none() | _HALF_SECONDS) if timeouts else st.none(),
        priority=st.integers(0, priorities),
        type=st.sampled_from(list(types)),
        over_budget=st.booleans() if budgets else st.just(False),
    )


def workloads(
    *,
    specs: st.SearchStrategy[EventSpec] | None = None,
    min_events: int = 1,
    max_events: int = 25,
    workers: _IntLike = _WORKERS,
    max_in_flight: _IntLike = _MAX_IN_FLIGHT,
    buffer: _IntLike = _BUFFER,
    event_timeout: _FloatLike = _HALF_SECONDS,
    drain_timeout: _FloatLike = _DRAIN,
    shutdown_at: _FloatLike = _SHUTDOWN_AT,
) -> st.SearchStrategy[Workload]:
    """`Workload` values: ``min_events..max_events`` events from ``specs`` (default
    `event_specs()`) and runner settings, each a fixed value or a strategy."""
    return st.builds(
        Workload,
        events=st.lists(
            specs if specs is not None else event_specs(), min_size=min_events, max_size=max_events
        ),
        workers=_strategy(workers),
        max_in_flight=_strategy(max_in_flight),
        buffer=_strategy(buffer),
        event_timeout=_strategy(event_timeout),
        drain_timeout=_strategy(drain_timeout),
        shutdown_at=_strategy(shutdown_at),
    )


def mock_llm_configs(
    *, max_latency: float = 0.05, faults: bool = True
) -> st.SearchStrategy[MockLLMConfig]:
    """`MockLLMConfig` values: latency and jitter up to ``max_latency`` s, with ``faults`` a
    5xx rate and a 429 rate (summing to at most 1) and a Retry-After, stream chunking."""
    rates = (
        st.tuples(
            st.sampled_from([0.0, 0.1, 0.3, 1.0]), st.sampled_from([0.0, 0.1, 0.3, 1.0])
        ).filter(lambda r: r[0] + r[1] <= 1.0)
        if faults
        else st.just((0.0, 0.0))
    )
    seconds = st.floats(0, max_latency, allow_nan=False)
    return st.builds(
        lambda latency, jitter, rate, retry_after, chunks, delay, seed: MockLLMConfig(
            latency=latency,
            jitter=min(jitter, latency),
            error_rate=rate[0],
            rate_limit_rate=rate[1],
            retry_after=retry_after,
            stream_chunks=chunks,
            stream_delay=delay,
            seed=seed,
        ),
        seconds,
        seconds,
        rates,
        st.sampled_from([0.0, 0.01, 0.05]),
        st.integers(1, 8),
        st.floats(0, max_latency / 5, allow_nan=False),
        st.integers(0, 2**16),
    )


def mock_replies(*, max_delay: float = 0.05) -> st.SearchStrategy[MockReply]:
    """`MockReply` values: a text answer, a 429 with Retry-After, a 5xx, or a stream cut
    half-way; each maybe delayed up to ``max_delay`` s."""
    delay = st.floats(0, max_delay, allow_nan=False)
    text = st.text(
        st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
    )
    ok = st.builds(MockReply, text=text, delay=delay)
    limited = st.builds(
        lambda retry, d: MockReply(status=429, headers={"Retry-After": f"{retry}"}, delay=d),
        st.integers(0, 2),
        delay,
    )
    failed = st.builds(MockReply, status=st.sampled_from([500, 502, 503, 504]), delay=delay)
    truncated = st.builds(MockReply, text=text, truncate_stream=st.just(True), delay=delay)
    return ok | limited | failed | truncated


def llm_behaviours(
    *, max_latency: float = 0.05, max_replies: int = 6
) -> st.SearchStrategy[LLMBehaviour]:
    """`LLMBehaviour` values: a `mock_llm_configs` setting and up to ``max_replies``
    scripted `mock_replies`."""
    return st.builds(
        LLMBehaviour,
        config=mock_llm_configs(max_latency=max_latency),
        replies=st.lists(mock_replies(max_delay=max_latency), max_size=max_replies),
    )


def fake_replies(*, max_delay: int = 5) -> st.SearchStrategy[ScriptItem]:
    """`FakeLLM` script items: text, `RateLimitError` (429, retry_after), `ServerError`
    (5xx), `LLMTimeoutError`, `LLMReadError` (a stream cut off), `ResponseFormatError`, or
    any of these delayed by 1 to ``max_delay`` virtual seconds."""
    text = st.text(min_size=1, max_size=40)
    limited = st.builds(
        lambda after: RateLimitError("rate limited", status=429, retry_after=after),
        st.integers(0, 3).map(float),
    )
    server = st.builds(
        lambda status: ServerError(f"HTTP {status}", status=status),
        st.sampled_from([500, 502, 503]),
    )
    other = st.sampled_from(
        [
            LLMTimeoutError("the provider did not answer in time"),
            LLMReadError("connection lost mid-stream"),
            ResponseFormatError("truncated response", excerpt='{"choices": ['),
        ]
    )
    plain: st.SearchStrategy[Any] = text | limited | server | other
    late = st.builds(delayed, st.integers(1, max_delay).map(float), plain)
    return plain | late


def tool_behaviours(*, max_latency: int = 5) -> st.SearchStrategy[ToolBehaviour]:
    """`ToolBehaviour` values: latency of 0 to ``max_latency`` virtual seconds, then the
    right answer, an exception, or a wrong output (a dict without ``"echo"``)."""
    wrong = st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k != "echo"), json_values(), max_size=3
    )
    return st.builds(
        ToolBehaviour,
        latency=st.integers(0, max_latency).map(float),
        raises=st.booleans(),
        output=st.none() | wrong,
    )
