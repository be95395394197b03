"""The exception hierarchy of agentflow_trio.

Operational errors (something outside the caller's code went wrong, and a retry, a wait or
a fallback may help) are kept apart from misuse (the caller's code or configuration is
wrong, and must change)::

    AgentFlowError
    ├── ConfigError (also ValueError)           misuse: a bad agentflow.toml or argument
    ├── MalformedEntry (also ValueError)        a Redis stream entry breaks its format or a bound
    ├── RunnerError
    │   ├── QueueFull (also trio.WouldBlock)    emit_nowait found no room
    │   ├── RunnerClosed                        the runner no longer accepts events
    │   ├── Overloaded                          load shed (memory limit, admission)
    │   ├── NestingTooDeep                      nested runner.call calls past the limit
    │   ├── BrokerUnavailable                   Redis refused, dropped or did not answer
    │   └── ResultTimeout (also TimeoutError)   a remote event's result did not come in time
    ├── AgentError
    │   ├── UnknownAgent                        no agent/route for an event
    │   └── AgentFailed                         AgentResult.unwrap() on a non-success
    ├── ToolError
    │   ├── UnknownTool
    │   └── ToolArgumentError                   arguments do not match the schema
    ├── SchemaValidationError (also ValueError) a value does not fit a type's schema (problems)
    │   └── OutputValidationError               a model's structured reply failed every try
    ├── UsageLimitExceeded                      an event's usage budget would be exceeded
    ├── MCPError                                an MCP server failed or is unreachable
    ├── CircuitOpenError                        a breaker refused the call (retry_after)
    └── LLMError                                a provider call failed
        ├── TransportError                      no usable HTTP response
        │   ├── LLMConnectError
        │   ├── LLMTimeoutError
        │   │   └── StreamStalledError  (*)     no stream data for request_timeout
        │   └── LLMReadError                    connection lost mid-response
        │       └── StreamCutError  (*)         connection lost mid-stream
        ├── ResponseFormatError                 malformed JSON, truncated stream, wrong type
        │   ├── ResponseTooLargeError           a response size bound tripped (limit, key)
        │   └── StreamEndedEarlyError  (*)      the body ended before the answer did
        ├── OutputRefusedError                  the model refused a structured answer
        ├── IncompleteStreamError               (*) a stream stopped before finish_reason
        └── APIStatusError                      an HTTP error status (status, body excerpt)
            ├── BadRequestError (400) / AuthenticationError (401, 403) / NotFoundError (404)
            ├── RateLimitError (429, retry_after)
            │   └── LocalRateLimitError             our own limiter/pause refused to wait
            └── ServerError (5xx)

(*) also an `IncompleteStreamError`: catch that to handle every unfinished stream, which
says how much reached the caller (``delivered_chunks``, ``delivered_chars``).

``trio.Cancelled`` is never subclassed, wrapped or counted by anything here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import trio

__all__ = [
    "APIStatusError",
    "AgentError",
    "AgentFailed",
    "AgentFlowError",
    "AuthenticationError",
    "BadRequestError",
    "BrokerUnavailable",
    "CircuitOpenError",
    "ConfigError",
    "IncompleteStreamError",
    "LLMConnectError",
    "LLMError",
    "LLMReadError",
    "LLMTimeoutError",
    "LocalRateLimitError",
    "MCPError",
    "MalformedEntry",
    "NestingTooDeep",
    "NotFoundError",
    "OutputRefusedError",
    "OutputValidationError",
    "Overloaded",
    "QueueFull",
    "RateLimitError",
    "ResponseFormatError",
    "ResponseTooLargeError",
    "ResultTimeout",
    "RunnerClosed",
    "RunnerError",
    "SchemaValidationError",
    "ServerError",
    "StreamCutError",
    "StreamEndedEarlyError",
    "StreamStalledError",
    "ToolArgumentError",
    "ToolError",
    "TransportError",
    "UnknownAgent",
    "UnknownTool",
    "UsageLimitExceeded",
]


class AgentFlowError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(AgentFlowError, ValueError):
    """A configuration file or value is malformed.

    ``source`` is the file (or ``"<mapping>"``), ``key`` the dotted key that is wrong.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        where = ""
        if source is not None and key is not None:
            where = f"{source}: {key}: "
        elif source is not None:
            where = f"{source}: "
        elif key is not None:
            where = f"{key}: "
        super().__init__(f"{where}{message}")
        self.reason = message


