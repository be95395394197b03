"""Tests for agentflow_trio.config: defaults, loading, rendering, every error kind."""

from __future__ import annotations

import math
import re
import tomllib
import typing
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_trio.config import (
    Config,
    DistributedConfig,
    Duration,
    LLMConfig,
    MCPConfig,
    MCPServerConfig,
    RunnerConfig,
    RuntimeConfig,
    Size,
    format_duration,
    format_size,
    load_config,
    parse_duration,
    parse_section,
    parse_size,
    section_to_dict,
)
from agentflow_trio.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agentflow.toml"

FULL_TOML = """
[runner]
max_concurrent_events = 200
event_buffer_size = 0
worker_pool_size = 8
event_timeout = "1m30s"
drain_timeout = "0s"

[memory]
state_cache_size = 5
state_cache_ttl = "15m"

[monitoring]
enable_metrics = false
metrics_port = 0
enable_profiling = true
profile_port = 6061
log_level = "debug"

[llm]
provider = "azure"
model = "gpt-4o"
base_url = "https://example.openai.azure.com"
api_key = "${TEST_AF_KEY}"
api_version = "2024-06-01"
deployment = "prod-4o"
organization = "org-1"
max_connections = 20
min_connections = 2
connection_timeout = "2.5s"
request_timeout = "2m"
idle_timeout = "90s"
max_connection_lifetime = "2h"
headers = { "X-Title" = "agentflow", "X-Env" = "${TEST_AF_ENV:-dev}" }

[llm.retry]
enabled = false
max_attempts = 7
base_delay = "100ms"
max_delay = "5s"

[llm.circuit_breaker]
enabled = false
failure_threshold = 2
open_timeout = "10s"
half_open_max_calls = 3
call_timeout = "15s"

[llm.rate_limit]
enabled = true
requests_per_minute = 600
tokens_per_minute = 90000

[performance]
enable_caching = true
cache_ttl = "10m"
cache_max_entries = 100
cache_max_bytes = "512KiB"
enable_batching = true
batch_size = 4
batch_timeout = "25ms"
"""

ENV = {"TEST_AF_KEY": "sk-secret"}


def write(tmp_path: Path, text: str, name: str = "agentflow.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(data: dict[str, Any], env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping(data, source="agentflow.toml", env=env or {})
    return info.value


def assert_toml_able(value: object) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            assert_toml_able(v)
    elif isinstance(value, list):
        for v in value:
            assert_toml_able(v)
    else:
        assert isinstance(value, str | int | float | bool), value


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    c = Config()
    assert (c.runner.max_concurrent_events, c.runner.event_buffer_size) == (1000, 1000)
    assert c.runner.worker_pool_size == 50
    assert (c.runner.event_timeout, c.runner.drain_timeout) == (30.0, 10.0)
    assert (c.memory.state_cache_size, c.memory.state_cache_ttl) == (10000, 3600.0)
    m = c.monitoring
    assert (m.enable_metrics, m.metrics_port, m.enable_profiling) == (True, 9090, False)
    assert (m.profile_port, m.log_level) == (6060, "info")
    llm = c.llm
    assert (llm.provider, llm.model, llm.base_url, llm.api_key) == ("openai", "gpt-4o-mini", "", "")
    assert (llm.api_version, llm.deployment, llm.organization) == ("2024-10-21", "", "")
    assert (llm.max_connections, llm.min_connections) == (100, 0)
    assert (llm.connection_timeout, llm.request_timeout) == (10.0, 60.0)
    assert (llm.idle_timeout, llm.max_connection_lifetime) == (300.0, 3600.0)
    assert llm.headers == {}
    assert attrs.astuple(llm.retry) == (True, 3, 0.5, 30.0)
    assert attrs.astuple(llm.circuit_breaker) == (True, 5, 30.0, 1, 60.0)
    assert attrs.astuple(llm.rate_limit) == (False, 0, 0)
    p = c.performance
    assert (p.enable_caching, p.cache_ttl, p.cache_max_entries) == (False, 3600.0, 10000)
    assert (p.cache_max_bytes, p.enable_batching, p.batch_size) == (64 * 2**20, False, 16)
    assert p.batch_timeout == 0.01


def test_empty_mapping_is_defaults() -> None:
    assert Config.from_mapping({}) == Config()


def test_config_is_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Config().runner.worker_pool_size = 3  # type: ignore[misc]


def test_example_file_is_exactly_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == Config()
    assert load_config(EXAMPLE, env={"OPENAI_API_KEY": "sk-x"}).llm.api_key == "sk-x"


def test_default_to_dict_round_trips() -> None:
    rendered = Config().to_dict()
    assert_toml_able(rendered)
    assert rendered["runner"]["event_timeout"] == "30s"
    assert rendered["llm"]["retry"]["base_delay"] == "500ms"
    assert rendered["performance"]["cache_max_bytes"] == "64MiB"
    assert Config.from_mapping(rendered) == Config()


# --------------------------------------------------------------------------- full file


def test_full_file_loads(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, FULL_TOML), env=ENV)
    assert c.runner == RunnerConfig(200, 0, 8, 90.0, 0.0)
    assert c.memory.state_cache_ttl == 900.0
    assert c.monitoring.log_level == "debug" and c.monitoring.metrics_port == 0
    assert c.llm.provider == "azure" and c.llm.api_key == "sk-secret"
    assert c.llm.headers == {"X-Title": "agentflow", "X-Env": "dev"}
    assert c.llm.connection_timeout == 2.5 and c.llm.request_timeout == 120.0
    assert c.llm.retry.max_attempts == 7 and c.llm.retry.base_delay == 0.1
    assert c.llm.circuit_breaker.half_open_max_calls == 3
    assert c.llm.rate_limit.tokens_per_minute == 90000
    assert c.performance.cache_max_bytes == 512 * 1024
    assert c.performance.batch_timeout == 0.025


