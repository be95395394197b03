"""Types as JSON schemas, and validation back into those types: the one place that turns a
Python annotation into a schema (tool parameters and structured output both use it).

`type_schema` gives the schema and converter of one annotation; `TypeSchema` wraps a whole
type for structured output (``validate`` / ``validate_json``); `ArgumentValidator` checks a
tool's arguments object and words each problem for the model (`problems`, `problem`, `got`;
`under` moves a converter's problems one level down a path).

Types: attrs classes, dataclasses, pydantic models (pydantic optional, imported only when an
annotation is one), TypedDicts, containers, ``Literal``, enums, unions, ``Annotated``
constraints (pydantic ``Field``, ``annotated_types``); see ``_types``.
"""

from ._adapter import TypeSchema as TypeSchema
from ._types import Converter as Converter
from ._types import type_schema as type_schema
from ._validate import ArgumentValidator as ArgumentValidator
from ._validate import compile_fast as compile_fast
from ._validate import describe_path as describe_path
from ._validate import got as got
from ._validate import invalid_arguments as invalid_arguments
from ._validate import problem as problem
from ._validate import problems as problems
from ._validate import under as under

__all__ = [
    "ArgumentValidator",
    "Converter",
    "TypeSchema",
    "compile_fast",
    "describe_path",
    "got",
    "invalid_arguments",
    "problem",
    "problems",
    "type_schema",
    "under",
]
