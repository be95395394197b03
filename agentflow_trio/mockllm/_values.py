"""The mock LLM's values: its configuration, scripted replies and statistics.

All are frozen attrs classes, validated on construction (``attrs.evolve`` validates again).
Re-exported, and documented, by :mod:`agentflow_trio.mockllm.server`.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from agentflow_trio.errors import ConfigError
from agentflow_trio.mockllm._faults import Fault, faults_from_flags, to_faults

__all__ = [
    "FLAG",
    "KEY_LIMIT",
    "OTHER",
    "Counters",
    "Flag",
    "MockLLMConfig",
    "MockLLMStats",
    "MockReply",
    "MockToolCall",
    "check_config",
    "fault_from_json",
    "flag",
    "is_loopback",
    "reply_from_json",
]

MAX_EMBEDDING_DIM: Final = 65536
KEY_LIMIT: Final = 256
"""Distinct paths or models kept in the statistics; the rest count under `OTHER`."""
OTHER: Final = "<other>"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals: the mock binds only there unless told
    otherwise, and a key-less OpenAI/Azure config may point only there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: MockLLMConfig) -> None:
    def need(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(message, key=key)

    need(0 <= config.port <= 65535, "port", f"must be 0..65535, got {config.port}")
    for key in ("latency", "jitter", "retry_after", "stream_delay"):
        value = getattr(config, key)
        need(
            math.isfinite(value) and value >= 0,
            key,
            f"must be a finite number >= 0 (seconds), got {value}",
        )
    for key in ("error_rate", "rate_limit_rate"):
        value = getattr(config, key)
        need(0.0 <= value <= 1.0, key, f"must be a fraction in [0, 1], got {value}")
    need(
        config.error_rate + config.rate_limit_rate <= 1.0,
        "rate_limit_rate",
        "error_rate + rate_limit_rate must not exceed 1",
    )
    need(config.stream_chunks >= 1, "stream_chunks", f"must be >= 1, got {config.stream_chunks}")
    need(
        1 <= config.embedding_dim <= MAX_EMBEDDING_DIM,
        "embedding_dim",
        f"must be 1..{MAX_EMBEDDING_DIM}, got {config.embedding_dim}",
    )
    need(config.max_body_bytes >= 0, "max_body_bytes", "must be >= 0")
    need(
        config.allow_remote or is_loopback(config.host),
        "host",
        f"refusing to bind non-loopback host {config.host!r}; set allow_remote "
        "(agentcli: --allow-remote) to expose the mock",
    )


FLAG: Final = "agentcli"
"""The field metadata key under which a `MockLLMConfig` field describes its command-line
flag (see `flag`): ``agentcli mock-llm`` builds its options from these."""


@attrs.frozen(slots=True)
class Flag:
    """How a `MockLLMConfig` field appears as an ``agentcli mock-llm`` flag.

    The flag is ``--`` plus the field name (or ``name``) with dashes, plus ``-ms`` when
    ``unit`` is ``"ms"`` (the field holds seconds, the flag takes milliseconds). ``low``
    and ``high`` are the inclusive bounds the flag enforces (None: unbounded); the same
    bounds are checked again, for every caller, by the config's own validation. With
    ``parse``, the flag is repeatable text (shown as ``metavar``) and ``parse`` turns the
    tuple of values into the field's value (raising `ConfigError` for a bad one).
    """

    help: str
    unit: str | None = None
    low: float | None = None
    high: float | None = None
    name: str | None = None
    parse: Callable[[tuple[str, ...]], Any] | None = None
    metavar: str | None = None


def flag(
    help: str,
    *,
    unit: str | None = None,
    low: float | None = None,
    high: float | None = None,
    name: str | None = None,
    parse: Callable[[tuple[str, ...]], Any] | None = None,
    metavar: str | None = None,
) -> dict[str, Flag]:
    """Field metadata declaring the field's command-line flag (see `Flag`)."""
    return {FLAG: Flag(help, unit, low, high, name, parse, metavar)}


