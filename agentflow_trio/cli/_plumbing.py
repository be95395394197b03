"""What every ``agentcli`` command does around its library call: load, run, report errors.

Loading: `load_config` (a `Config`), `load_app` (``--app MODULE:ATTR``: an `App`, a
function returning one, or a dict of agents), `prepare` (both, plus the model-target check:
the preamble of every command that hosts an App). Running:
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

    from agentflow_trio.app import App
    from agentflow_trio.config import Config

__all__ = [
    "BadInput",
    "load_app",
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


def load_app(ref: str | None, default: Mapping[str, Any] | None = None) -> App:
    """The `App` ``--app MODULE:ATTR`` names: an App, a function (sync or async) returning
    one, or a dict of event type -> agent (or a function returning one), made an App.
    Without ``--app``: an App of ``default`` (the built-in example agents if None).

    Raises:
        BadInput: a malformed reference, a module that does not import, a missing
            attribute, a factory that raises, or something that is not an App.
    """
    from agentflow_trio.app import App

    if ref is None:
        if default is None:
            from agentflow_trio.loadgen import EXAMPLE_AGENTS

            default = EXAMPLE_AGENTS
        return App(default)
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise BadInput(f"--app must be MODULE:ATTR (such as 'myapp:app'), got {ref!r}")
    found = getattr(_import_app(ref, module_name), attr, None)
    if found is None:
        raise BadInput(f"--app {ref}: module {module_name!r} has no attribute {attr!r}")
    if callable(found) and not isinstance(found, App | Mapping):
        found = _called(ref, found)
    try:
        return App.coerce(found)
    except (TypeError, ValueError) as exc:
        raise BadInput(
            f"--app {ref}: expected an App, a non-empty dict of event type -> agent, or a "
            f"function returning one ({exc})"
        ) from None


def _called(ref: str, factory: Callable[[], Any]) -> Any:
    """What ``factory()`` returns (awaited under trio if it is an ``async def``)."""
    import inspect

    try:
        made = factory()
        if inspect.isawaitable(made):
            import trio

            async def wait() -> Any:
                return await made

            made = trio.run(wait)
    except Exception as exc:
        raise BadInput(f"--app {ref}: calling it raised {type(exc).__name__}: {exc}") from None
    return made


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


def prepare(config_path: str | None, app_ref: str | None) -> tuple[Config | None, App]:
    """The preamble of the commands that host an App: the ``--config`` file (None without
    one: the App's own config applies), the ``--app`` App, and the check that the config
    that applies may call its model endpoint; each a `BadInput` if bad."""
    from agentflow_trio.mockllm import check_llm_target

    config = load_config(config_path) if config_path is not None else None
    app = load_app(app_ref)
    try:
        applies = config if config is not None else app.config
        check_llm_target(applies if applies is not None else load_config(None), config_path)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return config, app


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
