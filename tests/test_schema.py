"""`agentflow_trio.schema`: types -> JSON schema -> validation and conversion.

`TypeSchema` for every supported output type with a good and a bad value and the exact
problems (field path, expected, got); `Annotated` constraints in the schema and enforced;
the fast pre-check never accepting what ``jsonschema`` rejects (constraints included);
pydantic models (own schema, references inlined, recursion refused, validators' errors as
problems) without pydantic ever being imported for users who do not use it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import annotated_types as at
import attrs
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.errors import SchemaValidationError
from agentflow_trio.schema import TypeSchema, compile_fast, type_schema

pydantic = pytest.importorskip("pydantic")
pydantic_dataclasses = pytest.importorskip("pydantic.dataclasses")
BaseModel = pydantic.BaseModel
Field = pydantic.Field
StringConstraints = pydantic.StringConstraints


# ----------------------------------------------------------------------------- the types


@attrs.frozen
class City:
    name: str
    population: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.frozen
class Country:
    code: str = attrs.field(validator=attrs.validators.in_(["FR", "IT"]))
    capital: City | None = None


@dataclasses.dataclass
class Stop:
    city: str
    nights: int = 1


@dataclasses.dataclass
class Trip:
    stops: list[Stop]
    tags: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.stops:
            raise ValueError("a trip needs at least one stop")


class Movie(TypedDict):
    title: str
    year: NotRequired[int]


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Address(BaseModel):
    city: str
    zip: Annotated[str, Field(pattern=r"^\d{5}$")]


class Person(BaseModel):
    name: str
    age: Annotated[int, Field(ge=0)]
    address: Address

    @pydantic.field_validator("name")
    @classmethod
    def _no_bad_names(cls, value: str) -> str:
        if value == "bad":
            raise ValueError("that name is not allowed")
        return value


class Node(BaseModel):
    label: str
    children: list[Node] = pydantic.Field(default_factory=list)


class Ping(BaseModel):
    a: A2


class A2(BaseModel):
    b: list[B2]


class B2(BaseModel):
    a: A2 | None = None


GOOD_PERSON = {"name": "Ada", "age": 36, "address": {"city": "London", "zip": "12345"}}


def problems_of(ts: TypeSchema[Any], value: Any) -> list[tuple[str | None, str, str]]:
    with pytest.raises(SchemaValidationError) as caught:
        ts.validate(value)
    found = [(p["field"], p["expected"], p["got"]) for p in caught.value.problems]
    for p in caught.value.problems:  # every problem is fully worded and names its field
        assert set(p) == {"field", "expected", "got", "message"}
        assert p["field"] is None or p["field"] in p["message"]
    return found


# ----------------------------------------------------------------------------- good values


@pytest.mark.parametrize(
    ("tp", "value", "expected"),
    [
        (City, {"name": "Paris", "population": 2}, City("Paris", 2)),
        (
            Country,
            {"code": "FR", "capital": {"name": "Paris", "population": 2}},
            Country("FR", City("Paris", 2)),
        ),
        (
            Trip,
            {"stops": [{"city": "Rome"}, {"city": "Pisa", "nights": 2}]},
            Trip([Stop("Rome"), Stop("Pisa", 2)], []),
        ),
        (Movie, {"title": "Up"}, {"title": "Up"}),
        (
            list[City],
            [{"name": "A", "population": 1}, {"name": "B", "population": 2.0}],
            [City("A", 1), City("B", 2)],
        ),
        (Literal["a", "b"], "b", "b"),
        (Mood, "sad", Mood.SAD),
        (list[Mood], ["happy"], [Mood.HAPPY]),
        (dict[str, Stop], {"x": {"city": "Oslo"}}, {"x": Stop("Oslo")}),
        (tuple[int, Mood], [1, "sad"], (1, Mood.SAD)),
        (set[Mood], ["sad", "happy"], {Mood.SAD, Mood.HAPPY}),
        (City | None, None, None),
    ],
)
def test_a_good_value_becomes_the_type(tp: Any, value: Any, expected: Any) -> None:
    ts: TypeSchema[Any] = TypeSchema(tp)
    jsonschema.Draft202012Validator.check_schema(ts.json_schema)
    result = ts.validate(value)
    assert result == expected and type(result) is type(expected)
    assert ts.validate_json(json.dumps(value)) == expected


def test_a_pydantic_model_is_validated_and_built_by_pydantic() -> None:
    ts = TypeSchema(Person)
    person = ts.validate(GOOD_PERSON)
    assert isinstance(person, Person) and isinstance(person.address, Address)
    assert person.model_dump() == GOOD_PERSON
    # pydantic's own schema, with the nested model inlined (no $ref, no $defs anywhere)
    assert ts.json_schema["properties"]["address"] == Address.model_json_schema()
    assert "$defs" not in json.dumps(ts.json_schema) and "$ref" not in json.dumps(ts.json_schema)
    assert ts.json_schema["properties"]["age"]["minimum"] == 0


def test_a_union_gives_the_member_the_value_fits() -> None:
    ts: TypeSchema[City | Trip] = TypeSchema(City | Trip)
    assert ts.validate({"stops": [{"city": "Rome"}]}) == Trip([Stop("Rome")])
    assert ts.validate({"name": "Paris", "population": 1}) == City("Paris", 1)
    models: TypeSchema[Any] = TypeSchema(list[Address | Person])
    both = models.validate([GOOD_PERSON, {"city": "Rome", "zip": "00100"}])
    assert [type(x) for x in both] == [Person, Address]
    assert both[0] == Person.model_validate(GOOD_PERSON)


def test_a_union_member_that_fits_the_schema_but_refuses_lets_the_next_one_try() -> None:
    @attrs.frozen
    class Small:
        n: int = attrs.field(validator=attrs.validators.le(10))

    @attrs.frozen
    class Big:
        n: int

    ts: TypeSchema[Any] = TypeSchema(Small | Big)
    assert ts.validate({"n": 3}) == Small(3)
    assert ts.validate({"n": 30}) == Big(30)
    only: TypeSchema[Any] = TypeSchema(Small | Mood)
    assert problems_of(only, {"n": 30}) == [("n", "a value Small.n accepts", "30")]


# ----------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("tp", "value", "expected"),
    [
        (City, {"name": "Paris", "population": "lots"}, [("population", "integer", "'lots'")]),
        (
            City,
            {"name": "X", "population": -1},
            [("population", "a value City.population accepts", "-1")],
        ),
        (Country, {"code": "DE"}, [("code", "one of 'FR', 'IT'", "'DE'")]),
        (
            Country,
            {"code": "FR", "capital": {"name": "Paris", "population": -5}},
            [("capital.population", "a value City.population accepts", "-5")],
        ),
        (
            Trip,
            {"stops": [{"city": "Rome", "nights": "two"}]},
            [("stops[0].nights", "integer", "'two'")],
        ),
        (Trip, {"stops": []}, [(None, "a valid Trip", "{'stops': []}")]),
        (Movie, {"year": 2009}, [("title", "string", "nothing")]),
        (
            list[City],
            [{"name": "A", "population": 1}, {"name": "B"}],
            [("[1].population", "integer", "nothing")],
        ),
        (
            list[City],
            [{"name": "A", "population": 1}, {"name": "B", "population": -2}],
            [("[1].population", "a value City.population accepts", "-2")],
        ),
        (Literal["a", "b"], "c", [(None, "one of 'a', 'b'", "'c'")]),
        (Mood, "meh", [(None, "one of 'happy', 'sad'", "'meh'")]),
        (dict[str, Stop], {"x": {"nights": 1}}, [("x.city", "string", "nothing")]),
        (
            Person,
            {**GOOD_PERSON, "name": "bad"},
            [("name", "a value Person's validators accept", "'bad'")],
        ),
        (Person, {**GOOD_PERSON, "age": -1}, [("age", "minimum 0", "-1")]),
        (
            Person,
            {**GOOD_PERSON, "address": {"city": "X", "zip": "1"}},
            [("address.zip", r"pattern ^\d{5}$", "'1'")],
        ),
        (
            list[Person],
            [GOOD_PERSON, {**GOOD_PERSON, "name": "bad"}],
            [("[1].name", "a value Person's validators accept", "'bad'")],
        ),
        (
            Country,
            {"code": "FR", "capital": {"name": "Paris"}},
            [("capital.population", "integer", "nothing")],
        ),
    ],
)
def test_a_bad_value_gives_the_exact_problems(
    tp: Any, value: Any, expected: list[tuple[str | None, str, str]]
) -> None:
    assert problems_of(TypeSchema(tp), value) == expected


def test_a_union_that_nothing_fits_says_what_was_expected() -> None:
    assert problems_of(TypeSchema(City | Trip), 3) == [
        (None, "object (name, population) or object (stops, tags)", "3")
    ]
    assert problems_of(TypeSchema(int | Person), "x") == [
        (None, "integer or Person (name, age, address)", "'x'")
    ]


def test_pydantic_model_validation_errors_keep_their_paths_inside_our_types() -> None:
    @dataclasses.dataclass
    class Team:
        members: list[Person]

    found = problems_of(
        TypeSchema(Team), {"members": [GOOD_PERSON, {**GOOD_PERSON, "name": "bad"}]}
    )
    assert found == [("members[1].name", "a value Person's validators accept", "'bad'")]


def test_a_pydantic_dataclass_is_a_dataclass_whose_validators_speak_as_problems() -> None:
    @pydantic_dataclasses.dataclass
    class Count:
        n: Annotated[int, Field(ge=0)]

        @pydantic.field_validator("n")
        @classmethod
        def _not_seven(cls, value: int) -> int:
            if value == 7:
                raise ValueError("not seven")
            return value

    ts = TypeSchema(Count)
    assert ts.json_schema["properties"]["n"] == {"type": "integer", "minimum": 0}
    assert ts.validate({"n": 1}) == Count(1)
    assert problems_of(ts, {"n": 7}) == [("n", "a value Count's validators accept", "7")]
    assert problems_of(ts, {"n": -1}) == [("n", "minimum 0", "-1")]


def test_validate_json_reports_text_that_is_not_json() -> None:
    with pytest.raises(SchemaValidationError) as caught:
        TypeSchema(City).validate_json('{"name": "Paris", ')
    (p,) = caught.value.problems
    assert (p["field"], p["expected"]) == (None, "JSON")


# ----------------------------------------------------------------------------- schemas


def test_dataclass_schema_defaults_and_factories_are_optional() -> None:
    schema = TypeSchema(Trip).json_schema
    assert schema == {
        "type": "object",
        "properties": {
            "stops": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "nights": {"type": "integer"}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["stops"],
        "additionalProperties": False,
    }


def test_field_metadata_description_is_shown() -> None:
    @dataclasses.dataclass
    class Q:
        text: str = dataclasses.field(metadata={"description": "what to look for"})

    @attrs.define
    class R:
        n: int = attrs.field(metadata={"description": "how many"})

    assert TypeSchema(Q).json_schema["properties"]["text"]["description"] == "what to look for"
    assert TypeSchema(R).json_schema["properties"]["n"]["description"] == "how many"


def test_a_recursive_pydantic_model_is_refused_with_the_cycle_named() -> None:
    with pytest.raises(TypeError, match=r"Node is recursive \(Node -> Node\)"):
        TypeSchema(Node)
    with pytest.raises(TypeError, match=r"A2 -> B2 -> A2"):
        TypeSchema(list[Ping])


def test_a_model_used_twice_is_inlined_twice() -> None:
    class Route(BaseModel):
        start: Address
        end: Address

    schema = TypeSchema(Route).json_schema
    assert schema["properties"]["start"] == schema["properties"]["end"]
    assert schema["properties"]["start"]["properties"]["zip"]["pattern"] == r"^\d{5}$"


@pytest.mark.parametrize("bad", [bytes, complex, dict[int, str], type])
def test_unsupported_types_fail_when_declared(bad: Any) -> None:
    with pytest.raises(TypeError):
        TypeSchema(bad)


# ----------------------------------------------------------------------------- constraints


@pytest.mark.parametrize(
    ("tp", "keywords"),
    [
        (Annotated[int, Field(ge=1, le=10)], {"type": "integer", "minimum": 1, "maximum": 10}),
        (
            Annotated[float, Field(gt=0, lt=1, multiple_of=0.25)],
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "multipleOf": 0.25},
        ),
        (
            Annotated[
                str,
                Field(
                    min_length=1,
                    max_length=5,
                    pattern="^a",
                    description="a word",
                    title="Word",
                    examples=["ab"],
                ),
            ],
            {
                "type": "string",
                "minLength": 1,
                "maxLength": 5,
                "pattern": "^a",
                "description": "a word",
                "title": "Word",
                "examples": ["ab"],
            },
        ),
        (
            Annotated[list[int], Field(min_length=1, max_length=3)],
            {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
        ),
        (
            Annotated[dict[str, int], at.MinLen(1)],
            {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1},
        ),
        (
            Annotated[str, StringConstraints(min_length=2, max_length=4, pattern="^x")],
            {"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^x"},
        ),
        (Annotated[int, at.Ge(1)], {"type": "integer", "minimum": 1}),
        (Annotated[int, at.Gt(1)], {"type": "integer", "exclusiveMinimum": 1}),
        (Annotated[int, at.Le(1)], {"type": "integer", "maximum": 1}),
        (Annotated[int, at.Lt(1)], {"type": "integer", "exclusiveMaximum": 1}),
        (
            Annotated[int, at.Interval(ge=1, lt=5)],
            {"type": "integer", "minimum": 1, "exclusiveMaximum": 5},
        ),
        (Annotated[int, at.MultipleOf(3)], {"type": "integer", "multipleOf": 3}),
        (Annotated[str, at.Len(2, 4)], {"type": "string", "minLength": 2, "maxLength": 4}),
        (
            Annotated[list[str], at.MaxLen(2)],
            {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        ),
        (
            Annotated[int, Field(ge=1)] | None,
            {"type": ["integer", "null"], "minimum": 1},
        ),
        (
            Annotated[list[int] | None, at.MinLen(1)],
            {
                "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}],
                "minItems": 1,
            },
        ),
        # unknown metadata is ignored; a plain string is the description
        (
            Annotated[int, object(), at.Predicate(str.isdigit), "a count"],
            {"type": "integer", "description": "a count"},
        ),
        (Annotated[str, at.Ge(1), at.Timezone(None)], {"type": "string"}),
        (Annotated[int, at.MinLen(1), Field(pattern="x")], {"type": "integer"}),
    ],
)
def test_annotated_constraints_become_schema_keywords(tp: Any, keywords: dict[str, Any]) -> None:
    schema, _ = type_schema(tp)
    assert schema == keywords
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    ("tp", "good", "bad", "field", "expected"),
    [
        (Annotated[int, Field(ge=1)], 1, 0, None, "minimum 1"),
        (Annotated[float, at.Gt(0)], 0.5, 0, None, "exclusiveMinimum 0"),
        (Annotated[int, at.MultipleOf(3)], 6, 7, None, "multipleOf 3"),
        (Annotated[str, Field(pattern=r"^[a-z]+$")], "abc", "aB", None, "pattern ^[a-z]+$"),
        (Annotated[str, StringConstraints(max_length=3)], "abc", "abcd", None, "maxLength 3"),
        (Annotated[list[int], at.MinLen(1)], [1], [], None, "minItems 1"),
        (
            Annotated[dict[str, int], at.MaxLen(1)],
            {"a": 1},
            {"a": 1, "b": 2},
            None,
            "maxProperties 1",
        ),
        (
            list[Annotated[int, Field(le=5)]],
            [1, 5],
            [1, 6],
            "[1]",
            "maximum 5",
        ),
        (Stop | None, None, {"city": "x", "nights": "1"}, "nights", "integer"),
    ],
)
def test_constraints_are_enforced(
    tp: Any, good: Any, bad: Any, field: str | None, expected: str
) -> None:
    ts: TypeSchema[Any] = TypeSchema(tp)
    assert ts.validate(good) is not None or good is None
    (found,) = problems_of(ts, bad)
    assert found[:2] == (field, expected)


def test_a_constraint_in_a_dataclass_field_is_enforced_at_its_path() -> None:
    @dataclasses.dataclass
    class Order:
        qty: Annotated[int, Field(ge=1, description="how many")]
        note: Annotated[str, at.MaxLen(4)] = ""

    ts = TypeSchema(Order)
    assert ts.json_schema["properties"]["qty"] == {
        "type": "integer",
        "minimum": 1,
        "description": "how many",
    }
    assert ts.validate({"qty": 2}) == Order(2)
    assert problems_of(ts, {"qty": 0, "note": "too long"}) == [
        ("note", "maxLength 4", "'too long'"),
        ("qty", "minimum 1", "0"),
    ]


# ----------------------------------------------------------------------------- fast path

CONSTRAINED: list[Any] = [
    Annotated[int, Field(ge=1)],
    Annotated[str, Field(min_length=2, pattern="^a")],
    Annotated[list[Annotated[int, at.Lt(3)]], at.MaxLen(2)],
    Person,
    Trip,
    dict[str, Annotated[float, at.MultipleOf(0.5)]],
]
CONSTRAINT_KEYWORDS = (
    '"minimum"',
    '"exclusiveMaximum"',
    '"minLength"',
    '"pattern"',
    '"maxItems"',
    '"multipleOf"',
)

LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.sampled_from(["", "a", "ab", "abc", "b", "Ada", "12345", "1"]),
)
JSON = st.recursive(
    LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["name", "age", "address", "city", "zip", "stops", "nights", "x"]),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=10,
)


def test_a_schema_with_constraints_gets_no_fast_check() -> None:
    for tp in CONSTRAINED:
        schema = TypeSchema(tp).json_schema
        if any(k in json.dumps(schema) for k in CONSTRAINT_KEYWORDS):
            assert compile_fast(schema) is None, tp
    plain = TypeSchema(Trip).json_schema
    assert compile_fast(plain) is not None


@settings(deadline=None, max_examples=300)
@given(index=st.integers(0, len(CONSTRAINED) - 1), value=JSON)
def test_property_fast_check_never_accepts_what_jsonschema_rejects(index: int, value: Any) -> None:
    schema = TypeSchema(CONSTRAINED[index]).json_schema
    for sub in _subschemas(schema):
        fast = compile_fast(sub)
        if fast is not None and fast(value):
            assert jsonschema.Draft202012Validator(sub).is_valid(value)


def _subschemas(schema: Any) -> list[Mapping[str, Any]]:
    if not isinstance(schema, Mapping):
        return []
    found = [schema]
    for key in ("items", "additionalProperties"):
        found += _subschemas(schema.get(key))
    for sub in schema.get("properties", {}).values():
        found += _subschemas(sub)
    return found


# ----------------------------------------------------------------------------- optional import


def test_pydantic_is_never_imported_for_types_that_do_not_need_it() -> None:
    code = """
import dataclasses, enum, sys
from typing import Annotated, Literal, TypedDict
import attrs
import agentflow_trio as af
from agentflow_trio.schema import TypeSchema

@dataclasses.dataclass
class D:
    n: Annotated[int, "how many"]

@attrs.frozen
class A:
    d: D
    kind: Literal["x", "y"] = "x"

@af.tool
def use(a: A, d: D | None = None) -> int:
    return a.d.n

assert TypeSchema(list[A]).validate([{"d": {"n": 1}}]) == [A(D(1))]
loaded = [m for m in ("pydantic", "pydantic_core", "annotated_types") if m in sys.modules]
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