class RunnerError(AgentFlowError):
    """The runner refused or could not take an event."""


class QueueFull(RunnerError, trio.WouldBlock):
    """``Runner.emit_nowait`` found no room: the admission bound or the queue is full."""


class RunnerClosed(RunnerError):
    """The runner is closing or closed and accepts no new events."""


class Overloaded(RunnerError):
    """The runner sheds load (for example over its soft memory limit)."""


class NestingTooDeep(RunnerError):
    """``ctx.runner.call`` from inside an agent went more than ``limit`` levels deep.

    Raised at once to the calling agent (a runaway recursion of agents calling agents),
    never after a wait; ``limit`` is ``runner.max_nesting_depth``.
    """

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(
            f"runner.call nested more than {limit} levels deep inside one event "
            "(runner.max_nesting_depth): is an agent calling itself?"
        )


class MalformedEntry(AgentFlowError, ValueError):
    """A Redis stream entry (or the entry an event would make) is malformed or breaks a
    bound: ``limit`` of ``bound`` (the name of the bound, when one tripped).

    A worker dead-letters such an entry on its first delivery with this as the reason,
    never runs or retries it; `RemoteRunner.emit` raises it before sending. Bad input,
    not an outage: sending the same entry again cannot help.
    """

    def __init__(self, message: str, *, bound: str | None = None, limit: float | None = None):
        self.bound = bound
        self.limit = limit
        super().__init__(message)


class AgentError(AgentFlowError):
    """An agent could not be found or set up (not an error raised *by* an agent)."""


class UnknownAgent(AgentError, LookupError):
    """No agent or route matches an event; ``known`` lists the ones that exist."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...] = ()):
        self.name = name
        self.known = tuple(sorted(known))
        listing = ", ".join(self.known) if self.known else "(none)"
        super().__init__(f"no agent or route named {name!r}; known: {listing}")


class AgentFailed(AgentError):
    """Raised by ``AgentResult.unwrap()`` when the event did not succeed; keeps ``result``."""

    def __init__(self, result: object):
        self.result = result
        outcome = getattr(result, "outcome", "?")
        error = getattr(result, "error", None)
        super().__init__(f"event {getattr(result, 'event_id', None)} {outcome}: {error}")


class ToolError(AgentFlowError):
    """A tool could not be called."""


class UnknownTool(ToolError, LookupError):
    """No tool of that name is registered."""


class ToolArgumentError(ToolError, ValueError):
    """A tool's arguments do not match its schema; ``field`` names the offending one."""

    def __init__(self, message: str, *, tool: str, field: str | None = None):
        self.tool = tool
        self.field = field
        super().__init__(message)


class SchemaValidationError(AgentFlowError, ValueError):
    """A value does not fit a type's schema.

    ``problems`` lists what is wrong, each a dict with ``field`` (a path such as
    ``"items[0].name"``, None for the whole value), ``expected``, ``got`` (a short repr of
    what was there) and ``message``; the first problem is the message.
    """

    def __init__(self, problems: Sequence[Mapping[str, Any]]):
        self.problems = tuple(problems)
        first = self.problems[0]["message"] if self.problems else "invalid value"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}")


