"""The anchors' floor: each scenario hand-written on raw trio sockets + the ``httptools``
parser + orjson, doing the same HTTP and JSON work as agentflow_trio and nothing else.

No layers, no objects beyond dicts: a keep-alive connection pool (a list), the request
head pre-encoded per URL, responses framed by httptools, bodies decoded by orjson, SSE
split in bulk (one ``split`` per received piece), tool calls run in one nursery. These are
the baselines the anchors' ratios divide by (see ``bench/anchors.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson
import trio

from bench._common import connect_tcp

PROMPT = "Summarise the benchmark results in one sentence, please."
MODEL = "gpt-4o-mini"
_STREAM_OPTIONS = {"include_usage": True}


class RawConnection:
    """One keep-alive HTTP/1.1 connection: send pre-encoded bytes, read one response."""

    __slots__ = ("_done", "_on_part", "_parser", "_parts", "_sock")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._done = False
        self._parts: list[bytes] = []
        self._on_part: Callable[[bytes], None] | None = None
        self._parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:  # httptools callback
        if self._on_part is None:
            self._parts.append(body)
        else:
            self._on_part(body)

    def on_message_complete(self) -> None:  # httptools callback
        self._done = True

    async def _send(self, request: bytes) -> None:
        view = memoryview(request)
        while view:
            view = view[await self._sock.send(view) :]
        self._done = False

    async def _read(self) -> None:
        while not self._done:
            data = await self._sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._parser.feed_data(data)

    async def exchange(self, request: bytes) -> bytes:
        """Send ``request``; the whole body of the response."""
        await self._send(request)
        await self._read()
        parts, self._parts = self._parts, []
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def stream(self, request: bytes, on_part: Callable[[bytes], None]) -> None:
        """Send ``request``; ``on_part`` gets each piece of the body as it is parsed."""
        self._on_part = on_part
        try:
            await self._send(request)
            await self._read()
        finally:
            self._on_part = None

    def close(self) -> None:
        self._sock.close()


class RawPool:
    """Idle connections to one origin in a list; a call takes one or opens one."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[RawConnection] = []
        self.prefix = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            "content-type: application/json\r\nauthorization: Bearer sk-bench\r\n"
            "content-length: "
        ).encode()

    def request(self, body: bytes) -> bytes:
        return self.prefix + b"%d\r\n\r\n" % len(body) + body

    async def take(self) -> RawConnection:
        if self.idle:
            return self.idle.pop()
        return RawConnection(await connect_tcp(self.host, self.port))

    async def post(self, body: bytes) -> Any:
        conn = await self.take()
        try:
            data = await conn.exchange(self.request(body))
        except BaseException:
            conn.close()
            raise
        self.idle.append(conn)
        return orjson.loads(data)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


async def chat(pool: RawPool, i: int) -> str:
    """One chat call: body, round trip, answer text."""
    body = orjson.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": f"{PROMPT} {i}"}]}
    )
    data = await pool.post(body)
    return str(data["choices"][0]["message"]["content"])


class _SSE:
    """Bulk SSE parse: split each received piece on blank lines, decode every event."""

    __slots__ = ("chunks", "first_at", "tail", "text")

    def __init__(self) -> None:
        self.tail = b""
        self.chunks = 0
        self.text: list[str] = []
        self.first_at = 0.0

    def feed(self, data: bytes) -> None:
        events = (self.tail + data if self.tail else data).split(b"\n\n")
        self.tail = events.pop()
        for event in events:
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            choices = orjson.loads(event[6:])["choices"]
            if choices and (content := choices[0]["delta"].get("content")):
                if not self.chunks:
                    self.first_at = trio.current_time()
                self.chunks += 1
                self.text.append(content)