def test_full_file_round_trips_through_to_dict(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, FULL_TOML), env=ENV)
    plain = c.to_dict(mask_secrets=False)
    assert_toml_able(plain)
    assert plain["runner"]["event_timeout"] == "1m30s"
    assert plain["performance"]["cache_max_bytes"] == "512KiB"
    assert Config.from_mapping(plain, env={}) == c


def test_secrets_masked(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, FULL_TOML), env=ENV)
    masked = c.to_dict()
    assert masked["llm"]["api_key"] == "***"
    assert masked["llm"]["headers"] == {"X-Title": "***", "X-Env": "***"}
    assert "sk-secret" not in repr(masked)
    assert masked["llm"]["model"] == "gpt-4o"  # only secrets are masked
    assert c.to_dict(mask_secrets=False)["llm"]["api_key"] == "sk-secret"
    # An empty secret stays empty: "***" would claim a key is set.
    assert Config().to_dict()["llm"]["api_key"] == ""


# --------------------------------------------------------------------------- TOML text

MCP_TOML = """
[mcp.servers.github]
command = "github-mcp"
args = ["--token", "${TEST_AF_KEY}"]
env = { GH_TOKEN = "${TEST_AF_KEY}" }

[mcp.servers.search]
url = "https://search.example/mcp"
pool_size = 4
"""

SECRETS = (
    Config(
        llm=LLMConfig(api_key="sk-one", headers={"X-Token": "two"}),
        mcp=MCPConfig(servers={"gh": MCPServerConfig(command="gh", env={"GH_TOKEN": "three"})}),
        distributed=DistributedConfig(redis_password="four"),
    ),
    ("sk-one", "two", "three", "four"),
)


def test_to_toml_writes_one_table_per_section() -> None:
    text = Config().to_toml()
    assert text.startswith("[runner]\nmax_concurrent_events = 1000\nevent_buffer_size = 1000\n")
    assert '\n[llm]\nprovider = "openai"\n' in text
    assert "\n[llm.headers]\n\n[llm.retry]\nenabled = true\n" in text
    assert "\n[mcp]\n\n[mcp.servers]\n\n[runtime]\ngc_thresholds = []\n" in text
    assert 'reconnect_max_delay = "2s"\n\n[limits]\n# max_requests = (not set)\n' in text
    assert text.endswith("# max_cost = (not set)\n")  # no limit: TOML has no null
    headers = [line for line in text.splitlines() if line.startswith("[")]
    assert headers[:4] == ["[runner]", "[memory]", "[monitoring]", "[llm]"]
    assert tomllib.loads(text) == Config().to_dict()


def test_to_toml_round_trips_through_load_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_TOML + MCP_TOML), env=ENV)
    assert config.mcp.servers["github"].env == {"GH_TOKEN": "sk-secret"}
    text = config.to_toml(mask_secrets=False)
    assert load_config(write(tmp_path, text, "shown.toml"), env={}) == config
    assert load_config(write(tmp_path, Config().to_toml(), "defaults.toml"), env={}) == Config()


def test_to_toml_masks_secrets_by_default() -> None:
    config, secrets = SECRETS
    text = config.to_toml()
    assert not [secret for secret in secrets if secret in text]
    shown = tomllib.loads(text)
    assert shown["llm"]["api_key"] == "***" and shown["llm"]["headers"] == {"X-Token": "***"}
    assert shown["mcp"]["servers"]["gh"]["env"] == {"GH_TOKEN": "***"}
    assert shown["distributed"]["redis_password"] == "***"
    unmasked = config.to_toml(mask_secrets=False)
    assert all(secret in unmasked for secret in secrets)


def test_to_toml_quotes_keys_and_escapes_strings() -> None:
    headers = {"X Title": 'say "hi"\\', "é": "tab\there\x7f"}
    config = Config(llm=LLMConfig(model="line\nbreak", headers=headers))
    text = config.to_toml(mask_secrets=False)
    assert '"X Title" = "say \\"hi\\"\\\\"' in text
    assert Config.from_mapping(tomllib.loads(text), env={}) == config


