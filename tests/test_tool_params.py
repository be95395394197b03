"""Tool parameters that are pydantic models, dataclasses and attrs classes (nested), and
`Annotated` constraints on them: the schema the model is shown, and the structured
``invalid_arguments`` error it reads back when its arguments do not fit.

The end-to-end test runs a `tool_agent` over real HTTP against the built-in mock LLM
(loopback, port 0, real clock, an absolute ``fail_after``) and reads the tool message the
mock received.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import annotated_types as at
import attrs
import pytest
import trio
from _mock_agent import call_on_mock

import agentflow_trio as af
from agentflow_trio.mockllm import MockReply, MockToolCall
from agentflow_trio.tools import ToolRegistry, tool_agent
from agentflow_trio.tools._schema import ArgumentConversionError

pydantic = pytest.importorskip("pydantic")

TIMEOUT = 10


class Address(pydantic.BaseModel):
    street: str
    city: str


class Order(pydantic.BaseModel):
    item: str
    ship_to: Address

    @pydantic.field_validator("item")
    @classmethod
    def _known_item(cls, value: str) -> str:
        if value == "unobtainium":
            raise ValueError("we do not sell unobtainium")
        return value


@af.tool
async def place_order(
    order: Order, quantity: Annotated[int, pydantic.Field(ge=1)]
) -> dict[str, Any]:
    """Place an order.

    Args:
        order: What to send and where.
        quantity: How many.
    """
    return {"item": order.item, "city": order.ship_to.city, "quantity": quantity}


@dataclasses.dataclass
class Window:
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError("the window ends before it starts")


@dataclasses.dataclass
class Query:
    text: Annotated[str, at.MinLen(1)]
    window: Window | None = None
    tags: list[str] = dataclasses.field(default_factory=list)


@attrs.frozen
class Point:
    x: float
    y: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))


@attrs.frozen
class Shape:
    name: str
    points: list[Point]


@af.tool
def search(query: Query, limit: Annotated[int, at.Interval(ge=1, le=50)] = 10) -> dict[str, Any]:
    """Search."""
    return {"query": query, "limit": limit}


@af.tool
def draw(shape: Shape) -> dict[str, Any]:
    """Draw."""
    return {"shape": shape}


def registry() -> ToolRegistry:
    return ToolRegistry([place_order, search, draw])


GOOD_ORDER = {"item": "tea", "ship_to": {"street": "1 Main St", "city": "Oslo"}}


# ----------------------------------------------------------------------------- schemas


def test_the_schema_shows_the_nested_model_and_the_constraint() -> None:
    params = place_order.parameters
    assert params["required"] == ["order", "quantity"]
    quantity = params["properties"]["quantity"]
    assert quantity == {"type": "integer", "minimum": 1, "description": "How many."}
    order = params["properties"]["order"]
    assert order["type"] == "object" and order["required"] == ["item", "ship_to"]
    assert order["description"] == "What to send and where."
    ship_to = order["properties"]["ship_to"]
    assert ship_to["type"] == "object" and set(ship_to["properties"]) == {"street", "city"}
    assert "$ref" not in json.dumps(params) and "$defs" not in json.dumps(params)


def test_dataclass_and_attrs_parameters_are_nested_objects() -> None:
    query = search.parameters["properties"]["query"]
    assert query["required"] == ["text"] and query["additionalProperties"] is False
    assert query["properties"]["text"] == {"type": "string", "minLength": 1}
    window = query["properties"]["window"]["anyOf"][0]
    assert window["required"] == ["start", "end"]
    assert search.parameters["properties"]["limit"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 50,
        "default": 10,
    }
    points = draw.parameters["properties"]["shape"]["properties"]["points"]
    assert points["items"]["properties"] == {"x": {"type": "number"}, "y": {"type": "number"}}


# ----------------------------------------------------------------------------- calls


async def test_good_arguments_arrive_as_the_annotated_types() -> None:
    results = await registry().call_many(
        None,
        [
            ("place_order", {"order": GOOD_ORDER, "quantity": 2}),
            ("search", {"query": {"text": "trio", "window": {"start": 1, "end": 2}}}),
            ("draw", {"shape": {"name": "L", "points": [{"x": 1}, {"x": 2, "y": 3}]}}),
        ],
    )
    assert [r.outcome for r in results] == ["ok", "ok", "ok"]
    assert results[0].output == {"item": "tea", "city": "Oslo", "quantity": 2}
    assert results[1].output == {"query": Query("trio", Window(1, 2)), "limit": 10}
    assert results[2].output == {"shape": Shape("L", [Point(1.0), Point(2.0, 3.0)])}


@pytest.mark.parametrize(
    ("name", "args", "field", "expected", "got"),
    [
        ("place_order", {"order": GOOD_ORDER, "quantity": 0}, "quantity", "minimum 1", "0"),
        (
            "place_order",
            {"order": {"item": "tea", "ship_to": {"street": "x"}}, "quantity": 1},
            "order.ship_to.city",
            "string",
            "nothing",
        ),
        ("search", {"query": {"text": ""}}, "query.text", "minLength 1", "''"),
        ("search", {"query": {"text": "a"}, "limit": 51}, "limit", "maximum 50", "51"),
        (
            "draw",
            {"shape": {"name": "L", "points": [{"x": 1}, {"x": "far"}]}},
            "shape.points[1].x",
            "number",
            "'far'",
        ),
    ],
)
async def test_arguments_that_break_the_schema_are_invalid_arguments(
    name: str, args: dict[str, Any], field: str, expected: str, got: str
) -> None:
    (result,) = await registry().call_many(None, [(name, args)])
    assert result.outcome == "error" and result.error is not None
    error = result.error
    assert (error["type"], error["tool"], error["field"]) == ("invalid_arguments", name, field)
    assert (error["expected"], error["got"]) == (expected, got)
    assert field in error["message"]


@pytest.mark.parametrize(
    ("name", "args", "field", "expected", "got", "words"),
    [
        (
            "place_order",
            {"order": {**GOOD_ORDER, "item": "unobtainium"}, "quantity": 1},
            "order.item",
            "a value Order's validators accept",
            "'unobtainium'",
            "we do not sell unobtainium",
        ),
        (
            "search",
            {"query": {"text": "a", "window": {"start": 5, "end": 1}}},
            "query.window",
            "a valid Window",
            "{'start': 5, 'end': 1}",
            "the window ends before it starts",
        ),
        (
            "draw",
            {"shape": {"name": "L", "points": [{"x": 1, "y": -1}]}},
            "shape.points[0].y",
            "a value Point.y accepts",
            "-1",
            "must be >= 0",
        ),
    ],
)
async def test_a_type_refusing_its_value_is_invalid_arguments_naming_the_field(
    name: str, args: dict[str, Any], field: str, expected: str, got: str, words: str
) -> None:
    tool = registry().get(name)
    with pytest.raises(ArgumentConversionError) as caught:
        await tool.call(None, args)
    assert (caught.value.field, caught.value.expected, caught.value.got) == (field, expected, got)
    assert caught.value.tool == name and words in str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")

    (result,) = await registry().call_many(None, [(name, args)])
    assert result.outcome == "error" and result.error is not None
    assert (result.error["type"], result.error["field"]) == ("invalid_arguments", field)
    assert result.error["message"] == str(caught.value)
    assert result.traceback is None  # the model's mistake, not a crash


# ----------------------------------------------------------------------------- end to end


async def test_tool_agent_sends_the_structured_error_back_to_the_model() -> None:
    agent = tool_agent(tools=registry())
    with trio.fail_after(TIMEOUT):
        result, mock = await call_on_mock(
            agent,
            af.Event("shop", {"query": "order tea"}),
            MockReply(
                tool_calls=(
                    MockToolCall("place_order", {"order": GOOD_ORDER, "quantity": 0}, id="c_zero"),
                    MockToolCall("place_order", {"order": GOOD_ORDER, "quantity": 3}, id="c_ok"),
                    MockToolCall(
                        "draw",
                        {"shape": {"name": "L", "points": [{"x": 1, "y": -1}]}},
                        id="c_draw",
                    ),
                )
            ),
            MockReply(text="One order placed; the other needs a quantity of at least 1."),
        )

    assert result.succeeded, result.error
    assert len(mock.received) == 2
    shown = {t["function"]["name"]: t["function"] for t in mock.received[0]["tools"]}
    params = shown["place_order"]["parameters"]
    assert params["properties"]["quantity"]["minimum"] == 1
    assert params["properties"]["order"]["properties"]["ship_to"]["type"] == "object"

    tool_msgs = {
        m["tool_call_id"]: json.loads(m["content"])
        for m in mock.received[1]["messages"]
        if m["role"] == "tool"
    }
    error = tool_msgs["c_zero"]["error"]
    assert error["type"] == "invalid_arguments" and error["tool"] == "place_order"
    assert (error["field"], error["expected"], error["got"]) == ("quantity", "minimum 1", "0")
    assert "quantity" in error["message"]
    assert tool_msgs["c_ok"] == {"item": "tea", "city": "Oslo", "quantity": 3}
    refused = tool_msgs["c_draw"]["error"]  # an attrs validator, found while converting
    assert (refused["type"], refused["field"]) == ("invalid_arguments", "shape.points[0].y")
    assert "must be >= 0" in refused["message"]
