"""The anchors' mock model: a small OpenAI-compatible chat server on trio + httptools whose
answer depends on the conversation it is sent, so that many tool loops can run at once.

``POST /v1/chat/completions`` only. A request without ``tools`` is answered in text. One
with tools whose conversation ends, after the user's last message, with ``n`` assistant
messages carrying tool calls (and their tool answers) is step ``n`` of a tool loop: while
``n`` is below the number of entries of ``--plan`` (default ``2,2``) the answer asks for
``plan[n]`` tool calls (``lookup``, ``add``, ``weather``, ``convert`` in turn, with small
JSON arguments); otherwise it is a short text answer. A
request with ``"stream": true`` gets that text as ``--chunks`` server-sent events (one
HTTP chunk each, written at once), the usage event and ``data: [DONE]``. ``--latency-ms``
is slept before each answer. Every answer is pre-encoded at start, so the server spends
its time on HTTP framing and one JSON decode per request.

    python bench/_anchor_mock.py [--latency-ms L] [--chunks K] [--plan 2,2]

Prints ``mock LLM listening on http://127.0.0.1:PORT`` once it listens, as
``agentcli mock-llm`` does (`bench._common.mock_process` reads that line).
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

import httptools
import orjson
import trio

MODEL = "mock-gpt"
TOOLS = ("lookup", "add", "weather", "convert")
_USAGE = {"prompt_tokens": 42, "completion_tokens": 12, "total_tokens": 54}


def _arguments(name: str, j: int) -> dict[str, Any]:
    return {
        "lookup": {"key": f"k{j}"},
        "add": {"a": j, "b": 2},
        "weather": {"city": "Paris", "unit": "celsius"},
        "convert": {"value": 1.5 + j, "source": "km", "target": "mi"},
    }[name]


def _completion(message: dict[str, Any], finish: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-anchor",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _USAGE,
        }
    )


def _tool_step(step: int, count: int) -> bytes:
    calls = []
    for j in range(count):
        name = TOOLS[(step * count + j) % len(TOOLS)]
        arguments = orjson.dumps(_arguments(name, j)).decode()
        call_id = f"call_{step}_{j}"
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        )
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    return _completion(message, "tool_calls")


def _words(chunks: int) -> list[str]:
    return [f"token{i} " for i in range(chunks)]


def _event(delta: dict[str, Any], finish: str | None, usage: Any = None) -> bytes:
    data = {
        "id": "chatcmpl-anchor",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
    }
    if usage is not None:
        data["usage"] = usage
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _chunked(piece: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(piece), piece)


def _stream_body(chunks: int) -> bytes:
    words = _words(chunks)
    events = [_event({"role": "assistant", "content": words[0]}, None)]
    events += [_event({"content": w}, None) for w in words[1:-1]]
    if chunks > 1:
        events.append(_event({"content": words[-1]}, "stop"))
    else:
        events[0] = _event({"role": "assistant", "content": words[0]}, "stop")
    events.append(_event({}, None, _USAGE))
    events.append(b"data: [DONE]\n\n")
    return b"".join(_chunked(e) for e in events) + b"0\r\n\r\n"


def _response(body: bytes, ctype: bytes = b"application/json") -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n"
    return head % (ctype, len(body)) + body


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


class _Answers:
    """Every answer the server gives, encoded once."""

    def __init__(self, plan: list[int], chunks: int) -> None:
        self.steps = [_response(_tool_step(n, count)) for n, count in enumerate(plan)]
        text = "".join(_words(chunks)).strip()
        self.text = _response(_completion({"role": "assistant", "content": text}, "stop"))
        self.stream = _STREAM_HEAD + _stream_body(chunks)

    def answer(self, request: Any) -> bytes:
        if request.get("stream"):
            return self.stream
        if not request.get("tools"):
            return self.text
        step = 0
        for message in reversed(request["messages"]):
            role = message.get("role")
            if role == "tool":
                continue
            if role == "assistant" and message.get("tool_calls"):
                step += 1
                continue
            break
        return self.steps[step] if step < len(self.steps) else self.text


class _Request:
    """httptools callbacks for one request at a time on a connection."""

    __slots__ = ("body", "done", "parser")

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.done: list[bytes] = []
        self.parser = httptools.HttpRequestParser(self)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done.append(b"".join(self.body))
        self.body = []


async def _serve(stream: trio.SocketStream, answers: _Answers, latency: float) -> None:
    request = _Request()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            request.parser.feed_data(data)
            while request.done:
                body = request.done.pop(0)
                if latency:
                    await trio.sleep(latency)
                await stream.send_all(answers.answer(orjson.loads(body)))
    except (trio.BrokenResourceError, trio.ClosedResourceError, httptools.HttpParserError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def main(latency: float, chunks: int, plan: list[int]) -> None:
    answers = _Answers(plan, chunks)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=65535)
    sock = listeners[0].socket
    port = sock.getsockname()[1]
    print(f"mock LLM listening on http://127.0.0.1:{port}", flush=True)

    async def handler(stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await _serve(stream, answers, latency)

    await trio.serve_listeners(handler, listeners)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--plan", default="2,2", help="tool calls asked at each loop step")
    args = parser.parse_args()
    plan = [int(n) for n in args.plan.split(",") if n.strip()]
    trio.run(main, args.latency_ms / 1000, args.chunks, plan)
