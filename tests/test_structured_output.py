"""Structured output (`LLMClient.complete(..., output_type=T)`, `stream_output`) against the
real mock LLM over HTTP, with the real OpenAI, Azure and Ollama adapters.

Rules of this module: loopback only, port 0, the real clock (real sockets), and every
test body under an absolute ``trio.fail_after``. What the model was sent is read from the
mock's received bodies; the official ``openai`` SDK judges the OpenAI wire shapes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import attrs
import openai
import pytest
import trio

from agentflow_trio import progress
from agentflow_trio.config import LLMConfig, RetryConfig
from agentflow_trio.errors import ConfigError, OutputValidationError
from agentflow_trio.llm import (
    ChatRequest,
    ChatResponse,
    FakeProvider,
    LLMClient,
    ToolCall,
    _metering,
    collect_stream,
    open_llm_client,
    output,
    system,
    user,
)
from agentflow_trio.llm.output import OutputRefusedError, plan_for, strict_qualifies
from agentflow_trio.mockllm import MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.schema import TypeSchema
from agentflow_trio.testing import mock_llm_config

TIMEOUT = 10
NO_RETRY = RetryConfig(enabled=False)
MODES = ["native", "tool", "prompted"]


@attrs.frozen
class City:
    name: str
    population: int


@attrs.frozen
class Country:
    country: str
    capital: str


@attrs.frozen
class Town:
    name: str
    mayor: str | None = None  # optional: not strict-qualified


BAD_CITY = {"name": "Paris", "population": "lots"}
GOOD_CITY = {"name": "Paris", "population": 2_100_000}


@asynccontextmanager
async def client(
    dialect: str = "openai", **mock_config: Any
) -> AsyncIterator[tuple[MockLLM, LLMClient]]:
    async with (
        open_mock_llm(**mock_config) as mock,
        open_llm_client(mock_llm_config(mock, dialect, retry=NO_RETRY)) as llm,
    ):
        yield mock, llm


def reply(value: Any, mode: str, *, call_id: str = "call_out") -> MockReply:
    """``value`` as the mode's answer: JSON text, or a ``final_result`` call."""
    if mode == "tool":
        return MockReply(tool_calls=(MockToolCall("final_result", value, id=call_id),))
    return MockReply(text=json.dumps(value))


def text_of(message: dict[str, Any]) -> str:
    return str(message.get("content") or "")


# -- the done-means: invalid, then valid, in each mode ------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_invalid_then_valid_returns_the_type_after_one_retry(mode: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            mock.script(reply(BAD_CITY, mode), reply(GOOD_CITY, mode))
            city = await llm.complete(
                [system("You know cities."), user("The capital of France?")],
                output_type=City,
                output_mode=mode,
            )
            assert city == City(**GOOD_CITY)
            first, second = mock.received
    schema = TypeSchema(City).json_schema
    if mode == "native":
        assert first["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "City", "schema": schema, "strict": True},
        }
        assert "tools" not in first
    elif mode == "tool":
        assert first["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "final_result",
                    "description": plan_for(City).tool.description,
                    "parameters": schema,
                },
            }
        ]
        assert first["tool_choice"] == {"type": "function", "function": {"name": "final_result"}}
        assert "response_format" not in first
    else:
        assert "response_format" not in first and "tools" not in first
        (instruction,) = [m for m in first["messages"] if m["role"] == "system"]
        assert instruction["content"].startswith("You know cities.")
        assert json.dumps(schema, separators=(",", ":")) in instruction["content"]
    # The second request is the first plus the reply and its problems.
    assert second["messages"][: len(first["messages"])] == first["messages"]
    added = second["messages"][len(first["messages"]) :]
    if mode == "tool":
        assistant, answer = added
        (call,) = assistant["tool_calls"]
        assert call["function"]["name"] == "final_result"
        assert json.loads(call["function"]["arguments"]) == BAD_CITY
        assert answer["role"] == "tool" and answer["tool_call_id"] == call["id"] == "call_out"
        error = text_of(answer)
    else:
        assistant, retry = added
        assert assistant == {"role": "assistant", "content": json.dumps(BAD_CITY)}
        assert retry["role"] == "user"
        error = text_of(retry)
    assert "field 'population'" in error
    assert "expected integer" in error
    assert "got 'lots'" in error


