"""Fault injection of the mock LLM: the `Fault` value, its kinds, and when a rule applies.

`Fault` (exported as ``agentflow_trio.mockllm.Fault``) documents the kinds; `FaultBook`
keeps, per mock, which rule applies to the next request; `reset_connection` and
`wait_for_client` are the two faults that act on the socket rather than on the reply.
"""

from __future__ import annotations

import math
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import trio

from agentflow_trio.errors import ConfigError

__all__ = [
    "KINDS",
    "PLAIN_KINDS",
    "Fault",
    "FaultBook",
    "faults_from_flags",
    "reset_connection",
    "to_faults",
    "wait_for_client",
]

KINDS: Final[Mapping[str, tuple[str, ...]]] = {
    "rate_limit": ("retry_after",),
    "server_error": ("status",),
    "reset": (),
    "no_response": ("seconds",),
    "slow_first_token": ("seconds",),
    "cut": ("after_chunks",),
    "stall": ("after_chunks", "seconds"),
    "malformed": ("after_chunks", "count"),
    "no_done": (),
    "stream_error": ("after_chunks", "status"),
    "context_length": (),
    "content_filter": (),
}
"""Every fault kind -> the arguments of its own (``times``, ``start``, ``window``: all)."""

PLAIN_KINDS: Final = frozenset(
    {"rate_limit", "server_error", "reset", "no_response", "context_length", "content_filter"}
)
"""The kinds answered instead of a reply; the others shape the reply that is sent."""

_WHEN: Final = ("times", "start", "window")
_INTS: Final = frozenset({"status", "after_chunks", "count", "times"})
_SLOW_DEFAULT: Final = 1.0


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


def _at_least(low: int) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or value < low):
            raise ValueError(f"{attribute.name} must be an integer >= {low}, got {value}")

    return check


def _check_kind(_: object, __: attrs.Attribute[str], value: str) -> None:
    if value not in KINDS:
        raise ValueError(f"unknown fault kind {value!r}; known: {', '.join(KINDS)}")


def _check_status(_: object, __: attrs.Attribute[int], value: int) -> None:
    if not 500 <= value <= 599:
        raise ValueError(f"status must be a 5xx status, got {value}")


