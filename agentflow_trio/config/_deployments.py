"""Inheritance between LLM tables, done on the parsed TOML before any value is converted.

`reshape_llm` turns the AgentFlow guide's provider-named tables (``[llm.azure]``,
``[llm.openai]``) into deployments of that name and provider, and gives every
``[llm.deployments.NAME]`` table the keys of ``[llm]`` it does not set; `reshape_router`
gives every ``[llm.router.groups.NAME]`` the policy keys of ``[llm.router]``. A nested
table (``retry``, ``circuit_breaker``, ``rate_limit``) is inherited key by key; any other
value, ``headers`` included, as a whole. Only keys the receiving section knows are
inherited, so an unknown key of ``[llm]`` is reported once, under ``llm``. A deployment
table's guide names (``retry_max_attempts``) become ours before it inherits, so they
override ``[llm]`` as our names do.

Credentials stay with their vendor: a deployment whose ``provider`` is another vendor's
than ``[llm]``'s does not inherit the vendor-specific keys (`VENDOR_KEYS`: ``api_key``,
``base_url``, ``headers``, ``organization``, ``api_version``, ``deployment``), so an
OpenAI key in ``[llm]`` is never sent to Anthropic; it gives its own (or none), and still
inherits the neutral keys (model, timeouts, pool, retry, breaker, ...). The vendors
(`vendor_of`): ``openai``, ``openai_responses`` and ``azure`` are OpenAI's (one key and
one API family: the guide's ``[llm.azure]`` / ``[llm.openai]`` pair inherits as before);
``anthropic``, ``ollama`` and ``fake`` are each their own.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, Final

from ..errors import ConfigError
from ._aliases import apply_aliases
from ._shape import Field, fields_of, section_of

__all__ = [
    "VENDOR_KEYS",
    "deployment_defaults",
    "inherit",
    "reshape_llm",
    "reshape_router",
    "vendor_of",
]

_DEPLOYMENTS: Final = "deployments"
_GROUPS: Final = "groups"
_PERFORMANCE_DEFAULTS: Final = {
    "pool_size": "max_connections",
    "enable_connection_pooling": "connection_pooling",
}
"""``[performance]`` keys (the AgentFlow guide's) that are the default of an ``[llm]`` key."""
VENDOR_KEYS: Final = frozenset(
    {"api_key", "base_url", "headers", "organization", "api_version", "deployment"}
)
"""``[llm]`` keys a deployment of another vendor does not inherit (credentials, endpoint)."""
_VENDORS: Final = {"openai_responses": "openai", "azure": "openai"}


def vendor_of(provider: object) -> object:
    """The vendor a provider name belongs to (itself unless `_VENDORS` says otherwise):
    deployments of one vendor share ``[llm]``'s credentials, others do not."""
    return _VENDORS.get(provider, provider) if isinstance(provider, str) else provider


def deployment_defaults(table: Mapping[str, Any]) -> Mapping[str, Any]:
    """The whole file with ``[performance] pool_size`` and ``enable_connection_pooling``
    written into ``[llm]`` as ``max_connections`` and ``connection_pooling``, where
    ``[llm]`` does not give them (every deployment then inherits them from ``[llm]``).

    ``[performance]`` goes first, so a bad value there is reported under its own name
    before ``[llm]`` sees it.
    """
    performance, llm = table.get("performance"), table.get("llm", {})
    if not isinstance(performance, Mapping) or not isinstance(llm, Mapping):
        return table
    given = {
        ours: performance[guide]
        for guide, ours in _PERFORMANCE_DEFAULTS.items()
        if guide in performance and ours not in llm
    }
    if not given:
        return table
    out = {"performance": performance, **table}
    out["llm"] = {**given, **llm}
    return out


def inherit(
    parent: Mapping[str, Any], child: Mapping[str, Any], fields: Mapping[str, Field]
) -> dict[str, Any]:
    """``child`` completed by the keys of ``parent`` that ``fields`` know and it lacks.

    A key both set to a table that is a nested section merges key by key (the child's
    keys win); for any other key the child's value wins whole.
    """
    out = {key: value for key, value in parent.items() if key in fields}
    for key, value in child.items():
        base = out.get(key)
        field = fields.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping) and field is not None:
            section, named = section_of(field.hint)
            if section is not None and not named:
                out[key] = {**base, **value}
                continue
        out[key] = value
    return out


def reshape_llm(table: Mapping[str, Any], *, deployment: type[Any]) -> Mapping[str, Any]:
    """``[llm]`` with provider-named tables moved into ``deployments`` and every deployment
    (a ``deployment`` section) completed from ``[llm]`` (see the module docstring: a
    deployment of another vendor gets no `VENDOR_KEYS`); ``deployments`` goes last.

    Raises:
        ConfigError: a deployment is given both as ``[llm.NAME]`` and
            ``[llm.deployments.NAME]``.
    """
    fields = fields_of(deployment)
    providers = tuple(str(c) for c in typing.get_args(fields["provider"].hint))
    named = {k: v for k, v in table.items() if k in providers and isinstance(v, Mapping)}
    if not named and _DEPLOYMENTS not in table:
        return table
    out = {k: v for k, v in table.items() if k not in named and k != _DEPLOYMENTS}
    given = table.get(_DEPLOYMENTS, {})
    if not isinstance(given, Mapping):
        out[_DEPLOYMENTS] = given  # the converter names the type error
        return out
    tables: dict[str, Any] = dict(given)
    for name, sub in named.items():
        if name in tables:
            message = (
                f"deployment {name!r} is given twice: as [llm.{name}] and as "
                f"[llm.deployments.{name}]"
            )
            raise ConfigError(message, key=name)
        tables[name] = {"provider": name, **sub}
    default = fields["provider"].attribute.default
    vendor = vendor_of(out.get("provider", default))
    neutral = {k: v for k, v in out.items() if k not in VENDOR_KEYS}
    deployments: dict[str, Any] = {}
    for name, sub in tables.items():
        if not isinstance(sub, Mapping):
            deployments[name] = sub  # the converter names the type error
            continue
        own = _own_names(deployment, sub, name, name in named)
        same = vendor_of(own.get("provider", out.get("provider", default))) == vendor
        deployments[name] = inherit(out if same else neutral, own, fields)
    out[_DEPLOYMENTS] = deployments
    return out


def _own_names(
    deployment: type[Any], table: Mapping[str, Any], name: str, provider_named: bool
) -> Mapping[str, Any]:
    """A deployment's table with the guide's names replaced by ours, before it inherits
    (``retry_max_attempts`` in ``[llm.openai]`` overrides ``[llm.retry] max_attempts``).

    Raises:
        ConfigError: an alias and its target both given; ``key`` is relative to ``[llm]``.
    """
    try:
        return apply_aliases(deployment, table)
    except ConfigError as exc:
        where = name if provider_named else f"{_DEPLOYMENTS}.{name}"
        raise ConfigError(exc.reason, key=f"{where}.{exc.key}") from None


def reshape_router(table: Mapping[str, Any], *, group: type[Any]) -> Mapping[str, Any]:
    """``[llm.router]`` with every ``groups.NAME`` table (a ``group`` section) completed
    from the router's own policy keys; ``groups`` goes last."""
    given = table.get(_GROUPS)
    if not isinstance(given, Mapping) or not given:
        return table
    fields = fields_of(group)
    out = {k: v for k, v in table.items() if k != _GROUPS}
    out[_GROUPS] = {
        name: inherit(out, sub, fields) if isinstance(sub, Mapping) else sub
        for name, sub in given.items()
    }
    return out