@pytest.mark.parametrize("mode", MODES)
async def test_no_retries_raises_with_the_raw_reply(mode: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            mock.script(reply(BAD_CITY, mode), reply(GOOD_CITY, mode))
            with pytest.raises(OutputValidationError) as caught:
                await llm.complete("capital?", output_type=City, output_mode=mode, output_retries=0)
            assert mock.stats().chat == 1
    error = caught.value
    (raw,) = error.attempts
    assert json.loads(raw) == BAD_CITY
    (problem,) = error.problems
    assert (problem["field"], problem["expected"], problem["got"]) == (
        "population",
        "integer",
        "'lots'",
    )


async def test_every_reply_is_kept_when_all_retries_fail() -> None:
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            mock.script(
                MockReply(text="Paris, I think."),
                MockReply(text='{"name": "Paris"}'),
                MockReply(text=json.dumps(BAD_CITY)),
            )
            with pytest.raises(OutputValidationError) as caught:
                await llm.complete("capital?", output_type=City, output_retries=2)
            assert mock.stats().chat == 3
            second_ask = text_of(mock.received[1]["messages"][-1])
    assert caught.value.attempts == ("Paris, I think.", '{"name": "Paris"}', json.dumps(BAD_CITY))
    assert caught.value.problems[0]["field"] == "population"
    assert "not valid JSON" in second_ask  # the first reply's problem, worded for the model


async def test_client_defaults_come_from_the_client_and_each_attempt_is_metered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[ChatRequest] = []
    metered = _metering.complete

    async def counting(provider: Any, request: ChatRequest) -> ChatResponse:
        calls.append(request)
        return await metered(provider, request)

    monkeypatch.setattr(_metering, "complete", counting)
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            config = mock_llm_config(mock, retry=NO_RETRY)
            async with open_llm_client(config) as base:
                llm = LLMClient(base.provider, output_mode="prompted", output_retries=2)
                mock.script(*(MockReply(text="no") for _ in range(2)), reply(GOOD_CITY, "x"))
                assert await llm.complete("capital?", output_type=City) == City(**GOOD_CITY)
    assert len(calls) == 3  # the first try and two re-asks, each through _metering
    assert all(r.messages[0].role == "system" for r in calls)


# -- tool mode: replies that are not the final_result call --------------------------------


async def test_tool_mode_text_reply_and_wrong_tool_are_re_asked() -> None:
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            mock.script(
                MockReply(text="Paris has about two million people."),
                MockReply(tool_calls=(MockToolCall("search", {"q": "Paris"}, id="call_s"),)),
                reply(GOOD_CITY, "tool"),
            )
            city = await llm.complete(
                "capital?", output_type=City, output_mode="tool", output_retries=2
            )
            assert city == City(**GOOD_CITY)
            _, second, third = mock.received
    assert second["messages"][-1]["role"] == "user"
    assert "a call of the final_result tool" in text_of(second["messages"][-1])
    assistant, answer = third["messages"][-2:]
    assert assistant["tool_calls"][0]["function"]["name"] == "search"
    assert answer["role"] == "tool" and answer["tool_call_id"] == "call_s"
    assert "tool call(s) search" in text_of(answer)


# -- types: unions, lists, Literals; the mock answering what the schema asks --------------


@pytest.mark.parametrize("mode", MODES)
async def test_list_literal_and_union_types(mode: str) -> None:
    def answer(value: Any) -> MockReply:
        return reply(value if mode == "prompted" else {"result": value}, mode)

    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            mock.script(
                answer([GOOD_CITY, {"name": "Lyon", "population": 520_000}]),
                answer("no"),
                answer({"country": "France", "capital": "Paris"}),
                answer(GOOD_CITY),
            )
            cities = await llm.complete("cities?", output_type=list[City], output_mode=mode)
            verdict = await llm.complete(
                "yes or no?", output_type=Literal["yes", "no"], output_mode=mode
            )
            either = City | Country
            country = await llm.complete("a country?", output_type=either, output_mode=mode)
            city = await llm.complete("a city?", output_type=either, output_mode=mode)
            bodies = list(mock.received)
    assert cities == [City(**GOOD_CITY), City("Lyon", 520_000)]
    assert verdict == "no"
    assert country == Country("France", "Paris")
    assert city == City(**GOOD_CITY)
    if mode == "native":
        wire = bodies[0]["response_format"]["json_schema"]
        assert wire["schema"]["required"] == ["result"]
        assert wire["schema"]["properties"]["result"] == TypeSchema(list[City]).json_schema
        assert wire["strict"] is True
    if mode == "tool":
        parameters = bodies[1]["tools"][0]["function"]["parameters"]
        assert parameters["properties"]["result"] == {"type": "string", "enum": ["yes", "no"]}


async def test_a_wrapped_value_outside_result_is_re_asked_with_the_path() -> None:
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            mock.script(
                MockReply(text='{"result": [{"name": "Paris", "population": "many"}]}'),
                MockReply(text=json.dumps({"result": [GOOD_CITY]})),
            )
            assert await llm.complete("cities?", output_type=list[City]) == [City(**GOOD_CITY)]
            error = text_of(mock.received[1]["messages"][-1])
    assert "field 'result[0].population'" in error


# Ollama has no tool_choice: a forced call cannot be asked for, so it is native only.
@pytest.mark.parametrize(
    ("dialect", "mode"),
    [
        ("openai", "native"),
        ("openai", "tool"),
        ("azure", "native"),
        ("azure", "tool"),
        ("ollama", "native"),
    ],
)
async def test_unscripted_mock_answers_the_schema(dialect: str, mode: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with client(dialect) as (mock, llm):
            assert llm.native_output  # every one of these wires speaks the native mode
            city = await llm.complete("a city?", output_type=City, output_mode=mode)
            towns = await llm.complete("towns?", output_type=list[Town], output_mode=mode)
            body = mock.received[0]
    assert isinstance(city, City) and isinstance(city.population, int)
    assert towns and all(isinstance(t, Town) for t in towns)
    if mode == "native" and dialect == "ollama":
        assert body["format"] == TypeSchema(City).json_schema
        assert "response_format" not in body
    elif mode == "native":
        assert body["response_format"]["json_schema"]["schema"] == TypeSchema(City).json_schema


# -- refusals are errors at once -----------------------------------------------------------


@pytest.mark.parametrize(
    "refusal",
    [
        MockReply(refusal="I can't help with that."),
        MockReply(text="{", finish_reason="content_filter"),
    ],
    ids=["refusal", "content_filter"],
)
async def test_a_refusal_raises_at_once(refusal: MockReply) -> None:
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            mock.script(refusal, reply(GOOD_CITY, "native"))
            with pytest.raises(OutputRefusedError) as caught:
                await llm.complete("capital?", output_type=City, output_retries=3)
            assert mock.stats().chat == 1
            mock.reset()  # drops the good reply left in the script
            mock.script(refusal, reply(GOOD_CITY, "native"))
            with pytest.raises(OutputRefusedError):
                async with llm.stream_output("capital?", output_type=City) as stream:
                    async for _ in stream:
                        pass
    if refusal.refusal is not None:
        assert caught.value.refusal == refusal.refusal
    else:
        assert caught.value.finish_reason == "content_filter"


# -- streaming --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_stream_output_yields_growing_partials_then_the_value(mode: str) -> None:
    sink, items = progress.open_progress_channel(100)
    with trio.fail_after(TIMEOUT):
        async with client(stream_chunks=12) as (mock, llm):
            mock.script(reply(GOOD_CITY, mode))
            with progress.using_sink(sink):
                async with llm.stream_output("a city?", output_type=City, output_mode=mode) as s:
                    partials = [partial async for partial in s]
                    assert s.output == City(**GOOD_CITY)
                    assert await s.result() == City(**GOOD_CITY)
            sink.close()
            sent = []
            while True:
                try:
                    item = items.receive_nowait()
                except trio.EndOfChannel:
                    break
                if isinstance(item, progress.PartialOutput):
                    sent.append(item.value)
    assert len(partials) >= 3
    assert partials[-1] == GOOD_CITY
    assert all(a != b for a, b in itertools.pairwise(partials))
    sizes = [len(json.dumps(p)) for p in partials]
    assert sizes == sorted(sizes)  # each partial as much as the stream so far, or more
    assert sent == partials


async def test_stream_output_re_asks_and_restarts_the_partials() -> None:
    with trio.fail_after(TIMEOUT):
        async with client(stream_chunks=6) as (mock, llm):
            mock.script(reply(BAD_CITY, "native"), reply(GOOD_CITY, "native"))
            async with llm.stream_output("a city?", output_type=City) as stream:
                partials = [partial async for partial in stream]
                assert stream.attempt == 2
                assert stream.output == City(**GOOD_CITY)
            assert stream.attempts == [json.dumps(BAD_CITY), json.dumps(GOOD_CITY)]
            assert mock.received[1]["stream"] is True
            assert "field 'population'" in text_of(mock.received[1]["messages"][-1])
    assert BAD_CITY in partials and partials[-1] == GOOD_CITY
    assert partials.index(BAD_CITY) < len(partials) - 1


async def test_stream_output_without_retries_raises_and_result_needs_no_loop() -> None:
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            mock.script(reply(BAD_CITY, "tool"), reply(GOOD_CITY, "tool"))
            async with llm.stream_output(
                "a city?", output_type=City, output_mode="tool", output_retries=0
            ) as stream:
                with pytest.raises(RuntimeError):
                    _ = stream.output  # not ended yet
                with pytest.raises(OutputValidationError) as caught:
                    await stream.result()
            assert [json.loads(raw) for raw in caught.value.attempts] == [BAD_CITY]
            mock.script(reply(GOOD_CITY, "tool"))
            async with llm.stream_output("again", output_type=City, output_mode="tool") as stream:
                assert await stream.result() == City(**GOOD_CITY)


async def test_leaving_a_stream_output_early_closes_the_model_stream() -> None:
    with trio.fail_after(TIMEOUT):
        async with client(stream_chunks=20, stream_delay=0.01) as (mock, llm):
            mock.script(reply({"name": "P" * 200, "population": 1}, "native"))
            async with llm.stream_output("a city?", output_type=City) as stream:
                async for _ in stream:
                    break
            await llm.complete("still usable?")
            with trio.move_on_after(0.05) as scope:  # cancelled mid-stream
                async with llm.stream_output("a city?", output_type=City) as stream:
                    async for _ in stream:
                        await trio.sleep(1)
            assert scope.cancelled_caught


# -- the wire: what the official SDK sends, and the adapters --------------------------------


def _strip_titles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_titles(v) for k, v in value.items() if k != "title"}
    if isinstance(value, list):
        return [_strip_titles(v) for v in value]
    return value


async def test_native_wire_body_is_what_the_openai_sdk_sends() -> None:
    pydantic = pytest.importorskip("pydantic")
    from openai.lib._parsing._completions import type_to_response_format_param
    from openai.types.shared import ResponseFormatJSONSchema

    class PydanticCity(pydantic.BaseModel):  # the SDK's own schema for the same shape
        name: str
        population: int

    sdk_format = _strip_titles(type_to_response_format_param(PydanticCity))
    sdk_format["json_schema"]["name"] = "City"
    messages = [{"role": "user", "content": "capital?"}]
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            sdk = openai.AsyncOpenAI(
                base_url=mock.url + "/v1", api_key="sk-test", max_retries=0, timeout=TIMEOUT
            )
            async with sdk:
                completion = await sdk.chat.completions.create(
                    model=llm_model(mock), messages=messages, response_format=sdk_format
                )
                sdk_city = json.loads(completion.choices[0].message.content or "")
                city = await llm.complete("capital?", output_type=City)
                # The tool mode's body against the SDK's for the same tool and choice.
                plan = plan_for(City)
                tool = {
                    "type": "function",
                    "function": {
                        "name": "final_result",
                        "description": plan.tool.description,
                        "parameters": plan.wire_schema,
                    },
                }
                choice = {"type": "function", "function": {"name": "final_result"}}
                await sdk.chat.completions.create(
                    model=llm_model(mock), messages=messages, tools=[tool], tool_choice=choice
                )
                await llm.complete("capital?", output_type=City, output_mode="tool")
            sdk_body, our_body, sdk_tool_body, our_tool_body = mock.received
    assert our_body == sdk_body
    assert our_body["response_format"] == sdk_format
    ResponseFormatJSONSchema.model_validate(our_body["response_format"])
    assert City(**sdk_city) == city
    assert our_tool_body == sdk_tool_body


def llm_model(mock: MockLLM) -> str:
    return str(mock_llm_config(mock).model)


async def test_strict_only_for_schemas_that_qualify() -> None:
    assert plan_for(City).strict
    assert not plan_for(Town).strict  # mayor has a default: not required
    assert not plan_for(dict[str, int]).strict  # additionalProperties is a schema
    assert plan_for(Literal["a", "b"]).strict  # wrapped in an object that qualifies
    assert not strict_qualifies({"type": "array", "items": {"type": "string"}})
    assert not strict_qualifies({"type": "object", "properties": {"x": {}}, "required": ["x"]})
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            await llm.complete("a town?", output_type=Town)
            spec = mock.received[0]["response_format"]["json_schema"]
    assert spec["strict"] is False and spec["name"] == "Town"


async def test_plans_are_built_once_per_type() -> None:
    assert plan_for(City) is plan_for(City)
    assert plan_for(list[City]) is plan_for(list[City])
    ready = TypeSchema(City, name="Ville")
    assert plan_for(ready).schema is ready and plan_for(ready).name == "Ville"
    assert plan_for(City | Country).name == "output"  # a union has no __name__


async def test_cached_tokens_reach_usage_in_both_shapes() -> None:
    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            mock.script(
                MockReply(text="hi", cached_tokens=7), MockReply(text="hi", cached_tokens=5)
            )
            response = await llm.complete("hello")
            async with llm.stream("hello") as chunks:
                streamed = await collect_stream(chunks)
            plain = await llm.complete("hello")
    assert response.usage is not None and response.usage.cached_tokens == 7
    assert streamed.usage is not None and streamed.usage.cached_tokens == 5
    assert plain.usage is not None and plain.usage.cached_tokens == 0


# -- choosing the mode ----------------------------------------------------------------------


async def test_auto_mode_follows_what_the_transport_says() -> None:
    fake = FakeProvider.scripted([json.dumps(GOOD_CITY)])
    assert await LLMClient(fake).complete("x", output_type=City) == City(**GOOD_CITY)
    assert fake.requests[0].response_format is not None

    call = ToolCall.parse("c1", "final_result", json.dumps(GOOD_CITY))
    fake = FakeProvider.scripted([ChatResponse("", (call,), "tool_calls")])
    llm = LLMClient(fake, native_output=False)
    assert await llm.complete("x", output_type=City) == City(**GOOD_CITY)
    assert fake.requests[0].tool_choice == "final_result"
    assert output.speaks_native(object()) is None
    with pytest.raises(ValueError, match="output_mode"):
        LLMClient(fake, output_mode="json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_retries"):
        await llm.complete("x", output_type=City, output_retries=-1)


async def test_a_router_decides_native_from_its_deployments_config() -> None:
    from agentflow_trio.config import DeploymentConfig

    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:

            def deployment(model: str) -> DeploymentConfig:
                return DeploymentConfig(
                    provider="openai", api_key="sk-test", model=model, base_url=mock.url + "/v1"
                )

            config = LLMConfig(deployments={"a": deployment("ma"), "b": deployment("mb")})
            async with open_llm_client(config) as llm:
                assert llm.native_output
                city = await llm.complete("a city?", output_type=City)
    assert isinstance(city, City)
    assert mock.received[0]["response_format"]["json_schema"]["name"] == "City"


async def test_open_llm_client_reads_output_settings_from_the_config() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            config = mock_llm_config(mock, retry=NO_RETRY)
            config = attrs.evolve(config, output_mode="tool", output_retries=0)
            async with open_llm_client(config) as llm:
                assert (llm.output_mode, llm.output_retries) == ("tool", 0)
            with pytest.raises((ConfigError, ValueError)):
                async with open_llm_client(attrs.evolve(config, output_mode="bogus")):
                    pass


def test_response_format_is_part_of_the_cache_key() -> None:
    plain = ChatRequest((user("x"),))
    shaped = ChatRequest((user("x"),), response_format=plan_for(City).response_format)
    other = ChatRequest((user("x"),), response_format=plan_for(Town).response_format)
    assert len({plain.to_cache_key(), shaped.to_cache_key(), other.to_cache_key()}) == 3
    assert shaped.with_model("m").response_format == shaped.response_format


# -- pydantic models and dataclasses (the shared TypeSchema supports them) -----------------


async def test_pydantic_and_dataclass_output_types() -> None:
    pydantic = pytest.importorskip("pydantic")
    from openai.lib._parsing._completions import type_to_response_format_param

    class Mayor(pydantic.BaseModel):
        name: str

    class PCity(pydantic.BaseModel):
        name: str
        population: Annotated[int, pydantic.Field(ge=1)]

    class NCity(pydantic.BaseModel):
        name: str
        mayor: Mayor

    @dataclasses.dataclass
    class DCity:
        name: str
        tags: list[str] = dataclasses.field(default_factory=list)

    with trio.fail_after(TIMEOUT):
        async with client() as (mock, llm):
            sdk = openai.AsyncOpenAI(
                base_url=mock.url + "/v1", api_key="sk-test", max_retries=0, timeout=TIMEOUT
            )
            async with sdk:
                await sdk.chat.completions.create(
                    model=llm_model(mock),
                    messages=[{"role": "user", "content": "a city?"}],
                    response_format=type_to_response_format_param(PCity),
                )
            mock.script(
                MockReply(text='{"name": "Paris", "population": 0}'),
                MockReply(text='{"name": "Paris", "population": 2}'),
            )
            city = await llm.complete("a city?", output_type=PCity)
            nested = await llm.complete("a city?", output_type=NCity, output_mode="tool")
            plain = await llm.complete("a city?", output_type=DCity)
            sdk_body, first, second, *_ = mock.received
    assert city == PCity(name="Paris", population=2)
    assert isinstance(nested, NCity) and isinstance(nested.mayor, Mayor)
    assert isinstance(plain, DCity) and isinstance(plain.tags, list)
    # A pydantic model goes out exactly as the SDK sends it (strict, closed objects).
    assert first == sdk_body
    assert first["response_format"]["json_schema"]["strict"] is True
    error = text_of(second["messages"][-1])
    assert "field 'population'" in error and "got 0" in error and "1" in error


def test_the_example_runs_against_the_built_in_mock() -> None:
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "structured_output.py"
    done = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "native mode: City(name='Paris', country='France', population=2102650)" in done.stdout
    assert "field 'population': expected integer, got 'lots'" in done.stdout
    assert "agent:       succeeded City(name='Lyon'" in done.stdout


@pytest.mark.parametrize(
    ("text", "partial"),
    [
        ('{"population": 21', {}),  # 21 of 2100000: left out until the number ends
        ('{"population": 2100000,', {"population": 2100000}),
        ('{"name": "room 21', {"name": "room 21"}),  # digits inside a string stay
        ('{"xs": [1, 2', {"xs": [1]}),
        ('{"name": "a``', {"name": "a``"}),  # backticks are trimmed only after a fence
        ('```json\n{"name": "Pa', {"name": "Pa"}),
    ],
)
def test_partials_never_show_a_number_still_streaming(text: str, partial: Any) -> None:
    from agentflow_trio.llm._output_stream import _partial

    assert _partial(text) == partial