@attrs.frozen
class Fault:
    """One fault to inject: a kind, its arguments, and when.

    One frozen value: a ``kind`` from the table below, the kind's own arguments,
    and when it applies. It is attached to a model name (``MockLLMConfig.faults``, the model
    a request names: the body's ``model``, or the Azure deployment in the URL; ``"*"`` for any
    model without rules of its own) or to one scripted reply (``MockReply(fault=...)``).
    Faults apply to chat and embeddings requests; the control endpoints and ``/models`` never
    see one. Stream kinds on a non-streamed request do what the table's last column says.

    ==================  ======================  ============================================
    kind                arguments               what the mock does
    ==================  ======================  ============================================
    rate_limit          retry_after=1.0 (s;     429 with the wire's rate-limit body, and
                        none: no header)        ``Retry-After`` + ``retry-after-ms``
                                                (Anthropic: + ``anthropic-ratelimit-*``)
    server_error        status=500 (5xx)        that status with the wire's JSON error body
                                                (Anthropic: 529 is ``overloaded_error``)
    reset               -                       reads the request, then resets the
                                                connection (RST) before any response byte
    no_response         seconds=None            reads the request and never answers; the
                                                connection closes when the client leaves
                                                (or after ``seconds``)
    slow_first_token    seconds=1.0             streamed: the head at once, the first event
                                                ``seconds`` later; plain: the whole answer
                                                ``seconds`` later
    cut                 after_chunks=1          streamed: ``after_chunks`` events, then the
                                                connection closes inside the body; plain:
                                                half the body, then closes
    stall               after_chunks=1,         as ``cut``, but the connection stays open
                        seconds=None            and silent until the client leaves (or
                                                ``seconds`` pass)
    malformed           after_chunks=1,         ``count`` garbage ``data:`` events (NDJSON:
                        count=1                 lines) after ``after_chunks`` events;
                                                plain: a 200 whose body is not JSON
    no_done             -                       streamed: ends cleanly without its last
                                                event: ``data: [DONE]`` (after the chunk
                                                with finish_reason and the usage),
                                                Anthropic's ``message_stop``, the Responses
                                                ``response.completed`` (Ollama: no
                                                change); plain: no change
    stream_error        after_chunks=1,         streamed: ``after_chunks`` events, then the
                        status=500 (5xx)        wire's mid-stream error (OpenAI: a ``data:
                                                {"error": ...}`` event; Anthropic: ``event:
                                                error``, ``overloaded_error`` for 529;
                                                Responses: ``error`` + ``response.failed``;
                                                Ollama: an ``{"error"}`` line), and the
                                                stream ends; plain: that status's error
    context_length      -                       400, OpenAI's ``context_length_exceeded``
                                                error body (Anthropic: "prompt is too long")
    content_filter      -                       400, the ``content_filter`` error body with
                                                Azure's ``innererror`` (content policy)
    ==================  ======================  ============================================

    ``after_chunks`` counts ``data:`` events (``[DONE]`` included) or NDJSON lines. The
    kinds apply to every chat wire: OpenAI and Azure chat, Ollama, Anthropic Messages
    (``/v1/messages``) and OpenAI Responses (``/v1/responses``).

    When (every kind; ignored for a scripted reply's fault, which applies once):

    - ``times=N``: only the first N requests the rule applies to, then it is spent
      ("500 once" is ``Fault("server_error", times=1)``);
    - ``start=S``, ``window=W`` (seconds): only from S to S + W seconds after the first
      request for that model (``"*"``: for any model) the mock saw; a deployment down for 2
      seconds, then healthy, is ``Fault("server_error", status=503, window=2)`` or
      ``Fault("reset", window=2)``.

    A model's rules are tried in order; the first that applies is injected. So
    ``(Fault("rate_limit", times=1), Fault("server_error", times=1))`` answers 429, then 500,
    then healthy. Each rule's count and each model's clock are reset by ``MockLLM.reset()``.
    Rules may be replaced while serving (``mock.config = attrs.evolve(mock.config,
    faults=...)``, or ``POST /mock/faults``). ``MockLLM.stats()`` counts the faults
    injected, by kind (``faults``) and by model (``faults_by_model``), and the requests
    per model (``by_model``).

    The text form (``agentcli mock-llm --fault``, ``POST /mock/script``) is
    ``KIND[:NAME=VALUE,...]``, as `Fault.parse` reads and `Fault.spec` writes:
    ``server_error:status=503,window=2``.

    Validated on construction: an unknown kind, a bad value, or an argument the kind does
    not take (``Fault("reset", after_chunks=2)``) raises ``ValueError``.
    """

    kind: str = attrs.field(validator=_check_kind)
    status: int = attrs.field(default=500, validator=_check_status)
    retry_after: float | None = attrs.field(default=1.0, validator=_non_negative)
    after_chunks: int = attrs.field(default=1, validator=_at_least(0))
    count: int = attrs.field(default=1, validator=_at_least(1))
    seconds: float | None = attrs.field(default=None, validator=_non_negative)
    times: int | None = attrs.field(default=None, validator=_at_least(1))
    start: float = attrs.field(default=0.0, validator=_non_negative)
    window: float | None = attrs.field(default=None, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        allowed = KINDS[self.kind]
        for field in attrs.fields(Fault)[1:]:
            own = field.name in allowed or field.name in _WHEN
            if not own and getattr(self, field.name) != field.default:
                raise ValueError(f"fault {self.kind!r} takes no {field.name}")

    @property
    def delay(self) -> float:
        """The delay of ``slow_first_token`` (``seconds``, default 1 s)."""
        return _SLOW_DEFAULT if self.seconds is None else self.seconds

    def applies(self, elapsed: float) -> bool:
        """Whether ``start``/``window`` admit a request ``elapsed`` seconds after the first."""
        if elapsed < self.start:
            return False
        return self.window is None or elapsed < self.start + self.window

    @classmethod
    def parse(cls, text: str) -> Fault:
        """A `Fault` from ``KIND[:NAME=VALUE,...]`` (``none`` for no value); ValueError."""
        kind, _, rest = text.strip().partition(":")
        values: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in rest.split(","))):
            name, equals, value = item.partition("=")
            name = name.strip()
            if not equals or name == "kind" or name not in attrs.fields_dict(Fault):
                raise ValueError(f"bad fault argument {item!r} (want NAME=VALUE)")
            values[name] = _number(name, value.strip())
        return cls(kind.strip(), **values)

    def spec(self) -> str:
        """The text form `parse` reads back: the kind and every non-default argument."""
        args = [
            f"{field.name}={'none' if value is None else f'{value:g}'}"
            for field in attrs.fields(Fault)[1:]
            if (value := getattr(self, field.name)) != field.default
        ]
        return self.kind + (":" + ",".join(args) if args else "")


