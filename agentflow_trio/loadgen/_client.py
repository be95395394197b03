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

Streaming: `LoadClient.stream` (and `LoadClient.call` when the run streams, ``--stream``)
runs the event with its progress streamed (``runner.stream`` locally; over HTTP, ``POST
/v1/events?stream=true`` answered with server-sent events, read through an
``httpx2.AsyncClient`` on the lean transport that `SSEConnector` opens on first use) and
times its tokens into ``tokens`` (time to first token, inter-token latency: `_streaming`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, final

import trio

from ..events import AgentResult, ErrorInfo, Event, Outcome
from ._streaming import TokenTimes, consume_progress, consume_sse

if TYPE_CHECKING:
    import httpx2

    from ..llm import LeanHTTPClient, LeanResponse
    from ..runner import Runner

    HTTPClient = LeanHTTPClient | httpx2.AsyncClient
    Response = LeanResponse | httpx2.Response

__all__ = ["LoadClient", "SSEConnector"]

SUCCEEDED: Final = Outcome.SUCCEEDED.value
_STREAM_PATH: Final = "/v1/events?stream=true"
_SSE_HEADERS: Final = {"accept": "text/event-stream"}
_NO_RESULT: Final = ErrorInfo("StreamError", "the event's stream ended without its result")


@final
class SSEConnector:
    """The HTTP client streamed requests to ``base_url`` go through: an
    ``httpx2.AsyncClient`` on the lean transport (``max_connections``, ``timeout``: each
    read of the stream), made on first use so a run that streams nothing never imports
    httpx2. Close it with `aclose` (idempotent)."""

    __slots__ = ("_client", "base_url", "max_connections", "timeout")

    def __init__(self, base_url: str, *, timeout: float = 60.0, max_connections: int = 100) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.max_connections = max(int(max_connections), 1)
        self._client: httpx2.AsyncClient | None = None

    def client(self) -> httpx2.AsyncClient:
        """The client, made now if it was not yet."""
        if self._client is None:
            import httpx2

            from ..config import LLMConfig
            from ..llm import LeanTransport

            pool = LLMConfig(max_connections=self.max_connections, request_timeout=self.timeout)
            self._client = httpx2.AsyncClient(
                base_url=self.base_url,
                transport=LeanTransport.from_config(pool),
                timeout=self.timeout,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the client, if one was made."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _result_of(body: Mapping[str, Any]) -> tuple[AgentResult, str]:
    """The `AgentResult` a ``/v1/events`` answer describes, and its outcome label (kept
    as sent: an outcome this version does not know is counted under its own name)."""
    label = str(body.get("outcome"))
    try:
        outcome = Outcome(label)
    except ValueError:
        outcome = Outcome.FAILED
    error = body.get("error")
    info = ErrorInfo(error["type"], error["message"]) if error else None
    return AgentResult(outcome, body.get("output"), info, body.get("id"), body.get("agent")), label


@final
class LoadClient:
    """The facade a scenario's ``async def request(client)`` receives.

    ``index`` is the virtual user's number (closed model) or the arrival's (open model).
    ``streamed`` (``--stream``) makes `call` stream its events; ``tokens`` is where
    streamed events' token timings go (a fresh `TokenTimes` if None); ``sse`` is the
    client streamed requests over HTTP go through (default: ``http`` itself, when it is
    an ``httpx2.AsyncClient``).
    """

    __slots__ = ("_http", "_runner", "_sse", "error", "index", "outcome", "streamed", "tokens")

    def __init__(
        self,
        index: int,
        *,
        runner: Runner | None = None,
        http: HTTPClient | None = None,
        streamed: bool = False,
        tokens: TokenTimes | None = None,
        sse: SSEConnector | None = None,
    ) -> None:
        self.index = index
        self._runner = runner
        self._http = http
        self._sse = sse
        self.streamed = streamed
        self.tokens = tokens
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
        stream: bool | None = None,
    ) -> AgentResult:
        """Run one event and return its result, whatever the outcome.

        ``event`` is an `Event`, or an event type with ``data``/``metadata``. Locally it
        runs on the runner (``runner.call``); with an HTTP target it is posted to
        ``/v1/events`` and an HTTP error becomes a failed result (outcome ``http_STATUS``).
        ``stream`` (None: as ``streamed`` says) runs it as `stream` does.
        """
        if isinstance(event, str):
            event = Event(event, data or {}, metadata or {})
        if stream or (stream is None and self.streamed):
            return await self._stream(event)
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
        result, label = _result_of(response.json())
        self._note(label, result.error)
        return result

    async def stream(
        self,
        event: Event | str,
        data: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentResult:
        """Run one event with its progress streamed, time its tokens, return its result.

        Locally through ``runner.stream``; over HTTP by ``POST /v1/events?stream=true``
        (server-sent events; an answer that is not ``text/event-stream`` is read as the
        plain JSON result, with no token). Time to first token counts from just before
        the event is emitted (or the request sent) to its first non-empty text delta;
        each later delta adds an inter-token gap (see `_streaming`). An HTTP error
        becomes a failed result (outcome ``http_STATUS``), a stream without a result a
        failed one.
        """
        if isinstance(event, str):
            event = Event(event, data or {}, metadata or {})
        return await self._stream(event)

    def _token_times(self) -> TokenTimes:
        tokens = self.tokens
        if tokens is None:
            tokens = self.tokens = TokenTimes()
        return tokens

    async def _stream(self, event: Event) -> AgentResult:
        tokens = self._token_times()
        runner = self._runner
        if runner is not None:
            sent = trio.current_time()
            async with runner.stream(event) as items:
                final = await consume_progress(items, tokens, sent)
            if final is None:
                final = AgentResult(Outcome.FAILED, None, _NO_RESULT, event.id)
            self._note(final.outcome.value, final.error)
            return final
        return await self._stream_http(event, tokens)

    async def _stream_http(self, event: Event, tokens: TokenTimes) -> AgentResult:
        client = self._sse_client()
        payload = {"type": event.type, "data": dict(event.data), "metadata": dict(event.metadata)}
        sent = trio.current_time()
        async with client.stream(
            "POST", _STREAM_PATH, json=payload, headers=_SSE_HEADERS
        ) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", "replace")
                reason = ErrorInfo(f"HTTP {response.status_code}", text[:200])
                self._note(f"http_{response.status_code}", reason)
                return AgentResult(Outcome.FAILED, None, reason, event.id)
            kind = response.headers.get("content-type", "")
            if kind.split(";", 1)[0].strip().lower() == "text/event-stream":
                body = await consume_sse(response.aiter_lines(), tokens, sent)
            else:  # a server that does not stream answered with the plain JSON result
                tokens.untimed()
                await response.aread()
                body = response.json()
        if not isinstance(body, Mapping):
            self._note(Outcome.FAILED.value, _NO_RESULT)
            return AgentResult(Outcome.FAILED, None, _NO_RESULT, event.id)
        result, label = _result_of(body)
        self._note(label, result.error)
        return result

    def _sse_client(self) -> httpx2.AsyncClient:
        if self._sse is not None:
            return self._sse.client()
        http = self._need_http()
        if not hasattr(http, "stream"):
            raise RuntimeError(
                "streaming over HTTP needs an httpx2.AsyncClient or an SSEConnector "
                "(run_loadtest provides one)"
            )
        return http  # type: ignore[return-value]

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