async def stream(pool: RawPool, i: int) -> tuple[int, float]:
    """One streamed answer read to its end: (chunks with text, time of the first one)."""
    body = orjson.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"{PROMPT} {i}"}],
            "stream": True,
            "stream_options": _STREAM_OPTIONS,
        }
    )
    sse = _SSE()
    conn = await pool.take()
    try:
        await conn.stream(pool.request(body), sse.feed)
    except BaseException:
        conn.close()
        raise
    pool.idle.append(conn)
    return sse.chunks, sse.first_at


# ------------------------------------------------------------------------------ tool loop
def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
    }
    for name, description, properties in (
        ("lookup", "Look a key up in the catalogue.", {"key": _string("The key.")}),
        (
            "add",
            "Add two integers.",
            {"a": {"type": "integer", "description": "First."}, "b": {"type": "integer"}},
        ),
        (
            "weather",
            "The weather in a city today.",
            {"city": _string("The city."), "unit": _string("celsius or fahrenheit.")},
        ),
        (
            "convert",
            "Convert a value between units.",
            {
                "value": {"type": "number", "description": "The value."},
                "source": _string("From unit."),
                "target": _string("To unit."),
            },
        ),
    )
]
"""What a hand-written loop sends as ``tools``: the four tools the mock asks for."""


async def _lookup(key: str) -> dict[str, Any]:
    await trio.lowlevel.checkpoint()
    return {"value": key.upper()}


async def _add(a: int, b: int) -> dict[str, Any]:
    await trio.lowlevel.checkpoint()
    return {"sum": a + b}


async def _weather(city: str, unit: str) -> dict[str, Any]:
    await trio.lowlevel.checkpoint()
    return {"city": city, "temperature": 21, "unit": unit}


async def _convert(value: float, source: str, target: str) -> dict[str, Any]:
    await trio.lowlevel.checkpoint()
    return {"value": value * 0.621, "unit": target}


TOOL_FUNCTIONS = {"lookup": _lookup, "add": _add, "weather": _weather, "convert": _convert}
"""The tools both sides run: each yields once (as any tool doing I/O does) and returns."""


def history(pairs: int = 10) -> list[dict[str, Any]]:
    """``4 * pairs`` earlier messages: user, assistant asking for a tool, its answer, text."""
    out: list[dict[str, Any]] = []
    for n in range(pairs):
        call = {
            "id": f"old_{n}",
            "type": "function",
            "function": {"name": "lookup", "arguments": orjson.dumps({"key": f"h{n}"}).decode()},
        }
        out.append({"role": "user", "content": f"Earlier question number {n}: what is h{n}?"})
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        out.append({"role": "tool", "tool_call_id": f"old_{n}", "content": f'{{"value":"H{n}"}}'})
        out.append({"role": "assistant", "content": f"h{n} is H{n}, as the catalogue says."})
    return out


async def _run_tool(answers: list[dict[str, Any]], k: int, call: dict[str, Any]) -> None:
    function = call["function"]
    output = await TOOL_FUNCTIONS[function["name"]](**orjson.loads(function["arguments"]))
    answers[k] = {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": orjson.dumps(output).decode(),
    }


async def tool_loop(pool: RawPool, i: int, prior: list[dict[str, Any]], max_steps: int = 8) -> str:
    """The model -> parallel tools -> model loop, by hand: the same bodies as a tool agent's."""
    messages = [*prior, {"role": "user", "content": f"{PROMPT} {i}"}]
    for _ in range(max_steps):
        body = orjson.dumps({"model": MODEL, "messages": messages, "tools": TOOL_SCHEMAS})
        message = (await pool.post(body))["choices"][0]["message"]
        calls = message.get("tool_calls")
        turn: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if not calls:
            messages.append(turn)
            return str(message["content"])
        turn["tool_calls"] = calls
        messages.append(turn)
        answers: list[dict[str, Any]] = [{}] * len(calls)
        async with trio.open_nursery() as nursery:
            for k, call in enumerate(calls):
                nursery.start_soon(_run_tool, answers, k, call)
        messages.extend(answers)
    raise RuntimeError("no final answer")
