"""Scripted stand-ins for the things agents talk to: a model (`FakeLLM`), a misbehaving tool
(`ToolBehaviour`, `scripted_tool`), and a faulty mock LLM server (`LLMBehaviour`).

`FakeLLM` reuses `agentflow_trio.llm.FakeProvider` (no sockets, exact under the autojump
clock); `LLMBehaviour` drives the real HTTP mock of `agentflow_trio.mockllm`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, final

import attrs
import trio

from ..config import LLMConfig
from ..llm.fake import FakeProvider, Reply
from ..llm.provider import LLMClient
from ..llm.types import ChatRequest
from ..mockllm import MockLLM, MockLLMConfig, MockReply
from ..tools.base import Tool, tool

__all__ = [
    "FakeLLM",
    "LLMBehaviour",
    "ScriptItem",
    "ToolBehaviour",
    "ToolBehaviourError",
    "delayed",
    "mock_llm_config",
    "scripted_tool",
]

ScriptItem = Reply | Callable[[ChatRequest], Reply | Awaitable[Reply]]
"""One scripted answer: a reply (text, `ChatResponse`, exception) or a handler of the request."""


def delayed(seconds: float, reply: Reply) -> Callable[[ChatRequest], Awaitable[Reply]]:
    """A script item that answers ``reply`` after ``seconds`` (``trio.sleep``: virtual time
    under the autojump clock), for latency and timeout tests."""

    async def answer(request: ChatRequest) -> Reply:
        await trio.sleep(seconds)
        return reply

    return answer


@final
class FakeLLM:
    """A `FakeProvider` answering from a script, and the `LLMClient` agents use around it.

    ``fake.script("hi", RateLimitError(...), delayed(2, "late"))`` queues answers; each
    request takes the oldest. When the script is empty the request gets ``default`` (a
    `ScriptItem`), or, without one, ``RuntimeError`` naming the request (a test that
    scripted too few answers fails loudly rather than receiving made-up text).
    ``requests`` lists every chat request in call order. Pass ``fake.client`` as a
    runner's ``llm=``, or ``fake.provider`` as ``open_provider(..., transport=)`` to test
    the middleware stack.
    """

    __slots__ = ("_script", "client", "default", "provider")

    def __init__(self, *replies: ScriptItem, default: ScriptItem | None = None) -> None:
        self._script: deque[ScriptItem] = deque(replies)
        self.default = default
        self.provider = FakeProvider(self._answer)
        self.client = LLMClient(self.provider)

    def script(self, *replies: ScriptItem) -> None:
        """Queue ``replies`` after those already queued."""
        self._script.extend(replies)

    @property
    def requests(self) -> list[ChatRequest]:
        """Every chat request so far, in call order."""
        return self.provider.requests

    @property
    def pending(self) -> int:
        """Scripted answers not yet taken."""
        return len(self._script)

    def _answer(self, request: ChatRequest) -> Reply | Awaitable[Reply]:
        if self._script:
            item = self._script.popleft()
        elif self.default is not None:
            item = self.default
        else:
            last = request.messages[-1].content if request.messages else None
            raise RuntimeError(f"fake_llm: no scripted reply left for a request ending {last!r}")
        return item(request) if callable(item) else item


def mock_llm_config(
    mock: MockLLM,
    dialect: Literal["openai", "azure", "ollama", "anthropic", "openai_responses"] = "openai",
    **fields: Any,
) -> LLMConfig:
    """An ``[llm]`` section pointing at ``mock`` in ``dialect`` (the mock serves them all).

    ``base_url`` is ``mock.url + "/v1"`` for the two OpenAI wires and ``mock.url``
    otherwise; ``api_key``
    defaults to ``"sk-test"`` and ``deployment`` to ``"dep-1"`` (Azure needs both);
    ``fields`` are any other `LLMConfig` fields (``retry=RetryConfig(enabled=False)`` ...).
    """
    fields.setdefault("api_key", "sk-test")
    fields.setdefault("deployment", "dep-1")
    base = mock.url + "/v1" if dialect in ("openai", "openai_responses") else mock.url
    return LLMConfig(provider=dialect, base_url=base, **fields)


@attrs.frozen
class LLMBehaviour:
    """How the mock LLM server behaves for one test: its faults and timing (``config``:
    latency, jitter, 5xx ``error_rate``, 429 ``rate_limit_rate``, ``retry_after``, stream
    chunking) and the replies scripted in order (``replies``: statuses, truncated streams,
    delays)."""

    config: MockLLMConfig = attrs.field(factory=MockLLMConfig)
    replies: tuple[MockReply, ...] = attrs.field(default=(), converter=tuple)

    def apply(self, mock: MockLLM) -> None:
        """Give ``mock`` this behaviour (it keeps its host and port); queue the replies."""
        mock.config = attrs.evolve(self.config, host=mock.config.host, port=mock.config.port)
        mock.script(*self.replies)

    @property
    def may_fail(self) -> bool:
        """True if some request may get an error status or a cut-off answer."""
        faults = self.config.error_rate > 0 or self.config.rate_limit_rate > 0
        return faults or any(r.status >= 400 or r.truncate_stream for r in self.replies)


class ToolBehaviourError(RuntimeError):
    """What a tool made by `scripted_tool` raises when its behaviour says ``raises``."""


@attrs.frozen
class ToolBehaviour:
    """How one tool call behaves: wait ``latency`` seconds, then raise `ToolBehaviourError`
    (``raises``) or return ``output``; ``output`` None is the right answer,
    ``{"echo": text}``, anything else is a wrong output (a dict the caller did not expect).
    """

    latency: float = 0.0
    raises: bool = False
    output: Mapping[str, Any] | None = None

    @property
    def correct(self) -> bool:
        """True if the call returns the right answer."""
        return not self.raises and self.output is None

    def as_tool(self, name: str = "probe") -> Tool:
        """A tool whose every call behaves like this."""
        return scripted_tool([self], name=name)


def scripted_tool(
    behaviours: Sequence[ToolBehaviour] | Iterable[ToolBehaviour], *, name: str = "probe"
) -> Tool:
    """A tool ``name(text: str = "")`` whose n-th call follows the n-th behaviour (the last
    one repeats for later calls).

    Raises:
        ValueError: ``behaviours`` is empty.
    """
    script = list(behaviours)
    if not script:
        raise ValueError("scripted_tool needs at least one ToolBehaviour")
    taken = [0]

    async def call(text: str = "") -> dict[str, Any]:
        """A tool with scripted latency, failures and outputs (agentflow_trio.testing)."""
        behaviour = script[min(taken[0], len(script) - 1)]
        taken[0] += 1
        await trio.sleep(behaviour.latency)
        if behaviour.raises:
            raise ToolBehaviourError(f"{name} failed as scripted")
        return dict(behaviour.output) if behaviour.output is not None else {"echo": text}

    return tool(name=name)(call)
