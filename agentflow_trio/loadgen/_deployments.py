"""A model router's traffic in a load report: per deployment, what it was sent and how
it answered, and how often requests failed over.

`router_of` finds the `Router` under an `LLMClient` (None without deployments);
`check_group` refuses a ``--model`` no deployment serves before any load starts;
`traffic` turns `Router.statistics` into the report's JSON (``LoadReport.router``), read
once at the end of the run (the router is the run's own, so its counts are the run's);
`traffic_rows`, `summary_line` and `traffic_html` render that JSON for the console and
the HTML report; `fault_specs` records the faults the built-in mock was told to inject.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..llm import Router, RouterStatistics
    from ..mockllm import Fault

__all__ = [
    "COLUMNS",
    "check_group",
    "fault_specs",
    "router_of",
    "summary_line",
    "traffic",
    "traffic_html",
    "traffic_rows",
]

COLUMNS: Final = (
    "deployment",
    "group",
    "model",
    "attempts",
    "share",
    "successes",
    "failures",
    "fail-overs",
    "cooldowns",
    "probes",
    "TTFT ms",
)
"""The columns of the per-deployment table (console and HTML)."""


def router_of(llm: object) -> Router | None:
    """The `Router` under ``llm`` (an `LLMClient` or a provider stack), or None."""
    from ..llm import Router

    provider = getattr(llm, "provider", llm)
    router = getattr(provider, "router", None)
    return router if isinstance(router, Router) else None


def check_group(llm: object, model: str | None, source: str | None = None) -> None:
    """Refuse ``model`` when ``llm`` is a router and no deployment serves that group
    (every request would fail with `NotFoundError`); without a router any name goes to
    the one deployment.

    Raises:
        ConfigError: naming the config's groups.
    """
    router = router_of(llm)
    if not model or router is None or model in router.groups:
        return
    groups = "; ".join(f"{g} ({', '.join(names)})" for g, names in router.groups.items())
    raise ConfigError(
        f"--model {model!r}: no deployment serves this model group; the groups are {groups}",
        source=source,
    )


def traffic(stats: RouterStatistics) -> dict[str, Any]:
    """The report's ``router`` entry: the router's totals, then one entry per deployment
    (``share``: its fraction of all attempts; ``failures`` by class; ``ttft_ms``: its
    decaying average time to first byte, None before an answer)."""
    attempts = sum(d.attempts for d in stats.deployments)
    deployments = [
        {
            "name": d.name,
            "group": d.group,
            "model": d.model,
            "weight": d.weight,
            "attempts": d.attempts,
            "share": round(d.attempts / attempts, 4) if attempts else 0.0,
            "successes": d.successes,
            "failures": dict(d.failures),
            "failovers": d.failovers,
            "cooldowns": d.cooldowns,
            "probes": d.probes,
            "cooling": d.cooling,
            "ttft_ms": None if d.ttft is None else round(d.ttft * 1000, 3),
        }
        for d in stats.deployments
    ]
    return {
        "requests": stats.requests,
        "attempts": attempts,
        "failovers": sum(d.failovers for d in stats.deployments),
        "fallbacks": stats.fallbacks,
        "context_fallbacks": stats.context_fallbacks,
        "retries": stats.retries,
        "refused": stats.refused,
        "errors": stats.errors,
        "deployments": deployments,
    }


def _failures(value: Any) -> str:
    if not isinstance(value, Mapping) or not value:
        return "-"
    return ", ".join(f"{kind} {count}" for kind, count in sorted(value.items()))


def traffic_rows(router: Mapping[str, Any]) -> list[list[str]]:
    """One row of `COLUMNS` cells (plain text) per deployment of a ``traffic`` entry."""
    rows = []
    for d in router.get("deployments") or ():
        ttft = d.get("ttft_ms")
        rows.append(
            [
                str(d.get("name", "?")),
                str(d.get("group", "")),
                str(d.get("model", "")),
                str(d.get("attempts", 0)),
                f"{float(d.get('share') or 0.0) * 100:.1f}%",
                str(d.get("successes", 0)),
                _failures(d.get("failures")),
                str(d.get("failovers", 0)),
                str(d.get("cooldowns", 0)) + (" (cooling)" if d.get("cooling") else ""),
                str(d.get("probes", 0)),
                "-" if ttft is None else f"{ttft:.2f}",
            ]
        )
    return rows


def summary_line(router: Mapping[str, Any]) -> str:
    """The router's totals in one line."""
    return (
        f"router: {router.get('requests', 0)} requests, {router.get('attempts', 0)} attempts, "
        f"{router.get('failovers', 0)} fail-overs, {router.get('fallbacks', 0)} answered by a "
        f"fallback group, {router.get('retries', 0)} same-deployment retries, "
        f"{router.get('refused', 0)} refused (all cooling), {router.get('errors', 0)} errors"
    )


def traffic_html(router: Mapping[str, Any]) -> str:
    """The HTML report's section: the totals line and the per-deployment table."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(_html_row(cells) for cells in traffic_rows(router))
    return (
        '<section id="deployments-section"><h2>Deployments (model router)</h2>'
        f"<p>{html.escape(summary_line(router))}</p>"
        f'<table id="deployments"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        "</table></section>"
    )


def _html_row(cells: Sequence[str]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def fault_specs(faults: Mapping[str, Sequence[Fault]]) -> str | None:
    """``MODEL=KIND[:ARGS]`` of each fault rule, space-separated (None when there are none):
    the report's record of what the built-in mock injected."""
    specs = [f"{model}={fault.spec()}" for model, rules in faults.items() for fault in rules]
    return " ".join(specs) or None
