"""TOML tables <-> frozen attrs sections: the generic machine behind every config section.

`parse_section` walks ``attrs.fields`` of a section class with its resolved type hints and
converts each TOML value by the field's type; `section_to_dict` and `section_to_toml` are
its inverse. Adding a section means adding an attrs class; nothing here changes. Supported
field types:

* ``int``, ``float``, ``bool``, ``str`` (bools are never ints and ints never bools);
* `Duration` (a float in seconds, written ``"100ms"``, ``"30s"``, ``"1h30m"`` or a number);
* `Size` (an int in bytes, written ``"64MiB"``, ``"10MB"``, ``"512KiB"`` or a number);
* ``Literal["a", "b"]`` (a choice), ``list[str]`` / ``tuple[str, ...]``, ``dict[str, str]``;
* another attrs class (a nested table) and ``dict[str, SectionClass]`` (named tables such
  as ``[mcp.servers.NAME]``);
* ``X | None`` of a scalar kind above: TOML has no null, so a key left out is None (the
  default); rendering leaves a None out (`section_to_toml` writes it as a comment).

A section may have its tables rewritten before anything else (``_shape.register_reshape``):
``[llm]`` uses it so that ``[llm.deployments.NAME]`` inherits the keys of ``[llm]``.

Numeric bounds are `Bounds` validators (``validator=between(1, 65536)``): the machine reads
them to say what it expected, and a value built in code is checked by the same validator.
Secrets carry ``metadata=SECRET`` and URLs ``metadata=URL``: rendering and error messages
mask them (``***``, ``redis://:***@host``). Before converting, the data's nesting depth is
bounded (``MAX_DEPTH``) and every unknown key is named at once, each with its hint.

``${NAME}`` and ``${NAME:-default}`` are replaced in every string value (``$${`` writes a
literal ``${``); a number or bool field also accepts a string holding such a reference
(``worker_pool_size = "${WORKERS:-50}"``). Every problem raises `ConfigError` naming the
source, the dotted key, what was expected and what was found, for example::

    agentflow.toml: runner.worker_pool_size: expected an integer <= 65536, got 100000000 (int)
"""

from __future__ import annotations

import json
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar

import attrs

from ..errors import ConfigError
from ._bounds import Bounds, bounds_of
from ._messages import expected, suggest
from ._secrets import SECRET, mask, shown
from ._shape import check_depth, check_keys, fields_of, join, reshape
from .units import Unit

__all__ = ["SECRET", "parse_section", "section_to_dict", "section_to_toml"]

_T = TypeVar("_T")


@attrs.frozen
class _Context:
    source: str
    env: Mapping[str, str]
    metadata: Mapping[str, Any] = attrs.field(factory=dict)  # of the field being converted

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, source=self.source, key=key or None)

    def expected(self, what: str, found: object) -> str:
        """`expected`, showing ``found`` as the field may show it (secrets masked)."""
        return expected(what, found, shown=shown(found, self.metadata))


# --------------------------------------------------------------------------- parsing


def parse_section(
    cls: type[_T],
    data: Mapping[str, Any],
    *,
    source: str = "<mapping>",
    env: Mapping[str, str] | None = None,
) -> _T:
    """Build the attrs section ``cls`` from a parsed TOML table, by its fields' types.

    This is the machine behind `Config.from_mapping`; it works for any frozen attrs class
    whose fields are of the kinds listed in this module's docstring and all have defaults.
    Before converting anything it refuses data nested deeper than ``MAX_DEPTH`` (32)
    levels and names every unknown key at once.

    Raises:
        ConfigError: as `Config.from_mapping`.
        TypeError: ``cls`` has a field of an unsupported type (a programming error).
    """
    ctx = _Context(source, os.environ if env is None else env)
    if not isinstance(data, Mapping):
        raise ctx.error("", expected("a table", data))
    check_depth(data, source)
    check_keys(cls, data, source)
    return _build(cls, data, "", ctx)


def _build(cls: type[_T], data: object, prefix: str, ctx: _Context) -> _T:
    data = reshape(cls, data, prefix, ctx.source)
    if not isinstance(data, Mapping):
        raise ctx.error(prefix, ctx.expected("a table", data))
    fields = fields_of(cls)
    kwargs: dict[str, Any] = {}
    for name, raw in data.items():
        key = join(prefix, str(name))
        field = fields.get(name)
        if field is None:  # check_keys found it first, unless called on a part of the data
            raise ctx.error(key, f"unknown key {key!r}{suggest(str(name), fields)}")
        field_ctx = attrs.evolve(ctx, metadata=field.attribute.metadata)
        kwargs[field.attribute.alias or field.attribute.name] = _convert(
            field.hint, field.attribute, raw, key, field_ctx
        )
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ctx.error(join(prefix, exc.key or ""), exc.reason) from None


