"""A router group mixing vendors: an OpenAI deployment failing over to an Anthropic one
(and back), end to end over real HTTP against the mock LLM, which serves both wires.

Rules of this module: loopback only, port 0, the real clock, an absolute
``trio.fail_after`` around every test. Group ``smart``: deployment ``gpt`` (OpenAI chat,
model ``gpt-mock``, weight 1,000,000, so always tried first) and ``claude`` (Anthropic
Messages, model ``claude-mock``, weight 1). The mock injects faults into one model only.
What must hold: the answer, ``ChatResponse.deployment`` / ``model`` and the usage (the
answering attempt's alone, as the mock reported it in that vendor's shape) say which
vendor answered; a stream restarts on the other vendor before its first chunk.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import agentflow_trio as af
from agentflow_trio.config import (
    DeploymentConfig,
    LLMConfig,
    RetryConfig,
    RouterConfig,
    load_config,
)
from agentflow_trio.errors import ConfigError, IncompleteStreamError, LLMError
from agentflow_trio.llm import (
    ChatRequest,
    ChatResponse,
    ProviderStack,
    StreamChunk,
    ToolCall,
    Usage,
    collect_stream,
    open_llm_client,
    open_provider,
    system,
    user,
)
from agentflow_trio.llm.types import ProviderItem, ToolCallDelta
from agentflow_trio.mockllm import Fault, MockLLM, MockReply, MockToolCall, open_mock_llm
from agentflow_trio.tools import ToolRegistry, tool, tool_agent

TIMEOUT = 20
REQUEST = ChatRequest((system("Be brief."), user("hello")), model="smart")
REPLY = "Hello from the mock LLM."
FAST_RETRY = RetryConfig(max_attempts=2, base_delay=0.05, max_delay=0.2)
GPT, CLAUDE = "gpt-mock", "claude-mock"


def deployments(mock: MockLLM, first: str = "gpt") -> dict[str, DeploymentConfig]:
    """``gpt`` (OpenAI) and ``claude`` (Anthropic) in group ``smart``; ``first`` is the
    heavy one, tried first."""
    weights = {"gpt": 1, "claude": 1}
    weights[first] = 1_000_000
    common: dict[str, Any] = {"group": "smart", "retry": FAST_RETRY, "request_timeout": 5.0}
    return {
        "gpt": DeploymentConfig(
            provider="openai",
            model=GPT,
            base_url=mock.url + "/v1",
            api_key="sk-test",
            weight=weights["gpt"],
            **common,
        ),
        "claude": DeploymentConfig(
            provider="anthropic",
            model=CLAUDE,
            base_url=mock.url,
            api_key="sk-ant-test",
            weight=weights["claude"],
            **common,
        ),
    }


def config_of(mock: MockLLM, first: str = "gpt") -> LLMConfig:
    router = RouterConfig(first_token_timeout=1.0, stream_idle_timeout=1.0)
    return LLMConfig(deployments=deployments(mock, first), router=router)


@asynccontextmanager
async def routed(
    faults: dict[str, tuple[Fault, ...]], first: str = "gpt", **mock_config: Any
) -> AsyncIterator[tuple[ProviderStack, MockLLM]]:
    async with open_mock_llm(faults=faults, **mock_config) as mock:
        async with open_provider(config_of(mock, first)) as stack:
            yield stack, mock


def stats(stack: ProviderStack, name: str) -> Any:
    assert stack.router is not None
    return next(d for d in stack.router.statistics().deployments if d.name == name)


async def read(stack: ProviderStack, request: ChatRequest = REQUEST) -> list[StreamChunk]:
    async with stack.stream(request) as chunks:
        return [chunk async for chunk in chunks]


async def anthropic_usage(mock: MockLLM) -> Usage:
    """What the Anthropic wire reports for `REQUEST` (asked of the mock directly)."""
    async with open_provider(config_of(mock).deployment_configs()["claude"]) as claude:
        response = await claude.complete(REQUEST.with_model(None))
    assert response.usage is not None
    return response.usage


# --------------------------------------------------------------------------- calls

OPENAI_FAULTS = [
    ("server_error_503", Fault("server_error", status=503), "server_error"),
    ("rate_limit", Fault("rate_limit", retry_after=1.0), "rate_limit"),
    ("reset", Fault("reset"), "connection"),
    ("malformed", Fault("malformed"), "bad_response"),
]


@pytest.mark.parametrize(
    ("fault", "kind"), [c[1:] for c in OPENAI_FAULTS], ids=[c[0] for c in OPENAI_FAULTS]
)
async def test_openai_fails_and_anthropic_answers(fault: Fault, kind: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with routed({GPT: (fault,)}) as (stack, mock):
            response = await stack.complete(REQUEST)
            gpt = stats(stack, "gpt")
            expected = await anthropic_usage(mock)
            body = mock.received[1]
    assert (response.text, response.deployment, response.model) == (REPLY, "claude", CLAUDE)
    assert response.usage == expected  # the Anthropic attempt's usage, in our terms
    assert (gpt.failures, gpt.failovers) == ({kind: 1}, 1)
    # the request went out in the Messages shape: system apart, max_tokens set
    assert body["system"] == "Be brief." and body["model"] == CLAUDE
    assert body["messages"] == [{"role": "user", "content": "hello"}]


async def test_anthropic_overloaded_fails_over_to_openai() -> None:
    with trio.fail_after(TIMEOUT):
        async with routed({CLAUDE: (Fault("server_error", status=529),)}, first="claude") as (
            stack,
            mock,
        ):
            response = await stack.complete(REQUEST)
            claude = stats(stack, "claude")
    assert (response.deployment, response.model) == ("gpt", GPT)
    assert claude.failures == {"server_error": 1} and claude.failovers == 1
    assert mock.stats().by_model == {CLAUDE: 1, GPT: 1}  # no retry of the overloaded one


async def test_the_answering_vendor_is_in_the_runs_usage() -> None:
    @af.agent
    async def ask(ctx: af.Context, event: af.Event) -> str:
        response = await ctx.llm.complete([user(event.data["q"])], model="smart")
        return response.text

    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm(faults={GPT: (Fault("server_error", status=503),)}) as mock,
            open_llm_client(config_of(mock)) as llm,
            af.Runner(agents={"ask": ask}, llm=llm) as runner,
        ):
            result = await runner.call(af.Event("ask", {"q": "hello"}))
    assert result.succeeded, result.error
    assert result.output == REPLY
    usage = result.usage
    assert usage is not None and usage.requests == 1
    assert set(usage.by_model) == {CLAUDE} and set(usage.by_deployment) == {"claude"}
    assert usage.input_tokens > 0 and usage.output_tokens > 0


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize(
    "fault",
    [
        Fault("server_error", status=503),
        Fault("reset"),
        Fault("slow_first_token", seconds=5.0),
        Fault("stream_error", after_chunks=0, status=500),
    ],
    ids=["server_error", "reset", "slow_first_token", "stream_error_first"],
)
async def test_a_stream_restarts_on_anthropic_before_its_first_chunk(fault: Fault) -> None:
    with trio.fail_after(TIMEOUT):
        async with routed({GPT: (fault,)}, stream_chunks=4) as (stack, mock):
            chunks = await read(stack)
            expected = await anthropic_usage(mock)
    assert "".join(c.delta_text for c in chunks) == REPLY
    final = [c for c in chunks if c.finish_reason is not None]
    assert len(final) == 1 and final[0].finish_reason == "stop"
    assert (final[0].deployment, final[0].model) == ("claude", CLAUDE)
    assert final[0].usage == expected


async def test_an_anthropic_error_event_after_the_first_chunk_ends_the_stream_typed() -> None:
    fault = Fault("stream_error", after_chunks=5, status=529)
    mock_config = {"stream_chunks": 6, "stream_delay": 0.05}  # one event per read
    with trio.fail_after(TIMEOUT):
        async with routed({CLAUDE: (fault,)}, first="claude", **mock_config) as (stack, mock):
            got: list[StreamChunk] = []
            with pytest.raises(IncompleteStreamError) as caught:
                async with stack.stream(REQUEST) as chunks:
                    async for chunk in chunks:
                        got.append(chunk)
    # never a truncated success, and never the other vendor's text after the first's
    assert got and all(c.finish_reason is None for c in got)
    assert caught.value.delivered_chunks == len(got)
    assert isinstance(caught.value.__cause__, LLMError)
    assert mock.stats().by_model == {CLAUDE: 1}


async def test_an_error_event_before_any_chunk_reached_the_caller_restarts_on_openai() -> None:
    fault = Fault("stream_error", after_chunks=2, status=529)
    with trio.fail_after(TIMEOUT):
        async with routed({CLAUDE: (fault,)}, first="claude") as (stack, mock):
            chunks = await read(stack)
            claude = stats(stack, "claude")
    assert "".join(c.delta_text for c in chunks) == REPLY
    assert chunks[-1].deployment == "gpt" and chunks[-1].model == GPT
    assert claude.failures == {"server_error": 1}
    assert mock.stats().by_model == {CLAUDE: 1, GPT: 1}


# --------------------------------------------------------------------------- a tool turn


async def test_a_tool_turn_started_on_openai_is_finished_on_anthropic() -> None:
    """The first step (tool calls) is OpenAI's; OpenAI then fails, and Anthropic gets the
    whole transcript, OpenAI's call ids included, in its own shape."""
    log: list[str] = []

    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        log.append(city)
        return {"city": city, "temp_c": 18}

    agent = tool_agent(tools=ToolRegistry([weather]), request_fields={"model": "smart"})
    calls = (
        MockToolCall("weather", {"city": "Paris"}, id="call_p"),
        MockToolCall("weather", {"city": "Rome"}, id="call_r"),
    )
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm() as mock,
            open_llm_client(config_of(mock)) as llm,
            af.Runner(agents={"ask": agent}, llm=llm) as runner,
        ):
            mock.script(
                MockReply(tool_calls=calls, model=GPT),
                MockReply(fault=Fault("server_error", status=503), model=GPT),  # step 2 fails
                MockReply(text="Both 18C.", model=CLAUDE),
            )
            result = await runner.call(af.Event("ask", {"query": "Paris and Rome?"}))
            bodies = list(mock.received)
    assert result.succeeded, result.error
    assert result.output["text"] == "Both 18C." and sorted(log) == ["Paris", "Rome"]
    by_model = result.usage.by_model if result.usage is not None else {}
    assert set(by_model) == {GPT, CLAUDE}
    claude_body = bodies[-1]
    assert claude_body["model"] == CLAUDE
    turn, results = claude_body["messages"][-2:]
    assert [b["id"] for b in turn["content"]] == ["call_p", "call_r"]
    assert [b["tool_use_id"] for b in results["content"]] == ["call_p", "call_r"]


