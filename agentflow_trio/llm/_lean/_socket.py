"""A plain-TCP trio stream for the lean client that skips what one client connection never
needs: `trio.SocketStream` pays a conflict detector, two generator context managers and a
scheduler round trip on every ``send_all``; on the hot path that is a tenth of a request's
CPU.

`RawSocketStream` takes over the socket of a connected `trio.SocketStream` (its file
descriptor is detached from the trio socket, so exactly one object owns it) and talks to
the non-blocking stdlib socket directly, waiting with `trio.lowlevel.wait_readable` /
`wait_writable` only when the kernel says it would block. `open_raw_stream` connects one:
to an IP address directly (one socket and one wait: ``trio.open_tcp_stream``'s nursery,
attempt task and cancel scopes cost every connection being opened about 6 KB at once),
to a host name through ``trio.open_tcp_stream`` (resolution, happy eyeballs).

Guarantees, and where it departs from `trio.abc.Stream` (the last two points):

- ``receive_some`` is always a checkpoint (it yields before its first read, and waits
  for readability when nothing has arrived).
- ``send_all`` raises `trio.Cancelled` if the caller is already cancelled, and is a full
  checkpoint whenever it has to wait; but when the kernel takes every byte at once it
  returns without yielding. The lean client always reads the response next, which is a
  checkpoint, so a request is never a loop without one.
- Errors are trio's: `trio.BrokenResourceError` (the peer or the network failed, the
  ``OSError`` as its cause) and `trio.ClosedResourceError` (used after `aclose`).
- One task at a time: the pool guarantees it, so there is no conflict detector and
  concurrent use is not detected (no ``trio.BusyResourceError``). `aclose` is idempotent.
"""

from __future__ import annotations

import os
import socket
from contextlib import suppress
from typing import final

import trio

__all__ = ["RawSocketStream", "open_raw_stream", "raw_stream"]

_RECEIVE_SIZE = 65536
_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", None)


def _ip_family(host: str) -> int | None:
    """``AF_INET`` or ``AF_INET6`` if ``host`` is an IP address (no zone), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


async def open_raw_stream(host: str, port: int) -> RawSocketStream:
    """A TCP connection to ``host``:``port`` with the options trio's `SocketStream` sets
    (``TCP_NODELAY``; ``TCP_NOTSENT_LOWAT`` 16 KiB where there is one).

    An IP address is connected directly; a name through ``trio.open_tcp_stream``. Either
    way a failure is an ``OSError`` saying "all attempts to connect to HOST:PORT failed",
    the attempt's error as its cause, and a cancelled connect leaves no socket open.
    """
    family = _ip_family(host)
    if family is None:
        return raw_stream(await trio.open_tcp_stream(host, port))
    await trio.lowlevel.checkpoint_if_cancelled()
    raw = socket.socket(family, socket.SOCK_STREAM)
    try:
        raw.setblocking(False)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _NOTSENT_LOWAT is not None:
            with suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, 2**14)
        address = (host, port)
        try:
            try:
                raw.connect(address)
            except BlockingIOError:  # started: wait for it to finish, then ask how it went
                await trio.lowlevel.wait_writable(raw)
                error = raw.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    detail = f"Error connecting to {address!r}: {os.strerror(error)}"
                    raise OSError(error, detail) from None
        except OSError as exc:  # as trio.open_tcp_stream words it
            shown = f"[{host}]" if ":" in host else host
            raise OSError(f"all attempts to connect to {shown}:{port} failed") from exc
    except BaseException:
        raw.close()
        raise
    return RawSocketStream(raw)


def raw_stream(stream: trio.SocketStream) -> RawSocketStream:
    """Take over ``stream``'s socket (``stream`` must not be used afterwards)."""
    trio_socket = stream.socket
    family, kind, proto = trio_socket.family, trio_socket.type, trio_socket.proto
    fd = trio_socket.detach()
    try:
        raw = socket.socket(family, kind, proto, fileno=fd)
    except BaseException:
        os.close(fd)  # nobody else owns it any more
        raise
    raw.setblocking(False)
    return RawSocketStream(raw)


@final
class RawSocketStream(trio.abc.Stream):
    """A connected non-blocking TCP socket as a trio stream (see the module docstring).

    ``socket`` is the stdlib socket itself, for ``fileno()`` and options (no trio socket
    wraps it: one object less per connection, and nothing here needs one).
    """

    __slots__ = ("_closed", "_raw")

    def __init__(self, raw: socket.socket) -> None:
        self._raw = raw
        self._closed = False

    @property
    def socket(self) -> socket.socket:
        """The connected non-blocking stdlib socket (``fileno()`` is -1 once closed)."""
        return self._raw

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed")
        await trio.lowlevel.checkpoint_if_cancelled()
        raw = self._raw
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"send failed: {exc}") from exc
        if sent == len(data):
            return
        with memoryview(data) as view:
            while sent < len(view):
                await trio.lowlevel.wait_writable(raw)
                try:
                    sent += raw.send(view[sent:])
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise trio.BrokenResourceError(f"send failed: {exc}") from exc

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed")
        await trio.lowlevel.wait_writable(self._raw)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        size = _RECEIVE_SIZE if max_bytes is None else max_bytes
        # Yield first, then read: under load the answer has often arrived by the time
        # this task runs again, and the read needs no readiness wait (no epoll round).
        await trio.lowlevel.checkpoint()
        while True:
            data = self.receive_nowait(size)
            if data is not None:
                return data
            await trio.lowlevel.wait_readable(self._raw)

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """One read that does not wait (not a checkpoint): up to ``max_bytes`` bytes,
        ``b""`` at end of stream, or None when nothing has arrived (then wait with
        ``trio.lowlevel.wait_readable(stream.socket)``). `receive_some` is a checkpoint,
        then this until it reads; a caller may do the same without its frame.

        Raises:
            trio.ClosedResourceError: the stream was closed.
            trio.BrokenResourceError: the read failed (the ``OSError`` as its cause).
        """
        if self._closed:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            return self._raw.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise trio.BrokenResourceError(f"receive failed: {exc}") from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            raw = self._raw
            if raw.fileno() != -1:  # as trio's socket closes: wake any waiter, then close
                trio.lowlevel.notify_closing(raw)
                raw.close()
        await trio.lowlevel.checkpoint()
