"""`LoadClient`: what a load-test scenario's ``request(client)`` talks to.

One client is made per request (it is a few slots), so it can remember the outcome of
the calls made through it: the request's outcome is the first one that was not
``succeeded`` (``"succeeded"`` if all were). Two backends: a local `Runner`
(`client.call` runs the event in-process) or an HTTP base URL (`client.call` posts to an
``agentcli serve`` instance's ``/v1/events``; `client.post` reaches any path, for example
an OpenAI-compatible ``/v1/chat/completions``). The HTTP backend is a `LeanHTTPClient`
(the lean HTTP/1.1 transport; responses are `LeanResponse`: ``status_code``,
``content``, ``text``, ``json()``, ``headers``) or, still accepted, an
``httpx2.AsyncClient``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, final

from ..events import AgentResult, ErrorInfo, Event, Outcome

if TYPE_CHECKING:
    import httpx2

    from ..llm import LeanHTTPClient, LeanResponse
    from ..runner import Runner

    HTTPClient = LeanHTTPClient | httpx2.AsyncClient
    Response = LeanResponse | httpx2.Response

__all__ = ["LoadClient"]

SUCCEEDED: Final = Outcome.SUCCEEDED.value


@final
class LoadClient:
    """The facade a scenario's ``async def request(client)`` receives.

    ``index`` is the virtual user's number (closed model) or the arrival's (open model).
    """

    __slots__ = ("_http", "_runner", "error", "index", "outcome")

    def __init__(
        self, index: int, *, runner: Runner | None = None, http: HTTPClient | None = None
    ) -> None:
        self.index = index
        self._runner = runner
        self._http = http
        self.outcome = SUCCEEDED
        self.error: str | None = None

    def _note(self, outcome: str, error: object = None) -> None:
        if self.outcome == SUCCEEDED and outcome != SUCCEEDED:
            self.outcome = outcome
            self.error = None if error is None else str(error)

    async def call(
        self,
        event: Event | str,
        data: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentResult:
        """Run one event and return its result, whatever the outcome.

        ``event`` is an `Event`, or an event type with ``data``/``metadata``. Locally it
        runs on the runner (``runner.call``); with an HTTP target it is posted to
        ``/v1/events`` and an HTTP error becomes a failed result (outcome ``http_STATUS``).
        """
        if isinstance(event, str):
            event = Event(event, data or {}, metadata or {})
        if self._runner is not None:
            result = await self._runner.call(event)
            self._note(result.outcome.value, result.error)
            return result
        payload = {"type": event.type, "data": dict(event.data), "metadata": dict(event.metadata)}
        response = await self._need_http().post("/v1/events", json=payload)
        if response.status_code != 200:
            reason = ErrorInfo(f"HTTP {response.status_code}", response.text[:200])
            self._note(f"http_{response.status_code}", reason)
            return AgentResult(Outcome.FAILED, None, reason, event.id)
        body = response.json()
        error = body.get("error")
        result = AgentResult(
            Outcome(body["outcome"]),
            body.get("output"),
            ErrorInfo(error["type"], error["message"]) if error else None,
            body.get("id"),
            body.get("agent"),
        )
        self._note(result.outcome.value, result.error)
        return result

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> Response:
        """POST to ``path`` on the HTTP target (``--target``); a non-2xx status marks this
        request ``http_STATUS``. Extra keyword arguments (``content``, ``headers``) go to
        `LeanHTTPClient.post` (or ``httpx2.AsyncClient.post``).
        """
        response = await self._need_http().post(path, json=json, **kwargs)
        if not 200 <= response.status_code < 300:
            self._note(f"http_{response.status_code}", f"POST {path}: {response.text[:200]}")
        return response

    async def get(self, path: str, **kwargs: Any) -> Response:
        """GET ``path`` on the HTTP target; a non-2xx status marks this request."""
        response = await self._need_http().get(path, **kwargs)
        if not 200 <= response.status_code < 300:
            self._note(f"http_{response.status_code}", f"GET {path}: {response.text[:200]}")
        return response

    def _need_http(self) -> HTTPClient:
        if self._http is None:
            raise RuntimeError("this load test has no HTTP target: pass --target URL")
        return self._http
