"""The load generator's HTTP path: `LeanHTTPClient` and `LoadClient` over it, against the
real mock LLM server on 127.0.0.1 (real clock, bounded by ``fail_after``)."""

from __future__ import annotations

import trio

from agentflow_trio.llm import LeanHTTPClient
from agentflow_trio.loadgen._client import LoadClient
from agentflow_trio.mockllm import open_mock_llm

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_posts_reach_the_server_once_each_over_few_connections() -> None:
    with trio.fail_after(20):
        async with open_mock_llm() as mock, LeanHTTPClient(mock.url, max_connections=8) as http:
            before = mock.stats().requests
            outcomes: list[str] = []

            async def user(index: int) -> None:
                for _ in range(25):
                    client = LoadClient(index, http=http)
                    response = await client.post("/v1/chat/completions", json=CHAT)
                    assert response.status_code == 200
                    assert response.json()["choices"][0]["message"]["content"]
                    outcomes.append(client.outcome)

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(user, i)
            assert outcomes == ["succeeded"] * 500
            assert mock.stats().requests - before == 500
            stats = http._pools.statistics()
            assert stats.opened <= 8
            assert stats.requests == stats.active == 0


async def test_a_non_2xx_status_marks_the_request_and_is_returned() -> None:
    with trio.fail_after(10):
        async with open_mock_llm() as mock, LeanHTTPClient(mock.url) as http:
            client = LoadClient(0, http=http)
            response = await client.get("/no/such/path")
            assert response.status_code == 404
            assert not response.is_success
            assert client.outcome == "http_404"
            assert client.error is not None and "/no/such/path" in client.error
            ok = LoadClient(1, http=http)
            await ok.post("/v1/chat/completions", json=CHAT)
            assert ok.outcome == "succeeded" and ok.error is None


async def test_base_path_raw_content_and_headers() -> None:
    with trio.fail_after(10):
        async with open_mock_llm() as mock, LeanHTTPClient(mock.url + "/v1/") as http:
            import orjson

            response = await http.post(
                "chat/completions",
                content=orjson.dumps(CHAT),
                headers={"content-type": "application/json", "x-trace": "1"},
            )
            assert response.status_code == 200, response.text
            assert "json" in response.headers["content-type"]


async def test_cancelled_requests_release_their_slots() -> None:
    with trio.fail_after(20):
        async with (
            open_mock_llm(latency=0.5) as mock,
            LeanHTTPClient(mock.url, max_connections=2) as http,
        ):
            with trio.move_on_after(0.05):
                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(http.post, "/v1/chat/completions", CHAT)
            stats = http._pools.statistics()
            assert stats.requests == stats.active == 0
            # both slots are free again: two requests go through
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(http.post, "/v1/chat/completions", CHAT)
