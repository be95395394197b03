"""CPU per LLM call of the full provider stack, against a bare httpx2 POST in the same run.

The mock LLM runs in a separate process (``python -m agentflow_trio.cli mock-llm --port 0``),
pinned to core 1 when the machine has two or more cores; this process is pinned to core 0,
so its ``getrusage`` CPU is the client's alone. Scenarios, each at concurrency 1 and 50:

* ``bare``: one shared ``httpx2.AsyncClient`` POSTing a prebuilt-per-call chat body
  (orjson) to ``/v1/chat/completions`` and decoding the JSON answer: the floor.
* ``stack_miss``: `LLMClient.complete` through every layer turned on (cache, retry,
  breaker, rate limit, batching; OpenAI adapter), every request unique, so the cache
  misses, computes the key and stores the answer each time.
* ``stack_hit``: the same request again and again: answered by the cache.

Each scenario is repeated (``--repeat``) and the median CPU per call kept; ``ratio`` is
stack_miss CPU per call over bare CPU per call at the same concurrency (target <= 1.2).

    python bench/llm_overhead.py            # 4000 calls per scenario, 3 repeats
    python bench/llm_overhead.py --quick    # 600 calls, 1 repeat
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx2
import orjson
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentflow_trio.config import LLMConfig, PerformanceConfig, RateLimitConfig  # noqa: E402
from agentflow_trio.llm import LLMClient, open_provider, user  # noqa: E402
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

TARGET = 1.2
PROMPT = "Summarise the benchmark results in one sentence, please."


def bare_caller(client: httpx2.AsyncClient, url: str) -> Call:
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

    async def call(i: int) -> Any:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{PROMPT} {i}"}]}
        response = await client.post(url, content=orjson.dumps(body), headers=headers)
        response.raise_for_status()
        return orjson.loads(response.content)["choices"][0]["message"]["content"]

    return call


def stack_caller(llm: LLMClient, *, unique: bool) -> Call:
    async def call(i: int) -> Any:
        text = f"{PROMPT} {i}" if unique else PROMPT
        return (await llm.complete([user(text)])).text

    return call


def _config(url: str) -> tuple[LLMConfig, PerformanceConfig]:
    llm = LLMConfig(
        provider="openai",
        base_url=url + "/v1",
        api_key="sk-bench",
        max_connections=100,
        rate_limit=RateLimitConfig(
            enabled=True, requests_per_minute=10**8, tokens_per_minute=10**10
        ),
    )
    performance = PerformanceConfig(
        enable_caching=True, enable_batching=True, cache_max_entries=100_000
    )
    return llm, performance


async def run(url: str, calls: int, repeat: int, concurrencies: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    llm_config, performance = _config(url)
    limits = httpx2.Limits(max_connections=100, max_keepalive_connections=100)
    async with (
        httpx2.AsyncClient(limits=limits, timeout=60.0) as client,
        open_provider(llm_config, performance) as provider,
    ):
        llm = LLMClient(provider)
        callers = {
            "bare": bare_caller(client, url + "/v1/chat/completions"),
            "stack_miss": stack_caller(llm, unique=True),
            "stack_hit": stack_caller(llm, unique=False),
        }
        for concurrency in concurrencies:
            samples = await sample(callers, calls, concurrency, repeat, warmup=min(calls, 200))
            by_name = {}
            for name, runs in samples.items():
                row = scenario_row(name, runs, concurrency=concurrency, calls=calls, repeats=repeat)
                by_name[name] = row
                rows.append(row)
                emit(row)
            ratio = by_name["stack_miss"]["cpu_us_per_call"] / by_name["bare"]["cpu_us_per_call"]
            row = {
                "scenario": "ratio_stack_miss_over_bare",
                "concurrency": concurrency,
                "cpu_ratio": round(ratio, 3),
                "target": TARGET,
                "within_target": ratio <= TARGET,
            }
            rows.append(row)
            emit(row)
        stats = provider.statistics()
        assert stats.cache is not None and stats.cache.hits > 0
        assert stats.breaker is not None and stats.breaker.failures == 0
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    _, calls, repeat = parse_call_args(parser, quick=(600, 1), full=(4000, 3))
    pin_to_core(0)
    with mock_process() as url:
        rows = trio.run(run, url, calls, repeat, [1, 50])
    table(rows, CALL_COLUMNS)


if __name__ == "__main__":
    main()
