"""What the debug server and the metrics endpoint share: the Prometheus text of "some
metrics" (a `RunnerMetrics`, anything with ``render()``, or a prometheus_client registry),
and the refusal of requests a web page of another site made."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["cross_site_refusal", "render_metrics"]


def render_metrics(metrics: Any) -> tuple[bytes, bytes]:
    """``(body, content type)`` of ``metrics``' exposition, rendered now."""
    exposition = getattr(metrics, "exposition", None)
    if exposition is not None:
        body, content_type = exposition()
    elif hasattr(metrics, "render"):
        body = metrics.render()
        content_type = getattr(metrics, "content_type", "text/plain; version=0.0.4")
    else:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body, content_type = generate_latest(metrics), CONTENT_TYPE_LATEST
    return bytes(body), str(content_type).encode()


def cross_site_refusal(
    headers: Mapping[bytes, bytes], origin_ok: Callable[[str], bool]
) -> bytes | None:
    """The 403 body for a request a browser page of another site made (an ``Origin`` whose
    host ``origin_ok`` refuses, or ``Sec-Fetch-Site: cross-site``); None for any other."""
    origin = headers.get(b"origin")
    if origin is not None:
        netloc = urllib.parse.urlsplit(origin.decode("latin-1")).netloc
        if not netloc or not origin_ok(netloc):
            return f"403 requests from the page {origin.decode('latin-1')!r} are refused\n".encode()
    if headers.get(b"sec-fetch-site", b"").lower() == b"cross-site":
        return b"403 cross-site requests are refused\n"
    return None
