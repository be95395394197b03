"""``[llm.deployments.NAME]``, the guide's ``[llm.azure]``/``[llm.openai]`` tables and
``[llm.router]``: inheritance from ``[llm]``, bounds, checks and round trips."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from agentflow_trio.config import (
    Config,
    DeploymentConfig,
    LLMConfig,
    RetryConfig,
    RouterConfig,
    RouterGroupConfig,
    load_config,
)
from agentflow_trio.errors import ConfigError

GUIDE = """
[llm]
provider = "openai"
model = "gpt-4o"
api_key = "sk-top"
max_connections = 100
request_timeout = "30s"

[llm.retry]
max_attempts = 4

[llm.azure]
base_url = "https://res.openai.azure.com"
api_key = "az-key"
deployment = "gpt-4o"
max_connections = 50

[llm.azure.retry]
base_delay = "2s"

[llm.openai]
max_connections = 30
"""


def load(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "agentflow.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=env or {})


def error(text: str, tmp_path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, tmp_path)
    return info.value


def test_the_guide_tables_load_as_deployments_named_after_their_provider(
    tmp_path: Path,
) -> None:
    llm = load(GUIDE, tmp_path).llm
    assert set(llm.deployments) == {"azure", "openai"}
    azure, openai = llm.deployments["azure"], llm.deployments["openai"]
    assert (azure.provider, azure.max_connections, azure.api_key) == ("azure", 50, "az-key")
    assert (openai.provider, openai.max_connections, openai.api_key) == ("openai", 30, "sk-top")
    # Keys not given are inherited from [llm]; nested tables key by key.
    assert azure.model == openai.model == "gpt-4o"
    assert azure.request_timeout == openai.request_timeout == 30.0
    assert azure.retry == RetryConfig(max_attempts=4, base_delay=2.0)
    assert openai.retry == RetryConfig(max_attempts=4)
    assert llm.uses_router()
    assert {d.model_group for d in llm.deployment_configs().values()} == {"gpt-4o"}


def test_a_deployment_table_inherits_and_overrides(tmp_path: Path) -> None:
    text = """
[llm]
provider = "fake"
model = "m"
weight = 3
[llm.headers]
X-Top = "1"
[llm.deployments.a]
group = "g"
max_context = 8000
[llm.deployments.b]
model = "m2"
weight = 0
[llm.deployments.b.headers]
X-Own = "2"
"""
    llm = load(text, tmp_path).llm
    a, b = llm.deployments["a"], llm.deployments["b"]
    assert (a.provider, a.model, a.group, a.weight, a.max_context) == ("fake", "m", "g", 3, 8000)
    assert (b.model, b.model_group, b.weight) == ("m2", "m2", 0)
    assert a.headers == {"X-Top": "1"}
    assert b.headers == {"X-Own": "2"}  # headers are inherited whole, never merged


def test_deployments_round_trip_and_mask_their_secrets(tmp_path: Path) -> None:
    config = load(GUIDE, tmp_path)
    assert Config.from_mapping(config.to_dict(mask_secrets=False)) == config
    assert Config.from_mapping(tomllib.loads(config.to_toml(mask_secrets=False))) == config
    shown = config.to_toml()
    assert "az-key" not in shown and "sk-top" not in shown
    assert "az-key" not in repr(config)
    assert config.to_dict()["llm"]["deployments"]["azure"]["api_key"] == "***"


def test_a_single_llm_table_is_a_group_of_one() -> None:
    llm = LLMConfig(provider="fake", model="m")
    assert not llm.uses_router()
    assert llm.deployment_configs() == {"fake": llm}
    assert llm.model_group == "m"


def test_deployment_configs_are_plain_llm_configs() -> None:
    llm = LLMConfig(deployments={"a": DeploymentConfig(provider="fake", model="x", weight=2)})
    (a,) = llm.deployment_configs().values()
    assert type(a) is LLMConfig
    assert (a.provider, a.model, a.weight, a.deployments) == ("fake", "x", 2, {})


def test_a_deployment_given_twice_is_refused(tmp_path: Path) -> None:
    err = error("[llm.azure]\nmax_connections = 1\n[llm.deployments.azure]\n", tmp_path)
    assert err.key == "llm.azure"
    assert "given twice" in str(err)


def test_an_unknown_key_of_a_deployment_is_named_with_its_hint(tmp_path: Path) -> None:
    err = error("[llm.deployments.a]\nmax_conections = 3\n", tmp_path)
    assert err.key == "llm.deployments.a.max_conections"
    assert "did you mean 'max_connections'?" in str(err)


def test_an_unknown_key_of_llm_is_named_once(tmp_path: Path) -> None:
    err = error("[llm]\nmodle = 'x'\n[llm.deployments.a]\n", tmp_path)
    assert err.key == "llm.modle"
    assert "unknown keys" not in str(err)


@pytest.mark.parametrize(
    ("table", "key", "value", "bound"),
    [
        ("llm.deployments.a", "weight", 1_000_001, "<= 1000000"),
        ("llm.deployments.a", "max_context", -1, ">= 0"),
        ("llm.router", "cooldown", '"2d"', "<= 1d"),
        ("llm.router", "explore", 1.5, "<= 1"),
        ("llm.router.groups.m", "max_retry_wait", '"2h"', "<= 1h"),
        ("llm.router.groups.m", "allowed_fails", 0, ">= 1"),
    ],
)
def test_router_numbers_are_bounded(
    tmp_path: Path, table: str, key: str, value: Any, bound: str
) -> None:
    text = f"[llm]\nprovider = 'fake'\nmodel = 'm'\n[{table}]\n{key} = {value}\n"
    err = error(text, tmp_path)
    assert err.key == f"{table}.{key}"
    assert bound in str(err)


def test_group_policies_inherit_the_router_keys(tmp_path: Path) -> None:
    text = """
