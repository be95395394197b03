"""What every ``agentcli`` command does around its library call: load, run, report errors.

Loading: `load_config` (a `Config`), `load_agents` (``--app MODULE:ATTR``), `prepare` (both,
plus the model-target check: the preamble ``serve`` and ``worker`` share). Running:
`run_trio` (a run that ends by itself) and `run_until_signalled` (a server that runs until
SIGINT or SIGTERM, exit 0). Errors: a broken config file, scenario script or app string is
`BadInput` (``Error: ...``, exit 2); a config value built from a flag names the flag
(`usage_errors`); an `OSError` is one line, exit 1.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import trio

    from agentflow_trio.config import Config

__all__ = [
    "BadInput",
    "load_agents",
    "load_config",
    "ms",
    "prepare",
    "run_trio",
    "run_until_signalled",
    "usage_errors",
]


class BadInput(click.ClickException):
    """A broken config file, scenario script or app string: ``Error: ...``, exit 2."""

    exit_code = 2


def ms(value: float) -> float:
    """Milliseconds (a flag's unit) as seconds (the library's)."""
    return value / 1000.0


@contextmanager
def usage_errors(flags: Mapping[str, str]) -> Iterator[None]:
    """Turn a ``ConfigError`` (a ValueError) raised while building a config into a usage
    error (exit 2) that names the flag: ``flags`` maps config keys to flag names."""
    try:
        yield
    except ValueError as exc:
        key, reason = getattr(exc, "key", None), getattr(exc, "reason", str(exc))
        if isinstance(key, str) and key in flags:
            raise click.BadParameter(reason, param_hint=f"'{flags[key]}'") from None
        raise click.UsageError(str(exc)) from None


def load_config(path: str | None) -> Config:
    """The config at ``path`` (None: every default); a `ConfigError` becomes `BadInput`."""
    from agentflow_trio.config import Config, load_config

    if path is None:
        return Config()
    try:
        return load_config(path)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def load_agents(ref: str | None) -> Mapping[str, Any]:
    """The agents ``--app MODULE:ATTR`` names (a dict, or a function returning one);
    without ``--app``, the built-in example agents."""
    from agentflow_trio.loadgen import EXAMPLE_AGENTS

    if ref is None:
        return EXAMPLE_AGENTS
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise BadInput(f"--app must be MODULE:ATTR (such as 'myapp:agents'), got {ref!r}")
    agents = getattr(_import_app(ref, module_name), attr, None)
    if agents is None:
        raise BadInput(f"--app {ref}: module {module_name!r} has no attribute {attr!r}")
    if callable(agents) and not isinstance(agents, Mapping):
        try:
            agents = agents()
        except Exception as exc:
            raise BadInput(f"--app {ref}: calling it raised {type(exc).__name__}: {exc}") from None
    if not isinstance(agents, Mapping) or not agents or not all(isinstance(k, str) for k in agents):
        raise BadInput(f"--app {ref}: expected a non-empty dict of event type -> agent")
    return agents


def _import_app(ref: str, module_name: str) -> Any:
    """Import ``module_name`` with the working directory on ``sys.path`` (as python -m)."""
    import importlib
    import os
    import sys

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise BadInput(
            f"--app {ref}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None


def prepare(config_path: str | None, app_ref: str | None) -> tuple[Config, Mapping[str, Any]]:
    """The preamble of the commands that run agents (``serve``, ``worker``): the config,
    checked for a model endpoint it may call, and the agents, each a `BadInput` if bad."""
    from agentflow_trio.mockllm import check_llm_target

    config = load_config(config_path)
    try:
        check_llm_target(config, config_path)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return config, load_agents(app_ref)


def run_trio(main_fn: Callable[[], Awaitable[Any]]) -> Any:
    """``trio.run(main_fn)``. A config or script problem found while starting becomes
    `BadInput` (exit 2), ``OSError`` a one-line error (exit 1), Ctrl-C click's Abort."""
    import trio

    from agentflow_trio.errors import ConfigError
    from agentflow_trio.loadgen.loadtest import ScriptError

    try:
        return trio.run(main_fn)
    except (ConfigError, ScriptError) as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None


def run_until_signalled(
    serve: Callable[[trio.Nursery], Awaitable[Any]], clock: trio.abc.Clock | None = None
) -> None:
    """Run ``await serve(nursery)`` (which starts services in the nursery and returns) under
    trio (with ``clock``, if given), then wait for SIGINT or SIGTERM and cancel everything:
    a clean exit 0.

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
        trio.run(run, clock=clock)
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
