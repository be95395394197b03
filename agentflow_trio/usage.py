"""What an event's model calls spent, and the budget they may spend: `RunUsage` (the frozen
figures an `AgentResult` carries), `UsageLimits` (the budget) and `UsageMeter` (the
per-event counter behind both).

The runner makes one `UsageMeter` per event and makes it current (`enter_meter`) while the
event runs: every model call the event's code makes through ``ctx.llm`` (tool loops,
structured-output re-asks, workflow children, tasks the agent starts) is checked against
its limits before it is sent and charged to it after (``llm/_metering.py``). A nested
event (``ctx.runner.call``) gets a meter of its own whose charges also go to its parent's,
and whose calls are checked against its parent's limits too. No meter (code running
outside any event) means nothing is counted or checked.

Figures: ``input_tokens`` are the prompt tokens, ``cached_tokens`` the part of them the
provider served from its prompt cache, ``output_tokens`` the completion tokens;
``total_tokens = input_tokens + output_tokens``. ``cost`` is in USD from the configured
prices (``[llm.prices."MODEL"]``, USD per million tokens; cached input at its own price,
or at the input price when none is given; input written to the prompt cache, Anthropic's
``cache_creation_input_tokens``, at `CACHE_WRITE_FACTOR` times the input price, what a
5-minute cache write costs), and None as soon as a model used has no price.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final, Protocol, final

import attrs

from ._frozen import fast_init
from .errors import ConfigError, UsageLimitExceeded

__all__ = [
    "CACHE_WRITE_FACTOR",
    "EVENT_CONTEXT",
    "LIMIT_NAMES",
    "Price",
    "RunUsage",
    "UsageLimits",
    "UsageMeter",
    "current_meter",
    "tightest",
]

_EMPTY: Final[Mapping[str, Any]] = {}

LIMIT_NAMES: Final = (
    "max_requests",
    "max_input_tokens",
    "max_output_tokens",
    "max_total_tokens",
    "max_cost",
)
"""The limits a `UsageLimits` (and the ``[limits]`` config table) may set."""

_MAX_COUNT: Final = 10**15  # tokens or requests: far above any budget, still exact in a float
_MAX_COST: Final = 1e12  # USD


class Price(Protocol):
    """A model's price in USD per million tokens (``[llm.prices."MODEL"]``);
    ``cached_input`` None means the input price."""

    @property
    def input(self) -> float: ...
    @property
    def output(self) -> float: ...
    @property
    def cached_input(self) -> float | None: ...


@fast_init
@attrs.frozen(slots=True)
class RunUsage:
    """What model calls spent: requests, tokens, cost, and the same by model and by
    deployment (``by_model["gpt-4o-mini"].input_tokens``; the values' own ``by_*``
    mappings are empty). ``cost`` is None when a model used has no configured price.
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = 0.0
    by_model: Mapping[str, RunUsage] = attrs.field(default=_EMPTY, eq=True)
    by_deployment: Mapping[str, RunUsage] = _EMPTY

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (what the server and the Redis codec send); `from_dict` reads it."""
        out: dict[str, Any] = {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "total_tokens": self.total_tokens,
            "cost": self.cost,
        }
        if self.by_model:
            out["by_model"] = {k: v.to_dict() for k, v in self.by_model.items()}
        if self.by_deployment:
            out["by_deployment"] = {k: v.to_dict() for k, v in self.by_deployment.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, max_keys: int = 256) -> RunUsage:
        """Read `to_dict`'s form back; ``max_keys`` bounds each ``by_*`` mapping.

        Raises:
            ValueError: a figure that is not a number >= 0 within bounds, a mapping with
                more than ``max_keys`` entries, or a shape that is not `to_dict`'s.
        """
        return _from_dict(data, max_keys, nested=True)


def _count(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
        raise ValueError(f"usage {key}: expected an integer between 0 and {_MAX_COUNT}")
    return value


def _cost(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("usage cost: expected a number or null")
    if not 0 <= value <= _MAX_COST:  # False for NaN
        raise ValueError(f"usage cost: expected a number between 0 and {_MAX_COST:g}")
    return float(value)


def _from_dict(data: Mapping[str, Any], max_keys: int, *, nested: bool) -> RunUsage:
    if not isinstance(data, Mapping):
        raise ValueError("usage: expected an object")
    maps: list[Mapping[str, RunUsage]] = []
    for key in ("by_model", "by_deployment"):
        raw = data.get(key, _EMPTY)
        if not nested and raw:
            raise ValueError(f"usage {key}: nested too deep")
        if not isinstance(raw, Mapping) or len(raw) > max_keys:
            raise ValueError(f"usage {key}: expected an object of at most {max_keys} entries")
        maps.append({str(k): _from_dict(v, max_keys, nested=False) for k, v in raw.items()})
    return RunUsage(
        _count(data, "requests"),
        _count(data, "input_tokens"),
        _count(data, "output_tokens"),
        _count(data, "cached_tokens"),
        _count(data, "total_tokens"),
        _cost(data.get("cost", 0.0)),
        maps[0] or _EMPTY,
        maps[1] or _EMPTY,
    )


def _limit(value: object, key: str, *, integer: bool) -> float | None:
    if value is None:
        return None
    bound = _MAX_COUNT if integer else _MAX_COST
    kind = "an integer" if integer else "a number"
    ok = not isinstance(value, bool) and isinstance(value, int if integer else int | float)
    if not ok or not 0 <= value <= bound:  # type: ignore[operator]
        raise ConfigError(
            f"expected {kind} between 0 and {bound:g} (or none for no limit), got {value!r}",
            key=key,
        )
    return value  # type: ignore[return-value]


def _int_limit(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _limit(value, attribute.name, integer=True)


def _cost_limit(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _limit(value, attribute.name, integer=False)


@final
@attrs.frozen(slots=True, kw_only=True)
class UsageLimits:
    """A usage budget for one event; None (the default) means no limit.

    ``max_requests`` model calls; ``max_input_tokens``, ``max_output_tokens`` and
    ``max_total_tokens`` tokens; ``max_cost`` USD (checked only for models with a price).
    Checked before each call (the request count, the request's input estimate, the
    output and cost spent so far) and during a stream (its output so far); past a limit
    the call raises `UsageLimitExceeded`. Effective limits are the tightest of the ``[limits]``
    config table, the agent's and the event's (`tighter`).

    Raises:
        ConfigError: a limit that is negative, over its bound (10**15 tokens or
            requests, 1e12 USD) or of the wrong type; ``key`` names it.
    """

    max_requests: int | None = attrs.field(default=None, validator=_int_limit)
    max_input_tokens: int | None = attrs.field(default=None, validator=_int_limit)
    max_output_tokens: int | None = attrs.field(default=None, validator=_int_limit)
    max_total_tokens: int | None = attrs.field(default=None, validator=_int_limit)
    max_cost: float | None = attrs.field(default=None, validator=_cost_limit)

    def tighter(self, other: UsageLimits | None) -> UsageLimits:
        """The smaller of each limit of ``self`` and ``other`` (a limit beats none)."""
        if other is None or other == _NO_LIMITS:
            return self
        if self == _NO_LIMITS:
            return other
        values = {}
        for name in LIMIT_NAMES:
            mine, theirs = getattr(self, name), getattr(other, name)
            values[name] = theirs if mine is None else mine if theirs is None else min(mine, theirs)
        return UsageLimits(**values)

    @property
    def is_empty(self) -> bool:
        """True when no limit is set."""
        return self == _NO_LIMITS

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, key: str = "limits") -> UsageLimits:
        """Limits from JSON or TOML input (``{"max_requests": 3}``); a missing or null key
        is no limit.

        Raises:
            ConfigError: not an object, an unknown key, or a value out of bounds; the
                error's ``key`` is ``key.NAME`` (``limits.max_cost``).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected an object of limits, got {type(data).__name__}", key=key)
        for name in data:
            if name not in LIMIT_NAMES:
                known = ", ".join(LIMIT_NAMES)
                raise ConfigError(f"unknown limit {name!r} (known: {known})", key=f"{key}.{name}")
        try:
            return cls(**{str(k): v for k, v in data.items()})
        except ConfigError as exc:
            raise ConfigError(exc.reason, key=f"{key}.{exc.key}") from None

    @classmethod
    def from_config(cls, section: object) -> UsageLimits | None:
        """The limits of a ``[limits]`` section (any object with the five attributes);
        None when it sets none."""
        limits = cls(**{name: getattr(section, name, None) for name in LIMIT_NAMES})
        return None if limits.is_empty else limits


