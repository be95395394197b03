"""Function tools: schema derivation, argument validation, structured errors, the registry.

Time-dependent behaviour (timeouts) runs under the autojump clock.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Optional, TypedDict

import attrs
import jsonschema
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import agentflow_trio as af
from agentflow_trio.errors import ToolArgumentError, ToolError, UnknownTool
from agentflow_trio.llm.types import ToolCall, ToolSpec
from agentflow_trio.schema import compile_fast
from agentflow_trio.tools import BoundTools, Tool, ToolRegistry, ToolResult, tool


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Point:
    x: float
    y: float = 0.0


class Filters(TypedDict, total=False):
    lang: str
    limit: int


def props(t: Tool) -> dict[str, Any]:
    return dict(t.parameters["properties"])


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (Any, {}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (Sequence[int], {"type": "array", "items": {"type": "integer"}}),
        (set[str], {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (
            tuple[int, str],
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "items": False,
                "minItems": 2,
            },
        ),
        (dict, {"type": "object"}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (Mapping[str, Any], {"type": "object"}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, "x"], {"enum": [1, "x"]}),
        (Color, {"type": "string", "enum": ["red", "blue"]}),
        (str | None, {"type": ["string", "null"]}),
        (Optional[int], {"type": ["integer", "null"]}),  # noqa: UP045 - the spelling under test
        (
            list[str] | None,
            {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
        ),
        (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        (Annotated[str, "the query"], {"type": "string", "description": "the query"}),
        (
            Point,
            {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x"],
                "additionalProperties": False,
            },
        ),
        (
            Filters,
            {
                "type": "object",
                "properties": {"lang": {"type": "string"}, "limit": {"type": "integer"}},
                "additionalProperties": False,
            },
        ),
    ],
)
def test_schema_of_each_supported_type(annotation: Any, expected: dict[str, Any]) -> None:
    async def f(value):  # type: ignore[no-untyped-def]
        return value

    f.__annotations__ = {"value": annotation}
    made = tool(f)
    assert made.parameters == {
        "type": "object",
        "properties": {"value": expected},
        "required": ["value"],
        "additionalProperties": False,
    }
    jsonschema.Draft202012Validator.check_schema(made.parameters)


def test_defaults_are_optional_and_shown_and_none_without_default_is_required() -> None:
    @tool
    async def f(a: str, b: int = 3, c: str | None = None, e: Color = Color.BLUE) -> dict[str, Any]:
        return {}

    schema = f.parameters
    assert schema["required"] == ["a"]
    assert schema["properties"]["b"] == {"type": "integer", "default": 3}
    assert schema["properties"]["c"] == {"type": ["string", "null"], "default": None}
    assert schema["properties"]["e"]["default"] == "blue"

    @tool
    async def g(a: str | None) -> dict[str, Any]:
        return {}

    assert g.parameters["required"] == ["a"]


def test_docstring_google_style_gives_descriptions() -> None:
    @tool
    async def search(q: str, limit: int = 5) -> dict[str, Any]:
        """Search the web for pages.

        Returns the best hits first.

        Args:
            q: What to look for;
                several words are fine.
            limit (int): How many hits.

        Returns:
            A dict of hits.
        """
        return {}

    assert search.name == "search"
    assert search.description == "Search the web for pages."
    assert props(search)["q"]["description"] == "What to look for; several words are fine."
    assert props(search)["limit"]["description"] == "How many hits."


def test_docstring_numpy_style_gives_descriptions() -> None:
    @tool
    async def weather(city: str, units: Literal["c", "f"] = "c") -> dict[str, Any]:
        """Current weather.

        Parameters
        ----------
        city : str
            The city name.
        units : {"c", "f"}
            Celsius or Fahrenheit.

        Returns
        -------
        dict
        """
        return {}

    assert weather.description == "Current weather."
    assert props(weather)["city"]["description"] == "The city name."
    assert props(weather)["units"]["description"] == "Celsius or Fahrenheit."


def test_ctx_is_excluded_by_name_or_annotation() -> None:
    @tool
    async def by_name(ctx, q: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        return {}

    @tool
    async def by_type(context: af.Context, q: str) -> dict[str, Any]:
        return {}

    assert list(props(by_name)) == ["q"] == list(props(by_type))


def test_decorator_arguments_override_and_unsupported_types_fail_early() -> None:
    @tool(name="find", description="Find things.", timeout=2.0)
    async def f(q: str) -> dict[str, Any]:
        """Ignored docstring."""
        return {}

    assert (f.name, f.description, f.timeout) == ("find", "Find things.", 2.0)
    assert f.to_spec() == ToolSpec("find", "Find things.", f.parameters)

    with pytest.raises(TypeError, match="unsupported annotation"):

        @tool
        async def bad(x: bytes) -> None: ...

    with pytest.raises(TypeError, match="cannot be passed by name"):

        @tool
        async def star(*xs: int) -> None: ...

    with pytest.raises(ValueError, match="timeout"):
        tool(timeout=0)(f.fn)


def test_kwargs_allow_extra_arguments() -> None:
    @tool
    async def f(q: str, **rest: Any) -> dict[str, Any]:
        return {}

    assert f.parameters["additionalProperties"] is True


# --------------------------------------------------------------------------- calling


@tool
async def search(q: str, limit: int = 3, color: Color = Color.RED) -> dict[str, Any]:
    """Search."""
    return {"q": q, "limit": limit, "color": color.value}


@tool
async def plot(p: Point, tags: set[str] = frozenset(), scale: float = 1.0) -> dict[str, Any]:  # type: ignore[assignment]
    """Plot."""
    return {"p": p, "tags": sorted(tags), "scale": scale, "types": [type(p).__name__]}


@tool
async def explode(reason: str) -> dict[str, Any]:
    """Always raises."""
    raise RuntimeError(f"kaboom: {reason}")


@tool
def sync_add(a: int, b: int) -> int:
    """A synchronous tool returning a plain value."""
    return a + b


@tool(timeout=5)
async def slow(seconds: float) -> dict[str, Any]:
    """Sleeps."""
    await trio.sleep(seconds)
    return {"slept": seconds}


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([search, plot, explode, sync_add, slow])


async def test_ok_call_converts_arguments_to_annotated_types(registry: ToolRegistry) -> None:
    result = await registry.call(None, "search", {"q": "trio", "color": "blue"}, call_id="c1")
    assert result == ToolResult("c1", "search", "ok", {"q": "trio", "limit": 3, "color": "blue"})
    plotted = await registry.call(None, "plot", {"p": {"x": 1}, "tags": ["b", "a"], "scale": 2})
    assert plotted.output is not None
    assert plotted.output["p"] == Point(1.0, 0.0)
    assert plotted.output["tags"] == ["a", "b"]
    assert isinstance(plotted.output["scale"], float)


async def test_non_dict_return_is_wrapped_and_sync_tools_work(registry: ToolRegistry) -> None:
    result = await registry.call(None, "sync_add", {"a": 2, "b": 3})
    assert result.outcome == "ok"
    assert result.output == {"result": 5}


@pytest.mark.parametrize(
    ("args", "field", "expected"),
    [
        ({"q": 3}, "q", "string"),
        ({}, "q", "string"),
        ({"q": "x", "limit": "many"}, "limit", "integer"),
        ({"q": "x", "limit": True}, "limit", "integer"),
        ({"q": "x", "color": "green"}, "color", "one of 'red', 'blue'"),
        ({"q": "x", "unknown": 1}, "unknown", "no such argument; known: color, limit, q"),
    ],
)
async def test_invalid_arguments_give_a_structured_error(
    registry: ToolRegistry, args: dict[str, Any], field: str, expected: str
) -> None:
    result = await registry.call(None, "search", args, call_id="c9")
    assert result.outcome == "error" and result.output is None
    assert result.error is not None
    assert result.error["type"] == "invalid_arguments"
    assert result.error["tool"] == "search"
    assert result.error["field"] == field
    assert result.error["expected"] == expected
    assert result.error["got"] == (repr(args[field]) if field in args else "nothing")
    assert field in result.error["message"]
    assert json.loads(result.content()) == {"error": result.error}


async def test_nested_field_paths_and_every_problem_listed(registry: ToolRegistry) -> None:
    result = await registry.call(None, "plot", {"p": {"x": "far"}, "tags": ["a", 2]})
    assert result.error is not None
    assert result.error["field"] == "p.x"
    assert result.error["expected"] == "number"
    assert {e["field"] for e in result.error["errors"]} == {"p.x", "tags[1]"}


async def test_missing_argument_message_names_it(registry: ToolRegistry) -> None:
    result = await registry.call(None, "plot", {})
    assert result.error is not None
    assert result.error["message"] == "missing required argument 'p'"


async def test_unknown_tool_names_the_known_ones(registry: ToolRegistry) -> None:
    result = await registry.call(None, "serch", {"q": "x"})
    assert result.outcome == "error"
    assert result.error is not None
    assert result.error["type"] == "unknown_tool"
    assert result.error["known"] == ["search", "plot", "explode", "sync_add", "slow"]
    assert "no tool named 'serch'" in result.error["message"]
    with pytest.raises(UnknownTool):
        result.unwrap()


async def test_tool_that_raises_gives_error_with_type_and_message(registry: ToolRegistry) -> None:
    result = await registry.call(None, "explode", {"reason": "test"})
    assert result.outcome == "error"
    assert result.error == {
        "type": "tool_error",
        "exception": "RuntimeError",
        "message": "kaboom: test",
    }
    assert result.traceback is not None and "raise RuntimeError" in result.traceback
    assert "Traceback" not in result.content()  # the traceback is for logs, not the model
    with pytest.raises(ToolError, match="kaboom"):
        result.unwrap()


async def test_bad_json_from_the_model_is_invalid_arguments(registry: ToolRegistry) -> None:
    call = ToolCall.parse("call_7", "search", '{"q": "unterminated')
    assert call.parse_error is not None
    result = await registry.call(None, call)
    assert result.call_id == "call_7"
    assert result.error is not None
    assert result.error["type"] == "invalid_arguments"
    assert result.error["expected"] == "a JSON object"
    not_object = await registry.call(None, ToolCall.parse("c", "search", "[1, 2]"))
    assert not_object.error is not None and "object" in not_object.error["message"]


async def test_tool_call_objects_carry_id_and_arguments(registry: ToolRegistry) -> None:
    result = await registry.call(None, ToolCall.parse("call_1", "search", '{"q": "x"}'))
    assert (result.call_id, result.outcome) == ("call_1", "ok")
    message = result.to_message()
    assert (message.role, message.tool_call_id) == ("tool", "call_1")
    assert json.loads(message.content or "") == {"q": "x", "limit": 3, "color": "red"}


async def test_timeouts_smaller_wins(registry: ToolRegistry, autojump_clock: Any) -> None:
    start = trio.current_time()
    own = await registry.call(None, "slow", {"seconds": 60})  # the tool's own 5 s
    assert own.outcome == "timed_out"
    assert trio.current_time() - start == pytest.approx(5)
    assert own.error is not None and own.error["timeout"] == 5
    assert json.loads(own.to_message().content or "")["error"]["type"] == "timed_out"
    start = trio.current_time()
    per_call = await registry.call(None, "slow", {"seconds": 60}, timeout=1.5)
    assert per_call.outcome == "timed_out" and per_call.duration == pytest.approx(1.5)
    assert trio.current_time() - start == pytest.approx(1.5)
    fast = await registry.call(None, "slow", {"seconds": 2}, timeout=100)
    assert fast.outcome == "ok" and fast.duration == pytest.approx(2)


async def test_registry_default_timeout(autojump_clock: Any) -> None:
    registry = ToolRegistry([slow], default_timeout=0.5)
    result = await registry.call(None, "slow", {"seconds": 3})
    assert result.outcome == "timed_out" and result.duration == pytest.approx(0.5)


async def test_outer_cancellation_propagates(registry: ToolRegistry, autojump_clock: Any) -> None:
    reached_end = False
    with trio.move_on_after(1) as scope:
        await registry.call(None, "slow", {"seconds": 3})
        reached_end = True
    assert scope.cancelled_caught and not reached_end


async def test_tool_raising_tool_argument_error_is_invalid_arguments() -> None:
    @tool
    async def lookup(token: str) -> dict[str, Any]:
        raise ToolArgumentError("that token is stale", tool="lookup", field="token")

    result = await ToolRegistry([lookup]).call(None, "lookup", {"token": "t"})
    assert result.error is not None
    assert (result.error["type"], result.error["field"]) == ("invalid_arguments", "token")
    assert result.error["message"] == "that token is stale"


async def test_ctx_is_passed_to_tools_that_ask() -> None:
    seen: list[Any] = []

    @tool
    async def who(ctx: af.Context) -> dict[str, Any]:
        seen.append(ctx)
        return {"event": ctx.event.type}

    registry = ToolRegistry([who])
    ctx = af.Context(af.Event("e"))
    bound = registry.bind(ctx)
    assert isinstance(bound, BoundTools) and "who" in bound and bound.names() == ["who"]
    result = await bound.call("who")
    assert result.output == {"event": "e"} and seen == [ctx]
    assert bound.specs() == registry.specs()
    assert bound.get("who") is who


class RawTool:
    """A FunctionTool written by hand, with a schema from elsewhere (as MCP tools are)."""

    name = "raw"
    description = "A raw tool."
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
    }

    async def call(self, ctx: af.Context | None, args: Mapping[str, Any]) -> dict[str, Any]:
        return {"double": args["n"] * 2}


async def test_hand_written_tools_are_validated_against_their_schema() -> None:
    registry = ToolRegistry([RawTool()])
    assert (await registry.call(None, "raw", {"n": 4})).output == {"double": 8}
    low = await registry.call(None, "raw", {"n": 0})
    assert low.error is not None
    assert (low.error["field"], low.error["expected"]) == ("n", "minimum 1")
    with pytest.raises(ValueError, match="invalid parameters schema"):
        registry.register(_BadSchema())


class _BadSchema(RawTool):
    name = "bad"
    parameters: Mapping[str, Any] = {"type": "nonsense"}


def test_registry_bookkeeping(registry: ToolRegistry) -> None:
    assert registry.names() == ["search", "plot", "explode", "sync_add", "slow"]
    assert "search" in registry and "nope" not in registry and len(registry) == 5
    assert [s.name for s in registry.specs()] == registry.names()
    assert registry.get("search") is search
    with pytest.raises(UnknownTool):
        registry.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(search)
    with pytest.raises(ToolArgumentError) as info:
        registry.check_arguments("search", {"q": 1})
    assert info.value.field == "q" and info.value.tool == "search"
    registry.check_arguments("search", {"q": "fine"})

    @registry.register
    async def plain(x: int) -> int:
        return x

    assert "plain" in registry and registry.get("plain").parameters["required"] == ["x"]
    assert registry.unregister("plain").name == "plain" and "plain" not in registry
    with pytest.raises(UnknownTool):
        registry.unregister("plain")


async def test_runner_event_with_bad_tool_calls_still_ends_with_a_result(
    registry: ToolRegistry, autojump_clock: Any
) -> None:
    @af.agent
    async def agent(ctx: af.Context, event: af.Event) -> Any:
        results = await registry.call_many(
            ctx, [("search", {"q": 1}), ("nope", {}), ("explode", {"reason": "x"})]
        )
        return [r.error["type"] if r.error else None for r in results]

    async with af.Runner(agents={"go": agent}) as runner:
        result = await runner.call(af.Event("go"))
    assert result.succeeded
    assert result.output == ["invalid_arguments", "unknown_tool", "tool_error"]


async def test_a_call_with_no_arguments_at_all_is_an_empty_object() -> None:
    @tool
    async def ping(verbose: bool = False) -> dict[str, Any]:
        return {"pong": True, "verbose": verbose}

    registry = ToolRegistry([ping])
    result = await registry.call(None, ToolCall.parse("c", "ping", ""))  # read-only mapping
    assert result.outcome == "ok" and result.output == {"pong": True, "verbose": False}


# --------------------------------------------------------------------------- fast path

LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.sampled_from(["red", "blue", "x", ""]),
)
JSON = st.recursive(
    LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["q", "n", "limit", "color", "tags", "p", "x", "reason", "zz"]),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=8,
)
NESTED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "q": {"type": ["string", "null"]},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "p": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "n": {"type": "integer"}},
            "required": ["x"],
            "additionalProperties": False,
        },
    },
    "required": ["q"],
    "additionalProperties": False,
}
FAST_SCHEMAS = [search.parameters, explode.parameters, NESTED, RawTool.parameters]


CONFUSABLE: dict[str, st.SearchStrategy[Any]] = {
    "string": st.sampled_from(["red", "blue", "x", ""]),
    "integer": st.one_of(st.integers(-3, 3), st.booleans(), st.sampled_from([1.0, 2.5])),
    "number": st.one_of(st.integers(-3, 3), st.floats(-3, 3), st.booleans()),
    "boolean": st.one_of(st.booleans(), st.integers(0, 1)),
    "null": st.one_of(st.none(), st.just(0), st.just("")),
    "array": st.lists(LEAF, max_size=3),
    "object": st.dictionaries(st.sampled_from(["x", "n"]), LEAF, max_size=2),
}


def near(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values close to valid for ``schema``: the right shape, often a confusable type."""
    if "enum" in schema:
        return st.sampled_from([*schema["enum"], "green", 1])
    if "properties" in schema:
        props = schema["properties"]
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: near(v) for k, v in props.items() if k in required},
            optional={
                **{k: near(v) for k, v in props.items() if k not in required},
                "zz": LEAF,
            },
        )
    if "items" in schema:
        return st.lists(st.one_of(near(schema["items"]), LEAF), max_size=3)
    kinds = schema.get("type", [])
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return st.one_of(*(CONFUSABLE[k] for k in kinds)) if kinds else LEAF


