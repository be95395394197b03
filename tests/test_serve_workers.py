"""``agentcli serve --workers N``: N real serving processes on one port, supervised.

Each test runs the command (or the supervisor on a plan, for its other socket mode and its
restart bound) as a real process and talks HTTP to it; ``/healthz`` names the process
that answered (``pid``). Every wait is bounded (``TIMEOUT``); nothing asserts a duration.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0
LISTENING = "agentcli serve listening on "


class Parent:
    """A running supervisor: its process, start-up lines, URL and children's pids."""

    def __init__(self, proc: subprocess.Popen[bytes], lines: list[str], stderr: Path) -> None:
        self.proc = proc
        self.lines = lines
        self._stderr = stderr
        self.url = next(line for line in lines if line.startswith(LISTENING))[len(LISTENING) :]
        workers = next(line for line in lines if line.startswith("workers:"))
        self.pids = {int(p) for p in workers.split("pids ", 1)[1].split(", ")}

    def stderr(self) -> str:
        return self._stderr.read_text()

    def stop(self) -> int:
        """SIGTERM the parent; its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=TIMEOUT)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left to an init that does not reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def _gone(pids: set[int]) -> bool:
    """Wait (bounded) until none of ``pids`` runs; True if so."""
    deadline = time.monotonic() + TIMEOUT
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextmanager
def _started(argv: list[str]) -> Iterator[Parent]:
    """Run ``argv`` until its start-up lines (through the ``workers:`` line and each
    child's) are printed; stderr goes to a file the test reads."""
    with tempfile.TemporaryDirectory() as tmp:
        err = Path(tmp) / "stderr"
        with err.open("wb") as sink:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=sink, cwd=ROOT)
        try:
            assert proc.stdout is not None
            lines = _start_up_lines(proc, err)
            yield Parent(proc, lines, err)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=TIMEOUT)


