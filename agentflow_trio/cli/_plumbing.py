"""What every ``agentcli`` command does around its library call: load, run, report errors.

Loading: `load_config` (a `Config`), `load_agents` (``--app MODULE:ATTR``), `prepare` (both,
plus the model-target check: the preamble ``serve`` and ``worker`` share). Running:
`run_trio` (a run that ends by itself) and `run_until_signalled` (a server that runs until
SIGINT or SIGTERM, exit 0). Errors: a broken config file, scenario script or app string is
`BadInput` (``Error: ...``, exit 2); a config value built from a flag names the flag
(`usage_errors`); the rest is one line by the rule of `_guard.as_click_error`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from ._guard import BadInput, as_click_error, leaves

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
    "start_server",
    "usage_errors",
]


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


def run_trio(main_fn: Callable[[], Awaitable[Any]], *, debug_port: int | None = None) -> Any:
    """``trio.run(main_fn)``; whatever it raises becomes one line (`as_click_error`): a
    config or script problem found while starting is `BadInput` (exit 2), an ``OSError``
    exit 1, Ctrl-C exit 130. ``debug_port``: the runner's debug server binds it (the only
    server of the run that may find its port taken), so a busy port names it."""
    import trio

    from agentflow_trio.loadgen.loadtest import ScriptError

    try:
        return trio.run(main_fn)
    except BaseException as exc:
        raise as_click_error(_naming_debug_port(exc, debug_port), (ScriptError,)) from None


def _naming_debug_port(exc: BaseException, port: int | None) -> BaseException:
    """``exc``, or, when it is a busy port that names no address, the same error naming
    the debug server's (``[monitoring] profile_port``)."""
    import errno

    found = leaves(exc)
    if port is None or len(found) != 1 or not isinstance(found[0], OSError):
        return exc
    error = found[0]
    if error.errno != errno.EADDRINUSE or "listen on" in str(error):
        return exc
    from agentflow_trio.server import listen_error

    return listen_error(error, "the debug server ([monitoring] profile_port)", "127.0.0.1", port)


async def start_server(
    nursery: trio.Nursery, serve: Callable[..., Awaitable[Any]], *, what: str, host: str, port: int
) -> Any:
    """``await nursery.start(serve)``; an address that cannot be bound (a busy port) is an
    `OSError` naming ``what``, ``host`` and ``port`` (`agentflow_trio.server.listen_error`)."""
    try:
        return await nursery.start(serve)
    except (OSError, BaseExceptionGroup) as exc:
        from agentflow_trio.server import listen_error, only_os_error

        error = only_os_error(exc)
        if error is None:
            raise
        raise listen_error(error, what, host, port) from None


def run_until_signalled(
    serve: Callable[[trio.Nursery], Awaitable[Any]], clock: trio.abc.Clock | None = None
) -> None:
    """Run ``await serve(nursery)`` (which starts services in the nursery and returns) under
    trio (with ``clock``, if given), then wait for SIGINT or SIGTERM and cancel everything:
    a clean exit 0.

    Whatever starting raises becomes one line (`as_click_error`; a busy port: exit 1).
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
    except BaseException as exc:
        raise as_click_error(exc) from None
