"""``[monitoring] log_level`` / ``log_format``: `configure_logging` and the event labels.

Records are captured from the handler's own stream (what a process would print) and JSON
lines parsed; events run on a real `Runner` under virtual time (no I/O here).
"""

from __future__ import annotations

import datetime
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

import agentflow_trio as af
from agentflow_trio.config import MonitoringConfig
from agentflow_trio.observability import EventContextFilter, configure_logging, current_event

LOG = logging.getLogger("agentflow_trio.test.agent")


@af.agent
async def chatty(ctx: af.Context, event: af.Event) -> str:
    LOG.info("working on %s", event.data["topic"])
    async with trio.open_nursery() as nursery:  # a task the agent starts: same labels
        nursery.start_soon(_child_logs, event.data["topic"])
    LOG.debug("a detail")
    return "done"


async def _child_logs(topic: str) -> None:
    await trio.lowlevel.checkpoint()
    LOG.warning("child task on %s", topic, extra={"step": 2})


@af.agent
async def broken(ctx: af.Context, event: af.Event) -> str:
    try:
        raise ValueError("bad input")
    except ValueError:
        LOG.exception("could not parse")
    return "handled"


AGENTS = {"chatty": chatty, "broken": broken}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A stream for the handler; the ``agentflow_trio`` logger is restored afterwards."""
    logger = logging.getLogger("agentflow_trio")
    level, handlers = logger.level, list(logger.handlers)
    out = io.StringIO()
    try:
        yield out
    finally:
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
        logger.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def run_events(*events: af.Event) -> list[af.AgentResult]:
    async with af.Runner(af.Config(), agents=AGENTS) as runner:
        return [await runner.call(event) for event in events]


async def test_json_lines_carry_the_event_id_and_agent(
    stream: io.StringIO, autojump_clock: trio.testing.MockClock
) -> None:
    configure_logging(MonitoringConfig(log_format="json"), stream=stream)
    LOG.info("before any event")
    event = af.Event("chatty", {"topic": "tides"})
    [result] = await run_events(event)
    assert result.succeeded
    records = {r["message"]: r for r in lines(stream)}
    outside = records["before any event"]
    assert (outside["event_id"], outside["agent"]) == (None, None)
    assert (outside["level"], outside["logger"]) == ("INFO", "agentflow_trio.test.agent")
    assert datetime.datetime.fromisoformat(outside["time"]).tzinfo is not None
    for message in ("working on tides", "child task on tides"):
        assert (records[message]["event_id"], records[message]["agent"]) == (event.id, "chatty")
    assert records["child task on tides"]["step"] == 2  # extra= keys are kept
    assert records["child task on tides"]["level"] == "WARNING"
    assert "a detail" not in records  # log_level "info"


async def test_an_exception_is_one_json_line_with_its_traceback(
    stream: io.StringIO, autojump_clock: trio.testing.MockClock
) -> None:
    configure_logging(MonitoringConfig(log_format="json"), stream=stream)
    event = af.Event("broken")
    await run_events(event)
    [record] = [r for r in lines(stream) if r["message"] == "could not parse"]
    assert record["level"] == "ERROR" and record["event_id"] == event.id
    assert "ValueError: bad input" in record["exception"]
    assert len(stream.getvalue().splitlines()) == len(lines(stream))  # one line each


async def test_plain_lines_name_the_event_and_agent(
    stream: io.StringIO, autojump_clock: trio.testing.MockClock
) -> None:
    configure_logging(MonitoringConfig(log_level="debug"), stream=stream)
    event = af.Event("chatty", {"topic": "reefs"})
    await run_events(event)
    text = stream.getvalue()
    assert f"INFO agentflow_trio.test.agent: working on reefs [event={event.id} agent=chatty]" in (
        text
    )
    assert "a detail" in text  # log_level "debug"
    LOG.info("outside")
    assert stream.getvalue().splitlines()[-1].endswith("agentflow_trio.test.agent: outside")


def test_configuring_again_keeps_one_handler(stream: io.StringIO) -> None:
    logger = logging.getLogger("agentflow_trio")
    first = configure_logging(MonitoringConfig(log_format="json"), stream=stream)
    second = configure_logging(MonitoringConfig(log_level="error", log_format="plain"))
    assert first is second and logger.handlers.count(first) == 1
    assert logger.level == logging.ERROR
    LOG.warning("below the level")
    LOG.error("shown as plain text")
    assert stream.getvalue().endswith("agentflow_trio.test.agent: shown as plain text\n")
    assert "below the level" not in stream.getvalue()


def test_the_filter_labels_records_of_other_handlers_too() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert EventContextFilter().filter(record)
    assert (record.event_id, record.agent) == (None, None)
    assert current_event() == (None, None)
    given = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    given.event_id = "evt-given"
    EventContextFilter().filter(given)
    assert (given.event_id, given.agent) == ("evt-given", None)  # an explicit extra wins
