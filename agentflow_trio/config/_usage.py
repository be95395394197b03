"""The config tables of model usage: ``[limits]`` (each event's default budget) and
``[llm.prices."MODEL"]`` (what a model's tokens cost). `agentflow_trio.usage` reads
both; they are declared here, with their bounds, like every other table.

TOML has no null: a limit left out is no limit (None), and ``agentcli config show``
lists it as a comment.
"""

from __future__ import annotations

import attrs

from ._bounds import Bounds, between

__all__ = ["LimitsConfig", "PriceConfig"]

_COUNT = attrs.validators.optional(between(0, 10**15))
_USD = attrs.validators.optional(Bounds(ge=0, le=1e12))
_PER_MILLION = Bounds(ge=0, le=1e6)


@attrs.frozen
class LimitsConfig:
    """``[limits]``: the usage budget of every event, unless its agent or its caller set
    a tighter one (`UsageLimits`); a key left out is no limit.

    ``max_requests`` model calls; ``max_input_tokens``, ``max_output_tokens``,
    ``max_total_tokens`` tokens; ``max_cost`` USD (needs ``[llm.prices]``). Checked
    before each model call (and during a stream); past one the event ends
    ``usage_limit_exceeded``. Bounds: 10**15 requests or tokens, 1e12 USD.
    """

    max_requests: int | None = attrs.field(default=None, validator=_COUNT)
    max_input_tokens: int | None = attrs.field(default=None, validator=_COUNT)
    max_output_tokens: int | None = attrs.field(default=None, validator=_COUNT)
    max_total_tokens: int | None = attrs.field(default=None, validator=_COUNT)
    max_cost: float | None = attrs.field(default=None, validator=_USD)


@attrs.frozen
class PriceConfig:
    """``[llm.prices."MODEL"]``: USD per million tokens of ``input``, ``output`` and
    ``cached_input`` (prompt tokens served from the provider's cache; left out: the
    ``input`` price). A model the table does not name exactly is priced by the
    longest name that prefixes it (``gpt-4o-mini`` prices ``gpt-4o-mini-2024-07-18``).
    Bounds: 1,000,000 USD per million tokens.
    """

    input: float = attrs.field(default=0.0, validator=_PER_MILLION)
    output: float = attrs.field(default=0.0, validator=_PER_MILLION)
    cached_input: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_PER_MILLION)
    )
