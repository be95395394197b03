"""Hostile and careless config input: every size, count, depth and duration is bounded and
a bound that trips is one `ConfigError` naming the file, the key and the bound."""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest

from agentflow_trio.config import (
    Config,
    LLMConfig,
    MCPConfig,
    MCPServerConfig,
    RunnerConfig,
    RuntimeConfig,
    load_config,
    parse_duration,
    parse_size,
)
from agentflow_trio.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "agentflow.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)
    return info.value


def sections(cls: type[Any] = Config, prefix: str = "") -> list[tuple[str, type[Any]]]:
    """Every section class under ``cls`` with its dotted path (``mcp.servers.s``)."""
    found = [(prefix, cls)]
    hints = typing.get_type_hints(cls, include_extras=True)
    for field in attrs.fields(cls):
        hint = hints[field.name]
        path = f"{prefix}.{field.name}" if prefix else field.name
        if attrs.has(hint):
            found += sections(hint, path)
        elif typing.get_origin(hint) is dict and attrs.has(typing.get_args(hint)[1]):
            found += sections(typing.get_args(hint)[1], f"{path}.s")
    return found


def bounded_fields() -> list[tuple[str, type[Any], attrs.Attribute[Any]]]:
    """``(dotted key, section, field)`` for every number field (int, size, duration)."""
    out = []
    for path, cls in sections():
        hints = typing.get_type_hints(cls, include_extras=True)
        for field in attrs.fields(cls):
            hint = hints[field.name]
            if typing.get_origin(hint) is typing.Annotated:
                hint = typing.get_args(hint)[0]  # Duration, Size
            if typing.get_origin(hint) is types.UnionType:  # int | None: left out = None
                hint = next(a for a in typing.get_args(hint) if a is not type(None))
            if hint in (int, float):
                out.append((f"{path}.{field.name}".lstrip("."), cls, field))
    return out


def bounds(field: attrs.Attribute[Any]) -> Any:
    validators = getattr(field.validator, "_validators", (field.validator,))
    validators = tuple(getattr(v, "validator", v) for v in validators)  # optional(Bounds)
    return next(v for v in validators if type(v).__name__ == "Bounds")


def nested(key: str, value: object) -> dict[str, Any]:
    data: Any = value
    for part in reversed(key.split(".")):
        data = {part: data}
    if key.startswith("mcp.servers.s."):
        data["mcp"]["servers"]["s"].setdefault("command", "x")
    if key.startswith("llm.") and key.endswith(".min_connections"):
        table = data["llm"]
        for part in key.split(".")[1:-1]:
            table = table[part]
        table["max_connections"] = 65_536
    return data


# --------------------------------------------------------------------------- nesting


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 100_000 + "]" * 100_000,
        "x = " + "{a=" * 5_000 + "1" + "}" * 5_000,
        "a = " + "[" * 100 + "]" * 100,  # tomllib reads it; the bound refuses it
        "[llm.headers." + ".".join(["a"] * 5_000) + "]\n",
        ".".join(["a"] * 5_000) + " = 1\n",
    ],
    ids=["arrays-100k", "inline-tables-5k", "arrays-100", "headers-5k", "dotted-keys-5k"],
)
def test_a_toml_bomb_is_one_config_error(tmp_path: Path, text: str) -> None:
    err = load_error(write(tmp_path, text))
    assert "nest deeper than the maximum of 32 levels" in str(err)


def test_deep_data_from_code_is_refused_too() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(5_000):
        inner["a"] = {}
        inner = inner["a"]
    with pytest.raises(ConfigError, match="32 levels") as info:
        Config.from_mapping({"llm": {"headers": deep}}, source="code.toml")
    assert str(info.value).startswith("code.toml: llm.headers.a.a.a")


def test_the_example_depth_is_far_below_the_bound(tmp_path: Path) -> None:
    text = '[mcp.servers.gh]\ncommand = "gh"\nenv = { A = "b" }\nargs = ["x"]\n'
    assert load_config(write(tmp_path, text), env={}).mcp.servers["gh"].env == {"A": "b"}


# --------------------------------------------------------------------------- the file


def test_a_file_over_one_mib_is_refused(tmp_path: Path) -> None:
    limit = 2**20
    at_limit = "# " + "x" * (limit - 3) + "\n"
    assert len(at_limit.encode()) == limit
    assert load_config(write(tmp_path, at_limit), env={}) == Config()
    err = load_error(write(tmp_path, at_limit + "#", "big.toml"))
    assert "larger than the maximum of 1MiB" in str(err)


def test_a_number_of_5000_digits_is_invalid_toml(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "[runner]\nworker_pool_size = " + "1" * 5_000 + "\n"))
    assert "invalid TOML" in str(err)


def test_long_text_is_cut_in_messages(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, f'[llm]\nprovider = "{"x" * 200_000}"\n'))
    assert len(str(err)) < 600 and "(200002 characters)" in str(err)
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"runner": {"worker_pool_size": 10**5000}})
    assert "<int too large to show>" in str(info.value)