def _convert(
    hint: Any, attribute: attrs.Attribute[Any], raw: object, key: str, ctx: _Context
) -> Any:
    origin = typing.get_origin(hint)
    bounds = bounds_of(attribute)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        unit = _unit_of(extras)
        if unit is not None:
            return _to_unit(unit, raw, bounds, key, ctx)
        return _convert(base, attribute, raw, key, ctx)
    optional = _optional_of(hint)
    if optional is not None:
        return None if raw is None else _convert(optional, attribute, raw, key, ctx)
    if hint is bool:
        return _to_bool(raw, key, ctx)
    if hint is int or hint is float:
        return _to_number(hint, raw, bounds, key, ctx)
    if hint is str:
        return _to_str(raw, key, ctx)
    if origin is Literal:
        return _to_choice(typing.get_args(hint), raw, key, ctx)
    if attrs.has(hint):
        return _build(hint, raw, key, attrs.evolve(ctx, metadata={}))
    if origin in (list, tuple):
        return _to_sequence(origin, hint, raw, key, ctx)
    if origin in (dict, Mapping):
        return _to_dict(hint, attribute, raw, key, ctx)
    raise TypeError(f"unsupported config field type {hint!r} for {key!r}")


def _optional_of(hint: Any) -> Any:
    """``X`` for a hint ``X | None``; None for any other hint."""
    if typing.get_origin(hint) not in (types.UnionType, typing.Union):
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if len(args) == 1 else None


def _unit_of(extras: list[Any]) -> Unit | None:
    return next((extra for extra in extras if isinstance(extra, Unit)), None)


def _to_unit(unit: Unit, raw: object, bounds: Bounds | None, key: str, ctx: _Context) -> Any:
    """A Duration or Size: interpolate, parse, check the field's bounds (default ``>= 0``)."""
    try:
        value = unit.parse(_text(raw, key, ctx))
    except ConfigError:
        noun = f"a {unit.value}" + (_describe(bounds) or " >= 0")
        raise ctx.error(key, ctx.expected(f"{noun} {unit.examples}", raw)) from None
    if bounds is not None and not bounds.admits(value):
        noun = f"a {unit.value}{bounds.describe(value)}"
        raise ctx.error(key, ctx.expected(f"{noun} {unit.examples}", raw))
    return value


def _to_bool(raw: object, key: str, ctx: _Context) -> bool:
    value = _from_env(raw, key, ctx)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ctx.error(key, ctx.expected("a boolean (true or false)", raw))
    return value


def _to_number(kind: type, raw: object, bounds: Bounds | None, key: str, ctx: _Context) -> Any:
    noun = "an integer" if kind is int else "a number"
    value = _from_env(raw, key, ctx)
    if isinstance(value, str):
        try:
            value = kind(value.strip()) if len(value) <= _MAX_NUMBER_TEXT else None
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int if kind is int else int | float):
        raise ctx.error(key, ctx.expected(noun + _describe(bounds), raw))
    if kind is float and not math.isfinite(value):
        raise ctx.error(key, ctx.expected("a finite number" + _describe(bounds), raw))
    if bounds is not None and not bounds.admits(kind(value)):
        raise ctx.error(key, ctx.expected(noun + bounds.describe(kind(value)), raw))
    return kind(value)


_MAX_NUMBER_TEXT = 64  # "${WORKERS}" set to 5,000 digits is no number anyone meant


def _to_str(raw: object, key: str, ctx: _Context) -> str:
    if not isinstance(raw, str):
        raise ctx.error(key, ctx.expected("a string", raw))
    return _interpolate(raw, key, ctx)


def _to_choice(choices: tuple[str, ...], raw: object, key: str, ctx: _Context) -> str:
    value = _text(raw, key, ctx)
    if value not in choices:
        listing = ", ".join(repr(c) for c in choices)
        hint = suggest(value, choices) if isinstance(value, str) else ""
        raise ctx.error(key, ctx.expected(f"one of {listing}", raw) + hint)
    return value


def _to_sequence(origin: type, hint: Any, raw: object, key: str, ctx: _Context) -> Any:
    item_type = typing.get_args(hint)[0]
    convert: Callable[[object, str, _Context], Any]
    if item_type is str:
        noun, convert = "strings", _to_str
    elif item_type is int:
        noun = "integers"
        convert = lambda item, item_key, ctx: _to_number(int, item, None, item_key, ctx)  # noqa: E731
    else:
        raise TypeError(f"unsupported config field type {hint!r} for {key!r}")
    if not isinstance(raw, list | tuple):
        raise ctx.error(key, ctx.expected(f"an array of {noun}", raw))
    items = [convert(item, f"{key}[{i}]", ctx) for i, item in enumerate(raw)]
    return origin(items)


def _to_dict(
    hint: Any, attribute: attrs.Attribute[Any], raw: object, key: str, ctx: _Context
) -> dict[str, Any]:
    key_type, value_type = typing.get_args(hint)
    if key_type is not str:
        raise TypeError(f"unsupported config field type {hint!r} for {key!r}")
    if not isinstance(raw, Mapping):
        raise ctx.error(key, ctx.expected("a table", raw))
    return {
        str(name): _convert(value_type, attribute, item, join(key, str(name)), ctx)
        for name, item in raw.items()
    }


