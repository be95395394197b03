"""The AgentFlow guide's names for keys we already have: read as ours, never kept.

A section registers its aliases (`register_aliases`): ``retry_max_attempts`` in an LLM
table is ``retry.max_attempts`` there. `apply_aliases` rewrites a parsed TOML table
before anything else looks at it, so the rest of the loader (unknown keys, inheritance,
conversion, rendering) only ever sees our names: ``agentcli config show`` prints those.
An alias and the key it stands for both given in one table is an error naming both,
never a silent choice. A subclass inherits its bases' aliases (``[llm]`` those of every
deployment table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

__all__ = ["aliases_of", "apply_aliases", "register_aliases"]

_ALIASES: dict[type[Any], dict[str, str]] = {}


def register_aliases(cls: type[Any], aliases: Mapping[str, str]) -> None:
    """Have every TOML table of section ``cls`` read ``alias`` as the dotted ``target``
    (``{"retry_max_attempts": "retry.max_attempts"}``; one level of nesting at most)."""
    _ALIASES.setdefault(cls, {}).update(aliases)


def aliases_of(cls: type[Any]) -> dict[str, str]:
    """Every alias of ``cls`` and of its bases: alias -> dotted target."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        out.update(_ALIASES.get(base, {}))
    return out


def apply_aliases(cls: type[Any], table: Mapping[str, Any]) -> Mapping[str, Any]:
    """``table`` with each alias of ``cls`` moved to the key it stands for (unchanged, the
    same object, when it holds none). Beside a nested table that is no table (``retry =
    3``) the alias is dropped: the converter reports that table's type error.

    Raises:
        ConfigError: an alias and its target are both given; ``key`` is the alias.
    """
    aliases = aliases_of(cls)
    if not aliases or aliases.keys().isdisjoint(table):
        return table
    out = dict(table)
    for alias, target in aliases.items():
        if alias not in out:
            continue
        value = out.pop(alias)
        head, _, leaf = target.partition(".")
        if not leaf:
            if head in out:
                raise _both(alias, target)
            out[head] = value
            continue
        nested = out.get(head, {})
        if not isinstance(nested, Mapping):
            continue  # ``retry = 3``: the converter names that type error
        if leaf in nested:
            raise _both(alias, target)
        out[head] = {**nested, leaf: value}
    return out


def _both(alias: str, target: str) -> ConfigError:
    return ConfigError(
        f"both {alias!r} (the AgentFlow guide's name) and {target!r} are given, and they "
        f"are the same setting: keep one",
        key=alias,
    )
