"""The public API: every exported name exists, and importing the package stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import agentflow_trio

SUBPACKAGES = [
    "agentflow_trio.distributed",
    "agentflow_trio.llm",
    "agentflow_trio.loadgen",
    "agentflow_trio.mockllm",
    "agentflow_trio.mcp",
    "agentflow_trio.observability",
    "agentflow_trio.resilience",
    "agentflow_trio.server",
    "agentflow_trio.testing",
    "agentflow_trio.tools",
]


@pytest.mark.parametrize("module_name", ["agentflow_trio", *SUBPACKAGES])
def test_all_names_resolve_and_are_unique(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("module_name", ["agentflow_trio", *SUBPACKAGES])
def test_public_names_are_all_exported(module_name: str) -> None:
    module = importlib.import_module(module_name)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, type(sys))  # submodules
        and getattr(value, "__module__", "").startswith("agentflow_trio")
    }
    assert public <= set(module.__all__), public - set(module.__all__)


def test_errors_say_their_public_module() -> None:
    assert agentflow_trio.RunnerClosed.__module__ == "agentflow_trio"
    assert "agentflow_trio.QueueFull" in repr(agentflow_trio.QueueFull)


def test_import_does_not_pull_heavy_optional_dependencies() -> None:
    code = (
        "import sys, agentflow_trio;"
        "heavy = {'httpx2', 'mcp', 'coredis', 'prometheus_client', 'hypercorn', 'hdrh'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_llm_names() -> None:
    assert agentflow_trio.user("hi").content == "hi"
    assert agentflow_trio.LLMClient is importlib.import_module("agentflow_trio.llm").LLMClient
    with pytest.raises(AttributeError):
        agentflow_trio.no_such_name  # noqa: B018