@pytest.mark.parametrize("parse", [parse_duration, parse_size])
def test_parsers_refuse_text_of_thousands_of_digits(parse: Any) -> None:
    with pytest.raises(ConfigError):
        parse("1" * 5_000 + "s")
    with pytest.raises(ConfigError):
        parse("1" * 5_000)


# --------------------------------------------------------------------------- numbers


def test_every_number_field_has_an_upper_bound() -> None:
    fields = bounded_fields()
    assert len(fields) > 40
    missing = [key for key, _, field in fields if bounds(field).le is None]
    assert missing == []


def test_the_reported_findings(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "[runner]\nworker_pool_size = 100000000\n"))
    assert err.key == "runner.worker_pool_size"
    assert str(err).endswith("expected an integer <= 65536, got 100000000 (int)")
    err = load_error(write(tmp_path, "[runtime]\ngc_thresholds = [700, 73786976294838206464]\n"))
    assert err.key == "runtime.gc_thresholds"
    assert "between 0 and 2147483647 (gc.set_threshold)" in str(err)
    with pytest.raises(ConfigError, match="2147483647"):
        RuntimeConfig(gc_thresholds=[2**31])


@pytest.mark.parametrize(("key", "cls", "field"), bounded_fields(), ids=lambda v: str(v))
def test_every_upper_bound_trips_with_the_key_and_the_bound(
    key: str, cls: type[Any], field: attrs.Attribute[Any]
) -> None:
    limit = bounds(field)
    over = int(limit.le) + 1 if limit.integer else limit.le * 2
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(nested(key, over), source="agentflow.toml", env={})
    assert info.value.key == key
    assert str(info.value).startswith(f"agentflow.toml: {key}: expected ")
    assert " <= " in str(info.value)
    Config.from_mapping(nested(key, limit.le if not limit.integer else int(limit.le)), env={})
    with pytest.raises(ConfigError) as info:  # the same bound guards a value built in code
        cls(**({"command": "x"} if cls is MCPServerConfig else {}), **{field.name: over})
    assert info.value.key == field.name


@pytest.mark.parametrize(
    "value", ["nan", "inf", "-inf", "1e400", float("nan"), float("inf"), 1e400, "99999999999d"]
)
def test_nan_and_infinite_durations_are_refused(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({"runner": {"event_timeout": value}}, source="a.toml")
    assert info.value.key == "runner.event_timeout"


@pytest.mark.parametrize("toml_value", ["nan", "inf", "+inf", "-nan", "1e400"])
def test_toml_float_literals_are_refused(tmp_path: Path, toml_value: str) -> None:
    err = load_error(write(tmp_path, f"[llm]\nrequest_timeout = {toml_value}\n"))
    assert err.key == "llm.request_timeout"


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: RunnerConfig(event_timeout=math.nan), "event_timeout"),
        (lambda: RunnerConfig(drain_timeout=math.nan), "drain_timeout"),
        (lambda: RunnerConfig(event_timeout=math.inf), "event_timeout"),
        (lambda: LLMConfig(request_timeout=math.nan), "request_timeout"),
        (lambda: RunnerConfig(worker_pool_size=2.5), "worker_pool_size"),
        (lambda: RunnerConfig(worker_pool_size="3"), "worker_pool_size"),
        (lambda: RunnerConfig(worker_pool_size=True), "worker_pool_size"),
        (lambda: RuntimeConfig(memory_limit=1.5), "memory_limit"),
    ],
)
def test_sections_built_in_code_refuse_nan_and_wrong_kinds(build: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.key == key
    assert isinstance(info.value, ValueError)


def test_durations_given_as_ints_in_code_still_work() -> None:
    assert RunnerConfig(event_timeout=30).event_timeout == 30


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: LLMConfig(headers={f"X-{i}": "v" for i in range(257)}), "headers"),
        (lambda: MCPServerConfig(command="x", args=["a"] * 1025), "args"),
        (lambda: MCPServerConfig(command="x", env={str(i): "v" for i in range(1025)}), "env"),
        (lambda: MCPConfig(servers={f"s{i}": MCPServerConfig("x") for i in range(257)}), "servers"),
    ],
)
def test_counts_are_bounded(build: Any, key: str) -> None:
    with pytest.raises(ConfigError, match="expected at most") as info:
        build()
    assert info.value.key == key


def test_thousands_of_unknown_keys_are_counted_not_listed() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({f"key{i}": 1 for i in range(50_000)}, source="a.toml")
    lines = str(info.value).splitlines()
    assert lines[0] == "a.toml: 50000 unknown keys:" and len(lines) == 22
    assert lines[-1] == "  ... and 49980 more"


def test_a_redis_port_out_of_range_is_refused_when_loading(tmp_path: Path) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text('[distributed]\nredis_url = "redis://:pw@127.0.0.1:99999/0"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "distributed.redis_url"
    assert "valid port" in str(info.value) and "pw" not in str(info.value)