def _start_up_lines(proc: subprocess.Popen[bytes], err: Path) -> list[str]:
    """stdout lines until the ``workers:`` line and one line per child after it."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[str] = []
    pending = b""
    deadline = time.monotonic() + TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not _complete(lines):
            left = deadline - time.monotonic()
            assert left > 0 and selector.select(left), f"no start-up lines: {lines}"
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"exited before listening: {lines} {err.read_text()}")
            *complete, pending = (pending + chunk).split(b"\n")
            lines += [raw.decode().strip() for raw in complete]
    return lines


def _complete(lines: list[str]) -> bool:
    """The parent printed its listening line, the ``workers:`` line, and every child's
    metrics line (so nothing more comes at start)."""
    workers = [line for line in lines if line.startswith("workers:")]
    if not workers:
        return False
    count = int(workers[0].split()[1])
    return sum(line.startswith("worker ") for line in lines) >= count


def _config(tmp_path: Path) -> str:
    path = tmp_path / "agentflow.toml"
    path.write_text("[monitoring]\nmetrics_port = 0\n")  # each child a free port
    return str(path)


def _serve(tmp_path: Path, workers: int = 2) -> list[str]:
    cli = [sys.executable, "-m", "agentflow_trio.cli", "serve"]
    return [*cli, "--workers", str(workers), "--port", "0", "--config", _config(tmp_path)]


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # a new connection each
        data = json.loads(response.read())
    assert isinstance(data, dict)
    return data


def _pids_answering(url: str, want: set[int], tries: int = 400) -> set[int]:
    """The pids named by ``/healthz`` over up to ``tries`` connections, stopping once
    every pid of ``want`` answered."""
    seen: set[int] = set()
    for _ in range(tries):
        pid = _get(f"{url}/healthz")["pid"]
        assert isinstance(pid, int)
        seen.add(pid)
        if want <= seen:
            break
    return seen


def _post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        f"{url}/v1/events",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        data = json.loads(response.read())
    assert isinstance(data, dict)
    return data


def test_two_workers_answer_on_one_port_and_sigterm_drains_them_all(tmp_path: Path) -> None:
    with _started(_serve(tmp_path)) as parent:
        assert len(parent.pids) == 2 and parent.proc.pid not in parent.pids
        assert sum(line.startswith(LISTENING) for line in parent.lines) == 1
        assert all(_alive(p) for p in parent.pids)
        assert _pids_answering(parent.url, parent.pids) == parent.pids
        result = _post(parent.url, {"type": "chat", "data": {"message": "hi"}})
        assert result["outcome"] == "succeeded", result
        metrics = [line for line in parent.lines if "metrics: http" in line]
        assert len({line.rsplit(":", 1)[1] for line in metrics}) == 2  # a port each
        assert parent.stop() == 0
        assert _gone(parent.pids)
        assert "Traceback" not in parent.stderr()


def test_a_killed_worker_is_restarted_and_logged(tmp_path: Path) -> None:
    with _started(_serve(tmp_path)) as parent:
        victim = min(parent.pids)
        os.kill(victim, signal.SIGKILL)
        assert _gone({victim})
        survivor = parent.pids - {victim}
        deadline = time.monotonic() + TIMEOUT
        seen: set[int] = set()
        while not seen - parent.pids:  # a new pid answers on the same port
            assert time.monotonic() < deadline, f"no restarted worker answered: {seen}"
            try:
                seen |= _pids_answering(parent.url, set(), tries=20)
            except OSError:  # between the kill and the restart: refused, or reset
                time.sleep(0.05)
        new = seen - parent.pids
        assert len(new) == 1 and victim not in seen
        # the new child can answer on the shared socket a moment before the parent has
        # read its listening line and logged the restart: wait for the line, bounded
        restarted = f"restarted: pid {next(iter(new))}"
        while restarted not in (log := parent.stderr()):
            assert time.monotonic() < deadline, f"no restart logged: {log!r}"
            time.sleep(0.05)
        assert f"(pid {victim}) exited with code -9; restarting" in log
        assert parent.stop() == 0
        assert _gone(survivor | new)


_PLAN = """
import click
from agentflow_trio.server import WorkerPlan, supervise_workers
supervise_workers(WorkerPlan(
    workers=2, args=["--config", {config!r}], host="127.0.0.1", port=0, backlog=128,
    drain_timeout=10.0, echo=click.echo, reuse_port={reuse_port}, max_restarts={restarts},
))
"""


def _plan(tmp_path: Path, *, reuse_port: bool, restarts: int = 5) -> list[str]:
    code = _PLAN.format(config=_config(tmp_path), reuse_port=reuse_port, restarts=restarts)
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_without_reuse_port_the_workers_share_the_parents_socket(tmp_path: Path) -> None:
    with _started(_plan(tmp_path, reuse_port=False)) as parent:
        assert "one shared socket" in next(line for line in parent.lines if "workers:" in line)
        assert _pids_answering(parent.url, parent.pids) == parent.pids
        assert parent.stop() == 0
        assert _gone(parent.pids)


def test_too_many_exits_make_the_parent_give_up_non_zero(tmp_path: Path) -> None:
    with _started(_plan(tmp_path, reuse_port=True, restarts=0)) as parent:
        victim = min(parent.pids)
        os.kill(victim, signal.SIGKILL)
        code = parent.proc.wait(timeout=TIMEOUT)
        assert code != 0
        assert _gone(parent.pids)
        log = parent.stderr()
        assert f"worker 0 (pid {victim}) exited with code -9" in log and "giving up" in log


def test_workers_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    with _started(_serve(tmp_path)) as parent:
        parent.proc.kill()
        parent.proc.wait(timeout=TIMEOUT)
        assert _gone(parent.pids)  # their stdin pipe ended: no orphan keeps the port


def test_a_worker_that_cannot_start_fails_the_start_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = tmp_path / "busy.toml"  # a metrics port the config sets must bind
        config.write_text(f"[monitoring]\nmetrics_port = {taken.getsockname()[1]}\n")
        argv = [sys.executable, "-m", "agentflow_trio.cli", "serve", "--workers", "2"]
        argv += ["--port", "0", "--config", str(config)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "exited with code" in proc.stderr and "before listening" in proc.stderr
    assert "Traceback" not in proc.stderr and LISTENING not in proc.stdout


@pytest.mark.parametrize("extra", [["--dashboard"]])
def test_workers_refuse_what_watches_one_process(tmp_path: Path, extra: list[str]) -> None:
    proc = subprocess.run(
        [*_serve(tmp_path), *extra], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT
    )
    assert proc.returncode == 2 and "--dashboard" in proc.stderr
