"""`TypeSchema`: one Python type as a JSON schema, and the check that turns a JSON value
back into that type (structured output's parser; tools use the same pieces per argument)."""

from __future__ import annotations

from typing import Any, Final, Generic, TypeVar, final

import jsonschema

from .. import _json
from ..errors import SchemaValidationError
from ._types import Converter, type_schema
from ._validate import compile_fast, got, problems

__all__ = ["TypeSchema"]

T = TypeVar("T")

_MAX_JSON_BYTES: Final = 4 * 1024 * 1024


@final
class TypeSchema(Generic[T]):
    """``TypeSchema(City)``: the Draft 2020-12 ``json_schema`` of ``City`` and a validator.

    ``validate(value)`` checks a decoded JSON value against the schema, then converts it to
    the type (an attrs or pydantic instance, an Enum member, a tuple...); anything that
    does not fit raises `SchemaValidationError` whose ``problems`` say, per problem, the
    field path, what was expected and what was got, in words a model can act on.
    ``validate_json(text)`` parses first (a parse error is a problem too).

    Raises:
        TypeError: the type is not supported (see `type_schema`).
    """

    __slots__ = ("_convert", "_fast", "_validator", "json_schema", "name", "type")

    def __init__(self, tp: Any, *, name: str | None = None) -> None:
        self.type = tp
        self.name = name or getattr(tp, "__name__", None) or "output"
        schema, convert = type_schema(tp, where=self.name)
        jsonschema.Draft202012Validator.check_schema(schema)
        self.json_schema: dict[str, Any] = schema
        self._convert: Converter | None = convert
        self._validator = jsonschema.Draft202012Validator(schema)
        self._fast = compile_fast(schema)

    def validate(self, value: Any) -> T:
        """``value`` (decoded JSON) as a ``T``.

        Raises:
            SchemaValidationError: it does not fit the schema or the type's own checks.
        """
        fast = self._fast
        if fast is None or not fast(value):
            found = problems(self._validator, value)
            if found:
                raise SchemaValidationError(found)
        if self._convert is None:
            result: Any = value
            return result  # type: ignore[no-any-return]
        try:
            converted: T = self._convert(value)
        except SchemaValidationError:
            raise
        except (TypeError, ValueError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            raise SchemaValidationError(
                [{"field": None, "expected": self.name, "got": got(value), "message": message}]
            ) from exc
        return converted

    def validate_json(self, data: str | bytes) -> T:
        """Parse ``data`` as JSON, then `validate` it.

        Raises:
            SchemaValidationError: not JSON (or over 4 MiB), or not a valid ``T``.
        """
        if len(data) > _MAX_JSON_BYTES:
            size = f"{len(data)} bytes"
            problem = {"field": None, "expected": "JSON of at most 4 MiB", "got": size}
            raise SchemaValidationError([problem | {"message": f"reply too large ({size})"}])
        try:
            value = _json.loads(data)
        except ValueError as exc:
            message = f"not valid JSON: {exc}"
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            problem = {"field": None, "expected": "JSON", "got": got(text), "message": message}
            raise SchemaValidationError([problem]) from None
        return self.validate(value)

    def __repr__(self) -> str:
        return f"<TypeSchema {self.name}>"
