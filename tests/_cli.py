"""Running ``agentcli`` as a user does, for the tests: each command a real subprocess
(``python -m agentflow_trio.cli``) from the repository's root, with the root on
``PYTHONPATH`` (so ``examples.app`` imports) and a wide terminal; every wait bounded by
`TIMEOUT`.

- `agentcli` runs a command to its end; `one_json_line` reads its ``--json`` line.
- `started` runs a long-running one (``serve``, ``worker``) until a start-up line,
  `Started.stop` ends it with SIGTERM and checks it drained cleanly.
- `popen` starts one with text pipes, for a test that drives it itself.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "ROOT",
    "TIMEOUT",
    "Started",
    "after",
    "agentcli",
    "alive",
    "cli_env",
    "one_json_line",
    "popen",
    "started",
]

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60
AGENTCLI = (sys.executable, "-m", "agentflow_trio.cli")


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment, the repository's root on ``PYTHONPATH``, ``COLUMNS``
    wide (tables unwrapped), and ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def agentcli(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``agentcli ARGS`` to its end (``env``: extra environment variables)."""
    return subprocess.run(
        [*AGENTCLI, *args],
        capture_output=True,
        text=True,
        env=cli_env(**env),
        cwd=cwd,
        timeout=TIMEOUT,
    )


def popen(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.Popen[str]:
    """Start ``agentcli ARGS`` with text pipes on stdout and stderr."""
    return subprocess.Popen(
        [*AGENTCLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(**env),
        cwd=cwd,
    )


def one_json_line(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON object a command printed (it must have exited 0)."""
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def after(line: str, marker: str) -> str:
    """The word after ``marker`` in ``line`` (``after(line, " on ")``: the URL)."""
    return line.split(marker, 1)[1].split()[0].strip(";,")


class Started:
    """A long-running ``agentcli`` command and the start-up lines it printed, by their
    first word (``lines["agentcli"]``, ``lines["metrics"]``)."""

    def __init__(self, proc: subprocess.Popen[bytes], lines: dict[str, str]) -> None:
        self.proc = proc
        self.lines = lines

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> str:
        """Send ``sig`` (SIGTERM, or SIGINT: Ctrl-C); a server or worker must drain and exit
        0 without a traceback. Returns its stderr."""
        self.proc.send_signal(sig)
        _, stderr = self.proc.communicate(timeout=TIMEOUT)
        text = stderr.decode()
        assert self.proc.returncode == 0, text
        assert "Traceback" not in text
        return text


@contextmanager
def started(*args: str, until: str, cwd: Path = ROOT, **env: str) -> Iterator[Started]:
    """Run ``agentcli ARGS`` until it printed a line starting with ``until``; the lines
    up to it by their first word. The pipe is read raw (a buffered reader would hide
    lines already read from the selector). Killed on the way out if still running."""
    proc = subprocess.Popen(
        [*AGENTCLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(**env),
        cwd=cwd,
    )
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        lines: dict[str, str] = {}
        pending = b""
        deadline = time.monotonic() + TIMEOUT
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while not any(line.startswith(until) for line in lines.values()):
                left = deadline - time.monotonic()
                assert left > 0 and selector.select(left), f"no {until!r} line: {lines}"
                chunk = os.read(fd, 65536)
                if not chunk:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise AssertionError(f"exited before {until!r}: {err}")
                *complete, pending = (pending + chunk).split(b"\n")
                for raw in complete:
                    line = raw.decode().strip()
                    lines[line.split(" ", 1)[0].rstrip(":")] = line
        yield Started(proc, lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
