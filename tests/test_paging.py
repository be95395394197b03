"""Paging: the page_size / page_token / has_more / next_page_token contract, opaque tokens,
and the bounded, lazy page walk."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import agentflow_trio as af
from agentflow_trio.errors import ToolArgumentError, ToolError
from agentflow_trio.tools import (
    Page,
    PageRequest,
    ToolRegistry,
    decode_page_token,
    encode_page_token,
    paged_tool,
    slice_page,
    tool_fetch,
    walk_pages,
)

ROWS = [f"row{i}" for i in range(23)]


class Source:
    """An in-memory paged source that counts its fetches."""

    def __init__(self, rows: list[str]) -> None:
        self.rows = rows
        self.fetches = 0

    async def fetch(self, page_size: int, page_token: str | None) -> Page[str]:
        self.fetches += 1
        await trio.lowlevel.checkpoint()
        return slice_page(self.rows, page_size, page_token)


async def test_walk_all_pages_in_order() -> None:
    source = Source(ROWS)
    walk = walk_pages(source.fetch, page_size=5, max_pages=100)
    pages = [page async for page in walk]
    assert [len(p.items) for p in pages] == [5, 5, 5, 5, 3]
    assert [item for p in pages for item in p.items] == ROWS
    assert [p.has_more for p in pages] == [True] * 4 + [False]
    assert pages[-1].next_page_token is None
    assert not walk.truncated and walk.next_page_token is None and walk.pages == 5


async def test_max_pages_bound_stops_with_a_marker_and_resumes() -> None:
    source = Source(ROWS)
    walk = walk_pages(source.fetch, page_size=5, max_pages=2)
    first = [item async for page in walk for item in page.items]
    assert first == ROWS[:10]
    assert source.fetches == 2  # never a third fetch
    assert walk.truncated and walk.next_page_token is not None
    rest = walk_pages(source.fetch, page_size=5, max_pages=10, page_token=walk.next_page_token)
    assert first + [item async for page in rest for item in page.items] == ROWS
    assert [page async for page in walk] == []  # a finished walk stays finished


async def test_exactly_max_pages_is_not_truncated() -> None:
    walk = walk_pages(Source(ROWS[:10]).fetch, page_size=5, max_pages=2)
    assert len([p async for p in walk]) == 2
    assert not walk.truncated


async def test_walk_is_lazy() -> None:
    source = Source(ROWS)
    walk = walk_pages(source.fetch, page_size=5, max_pages=100)
    assert source.fetches == 0
    async for _ in walk:
        break
    assert source.fetches == 1


def test_tokens_are_opaque_and_round_trip() -> None:
    state = {"offset": 40, "query": "trio"}
    token = encode_page_token(state)
    assert decode_page_token(token) == state
    assert "offset" not in token and "40" not in token
    assert token.replace("-", "").replace("_", "").isalnum()  # URL-safe, no padding


@pytest.mark.parametrize("bad", ["", "garbage!", "eyJvZmZzZXQiOjV9", "AAAA"])
def test_bad_tokens_are_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(ToolArgumentError) as info:
        decode_page_token(bad)
    assert info.value.field == "page_token"


def test_a_tampered_token_is_refused() -> None:
    token = encode_page_token({"offset": 5})
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(ToolArgumentError):
        decode_page_token(tampered)


@settings(deadline=None, max_examples=50)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.integers(), st.text(max_size=10), st.booleans(), st.none()),
        max_size=4,
    )
)
def test_property_token_round_trip(state: dict[str, Any]) -> None:
    assert decode_page_token(encode_page_token(state)) == state


@settings(deadline=None, max_examples=40)
@given(
    n=st.integers(min_value=0, max_value=60),
    page_size=st.integers(min_value=1, max_value=15),
    max_pages=st.integers(min_value=1, max_value=8),
)
def test_property_walk_returns_a_prefix_and_respects_the_bound(
    n: int, page_size: int, max_pages: int
) -> None:
    rows = [f"r{i}" for i in range(n)]

    async def main() -> tuple[list[str], bool, int]:
        source = Source(rows)
        walk = walk_pages(source.fetch, page_size=page_size, max_pages=max_pages)
        got = [item async for page in walk for item in page.items]
        return got, walk.truncated, source.fetches

    got, truncated, fetches = trio.run(main)
    needed = max(1, math.ceil(n / page_size))
    assert fetches == min(needed, max_pages)
    assert got == rows[: min(n, max_pages * page_size)]
    assert truncated == (needed > max_pages)


def test_page_values() -> None:
    assert Page([1], "t").has_more and not Page([1]).has_more
    with pytest.raises(ValueError, match="next_page_token"):
        Page([1], None, True)
    page = Page(["a"], "tok")
    assert page.to_dict() == {"items": ["a"], "has_more": True, "next_page_token": "tok"}
    assert Page.from_dict(page.to_dict()) == page
    assert Page.from_dict({"items": [], "has_more": False}) == Page([])
    with pytest.raises(ValueError):
        Page.from_dict({"has_more": False})
    assert PageRequest.from_args({"page_size": 10_000}, max_size=50).page_size == 50
    assert PageRequest.from_args({}, default_size=7) == PageRequest(7, None)
    assert PageRequest.from_args({"page_size": 0, "page_token": "x"}) == PageRequest(1, "x")
    with pytest.raises(ValueError):
        walk_pages(Source([]).fetch, max_pages=0)


async def _list_docs(page_size: int, page_token: str | None, prefix: str = "") -> Page[str]:
    """List documents by name."""
    docs = [d for d in ROWS if d.startswith(prefix)]
    return slice_page(docs, page_size, page_token)


def _docs_tool() -> Any:
    return paged_tool(
        _list_docs,
        name="list_docs",
        parameters={"prefix": {"type": "string"}},
        default_page_size=4,
        max_page_size=10,
    )


async def test_paged_tool_contract_through_the_registry() -> None:
    t = _docs_tool()
    assert t.description == "List documents by name."
    props = t.parameters["properties"]
    assert set(props) == {"prefix", "page_size", "page_token"}
    assert t.parameters["additionalProperties"] is False
    registry = ToolRegistry([t])
    first = await registry.call(None, "list_docs", {})
    assert first.output is not None
    assert first.output["items"] == ROWS[:4] and first.output["has_more"] is True
    token = first.output["next_page_token"]
    second = await registry.call(None, "list_docs", {"page_token": token, "page_size": 999})
    assert second.output is not None and second.output["items"] == ROWS[4:14]  # clamped to 10
    assert json.loads(second.content())["has_more"] is True


async def test_paged_tool_bad_token_is_invalid_arguments_for_the_model() -> None:
    registry = ToolRegistry([_docs_tool()])
    result = await registry.call(None, "list_docs", {"page_token": "made-up"})
    assert result.outcome == "error" and result.error is not None
    assert (result.error["type"], result.error["field"]) == ("invalid_arguments", "page_token")
    assert result.error["tool"] == "list_docs"


async def test_walk_a_paged_tool_through_ctx_tools() -> None:
    registry = ToolRegistry([_docs_tool()])
    tools = registry.bind(af.Context(af.Event("e")))
    walk = walk_pages(tool_fetch(tools, "list_docs", {"prefix": "row1"}), page_size=3, max_pages=9)
    got = [item async for page in walk for item in page.items]
    assert got == [r for r in ROWS if r.startswith("row1")]
    broken = walk_pages(tool_fetch(tools, "list_docs", {"prefix": 5}), max_pages=1)
    with pytest.raises(ToolError):
        async for _ in broken:
            pass


def test_paged_tool_refuses_inconsistent_settings() -> None:
    with pytest.raises(ValueError):
        paged_tool(_list_docs, name="x", default_page_size=50, max_page_size=10)
    with pytest.raises(ValueError, match="page_size"):
        paged_tool(_list_docs, name="x", parameters={"page_size": {"type": "integer"}})
