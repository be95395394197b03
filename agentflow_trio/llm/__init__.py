"""Model providers behind one seam, and the middleware stack around them.

`Provider` (``base``) is the interface (``complete``, ``stream``, ``embed``, ``aclose``);
`open_provider` (``provider``) builds the configured transport (OpenAI Chat Completions,
OpenAI Responses, Azure, Anthropic Messages, Ollama or fake) with the layers the config
turns on (``stack``: cache -> retry -> breaker -> rate limit -> batching); with
deployments, `Router` (``router``) spreads requests over several stacks, with failover by
error class (across vendors too); `LLMClient` is the convenience face agents use, and
structured output (``output``: ``complete(..., output_type=T)``, `OutputStream`) lives
behind it.
Values live in ``types``. The adapters speak HTTP through one session seam (``_session``)
that two clients implement: the lean HTTP/1.1 client (``_lean``) and httpx2 (``http``);
`HTTPPoolStatistics` is their pool snapshot. The lean client is also offered on its own:
`LeanTransport` (for an ``httpx2.AsyncClient``) and `LeanHTTPClient` (plain requests to one
base URL).
"""

from ._accumulate import StreamAccumulator as StreamAccumulator
from ._accumulate import collect_stream as collect_stream
from ._lean import LeanHTTPClient as LeanHTTPClient
from ._lean import LeanHTTPError as LeanHTTPError
from ._lean import LeanResponse as LeanResponse
from ._lean import LeanTransport as LeanTransport
from ._open_session import open_http_session as open_http_session
from ._session import HTTPPoolStatistics as HTTPPoolStatistics
from ._session import PoolStatistics as PoolStatistics
from .anthropic import AnthropicProvider as AnthropicProvider
from .anthropic import open_anthropic as open_anthropic
from .azure import open_azure as open_azure
from .base import Provider as Provider
from .fake import FakeProvider as FakeProvider
from .http import HTTPSession as HTTPSession
from .ollama import OllamaProvider as OllamaProvider
from .ollama import open_ollama as open_ollama
from .openai import OpenAIProvider as OpenAIProvider
from .openai import open_openai as open_openai
from .output import OutputMode as OutputMode
from .output import OutputRefusedError as OutputRefusedError
from .output import OutputStream as OutputStream
from .provider import LLMClient as LLMClient
from .provider import open_llm_client as open_llm_client
from .provider import open_provider as open_provider
from .provider import open_router as open_router
from .provider import open_transport as open_transport
from .responses import ResponsesProvider as ResponsesProvider
from .responses import open_responses as open_responses
from .router import DeploymentStatistics as DeploymentStatistics
from .router import Router as Router
from .router import RouterStatistics as RouterStatistics
from .stack import ProviderStack as ProviderStack
from .stack import StackStatistics as StackStatistics
from .stack import configured_ttl_policy as configured_ttl_policy
from .stack import deployment_gate as deployment_gate
from .stack import open_stack as open_stack
from .types import ChatRequest as ChatRequest
from .types import ChatResponse as ChatResponse
from .types import EmbeddingRequest as EmbeddingRequest
from .types import EmbeddingResponse as EmbeddingResponse
from .types import Message as Message
from .types import ProviderItem as ProviderItem
from .types import StreamChunk as StreamChunk
from .types import ToolCall as ToolCall
from .types import ToolCallDelta as ToolCallDelta
from .types import ToolSpec as ToolSpec
from .types import Usage as Usage
from .types import assistant as assistant
from .types import system as system
from .types import tool_message as tool_message
from .types import user as user

__all__ = [
    "AnthropicProvider",
    "ChatRequest",
    "ChatResponse",
    "DeploymentStatistics",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "FakeProvider",
    "HTTPPoolStatistics",
    "HTTPSession",
    "LLMClient",
    "LeanHTTPClient",
    "LeanHTTPError",
    "LeanResponse",
    "LeanTransport",
    "Message",
    "OllamaProvider",
    "OpenAIProvider",
    "OutputMode",
    "OutputRefusedError",
    "OutputStream",
    "PoolStatistics",
    "Provider",
    "ProviderItem",
    "ProviderStack",
    "ResponsesProvider",
    "Router",
    "RouterStatistics",
    "StackStatistics",
    "StreamAccumulator",
    "StreamChunk",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "Usage",
    "assistant",
    "collect_stream",
    "configured_ttl_policy",
    "deployment_gate",
    "open_anthropic",
    "open_azure",
    "open_http_session",
    "open_llm_client",
    "open_ollama",
    "open_openai",
    "open_provider",
    "open_responses",
    "open_router",
    "open_stack",
    "open_transport",
    "system",
    "tool_message",
    "user",
]
