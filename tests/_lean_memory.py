"""An in-memory scripted HTTP/1.1 server for the lean session's tests: each request on a
connection (a ``trio.testing.memory_stream_pair``) gets the next scripted `Answer`, and one
``send_all`` is one piece for the client."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
from _sockets import RequestCounter

from agentflow_trio.llm._lean import LeanSession, PoolSet, PoolSettings

Answer = Callable[[trio.abc.Stream], Awaitable[None]]
"""What the server does for one request: writes (part of) a response, maybe hangs."""


async def serve_answers(stream: trio.abc.Stream, answers: Callable[[], Answer]) -> None:
    """Answer each request on ``stream`` with the next of ``answers``, until the client
    closes; then close the server side."""
    requests = RequestCounter()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            requests.parser.feed_data(bytes(data))
            while requests.done:
                requests.done -= 1
                await answers()(stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


def _in_turn(answers: tuple[Answer, ...]) -> Callable[[], Answer]:
    count = itertools.count()
    return lambda: answers[min(next(count), len(answers) - 1)]


@asynccontextmanager
async def scripted(*answers: Answer, **settings: Any) -> AsyncIterator[LeanSession]:
    """A lean session whose n-th request is answered by answers[n] (the last one after)."""
    script = _in_turn(answers)
    async with trio.open_nursery() as nursery:

        async def connect() -> trio.abc.Stream:
            client, server = trio.testing.memory_stream_pair()
            nursery.start_soon(serve_answers, server, script)
            return client

        pools = PoolSet(PoolSettings(**settings), connector=lambda origin, context: connect)
        session = LeanSession(pools, {"content-type": "application/json"}, "fake")
        try:
            yield session
        finally:
            await session.aclose()
            nursery.cancel_scope.cancel()


def sending(data: bytes) -> Answer:
    """Send ``data`` and keep the connection open: only framing may end the body."""

    async def answer(stream: trio.abc.Stream) -> None:
        await stream.send_all(data)

    return answer