def _describe(bounds: Bounds | None) -> str:
    return bounds.describe() if bounds is not None else ""


# --------------------------------------------------------------------------- ${ENV}

_ENV_REF = re.compile(
    r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<has_default>:-(?P<default>[^}]*))?\})?"
)


def _from_env(raw: object, key: str, ctx: _Context) -> object:
    """For bool and number fields: only a string holding a ``${...}`` reference is text to
    parse (``workers = "${WORKERS:-50}"``); any other string stays a type error."""
    if isinstance(raw, str) and "${" in raw:
        return _interpolate(raw, key, ctx)
    return None if isinstance(raw, str) else raw


def _text(raw: object, key: str, ctx: _Context) -> object:
    """Interpolate ``raw`` if it is a string; other values pass through for the parser."""
    return _interpolate(raw, key, ctx) if isinstance(raw, str) else raw


def _interpolate(text: str, key: str, ctx: _Context) -> str:
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$${":
            return "${"
        name = match["name"]
        if name is None:
            shown_text = shown(text, ctx.metadata)
            raise ctx.error(
                key, f"malformed '${{' in {shown_text}: write ${{NAME}} or ${{NAME:-default}}"
            )
        value = ctx.env.get(name)
        if match["has_default"] is not None:
            return value if value else match["default"]
        if value is None:
            raise ctx.error(
                key,
                f"environment variable {name!r} is not set "
                f"(write ${{{name}:-default}} to give a default)",
            )
        return value

    return _ENV_REF.sub(replace, text)


# --------------------------------------------------------------------------- rendering


def section_to_dict(section: Any, *, mask_secrets: bool = True) -> dict[str, Any]:
    """Render an attrs section as a plain TOML-able dict (the inverse of `parse_section`).

    Durations render as `format_duration` strings, sizes as `format_size` strings; a
    ``${`` inside a string value renders as ``$${``, so parsing gives the same string back.
    With ``mask_secrets``, non-empty secret strings (and secret dicts' values) are
    ``"***"`` and the password in a URL field's userinfo too (``redis://:***@host``).
    A None (an optional key left out) is left out.
    """
    return _section_dict(section, mask_secrets, None)


class _Unset:
    """An optional key left out, as `section_to_toml` shows it: a comment line."""

    __slots__ = ()


_UNSET = _Unset()


def _section_dict(section: Any, mask_secrets: bool, unset: _Unset | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in fields_of(type(section)).items():
        value = getattr(section, field.attribute.name)
        if value is None:
            if unset is not None:
                out[name] = unset
            continue
        if mask_secrets:
            value = mask(value, field.attribute.metadata)
        out[name] = _render(field.hint, value, mask_secrets, unset)
    return out


def _render(hint: Any, value: Any, mask_secrets: bool, unset: _Unset | None) -> Any:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        unit = _unit_of(extras)
        if unit is not None:
            return unit.format(value)
        return _render(base, value, mask_secrets, unset)
    optional = _optional_of(hint)
    if optional is not None:
        return _render(optional, value, mask_secrets, unset)
    if attrs.has(hint):
        return _section_dict(value, mask_secrets, unset)
    if origin in (list, tuple):
        return [_escape(v) for v in value]
    if origin in (dict, Mapping):
        value_type = typing.get_args(hint)[1]
        return {k: _render(value_type, v, mask_secrets, unset) for k, v in value.items()}
    return _escape(value)


def _escape(value: Any) -> Any:
    """A string as `parse_section` reads it back: ``${`` (a literal, once parsed) -> ``$${``."""
    return value.replace("${", "$${") if isinstance(value, str) else value


def section_to_toml(section: Any, *, mask_secrets: bool = True) -> str:
    """Render an attrs section as TOML text; `parse_section` of the parsed text gives it back.

    Scalars of a table come first, then its sub-tables as ``[dotted.path]`` headers (an
    empty dict is an empty table); keys outside ``[A-Za-z0-9_-]`` are quoted; an optional
    key left out is a comment (``# max_cost = (not set)``). Secrets are masked as by
    `section_to_dict`.
    """
    return _toml(_section_dict(section, mask_secrets, _UNSET)).lstrip("\n")


def _toml(data: Mapping[str, Any], prefix: str = "") -> str:
    lines = [
        f"# {_toml_key(k)} = (not set)" if v is _UNSET else f"{_toml_key(k)} = {_toml_value(v)}"
        for k, v in data.items()
        if not isinstance(v, Mapping)
    ]
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, table in data.items():
        if isinstance(table, Mapping):
            path = f"{prefix}.{_toml_key(name)}" if prefix else _toml_key(name)
            out += f"\n[{path}]\n" + _toml(table, path)
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _toml_string(name)


def _toml_value(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | float):
        return repr(item)
    if isinstance(item, str):
        return _toml_string(item)
    if isinstance(item, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in item) + "]"
    raise TypeError(f"cannot write {item!r} as TOML")


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but TOML escapes DEL too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