def test_rendered_strings_keep_a_literal_env_reference() -> None:
    config = Config(llm=LLMConfig(model="${NOT_A_REF}", headers={"${K}": "$${V}"}))
    assert config.to_dict(mask_secrets=False)["llm"]["model"] == "$${NOT_A_REF}"
    assert Config.from_mapping(config.to_dict(mask_secrets=False), env={}) == config
    assert Config.from_mapping(tomllib.loads(config.to_toml(mask_secrets=False))) == config


_TRICKY = st.sampled_from(["${", "$", "{", "}", "\x7f", '"', "\\", "\n", "'"])
_TEXT = st.lists(st.characters(codec="utf-8") | _TRICKY, max_size=8).map("".join)
_NAME = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    model=_TEXT,
    headers=st.dictionaries(_TEXT, _TEXT, max_size=3),
    args=st.lists(_TEXT, max_size=3),
    env=st.dictionaries(_NAME, _TEXT, max_size=2),
    name=_NAME,
    timeout=st.floats(min_value=0.001, max_value=86400.0, allow_nan=False),
    memory_limit=st.integers(min_value=0, max_value=2**44),
)
def test_to_toml_round_trips_any_text(
    model: str,
    headers: dict[str, str],
    args: list[str],
    env: dict[str, str],
    name: str,
    timeout: float,
    memory_limit: int,
) -> None:
    server = MCPServerConfig(command="run", args=args, env=env, call_timeout=timeout)
    config = Config(
        llm=LLMConfig(model=model, headers=headers, request_timeout=timeout),
        mcp=MCPConfig(servers={name: server}),
        runtime=RuntimeConfig(memory_limit=memory_limit),
    )
    text = config.to_toml(mask_secrets=False)
    assert Config.from_mapping(tomllib.loads(text), source="shown.toml", env={}) == config


def test_package_exports_exactly_its_public_names() -> None:
    import types

    import agentflow_trio.config as pkg

    public = {
        name
        for name, value in vars(pkg).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(pkg.__all__) == public
    assert pkg.__all__ == sorted(pkg.__all__, key=lambda name: (not name.isupper(), name))


# --------------------------------------------------------------------------- durations, sizes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("100ms", 0.1),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("2d", 172800.0),
        ("250us", 0.00025),
        ("1m0.5s", 60.5),
        ("0", 0.0),
        ("42", 42.0),
        (" 7s ", 7.0),
        (12, 12.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration_valid(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    [
        *("", "abc", "-5s", "5 s", "1x", "1.5.3s", "s", "1e3s", "inf", "nan", "30S", "1h-5m"),
        *(True, None, -1, -0.5, math.inf, math.nan, [1]),
    ],
)
def test_parse_duration_invalid(bad: object) -> None:
    with pytest.raises(ConfigError, match="expected a duration") as info:
        parse_duration(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (30, "30s"), (90, "1m30s"), (5400, "1h30m"), (0.5, "500ms"), (1.5, "1.5s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_duration_format_parse_round_trip(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["h", "m", "s", "ms"])),
        min_size=1,
        max_size=4,
    )
)
def test_duration_components_sum_exactly(parts: list[tuple[int, str]]) -> None:
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    expected_millis = sum(n * round(scale[unit] * 1000) for n, unit in parts)
    assert parse_duration(text) == expected_millis / 1000


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64MiB", 64 * 2**20),
        ("10MB", 10_000_000),
        ("512KiB", 512 * 1024),
        ("1.5KiB", 1536),
        ("2 GiB", 2 * 2**30),
        ("100", 100),
        ("100B", 100),
        ("1kb", 1000),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size_valid(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "12XB", "-1KiB", "1.5B", "MiB", "1 2MB", -1, True, 1.5, None])
def test_parse_size_invalid(bad: object) -> None:
    with pytest.raises(ConfigError, match="expected a size"):
        parse_size(bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**62))
def test_size_format_parse_round_trip(size: int) -> None:
    assert parse_size(format_size(size)) == size