class OutputValidationError(SchemaValidationError):
    """The model's structured reply did not validate, after every allowed retry.

    ``attempts`` is the raw text of each reply, in order (one per model call: the first
    try and each re-ask); ``problems`` are those of the last attempt.
    """

    def __init__(self, attempts: Sequence[str], problems: Sequence[Mapping[str, Any]]):
        self.attempts = tuple(attempts)
        super().__init__(problems)
        tries = len(self.attempts)
        self.args = (f"structured output failed validation after {tries} attempt(s): {self}",)

    def __str__(self) -> str:
        return str(self.args[0])


class UsageLimitExceeded(AgentFlowError):
    """An event's usage budget would be (or was, during a stream) exceeded.

    ``limit`` names the limit (``"max_requests"``, ``"max_input_tokens"``,
    ``"max_output_tokens"``, ``"max_total_tokens"``, ``"max_cost"``), ``allowed`` its
    value, ``observed`` what the next call would reach (or what a stream reached), and
    ``usage`` the usage spent so far (kept on the event's result).
    """

    def __init__(self, limit: str, allowed: float, observed: float, usage: Any = None):
        self.limit = limit
        self.allowed = allowed
        self.observed = observed
        self.usage = usage
        super().__init__(f"usage limit {limit}={allowed:g} exceeded ({observed:g})")


class MCPError(AgentFlowError):
    """An MCP server failed, timed out or is unreachable."""


class CircuitOpenError(AgentFlowError):
    """A circuit breaker is open and refused the call without trying it.

    ``retry_after`` is the number of seconds until the breaker lets a probe through.
    """

    def __init__(self, name: str, retry_after: float):
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"circuit {name!r} is open; retry in {retry_after:.3f}s")


class LLMError(AgentFlowError):
    """A call to a model provider failed. ``deployment`` names where it was sent."""

    def __init__(self, message: str, *, deployment: str | None = None):
        self.deployment = deployment
        super().__init__(message)


class TransportError(LLMError):
    """No usable HTTP response was received."""


class LLMConnectError(TransportError):
    """The connection to the provider could not be opened."""


class LLMTimeoutError(TransportError):
    """The provider did not answer in time (connect, read or pool timeout)."""


class LLMReadError(TransportError):
    """The connection broke while the response was being read."""


class OutputRefusedError(LLMError):
    """The model refused to give the structured answer (its ``refusal`` message, or the
    provider's content filter stopped the reply): raised at once, never re-asked.

    ``refusal`` is the model's words (or what stopped it), ``finish_reason`` the reply's,
    ``attempts`` the raw text of the replies before it (as `OutputValidationError`'s).
    """

    def __init__(
        self,
        refusal: str,
        *,
        finish_reason: str | None = None,
        attempts: Sequence[str] = (),
        deployment: str | None = None,
    ) -> None:
        self.refusal = refusal
        self.finish_reason = finish_reason
        self.attempts = tuple(attempts)
        super().__init__(f"the model refused to answer: {refusal}", deployment=deployment)


class ResponseFormatError(LLMError):
    """The provider answered, but not in the expected shape.

    ``excerpt`` holds the start of the offending body, for the log.
    """

    def __init__(self, message: str, *, excerpt: str = "", deployment: str | None = None):
        self.excerpt = excerpt
        super().__init__(message, deployment=deployment)


class ResponseTooLargeError(ResponseFormatError):
    """The response broke a size bound: ``limit`` bytes, set by the config key ``key``.

    Raised as soon as the bound is crossed (a head, a body as received, a body once
    decoded), never after buffering the rest; the connection is closed, not reused.
    Retrying cannot help: the same request gets the same answer.
    """

    def __init__(
        self, message: str, *, limit: int, key: str | None = None, deployment: str | None = None
    ):
        self.limit = limit
        self.key = key
        super().__init__(message, deployment=deployment)


