"""The CPU structured output adds to a model call: ``complete(..., output_type=City)`` against
plain ``complete`` through the same client, in the same run.

The mock LLM runs in a child process (``python -m agentflow_trio.cli mock-llm --port 0``)
pinned to core 1 when the machine has two or more cores; this process is pinned to core 0,
so its ``getrusage`` CPU is the client's alone. The mock answers a request that carries a
``response_format`` (or forces a tool) with a value fitting its schema, so every structured
call validates on the first reply. Scenarios, at concurrency 1 and 50 (``--calls`` calls
each, ``--repeat`` repeats, the scenarios' order alternating between repeats):

* ``plain``: `LLMClient.complete` through the default stack (retry, breaker; OpenAI
  adapter, lean transport), every request unique: the baseline;
* ``native``: the same call with ``output_type=City`` (an attrs class, two fields) in the
  auto mode, which is native here (``response_format`` json_schema, strict): the body
  carries the schema, the reply is parsed, validated and converted to a ``City``;
* ``tool``: the same with ``output_mode="tool"`` (the forced ``final_result`` call);
* ``prompted``: the same with ``output_mode="prompted"`` (the schema in a system message;
  the mock does not know what it asks, so these replies are re-asked and end in an
  ``OutputValidationError``: only run with ``--prompted``, as a figure of a failing call).

``ratio_native_over_plain`` (and ``ratio_tool_over_plain``) is the median, over the
repeats, of that scenario's CPU per call over plain's in the same repeat (target <= 1.15),
with the range of the repeats.

    python bench/output_overhead.py            # 3000 calls per scenario, 5 repeats
    python bench/output_overhead.py --quick    # 600 calls, 2 repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agentflow_trio.config import LLMConfig  # noqa: E402
from agentflow_trio.errors import OutputValidationError  # noqa: E402
from agentflow_trio.llm import LLMClient, open_llm_client, user  # noqa: E402
from bench._common import (  # noqa: E402
    CALL_COLUMNS,
    Call,
    emit,
    mock_process,
    parse_call_args,
    pin_to_core,
    sample,
    scenario_row,
    table,
)

TARGET = 1.15
PROMPT = "Name one large city and its population, please."


@attrs.frozen
class City:
    name: str
    population: int


def callers(llm: LLMClient, prompted: bool) -> dict[str, Call]:
    async def plain(i: int) -> Any:
        return (await llm.complete([user(f"{PROMPT} {i}")])).text

    def structured(mode: Any) -> Call:
        async def call(i: int) -> Any:
            city = await llm.complete([user(f"{PROMPT} {i}")], output_type=City, output_mode=mode)
            assert type(city) is City
            return city

        return call

    async def failing(i: int) -> Any:
        try:
            await llm.complete([user(f"{PROMPT} {i}")], output_type=City, output_mode="prompted")
        except OutputValidationError:
            return None
        raise AssertionError("the mock cannot answer the prompted mode")

    out = {"plain": plain, "native": structured(None), "tool": structured("tool")}
    if prompted:
        out["prompted"] = failing
    return out


async def run(
    url: str, calls: int, repeat: int, concurrencies: list[int], prompted: bool
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    config = LLMConfig(
        provider="openai", base_url=url + "/v1", api_key="sk-bench", max_connections=100
    )
    async with open_llm_client(config) as llm:
        assert llm.native_output  # auto = native on the OpenAI wire
        scenarios = callers(llm, prompted)
        for concurrency in concurrencies:
            warmup = min(calls, 300)
            samples = await sample(
                scenarios, calls, concurrency, repeat, warmup=warmup, alternate=True
            )
            for name, runs in samples.items():
                row = scenario_row(name, runs, concurrency=concurrency, calls=calls, repeats=repeat)
                rows.append(row)
                emit(row)
            for name in ("native", "tool"):
                pairs = zip(samples[name], samples["plain"], strict=True)
                ratios = sorted(s["cpu_us_per_call"] / p["cpu_us_per_call"] for s, p in pairs)
                ratio = statistics.median(ratios)
                row = {
                    "scenario": f"ratio_{name}_over_plain",
                    "concurrency": concurrency,
                    "cpu_ratio": round(ratio, 3),
                    "cpu_ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
                    "target": TARGET,
                    "within_target": ratio <= TARGET,
                }
                rows.append(row)
                emit(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prompted", action="store_true", help="also the prompted mode")
    args, calls, repeat = parse_call_args(parser, quick=(600, 2), full=(3000, 5))
    pin_to_core(0)
    with mock_process() as url:
        rows = trio.run(run, url, calls, repeat, [1, 50], args.prompted)
    table(rows, CALL_COLUMNS)


if __name__ == "__main__":
    main()