# --------------------------------------------------------------------------- error kinds


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[runner]\nworker_pool_size = 4\nevent_timeout = "30s\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    assert "line 3" in str(info.value)


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_wrong_type_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[runner]\nworker_pool_size = "many"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert (err.source, err.key) == (str(path), "runner.worker_pool_size")
    assert str(err) == (
        f"{path}: runner.worker_pool_size: expected an integer between 1 and 65536, "
        "got 'many' (str)"
    )
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"runner": {"worker_pool_size": 0}}, "runner.worker_pool_size", ">= 1, got 0"),
        ({"runner": {"event_buffer_size": -1}}, "runner.event_buffer_size", ">= 0, got -1"),
        ({"monitoring": {"metrics_port": 70000}}, "monitoring.metrics_port", "<= 65535, got 7"),
        ({"llm": {"retry": {"max_attempts": 0}}}, "llm.retry.max_attempts", ">= 1, got 0"),
        ({"runner": {"worker_pool_size": True}}, "runner.worker_pool_size", "got True (bool)"),
        ({"runner": {"worker_pool_size": 2.0}}, "runner.worker_pool_size", "got 2.0 (float)"),
        ({"monitoring": {"enable_metrics": 1}}, "monitoring.enable_metrics", "a boolean"),
        ({"monitoring": {"enable_metrics": "yes"}}, "monitoring.enable_metrics", "a boolean"),
        ({"llm": {"model": 4}}, "llm.model", "expected a string, got 4 (int)"),
        ({"llm": {"provider": "opneai"}}, "llm.provider", "did you mean 'openai'?"),
        ({"monitoring": {"log_level": "INFO"}}, "monitoring.log_level", "one of 'debug'"),
        ({"llm": {"retry": 3}}, "llm.retry", "expected a table, got 3 (int)"),
        ({"llm": {"headers": {"A": 1}}}, "llm.headers.A", "expected a string"),
        ({"llm": {"headers": ["A"]}}, "llm.headers", "expected a table"),
        ({"performance": {"cache_max_bytes": "12XB"}}, "performance.cache_max_bytes", "a size"),
    ],
)
def test_wrong_value_names_dotted_key(data: dict[str, Any], key: str, fragment: str) -> None:
    err = config_error(data)
    assert err.key == key
    assert str(err).startswith(f"agentflow.toml: {key}: expected ")
    assert fragment in str(err)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("0s", "> 0"), ("abc", "'abc' (str)"), ("-5s", "'-5s' (str)"), (True, "True (bool)")],
)
def test_bad_duration(value: object, fragment: str) -> None:
    err = config_error({"runner": {"event_timeout": value}})
    assert err.key == "runner.event_timeout"
    assert "expected a duration" in str(err) and fragment in str(err)


def test_drain_timeout_may_be_zero() -> None:
    assert Config.from_mapping({"runner": {"drain_timeout": "0s"}}).runner.drain_timeout == 0


def test_unknown_nested_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "[runner]\nworker_pool_sise = 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert (err.source, err.key) == (str(path), "runner.worker_pool_sise")
    assert "unknown key 'runner.worker_pool_sise'; did you mean 'worker_pool_size'?" in str(err)
    assert "known keys: drain_timeout, event_buffer_size" in str(err)


def test_unknown_top_level_section_suggests() -> None:
    err = config_error({"runer": {}})
    assert err.key == "runer"
    assert "unknown key 'runer'; did you mean 'runner'?" in str(err)


def test_unknown_deep_key_without_close_match() -> None:
    err = config_error({"llm": {"retry": {"zzz": 1}}})
    assert err.key == "llm.retry.zzz"
    assert "did you mean" not in str(err)
    assert "known keys: base_delay, enabled, max_attempts, max_delay" in str(err)


def test_min_connections_above_max() -> None:
    err = config_error({"llm": {"max_connections": 4, "min_connections": 5}})
    assert err.key == "llm.min_connections"
    assert str(err) == (
        "agentflow.toml: llm.min_connections: "
        "expected an integer <= max_connections (4), got 5 (int)"
    )


def test_validators_guard_direct_construction() -> None:
    with pytest.raises(ConfigError) as info:
        RunnerConfig(worker_pool_size=0)
    assert info.value.key == "worker_pool_size"
    with pytest.raises(ConfigError, match="max_connections"):
        LLMConfig(max_connections=2, min_connections=3)


def test_top_level_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="expected a table"):
        Config.from_mapping([], env={})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ${ENV}


def test_env_interpolation() -> None:
    data = {"llm": {"api_key": "${K}", "base_url": "http://${HOST:-localhost}:${PORT:-80}/v1"}}
    c = Config.from_mapping(data, env={"K": "sk-1", "PORT": "8080"})
    assert c.llm.api_key == "sk-1"
    assert c.llm.base_url == "http://localhost:8080/v1"


def test_env_default_applies_to_empty_variable() -> None:
    c = Config.from_mapping({"llm": {"model": "${M:-gpt}"}}, env={"M": ""})
    assert c.llm.model == "gpt"
    # Without a default an empty variable is taken as it is.
    assert Config.from_mapping({"llm": {"model": "x${M}"}}, env={"M": ""}).llm.model == "x"


def test_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AF_TEST_MODEL", "from-env")
    assert Config.from_mapping({"llm": {"model": "${AF_TEST_MODEL}"}}).llm.model == "from-env"


def test_missing_env_var_names_key_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, '[llm]\napi_key = "${AF_SURELY_UNSET_KEY}"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert (err.source, err.key) == (str(path), "llm.api_key")
    assert "'AF_SURELY_UNSET_KEY' is not set" in str(err)


def test_env_escape_and_malformed_reference() -> None:
    c = Config.from_mapping({"llm": {"model": "a$${B}c$d"}}, env={})
    assert c.llm.model == "a${B}c$d"
    err = config_error({"llm": {"model": "x${1}"}})
    assert err.key == "llm.model" and "malformed" in str(err)