@attrs.frozen
class MockLLMConfig:
    """How the mock behaves; read again for every request, so it may be replaced while serving.

    Durations are in seconds. Validated on construction (and by ``attrs.evolve``): a bad
    value raises :class:`~agentflow_trio.errors.ConfigError` (a ``ValueError``) naming the
    field. A non-loopback ``host`` is refused unless ``allow_remote`` is true. The fields
    with `flag` metadata are ``agentcli mock-llm``'s options (with its ``--host``,
    ``--port`` and ``--allow-remote``).

    ``faults`` maps a model name (``"*"``: any other) to the `Fault` rules injected into its
    requests, tried in order (see ``mockllm._faults`` for the kinds and their timing); a
    rule may be given as its text form, and one rule alone needs no tuple.
    """

    host: str = "127.0.0.1"
    port: int = 0
    latency: float = attrs.field(
        default=0.0, metadata=flag("Added before each model response.", unit="ms", low=0)
    )
    jitter: float = attrs.field(
        default=0.0, metadata=flag("Latency varies by +- this much (uniform).", unit="ms", low=0)
    )
    error_rate: float = attrs.field(
        default=0.0, metadata=flag("Fraction of model requests answered 500.", low=0, high=1)
    )
    rate_limit_rate: float = attrs.field(
        default=0.0,
        metadata=flag("Fraction of model requests answered 429 with Retry-After.", low=0, high=1),
    )
    retry_after: float = attrs.field(
        default=1.0, metadata=flag("Retry-After advertised by 429 answers.", unit="ms", low=0)
    )
    stream_chunks: int = attrs.field(
        default=5, metadata=flag("Chunks in each streamed reply.", low=1)
    )
    stream_delay: float = attrs.field(
        default=0.0, metadata=flag("Pause between streamed chunks.", unit="ms", low=0)
    )
    reply_text: str = "Hello from the mock LLM."
    embedding_dim: int = 8
    model: str = attrs.field(default="mock-gpt", metadata=flag("Model name reported."))
    allow_remote: bool = False
    seed: int | None = attrs.field(default=None, metadata=flag("Seed for faults and jitter."))
    max_body_bytes: int = 4 * 2**20
    faults: Mapping[str, tuple[Fault, ...]] = attrs.field(
        factory=dict,
        converter=to_faults,
        metadata=flag(
            "Inject a fault into MODEL's requests (* for any model); repeat for more rules, "
            "tried in order. KIND: rate_limit, server_error, reset, no_response, "
            "slow_first_token, cut, stall, malformed, no_done, stream_error, context_length, "
            "content_filter; ARGS: NAME=VALUE,... (retry_after, status, after_chunks, count, "
            "seconds, times, start, window). Example: gpt-b=server_error:status=503,window=2",
            name="fault",
            parse=faults_from_flags,
            metavar="MODEL=KIND[:ARGS]",
        ),
    )

    def __attrs_post_init__(self) -> None:
        check_config(self)


# Field types as objects now, while this module's names resolve them: the CLI reads them
# to build its flags, and server.py renames the class's module (tracebacks, reprs).
attrs.resolve_types(MockLLMConfig)


def _to_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


def _to_str_dict(value: Mapping[str, str]) -> dict[str, str]:
    return {str(key): str(item) for key, item in value.items()}


@attrs.frozen
class MockToolCall:
    """A tool call the mock answers with; ``id`` defaults to a fresh ``call_mock...``."""

    name: str
    arguments: Mapping[str, Any] = attrs.field(converter=_to_dict)
    id: str | None = None


def _to_tool_calls(
    value: tuple[MockToolCall, ...] | list[MockToolCall],
) -> tuple[MockToolCall, ...]:
    return tuple(value)


def _check_status(_: object, __: attrs.Attribute[int], value: int) -> None:
    if not 100 <= value <= 599:
        raise ValueError(f"status must be 100..599, got {value}")


def _check_delay(_: object, __: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"delay must be >= 0 seconds, got {value}")


