"""Which port the Prometheus endpoint of its own takes when ``[monitoring] metrics_port``
is left unset: 9090 for the long-running hosts (``serve``, ``worker``), a free port for
the load commands (``metrics_required=False``), none for the testing kit; a port the
config sets is always kept.

Real endpoints on 127.0.0.1 (free ports only: no test binds 9090); every wait bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import attrs
import httpx2
import pytest
import trio

import agentflow_trio as af
from agentflow_trio.config import Config
from agentflow_trio.config.sections import MonitoringConfig
from agentflow_trio.server import open_hosted_app
from agentflow_trio.testing import open_test_app

TIMEOUT = 20


@af.agent
async def echo(ctx: af.Context, event: af.Event) -> Any:
    return dict(event.data)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Hosting with monitoring configures the ``agentflow_trio`` logger: put it back."""
    logger = logging.getLogger("agentflow_trio")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


def test_the_default_port_is_9090_and_known_apart_from_a_9090_the_config_sets() -> None:
    unset, chosen = MonitoringConfig(), MonitoringConfig(metrics_port=9090)
    assert unset.metrics_port == 9090 == chosen.metrics_port and unset == chosen
    assert not unset.metrics_port_set and chosen.metrics_port_set
    assert not attrs.evolve(unset, log_level="debug").metrics_port_set
    assert MonitoringConfig(metrics_port=0).metrics_port_set


async def test_a_load_command_host_takes_a_free_port_when_none_is_set() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_hosted_app(
            {"echo": echo}, Config(), monitoring=True, metrics_required=False
        ) as hosted:
            port = hosted.running.metrics_port
            assert port is not None and port != 9090
            assert hosted.config.monitoring.metrics_port == 0
            async with httpx2.AsyncClient(timeout=TIMEOUT) as client:
                scraped = await client.get(f"http://127.0.0.1:{port}/metrics")
            assert scraped.status_code == 200 and "agent_request_duration_seconds" in scraped.text


async def test_a_port_the_config_sets_is_kept_by_every_host() -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    config = Config(monitoring=MonitoringConfig(metrics_port=free))
    with trio.fail_after(TIMEOUT):
        async with open_hosted_app(
            {"echo": echo}, config, monitoring=True, metrics_required=False
        ) as hosted:
            assert hosted.running.metrics_port == free


async def test_a_long_running_host_keeps_9090_and_the_testing_kit_serves_none() -> None:
    with trio.fail_after(TIMEOUT):
        # serve and worker host with metrics required: the unset port stays 9090 (not
        # bound here: monitoring is off, as the testing kit hosts).
        async with open_hosted_app({"echo": echo}, Config()) as hosted:
            assert hosted.config.monitoring.metrics_port == 9090
            assert not hosted.config.monitoring.metrics_port_set
            assert hosted.running.metrics_port is None
        async with open_test_app(af.App({"echo": echo})) as kit:
            assert kit.running.metrics_port is None


async def test_the_default_port_value_binds_like_any_int() -> None:
    """The unset port is an int subclass; the endpoint binds it as a plain port (the
    socket layer refuses int subclasses). Checked on a free port of that same type."""
    from agentflow_trio.observability.metrics import RunnerMetrics
    from agentflow_trio.observability.metrics_server import serve_metrics

    free_of_that_type = type(MonitoringConfig().metrics_port)(0)
    monitoring = attrs.evolve(MonitoringConfig(), metrics_port=free_of_that_type)
    assert not monitoring.metrics_port_set
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_metrics, monitoring, RunnerMetrics(process=False))
            assert isinstance(port, int) and port > 0
            nursery.cancel_scope.cancel()