_NO_LIMITS: Final = UsageLimits()


def tightest(*limits: UsageLimits | None) -> UsageLimits | None:
    """The smallest of each limit over ``limits`` (None where none sets it); None when
    none is given."""
    found = [limit for limit in limits if limit is not None]
    if len(found) <= 1:
        return found[0] if found else None
    result = found[0]
    for limit in found[1:]:
        result = result.tighter(limit)
    return result


class _Tally:
    """Mutable figures of a model or a deployment (and of an event: `UsageMeter`).

    The figures start as class attributes, so a new tally (one per event) costs three
    attribute writes at most, not eleven.
    """

    requests: int = 0
    input: int = 0
    output: int = 0
    cached: int = 0
    cost: float = 0.0
    unpriced: bool = False  # a call of a model without a price was charged

    def add(self, inp: int, out: int, cached: int, cost: float | None) -> None:
        self.input += inp
        self.output += out
        self.cached += cached
        if cost is None:
            self.unpriced = True
        else:
            self.cost += cost

    def frozen(
        self,
        by_model: Mapping[str, RunUsage] = _EMPTY,
        by_deployment: Mapping[str, RunUsage] = _EMPTY,
    ) -> RunUsage:
        cost = None if self.unpriced else self.cost
        total = self.input + self.output
        return RunUsage(
            self.requests, self.input, self.output, self.cached, total, cost, by_model,
            by_deployment,
        )  # fmt: skip


