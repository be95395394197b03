"""Credentials in a base URL's userinfo leave the URL and travel as Basic auth."""

from __future__ import annotations

import base64

import pytest

from agentflow_trio.llm._userinfo import move_userinfo, strip_userinfo


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_userinfo_becomes_a_basic_header() -> None:
    headers: dict[str, str] = {}
    bare = move_userinfo("https://alice:s%40cret@proxy.example:8443/v1", headers)
    assert bare == "https://proxy.example:8443/v1"
    assert headers == {"authorization": _basic("alice", "s@cret")}


def test_an_api_key_header_wins_over_userinfo() -> None:
    headers = {"Authorization": "Bearer sk-x"}
    assert move_userinfo("http://u:p@127.0.0.1/v1", headers) == "http://127.0.0.1/v1"
    assert headers == {"Authorization": "Bearer sk-x"}


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "", "not a url", "http://[::1/v1"])
def test_a_url_without_userinfo_is_unchanged(url: str) -> None:
    headers: dict[str, str] = {}
    assert move_userinfo(url, headers) == url
    assert strip_userinfo(url) == url
    assert headers == {}
