"""The examples the README promises for typed tools and SSE streaming, run as a user runs
them: ``python examples/<name>.py`` in a real subprocess, against the built-in mock LLM on
loopback port 0. The subprocess wait is bounded (``TIMEOUT``); nothing asserts a duration.
Expected text comes from the example's own script (read with `runpy`, ``main`` not run).
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TIMEOUT = 60


def run_example(name: str) -> list[str]:
    """The lines ``python examples/<name>`` prints; it must exit 0 and write no error."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout.splitlines()


def after(lines: list[str], prefix: str) -> list[str]:
    """What follows ``prefix`` on each line that starts with it."""
    return [line[len(prefix) :].strip() for line in lines if line.startswith(prefix)]


def test_typed_tools_refuses_quantity_zero_then_runs_the_valid_calls() -> None:
    pytest.importorskip("pydantic")
    answer = runpy.run_path(str(EXAMPLES / "typed_tools.py"))["ANSWER"]
    lines = run_example("typed_tools.py")

    quantity = json.loads(after(lines, "schema quantity:")[0])
    assert quantity["type"] == "integer" and quantity["minimum"] == 1
    assert json.loads(after(lines, "schema ship_to:")[0]) == ["street", "city"]
    slot = json.loads(after(lines, "schema slot:")[0])
    assert slot["properties"] == {"day": {"type": "string"}, "hour": {"type": "integer"}}

    (shown,) = after(lines, "invalid_arguments:")
    error = json.loads(shown)  # what the model read back after its first call
    assert (error["type"], error["tool"], error["field"]) == (
        "invalid_arguments",
        "place_order",
        "quantity",
    )
    assert (error["expected"], error["got"]) == ("minimum 1", "0")
    assert "quantity" in error["message"]

    calls = after(lines, "tool ")
    assert len(calls) == 3
    refused, placed, booked = calls
    assert refused.startswith("place_order: error ")
    assert json.loads(refused.split(" ", 2)[2])["error"] == error
    # The function ran only for the valid call, with real instances behind the dict.
    assert json.loads(placed.removeprefix("place_order: ok ")) == {
        "item": "tea",
        "city": "Oslo",
        "quantity": 2,
    }
    assert json.loads(booked.removeprefix("book_delivery: ok ")) == {"booked": "Monday 9:00"}
    assert after(lines, "outcome:") == ["succeeded"]
    assert after(lines, "answer:") == [answer]


def test_serve_sse_prints_each_delta_as_an_event_and_the_result_last() -> None:
    story = runpy.run_path(str(EXAMPLES / "serve_sse.py"))["STORY"]
    lines = run_example("serve_sse.py")

    (status,) = after(lines, "status:")
    assert status.startswith("200 text/event-stream")
    events: list[tuple[int, str, str]] = []
    for line in after(lines, "event "):
        number, name, rest = line.split(" ", 2)
        events.append((int(number), name.rstrip(":"), rest))
    assert [number for number, _, _ in events] == list(range(1, len(events) + 1))
    names = [name for _, name, _ in events]
    assert names[-1] == "result" and set(names[:-1]) == {"text_delta"}
    deltas: list[dict[str, Any]] = [json.loads(rest) for _, name, rest in events[:-1]]
    assert len(deltas) > 1 and "".join(d["text"] for d in deltas) == story

    outcome, _, output = events[-1][2].partition(" ")
    assert outcome == "succeeded"
    assert json.loads(output) == {"story": story, "words": len(story.split())}
    usage = json.loads(after(lines, "usage:")[0])
    assert usage["requests"] == 1 and usage["output_tokens"] > 0
    assert lines[-1].startswith("usage:")  # the result comes after every streamed event