def _price_of(prices: Mapping[str, Price], model: str) -> Price | None:
    """The price of ``model``: its own entry, else the longest entry that prefixes it
    (``gpt-4o-mini`` prices ``gpt-4o-mini-2024-07-18``)."""
    price = prices.get(model)
    if price is not None or not prices:
        return price
    best = max((name for name in prices if name and model.startswith(name)), key=len, default="")
    return prices[best] if best else None


CACHE_WRITE_FACTOR: Final = 1.25
"""The price of an input token written to the prompt cache, in input prices (Anthropic's
5-minute cache writes; the 1-hour ones cost 2x, and are charged 1.25x here too)."""


def _cost_of(
    price: Price | None, inp: int, out: int, cached: int, created: int = 0
) -> float | None:
    """USD of one call, or None without a price: ``inp`` (all input tokens) holds the
    ``cached`` ones read from the prompt cache and the ``created`` ones written to it."""
    if price is None:
        return None
    cached_price = price.cached_input if price.cached_input is not None else price.input
    fresh = max(inp - cached - created, 0)
    written = created * price.input * CACHE_WRITE_FACTOR
    return (fresh * price.input + cached * cached_price + written + out * price.output) / 1e6


def _copy_tally(source: _Tally, target: _Tally) -> None:
    target.requests, target.input, target.output = source.requests, source.input, source.output
    target.cached, target.cost, target.unpriced = source.cached, source.cost, source.unpriced


def _copy_table(table: dict[str, _Tally] | None) -> dict[str, _Tally] | None:
    if table is None:
        return None
    copies = {}
    for name, tally in table.items():
        copies[name] = copy = _Tally()
        _copy_tally(tally, copy)
    return copies


def _tally(table: dict[str, _Tally], name: str) -> _Tally:
    tally = table.get(name)
    if tally is None:
        tally = table[name] = _Tally()
    return tally