def test_env_in_durations_numbers_bools_and_dict_values() -> None:
    data = {
        "runner": {"event_timeout": "${T:-5s}", "worker_pool_size": "${W}"},
        "monitoring": {"enable_metrics": "${M:-false}"},
        "llm": {"headers": {"X-Key": "${H}"}, "provider": "${P:-fake}"},
    }
    c = Config.from_mapping(data, env={"W": "12", "H": "h"})
    assert c.runner.event_timeout == 5.0 and c.runner.worker_pool_size == 12
    assert c.monitoring.enable_metrics is False
    assert c.llm.headers == {"X-Key": "h"} and c.llm.provider == "fake"
    err = config_error({"runner": {"worker_pool_size": "${W}"}}, env={"W": "0"})
    assert err.key == "runner.worker_pool_size" and ">= 1" in str(err)
    err = config_error({"runner": {"worker_pool_size": "${W}"}}, env={"W": "lots"})
    assert "got '${W}' (str)" in str(err)


# --------------------------------------------------------------------------- the machine


@attrs.frozen
class _Server:
    command: str = ""
    args: list[str] = attrs.field(factory=list)
    tags: tuple[str, ...] = ()
    env: dict[str, str] = attrs.field(factory=dict)
    transport: Literal["stdio", "http"] = "stdio"
    timeout: Duration = 5.0
    buffer: Size = 1024


@attrs.frozen
class _Mcp:
    enabled: bool = False
    servers: dict[str, _Server] = attrs.field(factory=dict)


@attrs.frozen
class _Root:
    mcp: _Mcp = attrs.field(factory=_Mcp)


@attrs.frozen
class _Unsupported:
    weird: set[str] = attrs.field(factory=set)


NAMED_TOML = """
[mcp]
enabled = true

[mcp.servers.github]
command = "github-mcp"
args = ["--token", "${GH_TOKEN:-none}"]
tags = ["vcs"]
env = { GH_HOST = "github.com" }
timeout = "2s"
buffer = "4KiB"

[mcp.servers.search]
transport = "http"
"""


def test_named_tables() -> None:
    root = parse_section(_Root, tomllib.loads(NAMED_TOML), source="mcp.toml", env={})
    assert root.mcp.enabled is True
    assert set(root.mcp.servers) == {"github", "search"}
    github = root.mcp.servers["github"]
    assert github.args == ["--token", "none"] and github.tags == ("vcs",)
    assert github.env == {"GH_HOST": "github.com"}
    assert (github.timeout, github.buffer) == (2.0, 4096)
    assert root.mcp.servers["search"] == _Server(transport="http")
    rendered = section_to_dict(root)
    assert rendered["mcp"]["servers"]["github"]["timeout"] == "2s"
    assert rendered["mcp"]["servers"]["github"]["args"] == ["--token", "none"]
    assert_toml_able(rendered)
    assert parse_section(_Root, rendered, env={}) == root


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"servers": {"gh": {"comand": "x"}}}, "mcp.servers.gh.comand", "'command'?"),
        ({"servers": {"gh": {"timeout": "soon"}}}, "mcp.servers.gh.timeout", "a duration"),
        ({"servers": {"gh": {"args": ["a", 2]}}}, "mcp.servers.gh.args[1]", "a string"),
        ({"servers": {"gh": {"args": "a"}}}, "mcp.servers.gh.args", "an array of strings"),
        ({"servers": {"gh": 3}}, "mcp.servers.gh", "a table"),
        ({"servers": {"gh": {"transport": "tcp"}}}, "mcp.servers.gh.transport", "'stdio'"),
        ({"servers": {"gh": {"env": {"A": "${NOPE}"}}}}, "mcp.servers.gh.env.A", "'NOPE'"),
    ],
)
def test_named_table_errors(data: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_section(_Root, {"mcp": data}, source="mcp.toml", env={})
    assert info.value.key == key
    assert str(info.value).startswith(f"mcp.toml: {key}: ")
    assert fragment in str(info.value)


def test_unsupported_field_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="unsupported config field type"):
        parse_section(_Unsupported, {"weird": []}, env={})


def test_runtime_section() -> None:
    config = Config.from_mapping(
        {"runtime": {"gc_thresholds": [700, 10, 10], "gc_freeze": True, "memory_limit": "512MiB"}}
    )
    assert config.runtime.gc_thresholds == [700, 10, 10]
    assert config.runtime.memory_limit == 512 * 2**20
    assert Config.from_mapping(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"x\.toml: runtime\.gc_thresholds: expected at most 3"):
        Config.from_mapping({"runtime": {"gc_thresholds": [1, 2, 3, 4]}}, source="x.toml")
    with pytest.raises(ConfigError, match=r"runtime\.gc_thresholds\[1\]: expected an integer"):
        Config.from_mapping({"runtime": {"gc_thresholds": [1, "two"]}}, source="x.toml")


# --------------------------------------------------------------------------- secrets

PLANTED = "pl4nted-s3cret"


def planted_config() -> Config:
    """A config holding the planted secret in every place a secret may live."""
    return Config(
        llm=LLMConfig(
            api_key=PLANTED,
            base_url=f"https://user:{PLANTED}@llm.example/v1",
            headers={"X-Token": PLANTED},
        ),
        mcp=MCPConfig(
            servers={
                "gh": MCPServerConfig(command="gh", env={"GH_TOKEN": PLANTED}),
                "web": MCPServerConfig(url=f"https://u:{PLANTED}@mcp.example/mcp"),
            }
        ),
        distributed=DistributedConfig(
            redis_url=f"redis://:{PLANTED}@redis.example:6379/0", redis_password=PLANTED
        ),
    )