@settings(deadline=None, max_examples=400)
@given(schema=st.sampled_from(FAST_SCHEMAS), data=st.data())
def test_property_fast_check_never_accepts_what_jsonschema_rejects(
    schema: Mapping[str, Any], data: st.DataObject
) -> None:
    value = data.draw(st.one_of(near(schema), JSON))
    fast = compile_fast(schema)
    if fast is not None and fast(value):
        assert jsonschema.Draft202012Validator(schema).is_valid(value)


def test_fast_check_covers_plain_schemas_only() -> None:
    fast = compile_fast(search.parameters)  # string enum, integer, string
    assert fast is not None and fast({"q": "x", "color": "red"})
    assert not fast({"q": "x", "limit": True}) and not fast({"q": "x", "color": "green"})
    nested = compile_fast(NESTED)
    assert nested is not None and nested({"q": None, "tags": ["a"], "p": {"x": 1.5}})
    assert not nested({"q": "a", "p": {"x": 1, "y": 2}}) and not nested({"tags": []})
    assert compile_fast(RawTool.parameters) is None  # "minimum" is left to jsonschema
    assert compile_fast({"anyOf": [{"type": "string"}]}) is None


def test_tools_package_exports_exactly_its_public_names() -> None:
    import types

    import agentflow_trio.tools as pkg

    public = {
        name
        for name, value in vars(pkg).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(pkg.__all__) == public
    assert pkg.__all__ == sorted(pkg.__all__)
