"""``agentcli mock-llm``: a real subprocess on 127.0.0.1 port 0, stopped by a signal.

Every wait on the subprocess is bounded (``TIMEOUT``); a test that fails kills the process
it started, by its own handle.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from _cli import Started, after, agentcli, started
from click.testing import CliRunner

from agentflow_trio.cli import main

TIMEOUT = 10
PREFIX = "mock LLM listening on "


@contextmanager
def mock_llm(*args: str) -> Iterator[tuple[Started, str]]:
    """``agentcli mock-llm ARGS`` until its first line, which must be the listening line;
    the process and its URL. Killed on the way out if still running."""
    with started("mock-llm", *args, until=PREFIX) as mock:
        assert list(mock.lines) == ["mock"], mock.lines  # the listening line comes first
        yield mock, after(mock.lines["mock"], " on ")


@pytest.mark.parametrize(
    ("stop", "timers"),
    [(signal.SIGTERM, "--precise-timers"), (signal.SIGINT, "--coarse-timers")],
)
def test_mock_llm_serves_until_signalled(stop: signal.Signals, timers: str) -> None:
    args = ("--port", "0", "--latency-ms", "1", "--stream-chunks", "2", timers)
    with mock_llm(*args) as (mock, url):
        assert url.startswith("http://127.0.0.1:")
        with httpx2.Client(base_url=url, timeout=TIMEOUT) as client:
            models = client.get("/v1/models").json()
            assert [model["id"] for model in models["data"]] == ["mock-gpt"]
            chat = client.post(
                "/v1/chat/completions",
                json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
            )
            assert chat.text.endswith("data: [DONE]\n\n")
            assert client.get("/stats").json()["streams"] == 1
        mock.stop(stop)  # exit 0, no traceback


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--latency-ms", "-5"], "--latency-ms"),
        (["--error-rate", "2"], "--error-rate"),
        (["--rate-limit-rate", "nan"], "--rate-limit-rate"),
        (["--stream-chunks", "0"], "--stream-chunks"),
        (["--port", "70000"], "--port"),
        (["--error-rate", "0.6", "--rate-limit-rate", "0.6"], "must not exceed 1"),
        (["--jitter-ms", "inf"], "--jitter-ms"),
        (["--host", "0.0.0.0"], "--allow-remote"),
        (["--fault", "gpt-b"], "--fault"),
        (["--fault", "gpt-b=explode"], "unknown fault kind"),
        (["--fault", "gpt-b=reset:after_chunks=2"], "--fault"),
    ],
)
def test_bad_flags_are_usage_errors(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, ["mock-llm", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_fault_flags_inject_per_model() -> None:
    faults = ("--fault", "gpt-b=server_error:status=503", "--fault", "*=rate_limit:times=1")
    with mock_llm("--port", "0", *faults) as (mock, url):
        with httpx2.Client(base_url=url, timeout=TIMEOUT) as client:
            messages = [{"role": "user", "content": "hi"}]

            def status(model: str) -> int:
                body = {"model": model, "messages": messages}
                return client.post("/v1/chat/completions", json=body).status_code

            assert [status("gpt-b"), status("gpt-a"), status("gpt-a")] == [503, 429, 200]
            assert client.get("/mock/faults").json() == {
                "faults": {"gpt-b": ["server_error:status=503"], "*": ["rate_limit:times=1"]}
            }
            stats = client.get("/stats").json()
            assert stats["faults_by_model"] == {
                "gpt-b": {"server_error": 1},
                "gpt-a": {"rate_limit": 1},
            }
        mock.stop()  # SIGTERM: exit 0, no traceback


def test_anthropic_and_responses_sdks_against_agentcli_mock_llm() -> None:
    """Done means of #21: both SDKs run against ``agentcli mock-llm`` and see the script."""
    fault = ("--fault", "claude-down=server_error:status=529", "--stream-chunks", "3")
    with mock_llm("--port", "0", *fault) as (mock, url):
        weather = {"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_w1"}
        limits: dict[str, Any] = {"max_retries": 0, "timeout": TIMEOUT}
        with (
            httpx2.Client(base_url=url, timeout=TIMEOUT) as control,
            anthropic.Anthropic(base_url=url, api_key="x", **limits) as claude,
            openai.OpenAI(base_url=url + "/v1", api_key="x", **limits) as gpt,
        ):

            def script(*replies: dict[str, object]) -> None:
                assert control.post("/mock/script", json=list(replies)).status_code == 200

            hello = [{"role": "user", "content": "hi"}]
            script({"text": "Scripted for Claude."}, {"tool_calls": [weather]})
            message = claude.messages.create(model="claude-x", max_tokens=64, messages=hello)
            assert message.content[0].type == "text"
            assert message.content[0].text == "Scripted for Claude."
            tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
            called = claude.messages.create(
                model="claude-x", max_tokens=64, messages=hello, tools=tools
            )
            (use,) = called.content
            assert use.type == "tool_use" and use.input == {"city": "Paris"}
            result = {"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}
            turn = [
                *hello,
                {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
                {"role": "user", "content": [result]},
            ]
            script({"text": "It is sunny."})
            with claude.messages.stream(
                model="claude-x", max_tokens=64, messages=turn, tools=tools
            ) as stream:
                assert "".join(stream.text_stream) == "It is sunny."
            with pytest.raises(anthropic.OverloadedError):
                claude.messages.create(model="claude-down", max_tokens=8, messages=hello)

            script({"text": "Scripted for Responses."}, {"tool_calls": [weather]})
            response = gpt.responses.create(model="gpt-x", input="hi")
            assert response.output_text == "Scripted for Responses."
            function = {"type": "function", "name": "get_weather", "parameters": {}}
            first = gpt.responses.create(model="gpt-x", input="hi", tools=[function])
            (call,) = first.output
            assert call.type == "function_call" and call.call_id == "call_w1"
            output = {"type": "function_call_output", "call_id": call.call_id, "output": "rain"}
            events = list(
                gpt.responses.create(
                    model="gpt-x",
                    input=[{"role": "user", "content": "hi"}, call.model_dump(), output],
                    stream=True,
                )
            )
            assert events[-1].type == "response.completed"
            assert events[-1].response.output_text == "Based on the tool results: rain"
            stats = control.get("/stats").json()
            assert stats["by_path"] == {"/v1/messages": 4, "/v1/responses": 3}
            assert stats["scripted"] == 5 and stats["streams"] == 2
        mock.stop()  # SIGTERM: exit 0, no traceback


def test_bad_flag_in_a_real_process_exits_2_without_traceback() -> None:
    proc = agentcli("mock-llm", "--latency-ms", "-5")
    assert proc.returncode == 2
    assert "Invalid value for '--latency-ms'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_lists_mock_llm() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "mock-llm" in result.output
    assert "agentcli" in result.output
    options = CliRunner().invoke(main, ["mock-llm", "--help"]).output
    for flag in ("--latency-ms", "--jitter-ms", "--error-rate", "--allow-remote", "--fault"):
        assert flag in options