def test_no_repr_str_or_rendering_shows_a_secret() -> None:
    config = planted_config()
    sections = [config, config.llm, config.mcp, config.mcp.servers["gh"], config.distributed]
    shown = [repr(s) for s in sections] + [str(s) for s in sections]
    shown += [config.to_toml(), repr(config.to_dict()), repr(config.mcp.servers["web"])]
    assert [text for text in shown if PLANTED in text] == []
    assert "api_key='***'" in repr(config.llm) and "headers={'X-Token': '***'}" in repr(config.llm)
    assert "base_url='https://user:***@llm.example/v1'" in repr(config.llm)
    assert "redis_url='redis://:***@redis.example:6379/0'" in repr(config.distributed)
    assert "env={'GH_TOKEN': '***'}" in repr(config.mcp.servers["gh"])
    rendered = config.to_dict()
    assert rendered["llm"]["base_url"] == "https://user:***@llm.example/v1"
    assert rendered["distributed"]["redis_url"] == "redis://:***@redis.example:6379/0"
    assert rendered["mcp"]["servers"]["web"]["url"] == "https://u:***@mcp.example/mcp"
    assert repr(LLMConfig()).count("api_key=''") == 1  # an empty secret reads empty
    unmasked = config.to_toml(mask_secrets=False)
    assert Config.from_mapping(tomllib.loads(unmasked), env={}) == config


