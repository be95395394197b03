"""A small headless-Chromium driver for tests, over the Chrome DevTools Protocol.

Starts Debian's ``/usr/bin/chromium`` headless with a fresh profile in a temporary
directory and ``--remote-debugging-port=0``, reads the port it chose from the profile's
``DevToolsActivePort`` file, and talks to the first page over a websocket (stdlib
``socket`` + ``wsproto``, which hypercorn already depends on). Synchronous on purpose:
the tests that use it serve their pages from a subprocess or a file, so no event loop
has to share the thread.

Everything the page does is recorded: console messages and uncaught exceptions
(``errors``) and every network request's URL (``requests``). `Browser.close` kills the
process it started (by its own handle) and waits for it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import wsproto
import wsproto.events

__all__ = ["CHROMIUM", "Browser", "require_chromium"]

CHROMIUM = "/usr/bin/chromium"
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
)


def require_chromium() -> None:
    """Skip the calling test when the Debian ``chromium`` package is not installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium not installed (Debian package chromium)")


class _Socket:
    """One websocket connection (client side), blocking, with a deadline per read."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._sock = socket.create_connection((host, port), timeout=10)
        self._ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self._sock.sendall(
            self._ws.send(wsproto.events.Request(host=f"{host}:{port}", target=path))
        )
        self._text: list[str] = []
        self._inbox: list[str] = []
        while True:
            events = self._pump(10.0)
            if any(isinstance(e, wsproto.events.AcceptConnection) for e in events):
                break

    def _pump(self, timeout: float) -> list[wsproto.events.Event]:
        self._sock.settimeout(timeout)
        data = self._sock.recv(1 << 20)
        if not data:
            raise ConnectionError("chromium closed the devtools socket")
        self._ws.receive_data(data)
        events = list(self._ws.events())
        for event in events:
            if isinstance(event, wsproto.events.TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    self._inbox.append("".join(self._text))
                    self._text.clear()
            elif isinstance(event, wsproto.events.Ping):
                self._sock.sendall(self._ws.send(event.response()))
        return events

    def send(self, text: str) -> None:
        self._sock.sendall(self._ws.send(wsproto.events.Message(data=text)))

    def receive(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not self._inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no devtools message in time")
            self._pump(left)
        return self._inbox.pop(0)

    def close(self) -> None:
        self._sock.close()


class Browser:
    """Headless Chromium with one page, driven over CDP. Use as a context manager."""

    def __init__(self) -> None:
        require_chromium()
        self._profile = tempfile.mkdtemp(prefix="agentflow-chromium-")
        self._process = subprocess.Popen(
            [CHROMIUM, *_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.errors: list[str] = []
        self.requests: list[str] = []
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        try:
            port = self._port()
            self._socket = _Socket("127.0.0.1", port, self._page_path(port))
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _port(self) -> int:
        marker = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._process.returncode}")
            lines = marker.read_text().split("\n") if marker.exists() else []
            if lines and lines[0].strip().isdigit():
                return int(lines[0])
            time.sleep(0.05)
        raise TimeoutError("chromium did not write DevToolsActivePort")

    def _page_path(self, port: int) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
            for target in targets:
                if target.get("type") == "page":
                    url = str(target["webSocketDebuggerUrl"])
                    return url[url.index("/devtools/") :]
            time.sleep(0.05)
        raise TimeoutError("chromium opened no page")

    # -- protocol --------------------------------------------------------------------
    def _note(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception", {})
            self.errors.append(str(exception.get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(str(params["request"]["url"]))
        self._events.append(message)

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 20) -> Any:
        """Send one CDP command and return its result (events seen meanwhile are noted)."""
        self._next_id += 1
        ident = self._next_id
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._socket.receive(max(deadline - time.monotonic(), 0.01)))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._note(message)

    def wait_for_event(self, method: str, timeout: float = 20) -> dict[str, Any]:
        """Wait for (or find among those already seen) the next ``method`` event."""
        for i, message in enumerate(self._events):
            if message.get("method") == method:
                del self._events[: i + 1]
                return message
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._socket.receive(max(deadline - time.monotonic(), 0.01)))
            self._note(message)
            if message.get("method") == method:
                self._events.clear()
                return message

    # -- what tests use --------------------------------------------------------------
    def open(self, url: str, timeout: float = 20) -> None:
        """Navigate to ``url`` and wait for its load event."""
        self._events.clear()
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"navigating to {url}: {result['errorText']}")
        self.wait_for_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str, timeout: float = 20) -> Any:
        """The JSON value of ``expression`` in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 20) -> Any:
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true: {expression}")
            time.sleep(0.1)

    def screenshot(self, path: str | Path) -> Path:
        """Save a PNG of the whole page to ``path``."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        result = self.call(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        out = Path(path)
        out.write_bytes(base64.b64decode(result["data"]))
        return out

    def close(self) -> None:
        """Kill the browser this object started and remove its profile."""
        socket_ = getattr(self, "_socket", None)
        if socket_ is not None:
            socket_.close()
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=10)
        shutil.rmtree(self._profile, ignore_errors=True)