@attrs.frozen
class MockReply:
    """One scripted reply, consumed in FIFO order by the next chat-like request (any wire:
    chat, Ollama, Anthropic messages, Responses).

    ``text`` None means the default reply (or none, when ``tool_calls`` are given). A
    ``status`` outside 2xx without ``body`` sends the dialect's JSON error for that status.
    ``body`` is sent verbatim (with ``content_type``, default ``application/json``) for
    malformed-response tests. ``truncate_stream`` cuts a streamed reply after half its chunks
    (no ``[DONE]``) and closes the connection; a non-streamed one is cut after half its body.
    ``delay`` seconds are slept on top of the configured latency. ``fault`` is injected
    into this reply (its ``times``/``start``/``window`` are ignored: it applies once), unless
    the model's own rules inject one first. ``model`` set: only a request for that model
    takes this reply (the others take the oldest reply for them or for any model).
    ``refusal`` answers with OpenAI's ``message.refusal`` (content null; streamed as
    ``delta.refusal``); ``finish_reason`` replaces the reply's (e.g. ``content_filter``);
    ``cached_tokens`` is reported as ``usage.prompt_tokens_details.cached_tokens``
    (Anthropic: ``cache_read_input_tokens``; Responses: ``input_tokens_details``),
    ``cache_creation_tokens`` as Anthropic's ``cache_creation_input_tokens``. ``thinking``
    is the model's reasoning: an Anthropic ``thinking`` block (signed) or a Responses
    ``reasoning`` item; the chat wires do not send it. A request asking for thinking
    (Anthropic ``thinking.type`` ``enabled``, Responses ``reasoning``) gets a default one.

    Without a scripted ``text`` or ``tool_calls``, a request that asks for a shape gets a
    reply that fits it: a forced ``tool_choice`` a call of that tool, a ``response_format``
    (or Ollama ``format``) JSON text matching the schema (``mockllm._examples``).
    """

    text: str | None = None
    tool_calls: tuple[MockToolCall, ...] = attrs.field(default=(), converter=_to_tool_calls)
    status: int = attrs.field(default=200, validator=_check_status)
    body: bytes | str | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_to_str_dict)
    truncate_stream: bool = False
    delay: float = attrs.field(default=0.0, validator=_check_delay)
    fault: Fault | None = None
    model: str | None = None
    refusal: str | None = None
    finish_reason: str | None = None
    cached_tokens: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    thinking: str | None = None
    cache_creation_tokens: int = attrs.field(default=0, validator=attrs.validators.ge(0))