# --------------------------------------------------------------------------- vendor items

THINK = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
REASON = {"reasoning": {"effort": "low", "summary": "auto"}}
ITEM_GROUPS = {
    "anthropic": [("anthropic", CLAUDE)],
    "anthropic+openai": [("anthropic", CLAUDE), ("openai", GPT)],
    "responses": [("openai_responses", GPT)],
    "responses+anthropic": [("openai_responses", GPT), ("anthropic", CLAUDE)],
}


def item_group(mock: MockLLM, members: list[tuple[str, str]]) -> LLMConfig:
    """Group ``smart`` of ``members`` (provider, model); the first one always answers."""
    deployments = {
        f"d{index}": DeploymentConfig(
            provider=provider,  # type: ignore[arg-type]
            model=model,
            base_url=mock.url if provider == "anthropic" else mock.url + "/v1",
            api_key="sk-test",
            group="smart",
            weight=1_000_000 if index == 0 else 1,
            retry=RetryConfig(enabled=False),
        )
        for index, (provider, model) in enumerate(members)
    }
    return LLMConfig(deployments=deployments)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("members", list(ITEM_GROUPS))
async def test_thinking_and_reasoning_survive_a_router_group_across_a_tool_turn(
    members: str, stream: bool
) -> None:
    """The router passes ``items`` through (plain and on a stream's last chunk), so the
    tool loop sends the thinking block / reasoning item back: the mock refuses an
    Anthropic tool turn without its signed thinking block."""
    first = ITEM_GROUPS[members][0][0]
    log: list[str] = []

    @tool
    async def weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        log.append(city)
        return {"city": city, "temp_c": 18}

    extra = THINK if first == "anthropic" else REASON
    fields = {"model": "smart", "max_tokens": 2048, "extra": extra}
    agent = tool_agent(tools=ToolRegistry([weather]), request_fields=fields)
    event = af.Event("ask", {"query": "Paris?"})
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm(stream_chunks=3) as mock,
            open_llm_client(item_group(mock, ITEM_GROUPS[members])) as llm,
            af.Runner(agents={"ask": agent}, llm=llm) as runner,
        ):
            call = MockToolCall("weather", {"city": "Paris"}, id="call_w")
            mock.script(
                MockReply(tool_calls=(call,), thinking="Look it up."), MockReply(text="18C.")
            )
            if stream:
                async with runner.stream(event) as items:
                    seen = [item async for item in items]
                final = seen[-1]
                assert isinstance(final, af.FinalResult)
                result = final.result
            else:
                result = await runner.call(event)
            second = mock.received[1]
    assert result.succeeded, result.error
    assert result.output["text"] == "18C." and log == ["Paris"]
    turn = result.output["transcript"][-3]
    assert turn.role == "assistant" and turn.items, "the router dropped the vendor items"
    if first == "anthropic":
        sent = second["messages"][1]["content"][0]
        assert (sent["type"], sent["thinking"]) == ("thinking", "Look it up.")
    else:
        (reasoning,) = [i for i in second["input"] if i.get("type") == "reasoning"]
        assert reasoning["summary"][0]["text"] == "Look it up."


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_routed_responses_answer_keeps_its_response_id(stream: bool) -> None:
    request = ChatRequest((user("hello"),), model="smart", extra=REASON)
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm() as mock,
            open_provider(item_group(mock, ITEM_GROUPS["responses"])) as stack,
        ):
            if stream:
                async with stack.stream(request) as chunks:
                    response = await collect_stream(chunks)
            else:
                response = await stack.complete(request)
            body = mock.received[0]
    assert response.response_id.startswith("resp_") and response.deployment == "d0"
    assert [i.data["type"] for i in response.items] == ["reasoning", "message"]
    assert body["reasoning"] == REASON["reasoning"]


