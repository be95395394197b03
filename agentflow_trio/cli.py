"""The ``agentcli`` command line: one click group, one command per job.

Importing this module costs only click: each command imports what it needs (trio, the
server, the load generator) inside its function, so ``agentcli --help`` stays fast. Bad
flag values are click usage errors (exit 2, no traceback); a command that runs until told
to stop (``mock-llm``, later ``serve`` and ``worker``) ends on SIGINT or SIGTERM with exit 0.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import trio

__all__ = ["main"]

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(name="agentcli", context_settings=_CONTEXT)
def main() -> None:
    """agentflow_trio: run, benchmark and serve LLM agent systems on trio."""


# -- shared plumbing for the commands ---------------------------------------------------


@contextmanager
def _usage_errors(flags: Mapping[str, str]) -> Iterator[None]:
    """Turn a ``ConfigError`` (a ValueError) raised while building a config into a usage
    error (exit 2) that names the flag: ``flags`` maps config keys to flag names."""
    try:
        yield
    except ValueError as exc:
        key, reason = getattr(exc, "key", None), getattr(exc, "reason", str(exc))
        if isinstance(key, str) and key in flags:
            raise click.BadParameter(reason, param_hint=f"'{flags[key]}'") from None
        raise click.UsageError(str(exc)) from None


def _run_until_signalled(serve: Callable[[trio.Nursery], Awaitable[Any]]) -> None:
    """Run ``await serve(nursery)`` (which starts services in the nursery and returns) under
    trio, then wait for SIGINT or SIGTERM and cancel everything: a clean exit 0.

    ``OSError`` while starting (address in use, ...) becomes a click error (exit 1).
    """
    import signal

    import trio

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await serve(nursery)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(run)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None


def _ms(value: float) -> float:
    return value / 1000.0


# -- commands ---------------------------------------------------------------------------

_MOCK_LLM_FLAGS = {
    "host": "--host",
    "port": "--port",
    "latency": "--latency-ms",
    "jitter": "--jitter-ms",
    "error_rate": "--error-rate",
    "rate_limit_rate": "--rate-limit-rate",
    "retry_after": "--retry-after-ms",
    "stream_chunks": "--stream-chunks",
    "stream_delay": "--stream-delay-ms",
}


@main.command("mock-llm")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Added before each model response.",
)
@click.option(
    "--jitter-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Latency varies by +- this much (uniform).",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of model requests answered 500.",
)
@click.option(
    "--rate-limit-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of model requests answered 429 with Retry-After.",
)
@click.option(
    "--retry-after-ms",
    type=click.FloatRange(min=0),
    default=1000.0,
    show_default=True,
    help="Retry-After advertised by 429 answers.",
)
@click.option("--stream-chunks", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--stream-delay-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Pause between streamed chunks.",
)
@click.option("--model", default="mock-gpt", show_default=True, help="Model name reported.")
@click.option("--seed", type=int, default=None, help="Seed for faults and jitter.")
@click.option(
    "--allow-remote", is_flag=True, help="Allow binding a non-loopback address (exposes the mock)."
)
def mock_llm(
    host: str,
    port: int,
    latency_ms: float,
    jitter_ms: float,
    error_rate: float,
    rate_limit_rate: float,
    retry_after_ms: float,
    stream_chunks: int,
    stream_delay_ms: float,
    model: str,
    seed: int | None,
    allow_remote: bool,
) -> None:
    """Serve an OpenAI-compatible mock LLM (also Azure and Ollama paths) until Ctrl-C.

    Prints ``mock LLM listening on http://HOST:PORT`` once it accepts connections; point
    an OpenAI client at that URL + /v1. GET /stats shows what it served.
    """
    from agentflow_trio.server.mock_llm import MockLLM, MockLLMConfig

    with _usage_errors(_MOCK_LLM_FLAGS):
        config = MockLLMConfig(
            host=host,
            port=port,
            latency=_ms(latency_ms),
            jitter=_ms(jitter_ms),
            error_rate=error_rate,
            rate_limit_rate=rate_limit_rate,
            retry_after=_ms(retry_after_ms),
            stream_chunks=stream_chunks,
            stream_delay=_ms(stream_delay_ms),
            model=model,
            seed=seed,
            allow_remote=allow_remote,
        )
    mock = MockLLM(config)

    async def serve(nursery: trio.Nursery) -> None:
        await nursery.start(mock.serve)
        click.echo(f"mock LLM listening on {mock.url}")  # click.echo flushes

    _run_until_signalled(serve)


if __name__ == "__main__":
    main(prog_name="agentcli")
