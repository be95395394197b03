"""``agentcli mock-llm``: the offline mock LLM as a server of its own, until Ctrl-C.

Its behaviour flags are not written out here: `mock_flags` generates one option per
`MockLLMConfig` field that carries flag metadata (help, unit, bounds: see
``mockllm._values.flag``), so a new knob of the mock is a new flag with no CLI change.
Fields in seconds take milliseconds on the command line (``--latency-ms``); a field whose
metadata has a ``parse`` is a repeatable text flag (``--fault MODEL=KIND[:ARGS]``), its
values handed to ``parse`` as a tuple.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from ._options import host_options
from ._plumbing import ms, run_until_signalled, start_server, usage_errors

if TYPE_CHECKING:
    import attrs
    import trio

__all__ = ["mock_flags", "mock_llm"]

_METADATA_KEY = "agentcli"  # mockllm._values.FLAG


def _fields() -> Iterator[tuple[attrs.Attribute[Any], Any]]:
    """The `MockLLMConfig` fields that are flags, with their flag metadata, in order."""
    import attrs

    from agentflow_trio.mockllm import MockLLMConfig

    for field in attrs.fields(attrs.resolve_types(MockLLMConfig)):
        spec = field.metadata.get(_METADATA_KEY)
        if spec is not None:
            yield field, spec


def _flag_name(field: attrs.Attribute[Any], spec: Any) -> str:
    name = spec.name or field.name
    return "--" + name.replace("_", "-") + ("-ms" if spec.unit == "ms" else "")


def _option(field: attrs.Attribute[Any], spec: Any) -> click.Option:
    """The click option of one field: its type and range, default and help."""
    if spec.parse is not None:
        return click.Option(
            [_flag_name(field, spec), field.name],
            multiple=True,
            metavar=spec.metavar,
            help=spec.help,
        )
    default: Any = field.default
    if spec.unit == "ms":
        default *= 1000
    python_type = next(
        t for t in typing.get_args(field.type) or (field.type,) if t is not type(None)
    )
    kind: Any = python_type
    if python_type is float:
        kind = click.FloatRange(spec.low, spec.high)
    elif python_type is int and (spec.low is not None or spec.high is not None):
        kind = click.IntRange(spec.low, spec.high)
    return click.Option(
        [_flag_name(field, spec), field.name],
        type=kind,
        default=default,
        show_default=default is not None,
        help=spec.help,
    )


def mock_flags() -> dict[str, str]:
    """`MockLLMConfig` field name -> flag name, for the fields ``mock-llm`` exposes."""
    flags = {"host": "--host", "port": "--port", "allow_remote": "--allow-remote"}
    flags.update({field.name: _flag_name(field, spec) for field, spec in _fields()})
    return flags


class _MockLLMCommand(click.Command):
    """``mock-llm``, whose behaviour options are generated on first use (parsing, help),
    so that importing the CLI does not import the mock."""

    _generated = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._generated:
            self._generated = True
            after = next(i for i, p in enumerate(self.params) if p.name == "allow_remote")
            generated = [_option(field, spec) for field, spec in _fields()]
            self.params[after + 1 : after + 1] = generated
        return super().get_params(ctx)


@click.command("mock-llm", cls=_MockLLMCommand)
@host_options(8000, what="the mock")
@click.option(
    "--precise-timers/--coarse-timers",
    default=True,
    show_default=True,
    help="Latencies end within about 0.1 ms (the last millisecond is polled, costing CPU) "
    "or up to 1 ms late (plain trio sleeps).",
)
def mock_llm(precise_timers: bool, **values: Any) -> None:
    """Serve the mock LLM's five wires on one port until Ctrl-C.

    OpenAI Chat Completions (/v1/chat/completions), OpenAI Responses (/v1/responses),
    Anthropic Messages (/v1/messages), Azure OpenAI (/openai/deployments/NAME/...) and
    Ollama (/api/chat): plain and streamed, scripted replies and faults on each. Prints
    ``mock LLM listening on http://HOST:PORT`` once it accepts connections; point an
    OpenAI client at that URL + /v1, an Anthropic client at the URL itself. GET /stats
    shows what it served.
    """
    from agentflow_trio.mockllm import MockLLM, MockLLMConfig, PreciseClock

    with usage_errors(mock_flags()):
        for field, spec in _fields():
            if spec.unit == "ms":
                values[field.name] = ms(values[field.name])
            elif spec.parse is not None:
                values[field.name] = spec.parse(values[field.name])
        config = MockLLMConfig(**values)
    mock = MockLLM(config)

    async def serve(nursery: trio.Nursery) -> None:
        await start_server(
            nursery, mock.serve, what="agentcli mock-llm", host=config.host, port=config.port
        )
        click.echo(f"mock LLM listening on {mock.url}")  # click.echo flushes

    run_until_signalled(serve, PreciseClock() if precise_timers else None)
