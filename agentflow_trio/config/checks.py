"""What the services refuse in a config that parses: checked once, at load, naming the key.

`check_config` holds the rules that ``serve``, ``benchmark``, ``loadtest`` and ``worker``
(and the providers, the HTTP clients and the Redis workers under them) would otherwise
apply only at start or on the first call, so that ``agentcli config validate`` refuses
exactly what they refuse. `load_config` runs it; a config built in code may call it too.
The rules need the whole config (a key needed for a remote endpoint) or are the clients'
own (header syntax), which is why they are not attrs validators of single fields.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterator
from typing import Final

from ..errors import ConfigError
from ._hosting import zstd_available
from ._messages import expected
from ._secrets import url_repr
from .sections import (
    Config,
    DeploymentConfig,
    DistributedConfig,
    LLMConfig,
    MCPConfig,
    MemoryConfig,
)

__all__ = ["API_KEY_VARIABLES", "check_config"]

_HTTP: Final = ("http", "https")
_REDIS: Final = ("redis://", "rediss://", "unix://")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110)
_FORBIDDEN: Final = frozenset("\r\n\0")  # header injection: refused by both HTTP clients
API_KEY_VARIABLES: Final = {
    "openai": "OPENAI_API_KEY",
    "openai_responses": "OPENAI_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
}
"""The providers that need ``api_key`` for a remote ``base_url``, and the variable named."""


def check_config(config: Config, *, source: str | None = None) -> None:
    """Refuse a config the services would refuse; ``source`` names its file in the error.

    * ``llm.base_url``: empty, or an ``http://``/``https://`` URL with a host, a valid port
      and no whitespace or control character;
    * ``llm.api_key``: set when ``provider`` is ``openai``, ``openai_responses``,
      ``azure`` or ``anthropic`` and ``base_url`` points beyond this machine (the rule of
      ``agentcli serve``/``benchmark``/``worker``); with deployments, the same rules for
      each ``llm.deployments.NAME`` (the key rule for them only: ``[llm]`` then holds the
      keys they inherit, and a deployment of another vendor inherits none);
    * ``llm.router``: ``default_group``, every ``groups.NAME`` and every group in its
      ``fallbacks`` and ``context_fallbacks`` is served by a deployment; no group falls
      back to itself;
    * ``llm.headers``: names are HTTP tokens; no value (nor ``api_key``,
      ``organization``) holds CR, LF or NUL, nor, with ``transport = "httpx2"``,
      anything beyond ASCII (not checked for ``provider = "fake"``, which sends nothing);
    * ``distributed.redis_url``: ``redis://``, ``rediss://`` or ``unix://``;
      ``dead_letter_stream`` (and ``results_stream`` when ``results = "stream"``) is not
      the ``stream`` the workers read, or every dead entry would be read again;
    * ``mcp.servers.NAME.url``: a host;
    * ``memory.compression = "zstd"``: the ``zstandard`` package is importable.

    Raises:
        ConfigError: the first rule broken, naming ``source`` and the dotted key; no
            secret and no URL password is echoed.
    """
    for key, message in _problems(config):
        raise ConfigError(message, source=source, key=key)


def _problems(config: Config) -> Iterator[tuple[str, str]]:
    llm = config.llm
    yield from _llm(llm, "llm", key_needed=not llm.deployments)
    for name, deployment in llm.deployments.items():
        yield from _llm(deployment, f"llm.deployments.{name}", key_needed=True)
    yield from _router(llm)
    yield from _mcp(config.mcp)
    yield from _distributed(config.distributed)
    yield from _memory(config.memory)


def _llm(llm: DeploymentConfig, prefix: str, *, key_needed: bool) -> Iterator[tuple[str, str]]:
    if llm.base_url:
        problem = _http_url(llm.base_url)
        if problem is not None:
            yield f"{prefix}.base_url", problem
            return
    if llm.provider == "fake":
        return
    ascii_only = llm.transport == "httpx2"
    for name, value in llm.headers.items():
        if not _TOKEN.fullmatch(name):
            what = "a header name of letters, digits and !#$%&'*+.^_`|~-"
            yield f"{prefix}.headers.{name}", expected(what, name)
        problem = _header_value(value, ascii_only)
        if problem is not None:
            yield f"{prefix}.headers.{name}", problem
    for key, value in (("api_key", llm.api_key), ("organization", llm.organization)):
        problem = _header_value(value, ascii_only)
        if problem is not None:
            yield f"{prefix}.{key}", problem
    remote = llm.base_url and not _is_loopback(urllib.parse.urlsplit(llm.base_url).hostname or "")
    variable = API_KEY_VARIABLES.get(llm.provider)
    if key_needed and variable and remote and not llm.api_key:
        where = url_repr(llm.base_url)
        yield (
            f"{prefix}.api_key",
            (
                f"is empty, but {prefix}.base_url sends requests to {where}; set it (api_key = "
                f'"${{{variable}}}") or remove the base_url to use the built-in mock LLM'
            ),
        )


def _router(llm: LLMConfig) -> Iterator[tuple[str, str]]:
    """Every group the router settings name is served by a deployment; no group falls back
    to itself."""
    if not llm.uses_router():
        return
    groups = {d.model_group for d in llm.deployment_configs().values()}
    known = ", ".join(repr(g) for g in sorted(groups))
    router = llm.router
    if router.default_group and router.default_group not in groups:
        what = f"a model group served by a deployment ({known})"
        yield "llm.router.default_group", expected(what, router.default_group)
    for name, policy in router.groups.items():
        key = f"llm.router.groups.{name}"
        if name not in groups:
            yield key, f"no deployment serves model group {name!r} (groups: {known})"
        for field in ("fallbacks", "context_fallbacks"):
            for target in getattr(policy, field):
                if target not in groups:
                    what = f"a model group served by a deployment ({known})"
                    yield f"{key}.{field}", expected(what, target)
                elif target == name:
                    yield f"{key}.{field}", f"group {name!r} cannot fall back to itself"


def _mcp(mcp: MCPConfig) -> Iterator[tuple[str, str]]:
    for name, server in mcp.servers.items():
        if server.url:
            problem = _http_url(server.url)
            if problem is not None:
                yield f"mcp.servers.{name}.url", problem


def _distributed(settings: DistributedConfig) -> Iterator[tuple[str, str]]:
    url = settings.redis_url
    if not url.startswith(_REDIS):
        what = "a redis://, rediss:// or unix:// URL"
        yield "distributed.redis_url", expected(what, url, shown=url_repr(url))
    elif not url.startswith("unix://"):
        try:
            _ = urllib.parse.urlsplit(url).port  # raises ValueError for a port out of range
        except ValueError as exc:
            what = f"a redis:// or rediss:// URL with a valid port ({exc})"
            yield "distributed.redis_url", expected(what, url, shown=url_repr(url))
    others = [("distributed.dead_letter_stream", settings.dead_letter_stream)]
    if settings.results == "stream":
        others.append(("distributed.results_stream", settings.results_stream))
    for key, stream in others:
        if stream == settings.stream:
            why = "the workers would read their own output back as events"
            yield key, f"expected a stream other than distributed.stream ({why}), got {stream!r}"


def _memory(memory: MemoryConfig) -> Iterator[tuple[str, str]]:
    if memory.compression == "zstd" and not zstd_available():
        yield (
            "memory.compression",
            'is "zstd", but the zstandard package is not installed (pip install zstandard, '
            'or write "auto": zstd when installed, else zlib)',
        )


def _http_url(url: str) -> str | None:
    """Why ``url`` is no ``http(s)://host[:port]/...`` URL an HTTP client accepts, or None."""
    what = "an http:// or https:// URL with a host"
    if any(c.isspace() or not c.isprintable() for c in url):
        what += " and no whitespace or control character"
        return expected(what, url, shown=url_repr(url))
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError as exc:
        return expected(f"{what} ({exc})", url, shown=url_repr(url))
    if parts.scheme.lower() not in _HTTP or not parts.hostname:
        return expected(what, url, shown=url_repr(url))
    return None


def _header_value(value: str, ascii_only: bool) -> str | None:
    """Why ``value`` cannot be sent as a header value (never echoing it), or None."""
    if not _FORBIDDEN.isdisjoint(value):
        return "expected a header value without CR, LF or NUL (value hidden: a secret)"
    if ascii_only and not value.isascii():
        return (
            'expected an ASCII header value with transport = "httpx2" (use "lean" for '
            "UTF-8; value hidden: a secret)"
        )
    return None


def _is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP literal: a key-less OpenAI/Azure URL may point only
    there (the same rule as the mock LLM's)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
