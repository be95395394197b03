"""How the mock LLM writes a model response: statuses counted, faults injected or shaped.

`Responder` is the part of ``MockApp`` that writes: every model-endpoint response passes
through ``_send`` or ``_send_stream``, which count its status before writing it, so the
statistics are exact. The plain `Fault` kinds are answered by ``_inject`` instead of a
reply; the others shape the reply as ``_send_reply`` (plain) or ``_send_stream`` sends it
(see ``_faults`` for the table).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import trio

from agentflow_trio import _json
from agentflow_trio._http11 import ResponseWriter
from agentflow_trio.mockllm import _anthropic, _payloads, _responses
from agentflow_trio.mockllm._faults import Fault, reset_connection, wait_for_client
from agentflow_trio.mockllm._values import Counters, MockLLMConfig

__all__ = [
    "ANTHROPIC",
    "AZURE",
    "JSON",
    "NDJSON",
    "OLLAMA",
    "OPENAI",
    "RESPONSES",
    "SSE",
    "Call",
    "Responder",
    "retry_headers",
]

OPENAI, AZURE, OLLAMA = "openai", "azure", "ollama"
ANTHROPIC, RESPONSES = "anthropic", "responses"
_GARBAGE: dict[str, bytes] = {
    ANTHROPIC: _anthropic.GARBAGE_EVENT,
    RESPONSES: _responses.GARBAGE_EVENT,
    OLLAMA: _payloads.garbage_part(True),
}
JSON = b"application/json"
SSE = b"text/event-stream"
NDJSON = b"application/x-ndjson"


@attrs.frozen
class Call:
    """One model request as the endpoint handlers see it.

    ``model`` is the name the request is counted under (body ``model``, else the Azure
    deployment; "" for none); ``stream`` the connection under the writer; ``fault`` the
    model's shaping fault picked for it, if any.
    """

    deployment: str
    dialect: str
    model: str
    stream: trio.abc.Stream
    fault: Fault | None


def retry_headers(seconds: float, dialect: str = OPENAI) -> list[tuple[str, str]]:
    """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms``; Anthropic's
    ``anthropic-ratelimit-requests-*`` too on that wire."""
    headers = [
        ("retry-after", str(math.ceil(seconds))),
        ("retry-after-ms", str(round(seconds * 1000))),
    ]
    if dialect == ANTHROPIC:
        headers.extend(_anthropic.rate_limit_headers(seconds))
    return headers


def _stream_error(dialect: str, status: int) -> list[bytes]:
    """The mid-stream error part a chat-style stream ends with (``stream_error`` fault)."""
    message = "The mock LLM failed while generating the response."
    if dialect == ANTHROPIC:
        return [_anthropic.stream_error(status)]
    if dialect == OLLAMA:
        return [_json.dumps(_payloads.ollama_error(message)) + b"\n"]
    body = _payloads.openai_error(message, "server_error", "mock_fault")
    return [b"data: " + _json.dumps(body) + b"\n\n"]


class Responder:
    """Writes model responses for ``MockApp`` (see the module docstring)."""

    config: MockLLMConfig
    counters: Counters

    async def _rate_limited(
        self, writer: ResponseWriter, dialect: str, retry_after: float | None
    ) -> None:
        """429 with OpenAI's rate-limit body; ``Retry-After`` unless ``retry_after`` is None."""
        wait = "" if retry_after is None else f" Please try again in {retry_after:g}s."
        headers = None if retry_after is None else retry_headers(retry_after, dialect)
        message = f"Rate limit reached (mock).{wait}"
        await self._error(writer, dialect, 429, message, "requests", "rate_limit_exceeded", headers)

    async def _inject(self, writer: ResponseWriter, call: Call, fault: Fault) -> None:
        """Answer with a plain-kind fault (see ``_faults``) instead of a reply."""
        self.counters.count_fault(fault, call.model)
        kind, dialect = fault.kind, call.dialect
        if kind == "rate_limit":
            await self._rate_limited(writer, dialect, fault.retry_after)
        elif kind == "server_error":
            message = f"The mock LLM injected a {fault.status} server error."
            await self._error(writer, dialect, fault.status, message, "server_error", "mock_fault")
        elif kind in ("context_length", "content_filter"):
            if dialect == OLLAMA:
                message = f"mock LLM: {kind.replace('_', ' ')}"
                await self._send(writer, 400, _json.dumps(_payloads.ollama_error(message)))
                return
            await self._send(writer, 400, _json.dumps(_refusal_body(dialect, kind)))
        elif kind == "reset":
            reset_connection(call.stream)
            writer.closing = True
        else:  # no_response
            writer.closing = True
            await wait_for_client(call.stream, fault.seconds)

    # -- sending (every model response passes here, so by_status is exact) --

    async def _send(
        self,
        writer: ResponseWriter,
        status: int,
        body: bytes,
        *,
        content_type: bytes = JSON,
        headers: list[tuple[str, str]] | None = None,
        truncate: bool = False,
    ) -> None:
        by_status = self.counters.by_status
        by_status[status] = by_status.get(status, 0) + 1
        await writer.send(
            status, body, content_type=content_type, headers=headers or (), truncate=truncate
        )

    async def _send_reply(
        self,
        writer: ResponseWriter,
        call: Call,
        fault: Fault | None,
        body: bytes,
        *,
        status: int = 200,
        content_type: bytes = JSON,
        headers: list[tuple[str, str]] | None = None,
        truncate: bool = False,
    ) -> None:
        """A plain (not streamed) reply, shaped by ``fault`` if one is given."""
        if fault is not None:
            self.counters.count_fault(fault, call.model)
            if fault.kind == "slow_first_token":
                await trio.sleep(fault.delay)
            elif fault.kind == "malformed":
                body = _payloads.GARBAGE_BODY
            elif fault.kind == "stream_error":
                message = f"The mock LLM injected a {fault.status} server error."
                await self._error(
                    writer, call.dialect, fault.status, message, "server_error", "mock_fault"
                )
                return
            truncate = truncate or fault.kind in ("cut", "stall")
        await self._send(
            writer, status, body, content_type=content_type, headers=headers, truncate=truncate
        )
        if fault is not None and fault.kind == "stall":
            await wait_for_client(call.stream, fault.seconds)

    async def _send_stream(
        self,
        writer: ResponseWriter,
        call: Call,
        fault: Fault | None,
        status: int,
        parts: list[bytes],
        *,
        content_type: bytes,
        headers: list[tuple[str, str]] | None,
        truncate: bool,
        failure: Callable[[int], list[bytes]] | None = None,
    ) -> None:
        """A streamed reply of ``parts``, shaped by ``fault`` if one is given;
        ``failure(at)`` gives the parts a ``stream_error`` ends with after ``at`` parts
        (default: the dialect's one error part)."""
        by_status = self.counters.by_status
        by_status[status] = by_status.get(status, 0) + 1
        cut = max(1, len(parts) // 2) if truncate else None
        if fault is not None:
            self.counters.count_fault(fault, call.model)
            kind = fault.kind
            if kind in ("cut", "stall"):
                cut = fault.after_chunks
            elif kind == "malformed":
                at = min(fault.after_chunks, len(parts))
                garbage = _GARBAGE.get(call.dialect, _payloads.garbage_part(False))
                parts = parts[:at] + [garbage] * fault.count + parts[at:]
            elif kind == "no_done" and parts and call.dialect != OLLAMA:
                parts = parts[:-1]
            elif kind == "stream_error":
                at = min(fault.after_chunks, len(parts))
                tail = failure(at) if failure else _stream_error(call.dialect, fault.status)
                parts = parts[:at] + tail
        try:
            if fault is not None and fault.kind == "slow_first_token":
                await self._send_slowly(
                    writer, call.stream, status, parts, content_type, headers, fault.delay
                )
                return
            await writer.send_chunked(
                status,
                parts,
                content_type=content_type,
                headers=headers or (),
                delay=self.config.stream_delay,
                truncate_after=cut,
            )
            if fault is not None and fault.kind == "stall":
                await wait_for_client(call.stream, fault.seconds)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.counters.disconnects += 1
            raise

    async def _send_slowly(
        self,
        writer: ResponseWriter,
        stream: trio.abc.Stream,
        status: int,
        parts: list[bytes],
        content_type: bytes,
        headers: list[tuple[str, str]] | None,
        first_delay: float,
    ) -> None:
        """The head now, the first part ``first_delay`` later, then the rest (``stream_delay``
        apart) and the end of the body; the connection closes after it."""
        # A stream cut after 0 parts is exactly the head (the writer marks the close).
        await writer.send_chunked(
            status, parts[:0], content_type=content_type, headers=headers or (), truncate_after=0
        )
        await trio.sleep(first_delay)
        for index, part in enumerate(parts):
            if index and self.config.stream_delay > 0:
                await trio.sleep(self.config.stream_delay)
            await stream.send_all(b"%x\r\n%b\r\n" % (len(part), part))
        await stream.send_all(b"0\r\n\r\n")

    async def _error(
        self,
        writer: ResponseWriter,
        dialect: str,
        status: int,
        message: str,
        kind: str,
        code: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if dialect == OLLAMA:
            body = _payloads.ollama_error(message)
        elif dialect == ANTHROPIC:
            body = _anthropic.error_body(status, message)
        elif dialect == AZURE:
            body = _payloads.azure_error(code, message)
        else:
            body = _payloads.openai_error(message, kind, code)
        await self._send(writer, status, _json.dumps(body), headers=headers)


def _refusal_body(dialect: str, kind: str) -> dict[str, object]:
    """The 400 body of the ``context_length`` or ``content_filter`` fault on ``dialect``."""
    if dialect == ANTHROPIC:
        if kind == "content_filter":
            return _anthropic.content_filter_error()
        return _anthropic.context_length_error()
    if kind == "content_filter":
        return _payloads.content_filter_error()
    return _payloads.context_length_error()
