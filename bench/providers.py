"""CPU per model call of each vendor's provider against the ``openai`` provider, same run.

The mock LLM runs in a child process (``python -m agentflow_trio.cli mock-llm --port 0``)
pinned to core 1 when the machine has two or more cores; this process is pinned to core 0,
so its ``getrusage`` CPU is the client's alone. One mock serves every wire on one port
(``/v1/chat/completions``, ``/v1/responses``, ``/v1/messages``) with the same reply text,
streamed in the same number of text pieces. Providers:

* ``openai``: Chat Completions (`OpenAIProvider`): the baseline;
* ``openai_responses``: the Responses API (`ResponsesProvider`);
* ``anthropic``: the Messages API (`AnthropicProvider`).

Each provider is called through `open_llm_client` with the default stack (retry, breaker;
lean transport), as an agent's ``ctx.llm`` calls it (``--layer transport``: the bare
provider of `open_transport` instead, no stack, so only the wires differ), every request
unique, plain (``complete``) and streamed (``stream``, every chunk iterated), at
concurrency 50 (``--concurrency``), ``--calls`` calls per scenario, ``--repeat`` repeats
with the providers' order alternating. ``ratio_<provider>_<kind>`` is the median over the
repeats of that provider's CPU per call over openai's in the same repeat (issue #21's
target: <= 1.2), with the range. The wires differ in size: a Responses stream carries
about three times the events of a Chat Completions one for the same text (created,
in_progress, item and content-part added/done, text done, completed), and that is part of
what is measured.

    python bench/providers.py            # 3000 calls per scenario, 5 repeats
    python bench/providers.py --quick    # 500 calls, 2 repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agentflow_trio.config import LLMConfig  # noqa: E402
from agentflow_trio.errors import ConfigError  # noqa: E402
from agentflow_trio.llm import ChatRequest, LLMClient, Provider, open_llm_client, user  # noqa: E402
from agentflow_trio.llm.provider import open_transport  # noqa: E402
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
PROVIDERS = ("openai", "openai_responses", "anthropic")
BASELINE = "openai"
KINDS = ("complete", "stream")


def config(provider: str, url: str) -> LLMConfig:
    """The ``[llm]`` section of ``provider`` on the mock (the Anthropic base has no /v1)."""
    base = url if provider == "anthropic" else url + "/v1"
    return LLMConfig(
        provider=provider,
        base_url=base,
        api_key="sk-bench",
        model="gpt-4o-mini",
        max_connections=100,
        transport="lean",
    )


def client_callers(llm: LLMClient | Provider, name: str) -> dict[str, Call]:
    """The plain and streamed callers of one provider (through the client or bare: both
    answer ``complete`` and ``stream`` of a `ChatRequest` alike)."""

    def request(i: int) -> ChatRequest:
        return ChatRequest((user(f"{PROMPT} {i}"),), max_tokens=64)

    async def complete(i: int) -> Any:
        return (await llm.complete(request(i))).text

    async def stream(i: int) -> Any:
        pieces = 0
        async with llm.stream(request(i)) as chunks:
            async for _ in chunks:
                pieces += 1
        return pieces

    return {f"{name}_complete": complete, f"{name}_stream": stream}


@asynccontextmanager
async def open_callers(url: str, layer: str) -> AsyncIterator[tuple[dict[str, Call], list[str]]]:
    """Every available provider's callers (baseline first) and the providers skipped."""
    skipped: list[str] = []
    callers: dict[str, Call] = {}
    async with AsyncExitStack() as stack:
        for name in PROVIDERS:
            llm_config = config(name, url)
            try:
                if layer == "client":
                    llm: LLMClient | Provider = await stack.enter_async_context(
                        open_llm_client(llm_config)
                    )
                else:
                    llm = await stack.enter_async_context(open_transport(llm_config))
            except ConfigError as exc:  # a provider this install cannot open
                skipped.append(f"{name}: {exc}")
                continue
            callers.update(client_callers(llm, name))
            for call in (callers[f"{name}_complete"], callers[f"{name}_stream"]):
                await call(0)  # fails loudly here if the wire does not work
        yield callers, skipped


def ratio_rows(
    samples: dict[str, list[dict[str, float]]], concurrency: int, layer: str
) -> list[dict[str, Any]]:
    """Each provider's CPU per call over openai's, per kind, median over the repeats."""
    rows = []
    for name in PROVIDERS[1:]:
        for kind in KINDS:
            runs = samples.get(f"{name}_{kind}")
            if runs is None:
                continue
            base = samples[f"{BASELINE}_{kind}"]
            pairs = zip(runs, base, strict=True)
            ratios = sorted(r["cpu_us_per_call"] / b["cpu_us_per_call"] for r, b in pairs)
            ratio = statistics.median(ratios)
            rows.append(
                {
                    "scenario": f"ratio_{name}_{kind}",
                    "layer": layer,
                    "concurrency": concurrency,
                    "cpu_ratio": round(ratio, 3),
                    "cpu_ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
                    "target": TARGET,
                    "within_target": ratio <= TARGET,
                }
            )
    return rows


async def run(
    url: str, calls: int, repeat: int, concurrency: int, layer: str
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with open_callers(url, layer) as (callers, skipped):
        for note in skipped:
            row = {"scenario": "skipped", "note": note}
            rows.append(row)
            emit(row)
        warmup = min(calls, 300)
        samples = await sample(callers, calls, concurrency, repeat, warmup=warmup, alternate=True)
        for name, runs in samples.items():
            row = scenario_row(
                name, runs, layer=layer, concurrency=concurrency, calls=calls, repeats=repeat
            )
            rows.append(row)
            emit(row)
        for row in ratio_rows(samples, concurrency, layer):
            rows.append(row)
            emit(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, default=50, help="callers at once")
    parser.add_argument(
        "--layer",
        choices=["client", "transport"],
        default="client",
        help="through open_llm_client's default stack, or the bare provider",
    )
    args, calls, repeat = parse_call_args(parser, quick=(500, 2), full=(3000, 5))
    pin_to_core(0)
    with mock_process() as url:
        rows = trio.run(run, url, calls, repeat, args.concurrency, args.layer)
    table(rows, CALL_COLUMNS)


if __name__ == "__main__":
    main()