def _number(name: str, text: str) -> int | float | None:
    if text.lower() == "none":
        return None
    try:
        return int(text) if name in _INTS else float(text)
    except ValueError:
        raise ValueError(f"fault argument {name} needs a number, got {text!r}") from None


def _one(value: Any) -> Fault:
    if isinstance(value, Fault):
        return value
    if isinstance(value, str):
        return Fault.parse(value)
    raise TypeError(f"a fault must be a Fault or its text form, not {type(value).__name__}")


def to_faults(value: Mapping[str, Any]) -> dict[str, tuple[Fault, ...]]:
    """``MockLLMConfig.faults`` normalised: model -> tuple of faults (a `Fault`, its text
    form, or a sequence of either per model). Raises `ConfigError` (key ``faults``)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"must map model names to faults, got {value!r}", key="faults")
    out: dict[str, tuple[Fault, ...]] = {}
    try:
        for model, rules in value.items():
            if not isinstance(model, str) or not model:
                raise ValueError(f"a model name must be a non-empty string, got {model!r}")
            many = isinstance(rules, Sequence) and not isinstance(rules, str)
            out[model] = tuple(_one(rule) for rule in (rules if many else (rules,)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), key="faults") from None
    return out


def faults_from_flags(flags: Iterable[str]) -> dict[str, tuple[Fault, ...]]:
    """``--fault MODEL=KIND[:ARGS]`` values (repeatable) as ``MockLLMConfig.faults``."""
    rules: dict[str, list[Fault]] = {}
    try:
        for flag in flags:
            model, equals, spec = flag.partition("=")
            if not equals or not model.strip():
                raise ValueError(f"want MODEL=KIND[:NAME=VALUE,...], got {flag!r}")
            rules.setdefault(model.strip(), []).append(Fault.parse(spec))
    except ValueError as exc:
        raise ConfigError(str(exc), key="faults") from None
    return {model: tuple(faults) for model, faults in rules.items()}


class FaultBook:
    """When each rule applies: a clock per model key and a use count per counted rule.

    Bounded by the configuration: keys are the configured model names (or ``"*"``), never
    names from the wire.
    """

    __slots__ = ("_first", "_used")

    def __init__(self) -> None:
        self._first: dict[str, float] = {}
        self._used: dict[tuple[str, int, Fault], int] = {}

    def clear(self) -> None:
        """Forget every clock and count (``MockLLM.reset``)."""
        self._first.clear()
        self._used.clear()

    def pick(self, faults: Mapping[str, tuple[Fault, ...]], model: str) -> Fault | None:
        """The fault to inject into this request for ``model``, if any (counts its use)."""
        key = model if model in faults else "*"
        rules = faults.get(key)
        if not rules:
            return None
        now = trio.current_time()
        elapsed = now - self._first.setdefault(key, now)
        for index, rule in enumerate(rules):
            if not rule.applies(elapsed):
                continue
            if rule.times is not None:
                slot = (key, index, rule)
                used = self._used.get(slot, 0)
                if used >= rule.times:
                    continue
                self._used[slot] = used + 1
            return rule
        return None


def reset_connection(stream: trio.abc.Stream) -> None:
    """Make closing ``stream`` send a TCP reset (SO_LINGER 0) instead of a clean FIN."""
    if isinstance(stream, trio.SocketStream):
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def wait_for_client(stream: trio.abc.Stream, seconds: float | None) -> None:
    """Wait, silent, until the client closes its side (what it sends is dropped), at most
    ``seconds`` (None: no limit but the server's own lifetime)."""
    with trio.move_on_after(math.inf if seconds is None else seconds):
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
