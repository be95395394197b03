"""``agentcli serve --workers N``: N serving processes on one port, supervised by a parent.

The parent binds the port first (``port = 0``: the kernel's free port, handed to every
child) and starts N children, ``python -m agentflow_trio.cli serve ... --worker-index I``,
each hosting its own App and runner. Where the OS has ``SO_REUSEPORT`` (Linux), each
child binds the same address with it and the kernel spreads new connections over their
listening sockets; elsewhere the parent listens and the children inherit its socket
(``--worker-fd``) and accept from it in turn. The parent keeps its socket for the whole
run, so the port stays theirs while a child restarts.

A child prints its start-up lines and then, last, ``agentcli serve listening on URL``;
the parent waits for that line from every child before printing its own. A child that
exits while the parent runs is restarted, each exit and restart logged; more than
`MAX_RESTARTS` exits within `RESTART_WINDOW` seconds and the parent gives up
(`TooManyCrashes`). Ending (Ctrl-C, SIGTERM, giving up) sends every child SIGTERM, waits
up to the drain timeout (plus `KILL_GRACE`) for it to drain and exit, then kills it. A
child's standard input is a pipe from the parent: if the parent dies, the child reads
its end and stops (`exit_with_parent`), so none is left behind.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final, final

import attrs
import trio

from .service import listen_error

__all__ = [
    "KILL_GRACE",
    "LISTENING",
    "MAX_RESTARTS",
    "RESTART_WINDOW",
    "REUSE_PORT",
    "ChildFailed",
    "TooManyCrashes",
    "WorkerPlan",
    "bind_worker_socket",
    "exit_with_parent",
    "supervise_workers",
]

REUSE_PORT: Final = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
"""Whether children bind the port each with ``SO_REUSEPORT`` (else they share the parent's)."""
MAX_RESTARTS: Final = 5
RESTART_WINDOW: Final = 60.0
KILL_GRACE: Final = 5.0
"""Seconds past the drain timeout a child has to exit after SIGTERM before it is killed."""
LISTENING: Final = "agentcli serve listening on "

_log = logging.getLogger("agentflow_trio.server.workers")


class ChildFailed(ChildProcessError):
    """A child exited before it listened, while starting (a bad App, a busy port); its
    own error is on the shared stderr. An `OSError`: ``agentcli`` prints one line."""


class TooManyCrashes(ChildProcessError):
    """Children exited more than `MAX_RESTARTS` times within `RESTART_WINDOW` seconds
    (an `OSError`, like `ChildFailed`)."""


@final
@attrs.frozen(slots=True)
class WorkerPlan:
    """What the parent runs: ``workers`` children of ``agentcli serve`` with ``args``
    (every option but ``--port``, ``--workers`` and the internal ones), on ``host:port``
    (0: a free port), in ``env`` (None: the parent's); ``drain_timeout`` is the runner's
    (``[runner] drain_timeout``); ``echo`` prints a line on standard output."""

    workers: int
    args: Sequence[str]
    host: str
    port: int
    backlog: int
    drain_timeout: float
    echo: Callable[[str], None]
    env: Mapping[str, str] | None = None
    reuse_port: bool = REUSE_PORT
    max_restarts: int = MAX_RESTARTS
    restart_window: float = RESTART_WINDOW


def bind_worker_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening), with ``SO_REUSEPORT`` if
    ``reuse_port``; inheritable, so a child can be handed its descriptor."""
    bare = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in bare else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bare, port))
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


async def exit_with_parent(cancel_scope: trio.CancelScope) -> None:
    """Cancel ``cancel_scope`` once standard input ends: a child's stdin is a pipe from
    its parent, which ends when the parent does (even killed)."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(4096):
            pass
    cancel_scope.cancel()


def supervise_workers(plan: WorkerPlan) -> None:
    """Run ``plan`` until SIGINT or SIGTERM (then return: exit 0).

    Raises:
        OSError: the port cannot be bound (`listen_error`).
        ChildFailed: a child exited before listening, at start.
        TooManyCrashes: children kept exiting (logged).
    """
    trio.run(_Supervisor(plan).run)


