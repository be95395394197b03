"""Types as JSON schemas, and validation back into those types: the one place that turns a
Python annotation into a schema (tool parameters and structured output both use it).

`type_schema` gives the schema and converter of one annotation; `TypeSchema` wraps a whole
type for structured output (``validate`` / ``validate_json``); `ArgumentValidator` checks a
tool's arguments object and words each problem for the model.
"""

from ._adapter import TypeSchema as TypeSchema
from ._types import Converter as Converter
from ._types import type_schema as type_schema
from ._validate import ArgumentValidator as ArgumentValidator
from ._validate import compile_fast as compile_fast
from ._validate import describe_path as describe_path
from ._validate import invalid_arguments as invalid_arguments
from ._validate import problems as problems

__all__ = [
    "ArgumentValidator",
    "Converter",
    "TypeSchema",
    "compile_fast",
    "describe_path",
    "invalid_arguments",
    "problems",
    "type_schema",
]
