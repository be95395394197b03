"""The Prometheus text of "some metrics": a `RunnerMetrics`, anything with ``render()``,
or a prometheus_client registry. Shared by the debug server and the metrics endpoint."""

from __future__ import annotations

from typing import Any

__all__ = ["render_metrics"]


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