class IncompleteStreamError(LLMError):
    """A streamed answer stopped before its ``finish_reason``: never a truncated success.

    ``delivered_chunks`` chunks, holding ``delivered_chars`` characters of text and
    tool-call arguments, had reached the caller before it stopped (0: nothing did, so the
    request may be sent again, elsewhere, without the caller noticing). Raised as one of
    its subclasses, each also a subclass of the error the same failure raised before
    (`StreamCutError` is an `LLMReadError`, ...); ``__cause__`` is the transport's error.
    A stream that ends after ``finish_reason`` but without its terminator (``data:
    [DONE]``) is complete, not this.
    """

    def __init__(
        self,
        message: str,
        *,
        delivered_chunks: int = 0,
        delivered_chars: int = 0,
        deployment: str | None = None,
    ):
        self.delivered_chunks = delivered_chunks
        self.delivered_chars = delivered_chars
        super().__init__(message, deployment=deployment)


class StreamCutError(IncompleteStreamError, LLMReadError):
    """The connection broke mid-stream (reset, or closed inside the body)."""


class StreamStalledError(IncompleteStreamError, LLMTimeoutError):
    """No stream data came for ``request_timeout`` seconds mid-stream."""


class StreamEndedEarlyError(IncompleteStreamError, ResponseFormatError):
    """The body ended cleanly, but before any ``finish_reason`` (and its terminator)."""


class APIStatusError(LLMError):
    """The provider answered with an HTTP error status.

    ``status`` is the HTTP status, ``excerpt`` the start of the body (at most 200
    characters), ``retry_after`` the advised wait in seconds, if the response gave one.
    """

    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        status: int,
        excerpt: str = "",
        retry_after: float | None = None,
        deployment: str | None = None,
    ):
        self.status = status
        self.excerpt = excerpt
        self.retry_after = retry_after
        super().__init__(message, deployment=deployment)


class BadRequestError(APIStatusError):
    """HTTP 400 (or 422): the request is wrong; retrying cannot help."""

    retryable = False


class AuthenticationError(APIStatusError):
    """HTTP 401 or 403: the credentials are wrong; retrying cannot help."""

    retryable = False


class NotFoundError(APIStatusError):
    """HTTP 404: no such model, deployment or path; retrying cannot help."""

    retryable = False


class RateLimitError(APIStatusError):
    """HTTP 429: the deployment asks callers to slow down for ``retry_after`` seconds."""


class ServerError(APIStatusError):
    """HTTP 5xx: the provider failed; a retry may succeed."""


class LocalRateLimitError(RateLimitError):
    """This process refused to wait for its own rate limit or pause (``status`` 429).

    Raised at once, with ``retry_after`` seconds, when the wait would end after the caller's
    deadline. Unlike a provider's 429 the dependency never saw the call: breakers do not
    count it and retries do not pause the deployment for it.
    """

    def __init__(self, message: str, *, retry_after: float, deployment: str | None = None):
        super().__init__(message, status=429, retry_after=retry_after, deployment=deployment)


class BrokerUnavailable(RunnerError):
    """The Redis broker refused the connection, dropped it, or did not answer in time.

    Raised at once (after the client's own two quick retries, or after
    ``distributed.command_timeout`` for a server that accepts but does not answer), never
    after a hang. ``url`` is the broker's URL without its password, ``operation`` what was
    being done (``"emit"``, ``"wait for results"``, ...). Whether an ``emit`` that raised this
    reached the stream is unknown: emitting the same event again is safe, because a worker
    never recomputes an event whose result is stored.
    """

    def __init__(self, url: str, operation: str, cause: BaseException | None = None):
        self.url = url
        self.operation = operation
        reason = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(f"Redis at {url} is unavailable ({operation}){reason}")


class ResultTimeout(RunnerError, TimeoutError):
    """No result for ``event_id`` arrived within ``timeout`` seconds.

    The event is in the stream and may still run: its result, once stored, can be read
    with `RemoteRunner.result`, and emitting the same event again does not recompute it.
    """

    def __init__(self, event_id: str, timeout: float):
        self.event_id = event_id
        self.timeout = timeout
        super().__init__(f"no result for event {event_id} within {timeout:g}s")
