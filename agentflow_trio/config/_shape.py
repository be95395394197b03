"""The shape of parsed TOML before any value is converted: the fields of each section, the
nesting depth (bounded), every unknown key of the whole file, each with its hint, and the
reshaping a section may ask for (`register_reshape`: ``[llm]`` keys inherited by
``[llm.deployments.NAME]``; the AgentFlow guide's key names, ``_aliases``, come first).

Both checks walk the data once, without recursion on the data itself, so a hostile file
(a 100,000-deep array, 5,000 dotted headers) costs a bounded walk and one `ConfigError`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final

import attrs

from ..errors import ConfigError
from ._aliases import aliases_of, apply_aliases
from ._messages import suggest

__all__ = [
    "MAX_DEPTH",
    "Field",
    "check_depth",
    "check_keys",
    "fields_of",
    "join",
    "register_reshape",
    "reshape",
    "section_of",
]

MAX_DEPTH: Final = 32
"""Tables and arrays nest at most this deep in a config (``agentflow.toml`` needs 4)."""

_MAX_LISTED: Final = 20  # unknown keys named one by one; the rest are counted


@attrs.frozen
class Field:
    """One init field of a section: its attrs attribute and its resolved type hint."""

    attribute: attrs.Attribute[Any]
    hint: Any


_FIELDS: dict[type[Any], dict[str, Field]] = {}


def fields_of(cls: type[Any]) -> dict[str, Field]:
    """The init fields of an attrs class with resolved hints, by TOML key (cached)."""
    fields = _FIELDS.get(cls)
    if fields is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = {a.name: Field(a, hints[a.name]) for a in attrs.fields(cls) if a.init}
        _FIELDS[cls] = fields
    return fields


def section_of(hint: Any) -> tuple[type[Any] | None, bool]:
    """``(Section, False)`` for a nested table, ``(Section, True)`` for named tables
    (``dict[str, Section]``), ``(None, False)`` for a plain value."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if attrs.has(hint):
        return hint, False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (dict, Mapping) and len(args) == 2 and attrs.has(args[1]):
        return args[1], True
    return None, False


def join(prefix: str, name: str) -> str:
    """``prefix.name`` (either may be empty)."""
    return f"{prefix}.{name}" if prefix and name else prefix or name


# --------------------------------------------------------------------------- reshape

Reshape = Callable[[Mapping[str, Any]], Mapping[str, Any]]
_RESHAPES: dict[type[Any], Reshape] = {}


def register_reshape(cls: type[Any], fn: Reshape) -> None:
    """Have ``fn(table)`` rewrite every TOML table of section ``cls`` before its keys are
    checked and its values converted (one pure function; it may raise `ConfigError` with
    a ``key`` relative to the table)."""
    _RESHAPES[cls] = fn


def reshape(cls: type[Any], table: Any, prefix: str, source: str) -> Any:
    """``table`` as the section ``cls`` reads it: the guide's names replaced by ours
    (``_aliases``), then its registered reshape applied (unchanged without either, or
    when it is no table).

    Raises:
        ConfigError: the reshape refused the table; names ``source`` and the dotted key.
    """
    if not isinstance(table, Mapping):
        return table
    fn = _RESHAPES.get(cls)
    try:
        table = apply_aliases(cls, table)
        return table if fn is None else fn(table)
    except ConfigError as exc:
        raise ConfigError(exc.reason, source=source, key=join(prefix, exc.key or "")) from None


# --------------------------------------------------------------------------- depth