[llm]
provider = "fake"
model = "a"
[llm.deployments.a]
[llm.deployments.b]
model = "b"
[llm.router]
cooldown = "5s"
first_token_timeout = "2s"
[llm.router.groups.a]
fallbacks = ["b"]
first_token_timeout = "1s"
"""
    router = load(text, tmp_path).llm.router
    assert router.groups["a"] == RouterGroupConfig(
        fallbacks=["b"], first_token_timeout=1.0, cooldown=5.0
    )
    assert router.group("b") == RouterGroupConfig(first_token_timeout=2.0, cooldown=5.0)


@pytest.mark.parametrize(
    ("router", "key", "message"),
    [
        ("default_group = 'nope'", "llm.router.default_group", "a model group served"),
        ("[llm.router.groups.nope]", "llm.router.groups.nope", "no deployment serves"),
        ("[llm.router.groups.a]\nfallbacks = ['zz']", "llm.router.groups.a.fallbacks", "'zz'"),
        ("[llm.router.groups.a]\nfallbacks = ['a']", "llm.router.groups.a.fallbacks", "itself"),
        (
            "[llm.router.groups.a]\ncontext_fallbacks = ['q']",
            "llm.router.groups.a.context_fallbacks",
            "'q'",
        ),
        ("fallback_on = ['teapot']", "llm.router.fallback_on", "one of 'rate_limit'"),
    ],
)
def test_router_settings_must_name_served_groups(
    tmp_path: Path, router: str, key: str, message: str
) -> None:
    text = f"[llm]\nprovider = 'fake'\nmodel = 'a'\n[llm.deployments.a]\n[llm.router]\n{router}\n"
    err = error(text, tmp_path)
    assert err.key == key
    assert message in str(err)


def test_each_deployment_is_checked_like_llm(tmp_path: Path) -> None:
    text = "[llm.deployments.x]\nbase_url = 'https://api.example.com/v1'\n"
    err = error(text, tmp_path)
    assert err.key == "llm.deployments.x.api_key"
    err = error("[llm.deployments.x]\nbase_url = 'ftp://h'\n", tmp_path)
    assert err.key == "llm.deployments.x.base_url"
    err = error("[llm.openai]\n[llm.openai.headers]\n'bad name' = 'v'\n", tmp_path)
    assert err.key == "llm.deployments.openai.headers.bad name"


def test_with_deployments_the_llm_table_needs_no_key_of_its_own(tmp_path: Path) -> None:
    text = (
        "[llm]\nbase_url = 'https://api.example.com/v1'\n"
        "[llm.deployments.x]\nbase_url = 'http://127.0.0.1:9/v1'\n"
    )
    assert load(text, tmp_path).llm.deployments["x"].base_url == "http://127.0.0.1:9/v1"


def test_deployment_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="deployment name"):
        LLMConfig(deployments={"a b": DeploymentConfig()})


def test_a_router_config_in_code_keeps_its_defaults() -> None:
    router = RouterConfig()
    assert router.strategy == "weighted_random"
    assert router.group("any") == RouterGroupConfig()
    assert router.group("any").fallback_on == [
        "rate_limit",
        "server_error",
        "connection",
        "timeout",
        "bad_response",
    ]