def test_config_show_masks_url_passwords(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = write(
        tmp_path,
        f'[llm]\nbase_url = "http://u:{PLANTED}@127.0.0.1:9/v1"\n'
        f'[distributed]\nredis_url = "redis://:{PLANTED}@127.0.0.1:6379/0"\n',
    )
    proc = subprocess.run(
        [sys.executable, "-m", "agentflow_trio.cli", "config", "show", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert PLANTED not in proc.stdout + proc.stderr
    assert 'redis_url = "redis://:***@127.0.0.1:6379/0"' in proc.stdout


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host", "redis://:***@host"),
        ("https://user:pw@h", "https://user:***@h"),
        ("https://user:pw@h:8443/v1?q=1#f", "https://user:***@h:8443/v1?q=1#f"),
        ("rediss://default:p@ss@[::1]:6380/2", "rediss://default:***@[::1]:6380/2"),
        ("unix://:pw@/tmp/redis.sock?db=1", "unix://:***@/tmp/redis.sock?db=1"),
        ("https://token@h/v1", "https://token@h/v1"),  # a user name alone is kept
        ("https://h/a:b@c", "https://h/a:b@c"),  # an '@' in the path is no userinfo
        ("http://h", "http://h"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    from agentflow_trio.config import redact_url

    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "data",
    [
        {"llm": {"api_key": 9876543210}},
        {"llm": {"api_key": [PLANTED]}},
        {"llm": {"api_key": PLANTED + "${"}},
        {"llm": {"headers": {"X-Token": [PLANTED]}}},
        {"distributed": {"redis_password": {"p": PLANTED}}},
        {"mcp": {"servers": {"s": {"url": f"ftp://u:{PLANTED}@h/mcp"}}}},
        {"mcp": {"servers": {"s": {"command": "x", "url": f"http://u:{PLANTED}@h/mcp"}}}},
        {"mcp": {"servers": {"s": {"command": "x", "env": {"T": 9876543210}}}}},
    ],
)
def test_errors_never_echo_a_secret(data: dict[str, Any]) -> None:
    err = config_error(data)
    assert PLANTED not in str(err) and "9876543210" not in str(err)


# --------------------------------------------------------------------------- unknown keys


def test_all_unknown_keys_in_one_error(tmp_path: Path) -> None:
    text = (
        "[runner]\nworker_pool_sise = 4\nevent_timeout = '5s'\nidle_timeout = '1s'\n"
        "[llm]\nmodle = 'x'\nMAX_CONNECTIONS = 3\n[llm.retry]\nmax_retries = 3\nzzz = 1\n"
        "[mcp.servers.gh]\ncomand = 'gh'\n[retry]\nenabled = false\n"
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert (err.source, err.key) == (str(path), "runner.worker_pool_sise")
    assert str(err).splitlines() == [
        f"{path}: 8 unknown keys:",
        "  runner.worker_pool_sise: did you mean 'worker_pool_size'?",
        "  runner.idle_timeout: did you mean 'llm.idle_timeout', 'drain_timeout' or "
        "'event_timeout'?",
        "  llm.modle: did you mean 'model'?",
        "  llm.MAX_CONNECTIONS: did you mean 'max_connections'?",
        "  llm.retry.max_retries: did you mean 'max_attempts'?",
        "  llm.retry.zzz: known keys are base_delay, enabled, max_attempts, max_delay",
        "  mcp.servers.gh.comand: did you mean 'command'?",
        "  retry: did you mean 'llm.retry'?",
    ]


def _hint(section: str, key: str) -> list[str]:
    """The keys the error for ``key`` (unknown, in table ``section``) points at."""
    data: dict[str, Any] = {key: 1}
    for part in reversed(section.split(".") if section else []):
        data = {part: data}
    err = config_error(data)
    match = re.search(r"did you mean (.*)\?", str(err))
    return re.findall(r"'([^']*)'", match[1]) if match else []


def _tables() -> dict[str, type[Any]]:
    tables: dict[str, type[Any]] = {}

    def walk(cls: type[Any], path: str) -> None:
        tables[path] = cls
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            hint, sub = hints[field.name], f"{path}.{field.name}".lstrip(".")
            if attrs.has(hint):
                walk(hint, sub)
            elif typing.get_origin(hint) is dict and attrs.has(typing.get_args(hint)[1]):
                walk(typing.get_args(hint)[1], f"{sub}.s")

    walk(Config, "")
    return tables


def _typos(name: str) -> set[str]:
    """Plausible slips: a letter dropped or two swapped, CAPS, camelCase, kebab-case."""
    words = name.split("_")
    typos = {name.upper(), words[0] + "".join(w.title() for w in words[1:]), name.replace("_", "-")}
    for i in range(1, len(name) - 1):
        typos.add(name[:i] + name[i + 1 :])
        typos.add(name[:i] + name[i + 1] + name[i] + name[i + 2 :])
    return typos - {name}


@pytest.mark.parametrize("section", list(_tables()), ids=lambda s: s or "<root>")
def test_a_typo_of_every_key_hints_that_key(section: str) -> None:
    names = [field.name for field in attrs.fields(_tables()[section])]
    wrong = []
    for name in names:
        for typo in sorted(_typos(name) - set(names)):
            hints = _hint(section, typo)
            if name not in hints or (len(hints) > 1 and typo.upper() == typo):
                wrong.append((typo, name, hints))
    assert wrong == []


def _inherited(table: str, name: str, tables: dict[str, type[Any]]) -> bool:
    """Whether key ``name`` of ``table`` is inherited: it is under a named table
    (``llm.deployments.s``) whose parent table (``llm``) has it too; the hint then names
    the parent's key only."""
    parts = f"{table}.{name}".split(".")
    for i, part in enumerate(parts[1:-1], start=1):
        parent = tables.get(".".join(parts[: i - 1]))
        fields = {field.name for field in attrs.fields(parent)} if parent is not None else set()
        if part == "s" and parts[i + 1] in fields:
            return True
    return False


def test_a_key_in_the_wrong_table_hints_its_table() -> None:
    tables = _tables()
    wrong = []
    for section, cls in tables.items():
        names = {field.name for field in attrs.fields(cls)}
        for other, other_cls in tables.items():
            for field in attrs.fields(other_cls):
                path = f"{other}.{field.name}".lstrip(".").replace(".s.", ".<name>.")
                if field.name in names or other == section or _inherited(other, field.name, tables):
                    continue
                hints = _hint(section, field.name)
                close = [n for n in names if SequenceMatcher(None, field.name, n).ratio() >= 0.9]
                if path not in hints and not (close and set(close) <= set(hints)):
                    wrong.append((section, field.name, hints))
    assert wrong == []


def test_a_choice_hint_ignores_case() -> None:
    err = config_error({"monitoring": {"log_level": "INFO"}})
    assert "did you mean 'info'?" in str(err)
    err = config_error({"llm": {"max_connections": 5, "min_connections": 5, "mai_connections": 1}})
    assert "did you mean 'max_connections' or 'min_connections'?" in str(err)  # a tie is a tie


# --------------------------------------------------------------------------- what services refuse


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ('[llm]\nheaders = { "X-A" = "a\\nb" }', "llm.headers.X-A", "without CR, LF or NUL"),
        ('[llm]\nheaders = { "X-A" = "a\\u0000" }', "llm.headers.X-A", "without CR, LF or NUL"),
        ('[llm]\nheaders = { "X A" = "b" }', "llm.headers.X A", "a header name"),
        ('[llm]\nheaders = { "" = "b" }', "llm.headers.", "a header name"),
        ('[llm]\ntransport = "httpx2"\nheaders = { "X" = "é" }', "llm.headers.X", "ASCII"),
        ('[llm]\napi_key = "sk-1\\r\\nX-Evil: 1"', "llm.api_key", "without CR, LF or NUL"),
        ('[llm]\norganization = "o\\n"', "llm.organization", "without CR, LF or NUL"),
        ('[llm]\nbase_url = "ftp://127.0.0.1/v1"', "llm.base_url", "an http:// or https://"),
        ('[llm]\nbase_url = "http:///v1"', "llm.base_url", "with a host"),
        ('[llm]\nbase_url = "http://h:99999/v1"', "llm.base_url", "out of range"),
        ('[llm]\nbase_url = "http://h /v1"', "llm.base_url", "no whitespace"),
        ('[llm]\nbase_url = "https://api.example/v1"', "llm.api_key", "is empty, but"),
        ('[llm]\nprovider = "azure"\nbase_url = "https://r.example"', "llm.api_key", "is empty"),
        ('[distributed]\nredis_url = "http://h:6379"', "distributed.redis_url", "redis://"),
        ('[distributed]\nredis_url = "localhost:6379"', "distributed.redis_url", "redis://"),
        (
            '[distributed]\nstream = "s"\ndead_letter_stream = "s"',
            "distributed.dead_letter_stream",
            "other than distributed.stream",
        ),
        (
            '[distributed]\nresults = "stream"\nresults_stream = "agentflow:events"',
            "distributed.results_stream",
            "other than distributed.stream",
        ),
        ('[mcp.servers.s]\nurl = "http:///mcp"', "mcp.servers.s.url", "with a host"),
    ],
)
def test_load_refuses_what_the_services_refuse(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = write(tmp_path, text + "\n")
    assert Config.from_mapping(tomllib.loads(text), env={})  # each value alone is fine
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    err = info.value
    assert (err.source, err.key) == (str(path), key)
    assert str(err).startswith(f"{path}: {key}: ") and fragment in str(err)


@pytest.mark.parametrize(
    "text",
    [
        '[llm]\nbase_url = "http://127.0.0.1:8000/v1"',  # a local server needs no key
        '[llm]\nbase_url = "http://[::1]:8000/v1"',
        '[llm]\nbase_url = "http://localhost:8000/v1"',
        '[llm]\nprovider = "ollama"\nbase_url = "http://gpu.example:11434"',
        '[llm]\nbase_url = "https://api.example/v1"\napi_key = "sk-1"\nheaders = { "X" = "é" }',
        '[llm]\nprovider = "fake"\nheaders = { "X A" = "a\\nb" }',  # fake sends nothing
        '[llm]\nprovider = "azure"',  # no base_url: the built-in mock stands in
        '[distributed]\nredis_url = "unix:///tmp/redis.sock"',
    ],
)
def test_load_accepts_what_the_services_accept(tmp_path: Path, text: str) -> None:
    load_config(write(tmp_path, text + "\n"), env={})


@pytest.mark.parametrize(
    "provider", ["openai", "azure", "ollama", "anthropic", "openai_responses", "fake"]
)
@pytest.mark.parametrize(
    "base_url", ["", "http://127.0.0.1:9/v1", "https://api.example/v1", "http://[::1]/v1"]
)
@pytest.mark.parametrize("api_key", ["", "sk-1"])
def test_the_key_rule_is_the_services_rule(provider: str, base_url: str, api_key: str) -> None:
    from agentflow_trio.config import check_config
    from agentflow_trio.mockllm import check_llm_target

    config = Config(llm=LLMConfig(provider=provider, base_url=base_url, api_key=api_key))  # type: ignore[arg-type]
    try:
        check_llm_target(config, "a.toml")
    except ConfigError as exc:
        with pytest.raises(ConfigError) as info:
            check_config(config, source="a.toml")
        assert (info.value.key, info.value.source) == (exc.key, exc.source)
    else:
        check_config(config, source="a.toml")


def test_config_validate_refuses_what_serve_refuses(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = write(tmp_path, '[llm]\nheaders = { "X-A" = "a\\nb" }\n')
    proc = subprocess.run(
        [sys.executable, "-m", "agentflow_trio.cli", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr == f"Error: {path}: llm.headers.X-A: expected a header value without "
        "CR, LF or NUL (value hidden: a secret)\n"
    )


# --------------------------------------------------------------------------- [memory] stores


def test_memory_store_keys_load_and_render() -> None:
    data = {
        "memory": {
            "backend": "redis",
            "max_state_bytes": "256KiB",
            "enable_state_compression": True,
            "compression_threshold": "1KiB",
            "compression": "zlib",
        }
    }
    memory = Config.from_mapping(data).memory
    assert (memory.backend, memory.max_state_bytes) == ("redis", 256 * 1024)
    assert (memory.enable_state_compression, memory.compression_threshold) == (True, 1024)
    assert memory.codec == "zlib"
    assert Config.from_mapping(Config.from_mapping(data).to_dict()).memory == memory


def test_memory_state_bound_is_bounded() -> None:
    with pytest.raises(ConfigError, match=r"memory\.max_state_bytes.*<= 64MiB"):
        Config.from_mapping({"memory": {"max_state_bytes": "1GiB"}})
    with pytest.raises(ConfigError, match=r"memory\.backend.*'memory', 'redis'"):
        Config.from_mapping({"memory": {"backend": "disk"}})


def test_auto_compression_is_zstd_only_when_zstandard_imports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    for present, codec in ((True, "zstd"), (False, "zlib")):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a, present=present: (
                (object() if present else None) if name == "zstandard" else real(name, *a)
            ),
        )
        assert Config().memory.codec == codec
    path = tmp_path / "zstd.toml"
    path.write_text('[memory]\ncompression = "zstd"\n')
    with pytest.raises(ConfigError, match=r"memory\.compression.*zstandard"):
        load_config(path)