@final
class UsageMeter(_Tally):
    """The running usage of one event, with its limits; mutable, owned by the runner.

    Only the runner makes these (one per event) and only ``llm/_metering.py`` charges
    them; agents read the figures as ``ctx.usage``. ``parent`` is the meter of the event
    that made this one's event with ``ctx.runner.call``: charges go to both, checks
    look at both. A request is counted when its call is sent (`start_call`: concurrent
    calls see each other), its tokens and cost when it ends (`charge`); the ``by_model``
    and ``by_deployment`` figures count the calls that ended. Nothing here is a
    checkpoint.
    """

    _by_model: dict[str, _Tally] | None = None
    _by_deployment: dict[str, _Tally] | None = None
    _own: UsageMeter | None = None
    """This event's own calls, nested events' left out: None while no nested meter was
    made (the meter's own figures are then all its own), a copy of them from the first
    nested meter on (`_split`), so an event without nested events keeps one tally."""
    exceeded: UsageLimitExceeded | None = None
    """The last limit error raised for a call of this event, if any."""

    def __init__(
        self,
        limits: UsageLimits | None = None,
        prices: Mapping[str, Price] = _EMPTY,
        parent: UsageMeter | None = None,
    ) -> None:
        # ``requests``: model calls sent so far, nested events' included.
        self.limits = limits
        self.parent = parent
        self._prices = prices
        if parent is not None and parent._own is None:
            parent._split()

    def _split(self) -> None:
        """Start this meter's own tally apart from its figures (a nested meter is being
        made: its charges will reach this meter's figures, not its own)."""
        own = self._own = UsageMeter(None, self._prices)
        _copy_tally(self, own)
        own._by_model = _copy_table(self._by_model)
        own._by_deployment = _copy_table(self._by_deployment)

    # ------------------------------------------------------------------ checks
    def start_call(self, input_estimate: int) -> None:
        """Check a call about to be sent (``input_estimate`` tokens of input) against this
        meter's limits and its parents', then count it as a request.

        Raises:
            UsageLimitExceeded: the call would pass ``max_requests``, ``max_input_tokens``
                or ``max_total_tokens``, the output spent has reached
                ``max_output_tokens`` (no room left), or the cost spent has reached
                ``max_cost``.
        """
        meter: UsageMeter | None = self
        while meter is not None:
            if meter.limits is not None:
                meter._check_before(meter.limits, input_estimate, self)
            meter = meter.parent
        meter = self
        while meter is not None:
            meter.requests += 1
            meter = meter.parent
        if self._own is not None:
            self._own.requests += 1

    def _check_before(self, limits: UsageLimits, estimate: int, origin: UsageMeter) -> None:
        if limits.max_requests is not None and self.requests + 1 > limits.max_requests:
            origin._refuse("max_requests", limits.max_requests, self.requests + 1)
        inp = self.input + estimate
        if limits.max_input_tokens is not None and inp > limits.max_input_tokens:
            origin._refuse("max_input_tokens", limits.max_input_tokens, inp)
        if limits.max_output_tokens is not None and self.output >= limits.max_output_tokens:
            origin._refuse("max_output_tokens", limits.max_output_tokens, self.output)
        tokens = inp + self.output
        if limits.max_total_tokens is not None and tokens > limits.max_total_tokens:
            origin._refuse("max_total_tokens", limits.max_total_tokens, tokens)
        if limits.max_cost is not None and self.cost >= limits.max_cost:
            origin._refuse("max_cost", limits.max_cost, self.cost)

    def check_stream(self, input_estimate: int, output_so_far: int) -> None:
        """Check a running stream's output so far (on top of what was charged before it)
        against the output and total limits of this meter and its parents.

        Raises:
            UsageLimitExceeded: ``max_output_tokens`` or ``max_total_tokens`` is passed.
        """
        meter: UsageMeter | None = self
        while meter is not None:
            limits = meter.limits
            if limits is not None:
                out = meter.output + output_so_far
                if limits.max_output_tokens is not None and out > limits.max_output_tokens:
                    self._refuse("max_output_tokens", limits.max_output_tokens, out)
                tokens = meter.input + input_estimate + out
                if limits.max_total_tokens is not None and tokens > limits.max_total_tokens:
                    self._refuse("max_total_tokens", limits.max_total_tokens, tokens)
            meter = meter.parent

    def _refuse(self, limit: str, allowed: float, observed: float) -> None:
        error = UsageLimitExceeded(limit, allowed, observed, usage=self.snapshot())
        self.exceeded = error
        raise error

    # ------------------------------------------------------------------ charges
    def charge(
        self,
        model: str,
        deployment: str,
        input_tokens: int,
        output_tokens: int,
        cached: int,
        created: int = 0,
    ) -> None:
        """Add one ended call's tokens and cost (its request was counted by `start_call`)
        to this meter and every parent, under ``model`` and ``deployment``; ``created``:
        the input tokens written to the prompt cache (priced at `CACHE_WRITE_FACTOR`)."""
        prices = self._prices
        cost = (
            _cost_of(_price_of(prices, model), input_tokens, output_tokens, cached, created)
            if prices
            else None
        )
        meter: UsageMeter | None = self
        while meter is not None:
            meter._add(model, deployment, input_tokens, output_tokens, cached, cost)
            meter = meter.parent
        if self._own is not None:
            self._own._add(model, deployment, input_tokens, output_tokens, cached, cost)

    def _add(
        self, model: str, deployment: str, inp: int, out: int, cached: int, cost: float | None
    ) -> None:
        self.add(inp, out, cached, cost)
        by_model = self._by_model
        if by_model is None:
            by_model = self._by_model = {}
        tally = by_model.get(model)
        if tally is None:
            tally = by_model[model] = _Tally()
        tally.requests += 1
        tally.add(inp, out, cached, cost)
        if deployment:
            if self._by_deployment is None:
                self._by_deployment = {}
            tally = _tally(self._by_deployment, deployment)
            tally.requests += 1
            tally.add(inp, out, cached, cost)

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> RunUsage:
        """The figures now, frozen."""
        by_model = {k: t.frozen() for k, t in (self._by_model or {}).items()}
        by_dep = {k: t.frozen() for k, t in (self._by_deployment or {}).items()}
        return self.frozen(by_model or _EMPTY, by_dep or _EMPTY)

    def own_usage(self) -> RunUsage | None:
        """This event's own calls (its nested events' left out), or None when it made
        none: what the metrics count per agent and model."""
        own = self if self._own is None else self._own
        return own.snapshot() if own.requests else None


class _EventContext(Protocol):
    _meter: UsageMeter | None


EVENT_CONTEXT: ContextVar[Any] = ContextVar("agentflow_trio.current_context", default=None)
"""The context of the event the code in this task runs for (an ``agents.Context``), set by
the runner per event and inherited by the tasks the event starts; None outside any event.
It lives here, below ``llm/``, so that a model call finds its event's meter without
knowing agents: `current_meter`."""


def current_meter() -> UsageMeter | None:
    """The meter of the event this code runs for, or None outside any event."""
    ctx: _EventContext | None = EVENT_CONTEXT.get()
    return None if ctx is None else ctx._meter
