"""``RunnerMetrics`` label values are bounded: event types from outside never add series.

Virtual time (autojump) for the runner; the exposition is read back with
prometheus_client's own parser.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import agentflow_trio as af
from agentflow_trio.observability.metrics import OTHER_LABEL, RunnerMetrics


@af.agent
async def known(ctx: af.Context, event: af.Event) -> str:
    return "ok"


def label_values(metrics: RunnerMetrics, family: str, label: str) -> set[str]:
    text = metrics.render().decode()
    return {
        sample.labels[label]
        for parsed in text_string_to_metric_families(text)
        if parsed.name == family
        for sample in parsed.samples
        if label in sample.labels
    }


async def test_unknown_event_types_share_one_label(autojump_clock: trio.testing.MockClock) -> None:
    metrics = RunnerMetrics(process=False)
    async with af.Runner(agents={"known": known}) as runner:
        metrics.attach(runner)
        await runner.call(af.Event("known"))
        for i in range(50):
            await runner.call(af.Event(f"made-up-{i}"))
    assert label_values(metrics, "agent_requests", "agent_name") == {"known", OTHER_LABEL}
    assert label_values(metrics, "agent_request_duration_seconds", "agent_name") == {
        "known",
        OTHER_LABEL,
    }
    assert label_values(metrics, "agent_active_requests", "agent_name") <= {"known", OTHER_LABEL}
    text = metrics.render().decode()
    assert 'agent_requests_total{agent_name="_other",status="failed"} 50.0' in text


def test_without_a_runner_at_most_max_label_values_are_kept() -> None:
    metrics = RunnerMetrics(process=False, max_label_values=3)
    for i in range(10):
        metrics.observe_request(f"agent-{i}", "succeeded", 0.01)
        metrics.observe_llm(f"provider-{i}", f"Error{i}", 0.01)
    agents = label_values(metrics, "agent_requests", "agent_name")
    assert agents == {"agent-0", "agent-1", "agent-2", OTHER_LABEL}
    providers = label_values(metrics, "llm_requests", "provider")
    assert providers == {"provider-0", "provider-1", "provider-2", OTHER_LABEL}
    assert len(label_values(metrics, "llm_requests", "status")) <= 4
    text = metrics.render().decode()
    assert 'agent_requests_total{agent_name="_other",status="succeeded"} 7.0' in text


def test_max_label_values_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_label_values"):
        RunnerMetrics(process=False, max_label_values=0)
