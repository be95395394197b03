"""Raw-socket helpers shared by the hostile-input tests: reading whatever a server sends,
and counting the requests a test server has received."""

from __future__ import annotations

import httptools
import trio


async def read_all(stream: trio.abc.ReceiveStream, seconds: float = 5.0) -> tuple[bytes, bool]:
    """Everything the peer sends within ``seconds``, and whether it closed."""
    out = b""
    with trio.move_on_after(seconds):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return out, True
            if not data:
                return out, True
            out += data
    return out, False


class RequestCounter:
    """Feeds received bytes to httptools; ``done`` counts whole requests not yet answered."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.done = 0

    def on_message_complete(self) -> None:
        self.done += 1
