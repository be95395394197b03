"""The last line of ``agentcli``: whatever a command raises, the user reads one line.

`GuardedGroup` (the class of the ``agentcli`` group) turns every exception that leaves a
command into a click error with one line and an exit code; `as_click_error` is the rule,
also used by the runs under trio, whose errors come wrapped in exception groups.
Setting ``AGENTCLI_DEBUG=1`` lets an unexpected exception through with its traceback.

Exit codes (documented in the README):

=====  ==================================================================================
0      success
1      an error while running: a busy port, an unreachable service, an unexpected bug
2      bad input: a flag, a config file, a scenario script, an ``--app`` (usage errors)
99     a load run finished but crossed a ``--threshold``
130    interrupted (Ctrl-C); a load run still prints its partial results first
=====  ==================================================================================
"""

from __future__ import annotations

import errno
import os
import re
from typing import IO, Any, Final

import click

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_THRESHOLDS",
    "EXIT_USAGE",
    "BadInput",
    "GuardedGroup",
    "Interrupted",
    "as_click_error",
    "leaves",
]

EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_THRESHOLDS: Final = 99
EXIT_INTERRUPTED: Final = 130
DEBUG_VARIABLE: Final = "AGENTCLI_DEBUG"
_ERRNO_PREFIX: Final = re.compile(r"^\[Errno -?\d+\] ")


class BadInput(click.ClickException):
    """A broken config file, scenario script or app string: ``Error: ...``, exit 2."""

    exit_code = EXIT_USAGE


class Interrupted(click.ClickException):
    """Ctrl-C (or a second one during a load run's wind-down): exit 130, one line."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self) -> None:
        super().__init__("interrupted (Ctrl-C)")

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"agentcli: {self.message}", err=True)


class Unexpected(click.ClickException):
    """An exception no command expected: its type and message, and how to see more."""

    exit_code = EXIT_ERROR

    def __init__(self, exc: BaseException) -> None:
        text = " ".join(str(exc).split())
        if len(text) > 300:
            text = text[:297] + "..."
        kind = type(exc).__name__
        super().__init__(
            f"unexpected {kind}{': ' + text if text else ''} "
            f"(rerun with {DEBUG_VARIABLE}=1 for the traceback)"
        )


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, exception groups unwrapped, trio's ``Cancelled``
    left out (it only says that something else stopped the run)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [] if type(exc).__name__ == "Cancelled" else [exc]


def os_error_text(exc: OSError) -> str:
    """An `OSError` as one line, without the ``[Errno N]`` prefix."""
    text = _ERRNO_PREFIX.sub("", str(exc))
    if exc.errno == errno.EADDRINUSE and "listen on" not in text:
        text = f"cannot listen: {text.lower()} (another server holds the port)"
    return text


def as_click_error(
    exc: BaseException, bad_input: tuple[type[BaseException], ...] = ()
) -> click.ClickException:
    """The click error ``exc`` stands for: Ctrl-C is `Interrupted` (130), an exception of
    ``bad_input`` (or a `ConfigError`) exit 2, an `OSError` one line (1), a click error
    itself, anything else `Unexpected` (1). A group's first real exception decides.

    Raises:
        BaseException: ``exc`` itself, for an unexpected one when ``AGENTCLI_DEBUG`` is set;
            a click exit or abort (or ``SystemExit``) found inside it, as it is.
    """
    from agentflow_trio.errors import ConfigError

    found = leaves(exc)
    if not found or all(isinstance(leaf, KeyboardInterrupt) for leaf in found):
        return Interrupted()
    first = next(leaf for leaf in found if not isinstance(leaf, KeyboardInterrupt))
    if isinstance(first, click.exceptions.Exit | click.Abort | SystemExit):
        raise first  # an exit asked for from inside a run: not an error
    if isinstance(first, click.ClickException):
        return first
    if isinstance(first, (ConfigError, *bad_input)):
        return BadInput(str(first))
    if isinstance(first, OSError):
        return click.ClickException(os_error_text(first))
    if os.environ.get(DEBUG_VARIABLE):
        raise exc
    return Unexpected(first)


class GuardedGroup(click.Group):
    """A click group whose commands never show a traceback (see `as_click_error`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except BaseException as exc:  # KeyboardInterrupt and groups too: one line each
            raise as_click_error(exc) from None