@attrs.frozen
class MockLLMStats:
    """A snapshot of what the mock has served since start or the last reset.

    ``requests``, ``by_path`` and ``by_status`` count every request to a model endpoint
    (unknown paths and refused requests included, the control endpoints excluded), each
    exactly once, before its response is written. ``chat`` (every chat-like wire: chat,
    Ollama, Anthropic messages, Responses; ``by_path`` tells them apart) and ``embeddings``
    count replies generated by the mock (not injected faults or raw scripted bodies),
    ``streams`` the streamed part of ``chat``; ``prompt_tokens``/``completion_tokens`` are
    their token counts (thinking included in the completion). ``errors`` and
    ``rate_limited`` count injected 500s and 429s,
    ``scripted`` the scripted replies consumed, ``disconnects`` the streams the client cut.
    ``by_model`` counts the model requests naming a model (body ``model``, or the Azure
    deployment), ``faults`` the injected `Fault` rules by kind and ``faults_by_model`` by
    model, then kind (each distinct model beyond 256 counts under ``"<other>"``).
    """

    requests: int = 0
    by_path: Mapping[str, int] = attrs.field(factory=dict)
    by_status: Mapping[int, int] = attrs.field(factory=dict)
    chat: int = 0
    streams: int = 0
    embeddings: int = 0
    errors: int = 0
    rate_limited: int = 0
    scripted: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    disconnects: int = 0
    connections: int = 0
    open_connections: int = 0
    by_model: Mapping[str, int] = attrs.field(factory=dict)
    faults: Mapping[str, int] = attrs.field(factory=dict)
    faults_by_model: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``by_status`` keys become strings), as ``GET /stats`` sends."""
        data = attrs.asdict(self)
        data["by_status"] = {str(status): count for status, count in self.by_status.items()}
        return data


class Counters:
    """The mutable counters behind :class:`MockLLMStats`; only the server's tasks touch them."""

    __slots__ = (
        "by_model",
        "by_path",
        "by_status",
        "chat",
        "completion_tokens",
        "connections",
        "disconnects",
        "embeddings",
        "errors",
        "faults",
        "faults_by_model",
        "open_connections",
        "prompt_tokens",
        "rate_limited",
        "requests",
        "scripted",
        "streams",
    )

    def __init__(self, open_connections: int = 0) -> None:
        self.requests = self.chat = self.streams = self.embeddings = 0
        self.errors = self.rate_limited = self.scripted = self.disconnects = 0
        self.prompt_tokens = self.completion_tokens = self.connections = 0
        self.open_connections = open_connections
        self.by_path: dict[str, int] = {}
        self.by_status: dict[int, int] = {}
        self.by_model: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.faults_by_model: dict[str, dict[str, int]] = {}

    def snapshot(self) -> MockLLMStats:
        values = {name: getattr(self, name) for name in self.__slots__}
        for name in ("by_path", "by_status", "by_model", "faults"):
            values[name] = dict(values[name])
        values["faults_by_model"] = {
            model: dict(kinds) for model, kinds in self.faults_by_model.items()
        }
        return MockLLMStats(**values)

    def count_model(self, model: str) -> str:
        """Count a request for ``model``; returns the name it was counted under (bounded)."""
        by_model = self.by_model
        if model not in by_model and len(by_model) >= KEY_LIMIT:
            model = OTHER
        by_model[model] = by_model.get(model, 0) + 1
        return model

    def count_fault(self, fault: Fault, model: str) -> None:
        """Count an injected fault (``model`` as `count_model` returned it)."""
        self.faults[fault.kind] = self.faults.get(fault.kind, 0) + 1
        kinds = self.faults_by_model.setdefault(model, {})
        kinds[fault.kind] = kinds.get(fault.kind, 0) + 1


_REPLY_FIELDS = frozenset(field.name for field in attrs.fields(MockReply))


def reply_from_json(data: Any) -> MockReply:
    """A :class:`MockReply` from its JSON form (``POST /mock/script``); raises ValueError."""
    if not isinstance(data, dict):
        raise ValueError("each reply must be a JSON object")
    unknown = sorted(set(data) - _REPLY_FIELDS)
    if unknown:
        raise ValueError(f"unknown reply field(s): {', '.join(unknown)}")
    fields = dict(data)
    calls = fields.pop("tool_calls", None) or []
    if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
        raise ValueError("tool_calls must be a list of {name, arguments} objects")
    fault = fields.pop("fault", None)
    if fault is not None:
        fields["fault"] = fault_from_json(fault)
    tool_calls = []
    for call in calls:
        name, arguments = call.get("name"), call.get("arguments", {})
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise ValueError("a tool call needs a string name and an object of arguments")
        tool_calls.append(MockToolCall(name, arguments, call.get("id")))
    for key, kinds in _REPLY_TYPES.items():
        if key in fields and not isinstance(fields[key], kinds):
            raise ValueError(f"reply field {key!r} has the wrong type")
    if "delay" in fields:
        fields["delay"] = float(fields["delay"])
    return MockReply(tool_calls=tuple(tool_calls), **fields)


def fault_from_json(data: Any) -> Fault:
    """A reply's ``fault``: its text form or an object of `Fault` fields."""
    if isinstance(data, str):
        return Fault.parse(data)
    if isinstance(data, dict) and isinstance(data.get("kind"), str):
        return Fault(**data)
    raise ValueError('fault must be "KIND[:NAME=VALUE,...]" or an object with a "kind"')


_REPLY_TYPES: Final[dict[str, type | tuple[type, ...]]] = {
    "text": (str, type(None)),
    "status": int,
    "body": (str, type(None)),
    "content_type": (str, type(None)),
    "headers": dict,
    "truncate_stream": bool,
    "delay": (int, float),
    "model": (str, type(None)),
    "refusal": (str, type(None)),
    "finish_reason": (str, type(None)),
    "cached_tokens": int,
    "thinking": (str, type(None)),
    "cache_creation_tokens": int,
}
