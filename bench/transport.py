"""CPU per LLM call and calls/s: the lean HTTP/1.1 transport against bare httpx2, same run.

The mock LLM runs in child processes (``python -m agentflow_trio.cli mock-llm --port 0
--latency-ms L``, one per latency), pinned to core 1 when the machine has two or more cores;
this process is pinned to core 0, so its ``getrusage`` CPU is the client's alone.
Scenarios, at concurrency 1, 50 and 200 and mock latency 0 and 50 ms:

* ``bare_httpx2``: one shared ``httpx2.AsyncClient`` POSTing an orjson chat body to
  ``/v1/chat/completions`` and decoding the JSON answer: the baseline.
* ``lean_raw``: the same POST + JSON decode through ``LeanSession.post_json``.
* ``httpx2_on_lean``: the bare httpx2 client with ``transport=LeanTransport(...)``: what the
  custom-transport option saves (httpx2's request/response layer stays).
* ``stack_httpx2`` / ``stack_lean``: `ProviderStack.complete` with the default layers (retry
  and circuit breaker on; OpenAI adapter), on the httpx2 session and on the lean one.

Every request body is unique. Each scenario is warmed up, then repeated (``--repeat``, the
median kept). Ratios: CPU per call over ``bare_httpx2``'s at the same concurrency and
latency, and ``stack_lean`` over ``stack_httpx2``. ``little_bound`` is concurrency/latency.

    python bench/transport.py             # full run (about 4 minutes)
    python bench/transport.py --quick     # short run (about 35 s)
    python bench/transport.py --profile stack_lean   # cProfile one scenario (c=50, 0 ms)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx2
import orjson
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentflow_trio.config import LLMConfig  # noqa: E402
from agentflow_trio.llm import ProviderStack, open_provider, user  # noqa: E402
from agentflow_trio.llm._lean import LeanSession, LeanTransport, PoolSettings  # noqa: E402
from agentflow_trio.llm._open_session import open_http_session  # noqa: E402
from agentflow_trio.llm.openai import OpenAIProvider, openai_headers  # noqa: E402
from agentflow_trio.llm.types import ChatRequest  # noqa: E402
from bench._common import (  # noqa: E402
    Call,
    drive,
    emit,
    mock_process,
    pin_to_core,
    sample,
    scenario_row,
    table,
)

PROMPT = "Summarise the benchmark results in one sentence, please."
SCENARIOS = ("bare_httpx2", "lean_raw", "httpx2_on_lean", "stack_httpx2", "stack_lean")
MAX_CONNECTIONS = 256


def _body(i: int) -> bytes:
    message = {"role": "user", "content": f"{PROMPT} {i}"}
    return orjson.dumps({"model": "gpt-4o-mini", "messages": [message]})


def httpx2_caller(client: httpx2.AsyncClient, url: str) -> Call:
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

    async def call(i: int) -> Any:
        response = await client.post(url, content=_body(i), headers=headers)
        response.raise_for_status()
        return orjson.loads(response.content)["choices"][0]["message"]["content"]

    return call


def lean_caller(session: LeanSession, url: str) -> Call:
    async def call(i: int) -> Any:
        data = await session.post_json(url, _body(i))
        return data["choices"][0]["message"]["content"]

    return call


def stack_caller(provider: ProviderStack) -> Call:
    async def call(i: int) -> Any:
        return (await provider.complete(ChatRequest((user(f"{PROMPT} {i}"),)))).text

    return call


def _llm(url: str) -> LLMConfig:
    return LLMConfig(
        provider="openai",
        base_url=url + "/v1",
        api_key="sk-bench",
        max_connections=MAX_CONNECTIONS,
    )


async def open_callers(stack: AsyncExitStack, url: str) -> dict[str, Call]:
    """Every scenario's caller, each with its own client and pool."""
    llm = _llm(url)
    chat = url + "/v1/chat/completions"
    limits = httpx2.Limits(
        max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
    )
    bare = await stack.enter_async_context(httpx2.AsyncClient(limits=limits, timeout=60.0))
    on_lean = await stack.enter_async_context(
        httpx2.AsyncClient(
            transport=LeanTransport(PoolSettings(max_connections=MAX_CONNECTIONS)), timeout=60.0
        )
    )
    sessions = {}
    for name in ("httpx2", "lean"):
        sessions[name] = await stack.enter_async_context(
            open_http_session(
                llm,
                headers=openai_headers(llm),
                deployment=llm.model,
                base_url=llm.base_url,
                http_transport=name,
            )
        )
    providers = {}
    for name, session in sessions.items():
        adapter = OpenAIProvider(
            session, chat_url=chat, embeddings_url=url + "/v1/embeddings", model=llm.model
        )
        providers[name] = await stack.enter_async_context(open_provider(llm, transport=adapter))
    lean = sessions["lean"]
    assert isinstance(lean, LeanSession)
    return {
        "bare_httpx2": httpx2_caller(bare, chat),
        "lean_raw": lean_caller(lean, chat),
        "httpx2_on_lean": httpx2_caller(on_lean, chat),
        "stack_httpx2": stack_caller(providers["httpx2"]),
        "stack_lean": stack_caller(providers["lean"]),
    }


