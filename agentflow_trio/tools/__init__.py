"""Tools for agents: function tools and their registry, parallel fan-out, paging, streaming
results and the tool-calling agent loop.

`tool` turns a typed ``async def`` into a `FunctionTool`; `ToolRegistry` validates
arguments and contains every failure in a `ToolResult`; `call_many` runs calls in one
nursery under an integer cap; `tool_agent` is the model -> tools -> model loop;
`paged_tool` / `walk_pages` implement the paging contract; `open_tool_stream` moves results
in batches through a bounded channel.
"""

from ._calls import CallSpec as CallSpec
from ._calls import OnError as OnError
from ._result import ToolOutcome as ToolOutcome
from ._result import ToolResult as ToolResult
from ._schema import ArgumentConversionError as ArgumentConversionError
from .base import BoundTools as BoundTools
from .base import FunctionTool as FunctionTool
from .base import Tool as Tool
from .base import ToolRegistry as ToolRegistry
from .base import new_call_id as new_call_id
from .base import to_spec as to_spec
from .base import tool as tool
from .fanout import call_many as call_many
from .loop import default_messages as default_messages
from .loop import message_from_dict as message_from_dict
from .loop import tool_agent as tool_agent
from .paging import Fetch as Fetch
from .paging import Page as Page
from .paging import PagedTool as PagedTool
from .paging import PageRequest as PageRequest
from .paging import PageWalk as PageWalk
from .paging import decode_page_token as decode_page_token
from .paging import encode_page_token as encode_page_token
from .paging import paged_tool as paged_tool
from .paging import slice_page as slice_page
from .paging import tool_fetch as tool_fetch
from .paging import walk_pages as walk_pages
from .streaming import Batch as Batch
from .streaming import StreamError as StreamError
from .streaming import StreamSink as StreamSink
from .streaming import open_tool_stream as open_tool_stream

__all__ = [
    "ArgumentConversionError",
    "Batch",
    "BoundTools",
    "CallSpec",
    "Fetch",
    "FunctionTool",
    "OnError",
    "Page",
    "PageRequest",
    "PageWalk",
    "PagedTool",
    "StreamError",
    "StreamSink",
    "Tool",
    "ToolOutcome",
    "ToolRegistry",
    "ToolResult",
    "call_many",
    "decode_page_token",
    "default_messages",
    "encode_page_token",
    "message_from_dict",
    "new_call_id",
    "open_tool_stream",
    "paged_tool",
    "slice_page",
    "to_spec",
    "tool",
    "tool_agent",
    "tool_fetch",
    "walk_pages",
]