class _Supervisor:
    """The parent's state: the socket, the children's pids, recent exits."""

    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.pids: dict[int, int] = {}
        self.exits: collections.deque[float] = collections.deque()
        self.notes: dict[int, list[str]] = {}
        self.fd: int | None = None
        self.port = plan.port

    async def run(self) -> None:
        plan = self.plan
        try:
            sock = bind_worker_socket(plan.host, plan.port, reuse_port=plan.reuse_port)
        except OSError as exc:
            raise listen_error(exc, "agentcli serve", plan.host, plan.port) from None
        with (
            sock,
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        ):
            self.port = sock.getsockname()[1]
            if not plan.reuse_port:
                sock.listen(plan.backlog)
                self.fd = sock.fileno()
            async with trio.open_nursery() as nursery:
                for index in range(plan.workers):
                    await nursery.start(self._keep, index)
                self._announce()
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    def _announce(self) -> None:
        plan = self.plan
        where = f"[{plan.host.strip('[]')}]" if ":" in plan.host else plan.host
        plan.echo(f"{LISTENING}http://{where}:{self.port}")
        how = "SO_REUSEPORT" if plan.reuse_port else "one shared socket"
        pids = ", ".join(str(self.pids[i]) for i in sorted(self.pids))
        plan.echo(f"workers: {plan.workers} processes on one port ({how}), pids {pids}")
        for index in sorted(self.notes):
            for line in self.notes[index]:
                if not line.startswith("agents:"):
                    plan.echo(f"worker {index} (pid {self.pids[index]}): {line}")
                elif index == 0:
                    plan.echo(line)

    def _argv(self, index: int) -> list[str]:
        argv = [sys.executable, "-m", "agentflow_trio.cli", "serve", *self.plan.args]
        argv += ["--port", str(self.port), "--worker-index", str(index)]
        if self.fd is not None:
            argv += ["--worker-fd", str(self.fd)]
        return argv

    async def _keep(self, index: int, *, task_status: trio.TaskStatus[None]) -> None:
        """Run child ``index``, restarting it whenever it exits, until cancelled."""
        first = True
        while True:
            proc = await trio.lowlevel.open_process(
                self._argv(index),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=None if self.plan.env is None else dict(self.plan.env),
                pass_fds=() if self.fd is None else (self.fd,),
                start_new_session=True,
            )
            try:
                assert proc.stdout is not None
                lines = _Lines(proc.stdout)
                listening = await self._until_listening(index, lines)
                if listening:
                    self.pids[index] = proc.pid
                    if first:
                        first = False
                        task_status.started()
                    else:
                        _log.warning("worker %d restarted: pid %d", index, proc.pid)
                    async for line in lines:
                        self.plan.echo(f"worker {index} (pid {proc.pid}): {line}")
                code = await proc.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop(proc)
            if first:
                raise ChildFailed(
                    f"agentcli serve worker {index} exited with code {code} before listening"
                )
            self._count_exit(index, proc.pid, code)

    async def _until_listening(self, index: int, lines: _Lines) -> bool:
        """Read start-up lines until the listening one (True) or the end (False)."""
        notes: list[str] = []
        async for line in lines:
            if line.startswith(LISTENING):
                self.notes[index] = notes
                return True
            notes.append(line)
        return False

    def _count_exit(self, index: int, pid: int, code: int) -> None:
        now = trio.current_time()
        self.exits.append(now)
        while self.exits and self.exits[0] < now - self.plan.restart_window:
            self.exits.popleft()
        window = self.plan.restart_window
        if len(self.exits) > self.plan.max_restarts:
            _log.error(
                "worker %d (pid %d) exited with code %d: %d exits in %gs, giving up",
                index,
                pid,
                code,
                len(self.exits),
                window,
            )
            raise TooManyCrashes(f"{len(self.exits)} worker exits within {window:g}s")
        _log.warning(
            "worker %d (pid %d) exited with code %d; restarting (%d exits in the last %gs)",
            index,
            pid,
            code,
            len(self.exits),
            window,
        )

    async def _stop(self, proc: trio.Process) -> None:
        """SIGTERM ``proc``, wait for it to drain and exit, kill it past the deadline."""
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with trio.move_on_after(self.plan.drain_timeout + KILL_GRACE):
                await proc.wait()
            if proc.returncode is None:
                _log.warning("worker pid %d did not exit after SIGTERM; killed", proc.pid)
                proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            await proc.stdin.aclose()
        if proc.stdout is not None:
            await proc.stdout.aclose()


class _Lines:
    """The text lines of a byte stream, as an async iterator (ends with the stream)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._pending = b""
        self._ready: collections.deque[str] = collections.deque()

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        while not self._ready:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise StopAsyncIteration
            *complete, self._pending = (self._pending + chunk).split(b"\n")
            self._ready.extend(line.decode(errors="replace").rstrip() for line in complete)
        return self._ready.popleft()