def _calls(latency_ms: float, concurrency: int, scale: float) -> int:
    per_s: float
    if latency_ms <= 0:
        per_s = 1500 if concurrency == 1 else 3000
    else:
        per_s = min(concurrency / (latency_ms / 1000), 4000)
    return max(20, int(per_s * 1.5 * scale))  # about 1.5 s of the slowest client


async def run_latency(
    url: str, latency_ms: float, concurrencies: list[int], repeat: int, scale: float
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        callers = await open_callers(stack, url)
        for concurrency in concurrencies:
            calls = _calls(latency_ms, concurrency, scale)
            warmup = min(calls, 2 * concurrency + 100)
            samples = await sample(callers, calls, concurrency, repeat, warmup=warmup)
            by_name: dict[str, dict[str, Any]] = {}
            for name, runs in samples.items():
                row = scenario_row(
                    name, runs, latency_ms=latency_ms, concurrency=concurrency, calls=calls
                )
                if latency_ms > 0:
                    row["little_bound"] = round(concurrency / (latency_ms / 1000), 1)
                by_name[name] = row
            base = by_name["bare_httpx2"]["cpu_us_per_call"]
            for name, row in by_name.items():
                row["cpu_vs_bare"] = round(row["cpu_us_per_call"] / base, 3)
                if name == "stack_lean":
                    row["cpu_vs_stack_httpx2"] = round(
                        row["cpu_us_per_call"] / by_name["stack_httpx2"]["cpu_us_per_call"], 3
                    )
                rows.append(row)
                emit(row)
    return rows


async def profile(url: str, scenario: str, calls: int) -> None:
    async with AsyncExitStack() as stack:
        call = (await open_callers(stack, url))[scenario]
        await drive(call, 500, 50)
        profiler = cProfile.Profile()
        profiler.enable()
        await drive(call, calls, 50)
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue(), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short run, 1 repeat")
    parser.add_argument("--repeat", type=int, default=None, help="repeats (median kept)")
    parser.add_argument("--latency", type=float, action="append", help="mock latency (ms)")
    parser.add_argument("--concurrency", type=int, action="append", help="callers")
    parser.add_argument("--profile", choices=SCENARIOS, help="cProfile one scenario instead")
    args = parser.parse_args()
    pin_to_core(0)
    if args.profile:
        with mock_process(0) as url:
            trio.run(profile, url, args.profile, 5000)
        return
    repeat = args.repeat or (1 if args.quick else 3)
    scale = 0.25 if args.quick else 1.0
    rows: list[dict[str, Any]] = []
    for latency_ms in args.latency or [0.0, 50.0]:
        with mock_process(latency_ms) as url:
            rows += trio.run(
                run_latency, url, latency_ms, args.concurrency or [1, 50, 200], repeat, scale
            )
    table(
        rows,
        [
            "scenario",
            "latency_ms",
            "concurrency",
            "calls_per_s",
            "cpu_us_per_call",
            "cpu_vs_bare",
            "cpu_vs_stack_httpx2",
            "little_bound",
        ],
    )


if __name__ == "__main__":
    main()
