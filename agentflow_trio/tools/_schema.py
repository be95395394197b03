"""The JSON schema of a function's arguments, from its signature and docstring.

A leading context parameter is left out; each other parameter's schema and converter come
from `agentflow_trio.schema.type_schema` (the same code structured output uses). A value
that passes the schema but not its type's own checks (an attrs or pydantic validator, a
dataclass ``__post_init__``) makes the converter raise `ArgumentConversionError`, a
`ToolArgumentError` the registry answers with an ``invalid_arguments`` error naming the
field (``p.x`` for a field inside parameter ``p``).
"""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Callable
from typing import Any

import attrs

from ..errors import SchemaValidationError, ToolArgumentError
from ..schema import Converter, got, problem, type_schema, under
from ._docstring import parse_docstring

__all__ = ["ArgumentConversionError", "FunctionSchema", "function_schema"]


class ArgumentConversionError(ToolArgumentError):
    """A tool argument fit the schema but its type refused it.

    ``field`` is the path of the first problem (``"p.x"``), ``expected`` and ``got`` its
    words, ``problems`` every problem (as in `SchemaValidationError`).
    """

    def __init__(self, tool: str, problems: tuple[dict[str, Any], ...]) -> None:
        first = problems[0]
        super().__init__(str(first["message"]), tool=tool, field=first.get("field"))
        self.expected: str = str(first.get("expected", "a valid value"))
        self.got: str | None = first.get("got")
        self.problems = problems


@attrs.frozen(slots=True)
class FunctionSchema:
    """What `function_schema` learned about a function."""

    parameters: dict[str, Any]
    converters: dict[str, Converter]
    description: str
    ctx_parameter: str | None


def function_schema(fn: Callable[..., Any]) -> FunctionSchema:
    """The arguments object schema of ``fn``; a leading ``ctx`` parameter is left out.

    ``ctx`` is recognised by its name or by an annotation of `Context` (or a subclass).

    Raises:
        TypeError: an unsupported annotation, ``*args`` or a positional-only parameter.
    """
    from ..agents import Context

    signature = inspect.signature(fn)
    hints = _hints(fn, signature)
    summary, docs = parse_docstring(inspect.getdoc(fn))
    properties: dict[str, Any] = {}
    required: list[str] = []
    converters: dict[str, Converter] = {}
    ctx_parameter: str | None = None
    extra = False
    for index, (name, param) in enumerate(signature.parameters.items()):
        hint = hints.get(name, Any)
        if index == 0 and (name == "ctx" or _is_subclass(hint, Context)):
            ctx_parameter = name
            continue
        if param.kind is param.VAR_KEYWORD:
            extra = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            raise TypeError(f"tool {fn.__name__}: parameter {name!r} cannot be passed by name")
        schema, convert = type_schema(hint, where=f"{fn.__name__}({name})")
        if name in docs and "description" not in schema:
            schema = {**schema, "description": docs[name]}
        if param.default is param.empty:
            required.append(name)
        elif _is_json(param.default):
            schema = {**schema, "default": _plain_default(param.default)}
        properties[name] = schema
        if convert is not None:
            converters[name] = _guarded(fn.__name__, name, convert)
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    parameters["additionalProperties"] = extra
    return FunctionSchema(parameters, converters, summary, ctx_parameter)


def _guarded(tool: str, parameter: str, convert: Converter) -> Converter:
    """``convert`` raising `ArgumentConversionError` (paths from the parameter) instead of
    `SchemaValidationError` or a bare ``TypeError``/``ValueError``."""

    def guarded(value: Any) -> Any:
        try:
            return convert(value)
        except SchemaValidationError as exc:
            moved = tuple(dict(p) for p in under(exc, parameter).problems)
            raise ArgumentConversionError(tool, moved) from exc
        except (TypeError, ValueError) as exc:
            text = f"{type(exc).__name__}: {exc}"
            found = problem(parameter, "a valid value", got(value), text)
            raise ArgumentConversionError(tool, (found,)) from exc

    return guarded


def _hints(fn: Callable[..., Any], signature: inspect.Signature) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    # Some hint does not resolve (an import under TYPE_CHECKING): resolve one by one, and
    # tolerate only the context parameter staying unresolved.
    hints: dict[str, Any] = {}
    namespace = getattr(fn, "__globals__", {})
    for index, (name, param) in enumerate(signature.parameters.items()):
        annotation = param.annotation
        if annotation is param.empty:
            continue
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)
            except Exception as exc:
                if index == 0 and name == "ctx":
                    continue
                raise TypeError(f"tool {fn.__name__}: cannot resolve {name}: {exc}") from None
        hints[name] = annotation
    return hints


def _is_subclass(hint: Any, cls: type) -> bool:
    return isinstance(hint, type) and issubclass(hint, cls)


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool, enum.Enum)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _plain_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain_default(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_default(v) for k, v in value.items()}
    return value