class _EveryField:
    """A transport whose answers set every field of `ChatResponse` / `StreamChunk` to a
    value other than its default (so a field the router forgets shows)."""

    def __init__(self) -> None:
        item = (ProviderItem("x", {"type": "x"}),)
        self.response = ChatResponse(
            "t",
            (ToolCall("c", "f"),),
            "stop",
            Usage(1, 2, 3, 1, 1),
            "m",
            {"r": 1},
            "",
            "no",
            item,
            "resp_1",
        )
        self.chunk = StreamChunk(
            "t",
            (ToolCallDelta(0, "c", "f", "{}"),),
            "stop",
            Usage(1, 2, 3),
            "m",
            "",
            "no",
            item,
            "resp_1",
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        await trio.lowlevel.checkpoint()
        return self.response

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        async def chunks() -> AsyncIterator[StreamChunk]:
            yield self.chunk

        yield chunks()

    async def embed(self, request: Any) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_the_router_passes_every_field_of_an_answer_through() -> None:
    """Every field the transport set comes out; only ``deployment`` is the router's."""
    transport = _EveryField()
    config = LLMConfig(deployments={"d": DeploymentConfig(provider="fake", group="g")})
    with trio.fail_after(TIMEOUT):
        async with open_provider(config, transports={"d": transport}) as stack:
            response = await stack.complete(ChatRequest((user("x"),), model="g"))
            async with stack.stream(ChatRequest((user("x"),), model="g")) as chunks:
                (chunk,) = [c async for c in chunks]
    assert response == attrs.evolve(transport.response, deployment="d")
    assert chunk == attrs.evolve(transport.chunk, deployment="d")
    for field in attrs.fields(ChatResponse):
        if field.name != "deployment":
            assert getattr(response, field.name) == getattr(transport.response, field.name)


# --------------------------------------------------------------------------- config


async def test_the_guides_tables_make_a_cross_vendor_group(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm(faults={GPT: (Fault("server_error", status=503),)}) as openai_mock,
            open_mock_llm() as anthropic_mock,
        ):
            path = tmp_path / "agentflow.toml"
            path.write_text(
                f"""
[llm]
api_key = "sk-test"
group = "smart"

[llm.openai]
model = "{GPT}"
base_url = "{openai_mock.url}/v1"
weight = 1000000

[llm.anthropic]
model = "{CLAUDE}"
base_url = "{anthropic_mock.url}"
""",
                encoding="utf-8",
            )
            config = load_config(path, env={})
            async with open_provider(config) as stack:
                assert stack.router is not None
                assert stack.router.groups == {"smart": ("openai", "anthropic")}
                response = await stack.complete(REQUEST)
                chunks = await read(stack)
    assert (response.deployment, response.model, response.text) == ("anthropic", CLAUDE, REPLY)
    assert chunks[-1].deployment == "anthropic" and chunks[-1].model == CLAUDE
    assert openai_mock.stats().by_model == {GPT: 2}
    assert anthropic_mock.stats().by_path == {"/v1/messages": 2}


LEAKY = """
[llm]
provider = "openai"
model = "gpt-4o"
api_key = "sk-openai-secret"
base_url = "https://proxy.example/v1"
organization = "org-1"
request_timeout = "7s"
[llm.headers]
X-OpenAI-Project = "p1"
[llm.retry]
max_attempts = 5

[llm.anthropic]
model = "claude-sonnet-4-5"
api_key = "sk-ant-own"
base_url = "https://api.anthropic.com"

[llm.deployments.claude2]
provider = "anthropic"
model = "claude-haiku-4-5"
base_url = "http://127.0.0.1:9"

[llm.deployments.resp]
provider = "openai_responses"
"""


def test_a_deployment_of_another_vendor_does_not_inherit_llms_credentials(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text(LEAKY, encoding="utf-8")
    deployments = load_config(path, env={}).llm.deployments
    claude, claude2, resp = deployments["anthropic"], deployments["claude2"], deployments["resp"]
    # Anthropic: never the OpenAI key, URL, organization or headers; its own if given
    assert (claude.api_key, claude.base_url) == ("sk-ant-own", "https://api.anthropic.com")
    assert (claude2.api_key, claude2.base_url, claude2.headers) == ("", "http://127.0.0.1:9", {})
    assert claude.organization == claude2.organization == ""
    # the neutral keys still come from [llm]
    assert claude2.request_timeout == 7.0 and claude2.retry.max_attempts == 5
    # the Responses API is OpenAI's: the same key, URL and headers
    assert (resp.api_key, resp.base_url) == ("sk-openai-secret", "https://proxy.example/v1")
    assert resp.headers == {"X-OpenAI-Project": "p1"} and resp.model == "gpt-4o"


def test_a_remote_anthropic_deployment_without_its_own_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text(LEAKY.replace("http://127.0.0.1:9", "https://anthropic.example"), "utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "llm.deployments.claude2.api_key"
    assert "ANTHROPIC_API_KEY" in str(info.value) and "sk-openai-secret" not in str(info.value)


def test_the_example_fails_over_from_openai_to_anthropic() -> None:
    """``python examples/anthropic_failover.py`` as a user runs it (a real subprocess,
    its wait bounded; no duration asserted)."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, str(root / "examples" / "anthropic_failover.py")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["healthy"].startswith("openai (gpt-4o-mini)")
    assert lines["openai rate limited"].startswith("anthropic (claude-sonnet-4-5)")
    assert lines["streamed"].startswith("anthropic (claude-sonnet-4-5)")
    assert lines["streamed"].endswith(REPLY)
    assert lines["tool agent"].startswith("'Paris is 18C.' after 2 steps")
    assert lines["tool agent models"] == "claude-sonnet-4-5"
    assert lines["openai mock"] == "{200: 1, 429: 1}"  # cooled after its 429: not asked again
