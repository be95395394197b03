"""Logging of a process that hosts an App: ``[monitoring] log_level`` and ``log_format``.

`configure_logging` gives the ``agentflow_trio`` loggers (every module's logger is below
it) a level and one handler of ours, writing to stderr (or a given stream), either
``"plain"`` text lines or ``"json"`` lines: one object per record with ``time`` (ISO 8601,
UTC, milliseconds), ``level``, ``logger``, ``message``, ``event_id`` and ``agent``, then
whatever the call passed as ``extra=`` and ``exception`` (the formatted traceback) when
there is one. Calling it again replaces the settings of that one handler: never two.
Records still propagate to the root logger as before (configure the root yourself, or
leave it bare as the CLI does, to see each record once).

``event_id`` and ``agent`` are those of the event the logging code runs for, its tasks
and model calls included (None outside any event): `EventContextFilter` reads the
runner's per-event context variable (``usage.EVENT_CONTEXT``, the one model calls find
their usage meter by) through `current_event`. Add the filter to a handler of your own to
label your records the same way.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

from ..usage import EVENT_CONTEXT

if TYPE_CHECKING:
    from ..config import MonitoringConfig

__all__ = [
    "LOGGER",
    "EventContextFilter",
    "JSONFormatter",
    "PlainFormatter",
    "configure_logging",
    "current_event",
]

LOGGER: Final = "agentflow_trio"
"""The logger `configure_logging` configures; every module of the package logs below it."""

_PLAIN: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("n", 0, "p", 0, "m", None, None)).keys()
    | {"message", "asctime", "event_id", "agent", "taskName"}
)


def current_event() -> tuple[str | None, str | None]:
    """``(event id, agent name)`` of the event the calling code runs for; ``(None, None)``
    outside any event, and the agent None until the runner has picked it."""
    ctx = EVENT_CONTEXT.get()
    if ctx is None:
        return None, None
    event = getattr(ctx, "event", None)
    return getattr(event, "id", None), getattr(ctx, "agent", None)


class EventContextFilter(logging.Filter):
    """Sets ``record.event_id`` and ``record.agent`` from `current_event` (unless the call
    gave them as ``extra=``); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "event_id"):
            record.event_id, record.agent = current_event()
        elif not hasattr(record, "agent"):
            record.agent = None
        return True


class PlainFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE [event=ID agent=NAME]`` (the bracket only inside an
    event), then the traceback lines."""

    def __init__(self) -> None:
        super().__init__(_PLAIN)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        event_id = getattr(record, "event_id", None)
        if event_id is None:
            return text
        return f"{text} [event={event_id} agent={getattr(record, 'agent', None) or '-'}]"


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring); a value of
    ``extra=`` that is not JSON is written as its ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "event_id": getattr(record, "event_id", None),
            "agent": getattr(record, "agent", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler `configure_logging` owns on the ``agentflow_trio`` logger."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self.addFilter(EventContextFilter())


def configure_logging(
    monitoring: MonitoringConfig, *, stream: TextIO | None = None
) -> logging.Handler:
    """Configure the ``agentflow_trio`` loggers from ``[monitoring]``; returns the handler.

    ``log_level`` becomes the logger's level; ``log_format`` picks `PlainFormatter` or
    `JSONFormatter`; records go to ``stream`` (default: stderr). Idempotent: a second call
    reconfigures the same handler (and keeps its stream unless one is given). Remove the
    returned handler from ``logging.getLogger("agentflow_trio")`` to undo.
    """
    logger = logging.getLogger(LOGGER)
    logger.setLevel(monitoring.log_level.upper())
    handler = next((h for h in logger.handlers if isinstance(h, _Handler)), None)
    if handler is None:
        handler = _Handler(stream)
        logger.addHandler(handler)
    elif stream is not None:
        handler.setStream(stream)
    formatter = JSONFormatter() if monitoring.log_format == "json" else PlainFormatter()
    handler.setFormatter(formatter)
    return handler
