"""The load generator's streamed events: time to first token (TTFT) and inter-token latency
(ITL), in the tally, the reports and the thresholds.

Rules: timings under ``MockClock(autojump_threshold=0)`` (the ``autojump_clock`` fixture)
are exact, so they are compared with the agent's own sleeps; runs against the real mock
LLM and a real ``serve`` (hypercorn) on 127.0.0.1 port 0 use the real clock under an
absolute ``trio.fail_after`` and check counts (one TTFT per event, chunks - 1 ITL samples
per event) and lower bounds the mock's configured latency and chunk delay guarantee,
never an upper bound on time.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from rich.console import Console

import agentflow_trio as af
from agentflow_trio.config import Config
from agentflow_trio.errors import UsageLimitExceeded
from agentflow_trio.events import AgentResult, Outcome
from agentflow_trio.loadgen import LoadClient, Plan, Scenario, TokenTimes
from agentflow_trio.loadgen._streaming import consume_progress, consume_sse
from agentflow_trio.loadgen._tally import LoadStats
from agentflow_trio.loadgen.benchmark import BenchmarkOptions, run_benchmark
from agentflow_trio.loadgen.console import render_report
from agentflow_trio.loadgen.loadtest import LoadTestOptions, run_loadtest
from agentflow_trio.loadgen.report import render_html, streaming_figures
from agentflow_trio.loadgen.thresholds import (
    METRICS,
    ThresholdError,
    evaluate,
    parse_threshold,
    parse_thresholds,
)
from agentflow_trio.mockllm import open_mock_llm
from agentflow_trio.observability.stats import PerformanceMetrics
from agentflow_trio.progress import FinalResult, TextDelta, current_sink

TIMEOUT = 60
FAKE = {"llm": {"provider": "fake"}}

# The agent's own timing (virtual seconds): first token after FIRST, then one every GAP.
FIRST, GAP, TOKENS = 0.04, 0.01, 5


@af.agent
async def talker(ctx: af.Context, event: af.Event) -> str:
    """Streams TOKENS text deltas (FIRST, then GAP apart), with an empty delta between."""
    sink = current_sink()
    await trio.sleep(FIRST)
    for index in range(TOKENS):
        if index:
            await trio.sleep(GAP)
        if sink is not None:
            await sink.send(TextDelta(f"t{index}", "m"))
            await sink.send(TextDelta("", "m"))  # not a token: never timed
    return "done"


@af.agent
async def greedy(ctx: af.Context, event: af.Event) -> str:
    raise UsageLimitExceeded("max_requests", 1, 2)


def _close(actual: float | None, expected_ms: float) -> bool:
    """Within the HDR precision (0.1 %) plus one microsecond of rounding."""
    return actual is not None and abs(actual - expected_ms) <= expected_ms * 0.002 + 0.002


# -- the token clock, exactly ----------------------------------------------------------


async def _items(sleeps: list[tuple[float, Any]]) -> AsyncIterator[Any]:
    for delay, item in sleeps:
        await trio.sleep(delay)
        yield item


async def test_progress_items_give_one_ttft_and_a_gap_per_later_token(autojump_clock: Any) -> None:
    times = TokenTimes()
    final = AgentResult(Outcome.SUCCEEDED, "ok")
    items = [
        (0.25, TextDelta("a")),
        (0.05, TextDelta("")),  # no text: not a token
        (0.05, TextDelta("b")),
        (0.5, TextDelta("c")),
        (0.0, FinalResult(final)),
    ]
    result = await consume_progress(_items(items), times, trio.current_time())
    assert result is final
    assert (times.events, times.without_tokens) == (1, 0)
    assert times.ttft.count == 1 and _close(times.ttft.percentile(50), 250.0)
    assert times.itl.count == 2
    assert _close(times.itl.percentile(0), 100.0) and _close(times.itl.percentile(100), 500.0)
    # An event without a token adds no sample but is counted.
    assert await consume_progress(_items([(0.1, FinalResult(final))]), times, 0.0) is final
    assert (times.events, times.without_tokens, times.ttft.count) == (2, 1, 1)


async def test_server_sent_events_are_parsed_as_the_standard_says(autojump_clock: Any) -> None:
    result = {"id": "e1", "outcome": "succeeded", "output": {"answer": "ab"}, "agent": "x"}
    lines = [
        ": a comment, then an id",
        "id: 1",
        "event: text_delta",
        'data: {"text": "a", "model": "m"}',
        "",
        "event: tool_call_started",
        'data: {"call_id": "c", "name": "t"}',
        "",
        "event: text_delta",
        'data: {"text": "",',  # data split over two lines, no text: not a token
        'data: "model": "m"}',
        "",
        "event: text_delta",
        'data:{"text":"b"}',  # no space after the colon
        "",
        "event: result",
        "data: " + json.dumps(result),  # the last event, without its blank line
    ]

    async def arriving() -> AsyncIterator[str]:
        for line in lines:
            await trio.sleep(0.01 if line.startswith("data") else 0)
            yield line

    times = TokenTimes()
    body = await consume_sse(arriving(), times, trio.current_time())
    assert body == result
    assert times.ttft.count == 1 and _close(times.ttft.percentile(50), 10.0)
    assert times.itl.count == 1 and _close(times.itl.percentile(50), 40.0)  # 4 data lines on
    assert (times.events, times.without_tokens) == (1, 0)


# -- a streamed load test on a local runner, exactly -------------------------------------


async def _talk(client: LoadClient) -> None:
    await client.stream("talk", {"q": client.index})


def _on_fake(
    request: Any, agents: dict[str, Any], seconds: float = 0.5, users: float = 2, **fields: Any
) -> LoadTestOptions:
    """A load test of ``request`` on a local runner with ``agents`` and the fake LLM:
    ``users`` virtual users for ``seconds`` (0.1 s think time); ``fields``: other options."""
    return LoadTestOptions(
        plan=Plan.constant(seconds, users),
        scenario=Scenario(request=request, agents=agents, think_time=0.1),
        config=Config.from_mapping(FAKE),
        **fields,
    )


async def test_loadtest_streams_and_times_every_token(autojump_clock: Any) -> None:
    thresholds = [f"ttft_p99<={FIRST * 1000 * 1.01}ms", f"itl_max<{GAP * 1000 * 0.99}ms"]
    options = _on_fake(_talk, {"talk": talker}, 1.0, 3, thresholds=parse_thresholds(thresholds))
    report = await run_loadtest(options)
    requests = report.total.requests
    assert requests > 3 and report.total.outcomes == {"succeeded": requests}
    streaming = report.streaming
    assert streaming is not None
    assert (streaming.events, streaming.without_tokens) == (requests, 0)
    assert streaming.ttft.count == requests
    assert streaming.itl.count == requests * (TOKENS - 1)
    assert _close(streaming.ttft.min_ms, FIRST * 1000)
    assert _close(streaming.ttft.max_ms, FIRST * 1000)
    assert _close(streaming.itl.p50_ms, GAP * 1000) and _close(streaming.itl.max_ms, GAP * 1000)
    # The first threshold holds, the second is crossed by exactly the agent's gap.
    assert [r.passed for r in report.thresholds] == [True, False]
    assert _close(report.thresholds[1].actual, GAP * 1000)
    assert report.to_dict()["streaming"]["itl"]["count"] == requests * (TOKENS - 1)


async def test_stream_flag_makes_call_stream(autojump_clock: Any) -> None:
    async def call(client: LoadClient) -> None:
        await client.call("talk")

    options = _on_fake(call, {"talk": talker})
    plain = await run_loadtest(options)
    assert plain.streaming is None and "streaming" not in plain.to_dict()
    assert plain.parameters["stream"] is False
    streamed = await run_loadtest(_on_fake(call, {"talk": talker}, stream=True))
    assert streamed.streaming is not None
    assert streamed.streaming.events == streamed.total.requests > 0
    assert streamed.streaming.itl.count == streamed.total.requests * (TOKENS - 1)
    assert streamed.parameters["stream"] is True


async def test_usage_limit_exceeded_is_tallied_as_its_own_outcome(autojump_clock: Any) -> None:
    async def request(client: LoadClient) -> None:
        if client.index % 2:
            await client.stream("greedy")
        else:
            await client.call("greedy")

    options = _on_fake(request, {"greedy": greedy})
    report = await run_loadtest(options)
    outcomes = report.total.outcomes
    assert set(outcomes) == {"usage_limit_exceeded"} and outcomes["usage_limit_exceeded"] > 2
    assert report.total.errors == report.total.requests
    assert report.first_error is not None and "max_requests" in report.first_error
    assert report.streaming is not None and report.streaming.without_tokens > 0
    assert report.timeline is not None
    assert sum(report.timeline["errors"]["usage_limit_exceeded"]) == report.total.requests


def test_the_tally_counts_any_outcome_label() -> None:
    stats = LoadStats(Plan.constant(1.0, 1))
    for outcome in ("succeeded", "usage_limit_exceeded", "usage_limit_exceeded", "http_503"):
        stats.record(0, 0.0, 0.0, 0.01, outcome)
    counts = stats._outcomes[0]
    assert counts == {"succeeded": 1, "usage_limit_exceeded": 2, "http_503": 1}
    metrics = PerformanceMetrics.from_latency(stats._latency[0], counts, 1.0)
    assert metrics.errors == 3 and metrics.outcomes["usage_limit_exceeded"] == 2


def test_an_outcome_this_version_does_not_know_keeps_its_label() -> None:
    from agentflow_trio.loadgen._client import _result_of

    result, label = _result_of({"outcome": "brand_new", "output": None, "id": "x"})
    assert label == "brand_new" and result.outcome is Outcome.FAILED
    result, label = _result_of(
        {"outcome": "usage_limit_exceeded", "error": {"type": "UsageLimitExceeded", "message": "m"}}
    )
    assert label == "usage_limit_exceeded" and result.error is not None


# -- thresholds ----------------------------------------------------------------------


def test_token_thresholds_parse_and_need_data() -> None:
    t = parse_threshold("ttft_p95 < 200ms")
    assert (t.metric, t.op, t.limit, t.unit, t.text) == (
        "ttft_p95",
        "<",
        200.0,
        "ms",
        "ttft_p95<200ms",
    )
    assert parse_threshold("ITL_p99<=1.5s").limit == 1500.0
    assert parse_threshold("itl_mean>250us").limit == pytest.approx(0.25)
    for name in ("ttft_p50", "ttft_p90", "ttft_max", "itl_p95", "itl_max"):
        assert name in METRICS
    with pytest.raises(ThresholdError, match="unknown metric 'ttft_p42'"):
        parse_threshold("ttft_p42<1s")
    with pytest.raises(ThresholdError, match="not a duration"):
        parse_threshold("itl_p99<fast")
    metrics = PerformanceMetrics.from_latency(TokenTimes().ttft, {"succeeded": 1}, 1.0)
    (result,) = evaluate([t], metrics)  # nothing streamed: no data, which fails
    assert result.actual is None and not result.passed
    assert result.describe() == "ttft_p95<200ms: FAIL (ttft_p95: no data)"


# -- against the real mock LLM (real clock) ------------------------------------------------

CHUNKS, DELAY, LATENCY = 6, 0.02, 0.03


def _at(mock_url: str) -> Config:
    return Config.from_mapping(
        {"llm": {"provider": "openai", "base_url": mock_url + "/v1", "api_key": "sk-test"}}
    )


def _check_mock_timings(streaming: Any, events: int) -> None:
    """Counts exactly; times only from below (the mock cannot be faster than told)."""
    assert (streaming.events, streaming.without_tokens) == (events, 0)
    assert streaming.ttft.count == events
    assert streaming.itl.count == events * (CHUNKS - 1)
    assert streaming.ttft.min_ms >= LATENCY * 1000 * 0.99
    # The mock sends an event's chunks DELAY apart, so its CHUNKS - 1 gaps add up to about
    # (CHUNKS - 1) * DELAY; half of it leaves room for a client that read the first late.
    assert streaming.itl.mean_ms >= DELAY * 1000 * 0.5


async def test_benchmark_stream_against_the_mock_llm() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(stream_chunks=CHUNKS, stream_delay=DELAY, latency=LATENCY) as mock:
            assert len(mock.config.reply_text) >= CHUNKS  # so every chunk carries text
            options = BenchmarkOptions(
                agent="stream",
                stream=True,
                users=4,
                requests=24,
                config=_at(mock.url),
                thresholds=parse_thresholds(
                    [f"ttft_p50>={LATENCY * 1000 * 0.99}ms", f"itl_mean<{DELAY * 1000 * 0.5}ms"]
                ),
            )
            report = await run_benchmark(options)
            assert mock.stats().requests == 24
    assert report.total.outcomes == {"succeeded": 24}
    assert report.streaming is not None
    _check_mock_timings(report.streaming, 24)
    assert [r.passed for r in report.thresholds] == [True, False]
    assert report.parameters["stream"] is True


async def test_benchmark_without_stream_has_no_streaming_figures() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm(stream_chunks=CHUNKS) as mock:
            options = BenchmarkOptions(agent="stream", users=2, requests=6, config=_at(mock.url))
            report = await run_benchmark(options)
    assert report.streaming is None and report.total.requests == 6
    text = _console(report)
    assert "time to first token" not in text


async def _stream_chat(client: LoadClient) -> None:
    await client.stream("stream", {"query": f"hello {client.index}"})


async def test_loadtest_streams_over_http_from_serve() -> None:
    from agentflow_trio.loadgen import example_agents
    from agentflow_trio.server import serve_runner

    with trio.fail_after(TIMEOUT):
        async with (
            open_mock_llm(stream_chunks=CHUNKS, stream_delay=DELAY, latency=LATENCY) as mock,
            trio.open_nursery() as nursery,
        ):
            served = await nursery.start(
                functools.partial(serve_runner, _at(mock.url), dict(example_agents()), port=0)
            )
            options = LoadTestOptions(
                plan=Plan.constant(1.0, 3),
                scenario=Scenario(request=_stream_chat, think_time=0.05),
                target_url=served.url,
            )
            report = await run_loadtest(options)
            model_requests = mock.stats().requests
            nursery.cancel_scope.cancel()
    requests = report.total.requests
    assert requests >= 3 and report.total.outcomes == {"succeeded": requests}
    assert model_requests == requests == report.summary.issued
    assert report.streaming is not None
    _check_mock_timings(report.streaming, requests)


# -- what the reports show -----------------------------------------------------------------


def _console(report: Any) -> str:
    console = Console(record=True, width=200)
    console.print(render_report(report))
    return console.export_text()


async def test_console_json_and_html_show_ttft_and_itl(autojump_clock: Any) -> None:
    options = _on_fake(_talk, {"talk": talker})
    report = await run_loadtest(options)
    streaming = report.streaming
    assert streaming is not None
    text = _console(report)
    assert f"streamed events: {streaming.events} (0 without tokens)" in text
    ttft_row = next(line for line in text.splitlines() if "time to first token" in line)
    itl_row = next(line for line in text.splitlines() if "inter-token" in line)
    assert str(streaming.ttft.count) in ttft_row and f"{streaming.ttft.p95_ms:.2f}" in ttft_row
    assert str(streaming.itl.count) in itl_row and f"{streaming.itl.p99_ms:.2f}" in itl_row

    run = json.loads(report.to_json())
    for kind, summary in (("ttft", streaming.ttft), ("itl", streaming.itl)):
        for field in ("count", "p50_ms", "p95_ms", "p99_ms"):
            assert run["streaming"][kind][field] == getattr(summary, field)
        curve = run["streaming"][f"{kind}_curve"]
        assert curve["latency_ms"][-1] == summary.max_ms

    page = render_html(run)
    table = re.search(r'<table id="streaming">.*?</table>', page, re.S)
    assert table is not None
    row = re.search(r'<tr data-kind="itl">(.*?)</tr>', table.group(0))
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[:2] == ["inter-token latency", f"{streaming.itl.count:,}"]
    assert cells[3:6] == [
        f"{getattr(streaming.itl, f):,.2f}" for f in ("p50_ms", "p95_ms", "p99_ms")
    ]
    (chart,) = streaming_figures(run).values()
    assert [t["meta"]["y"] for t in chart["data"]] == [
        "streaming.ttft_curve.latency_ms",
        "streaming.itl_curve.latency_ms",
    ]
    for trace in chart["data"]:
        _, kind_curve, axis = trace["meta"]["y"].split(".")
        assert trace["y"] == run["streaming"][kind_curve][axis]
    assert 'id="chart-streaming"' in page
    figures = json.loads(
        re.search(r'<script type="application/json" id="figures">(.*?)</script>', page, re.S).group(
            1
        )  # type: ignore[union-attr]
    )
    assert "chart-streaming" in figures

    # Compared with a run that did not stream: the TTFT rows show "-" for the baseline.
    plain = dict(run)
    del plain["streaming"]
    compared = render_html(run, plain)
    assert 'data-metric="streaming.ttft.p95_ms"' in compared
    assert "chart-streaming" not in render_html(plain)