def check_depth(data: object, source: str) -> None:
    """Refuse data whose tables and arrays nest deeper than `MAX_DEPTH`.

    Raises:
        ConfigError: naming ``source``, the bound and the key where it was passed.
    """
    stack: list[tuple[object, str, int]] = [(data, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if isinstance(value, Mapping):
            items = [(join(key, str(k)), v) for k, v in value.items()]
        elif isinstance(value, list | tuple):
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            continue
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"tables and arrays nest deeper than the maximum of {MAX_DEPTH} levels",
                source=source,
                key=key or None,
            )
        stack.extend((v, k, depth + 1) for k, v in items)


# --------------------------------------------------------------------------- unknown keys

_TREES: dict[type[Any], dict[str, list[str]]] = {}
# dotted key, key, the fields of its table, the guide's names it reads too (``_aliases``)
_Unknown = tuple[str, str, dict[str, Field], tuple[str, ...]]


def _tree(root: type[Any]) -> dict[str, list[str]]:
    """Every field name under ``root`` -> its dotted paths (``<name>`` for named tables)."""
    tree = _TREES.get(root)
    if tree is None:
        tree = {}
        # A named table's key that its parent table has too is inherited from there
        # (``llm.deployments.<name>.model``): the hint names the parent's key only.
        pending: list[tuple[type[Any], str, dict[str, Field]]] = [(root, "", {})]
        while pending:
            cls, prefix, inherited = pending.pop(0)
            fields = fields_of(cls)
            for name, field in fields.items():
                if name in inherited:
                    continue
                path = join(prefix, name)
                tree.setdefault(name, []).append(path)
                section, named = section_of(field.hint)
                if section is not None:
                    below = (join(path, "<name>"), fields) if named else (path, {})
                    pending.append((section, *below))
        _TREES[root] = tree
    return tree


def check_keys(root: type[Any], data: Mapping[str, Any], source: str) -> None:
    """Refuse data holding keys that ``root`` (and its nested sections) does not know.

    Every unknown key of the data is named (the first 20; the rest are counted), one per
    line, each with the closest known key of its table (or of another table, if it was
    put in the wrong one).

    Raises:
        ConfigError: ``key`` is the first unknown key.
    """
    found: list[_Unknown] = []
    _collect(root, data, "", found, source)
    if found:
        raise _unknown(found, _tree(root), source)


def _collect(
    cls: type[Any], table: Mapping[Any, Any], prefix: str, found: list[_Unknown], source: str
) -> None:
    """Append the unknown keys of ``table`` and of its known sub-tables, in file order.

    Recursion follows the sections' nesting (a few levels), never the data's.
    """
    table = reshape(cls, table, prefix, source)
    fields = fields_of(cls)
    for name, raw in table.items():
        key = join(prefix, str(name))
        field = fields.get(name)
        if field is None:
            found.append((key, str(name), fields, tuple(aliases_of(cls))))
            continue
        section, named = section_of(field.hint)
        if section is None or not isinstance(raw, Mapping):
            continue
        if not named:
            _collect(section, raw, key, found, source)
            continue
        for sub, sub_table in raw.items():
            if isinstance(sub_table, Mapping):
                _collect(section, sub_table, join(key, str(sub)), found, source)


def _unknown(found: list[_Unknown], tree: dict[str, list[str]], source: str) -> ConfigError:
    def hint(name: str, fields: dict[str, Field], aliases: tuple[str, ...]) -> str:
        elsewhere = {n: paths for n, paths in tree.items() if n not in fields}
        return suggest(name, [*fields, *aliases], elsewhere)

    def known(fields: dict[str, Field]) -> str:
        return ", ".join(sorted(fields)) or "(none)"

    first, name, fields, aliases = found[0]
    if len(found) == 1:
        hinted = hint(name, fields, aliases)
        message = f"unknown key {first!r}{hinted} (known keys: {known(fields)})"
        return ConfigError(message, source=source, key=first)
    lines = [f"{len(found)} unknown keys:"]
    for key, name, fields, aliases in found[:_MAX_LISTED]:
        text = hint(name, fields, aliases).removeprefix("; ")
        lines.append(f"  {key}: {text or 'known keys are ' + known(fields)}")
    if len(found) > _MAX_LISTED:
        lines.append(f"  ... and {len(found) - _MAX_LISTED} more")
    error = ConfigError("\n".join(lines), source=source)
    error.key = first
    return error
