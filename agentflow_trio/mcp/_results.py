"""MCP ``CallToolResult`` -> the plain dict a FunctionTool returns to the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.types import CallToolResult

__all__ = ["result_to_dict"]


def result_to_dict(result: CallToolResult, *, server: str, tool: str) -> dict[str, Any]:
    """Flatten a tool result for the model, never raising for a tool-level error.

    * success with structured content (an object): that object;
    * success otherwise: ``{"text": <the text blocks joined by newlines>}``;
    * ``isError``: ``{"error": {"type": "mcp_tool_error", "server", "tool", "message"}}``,
      the same ``{"error": {"type", "message"}}`` shape the tool registry uses.

    Non-text blocks (images, audio, resources) are kept under ``"content"`` as their JSON.
    """
    texts = [block.text for block in result.content if block.type == "text"]
    others = [
        block.model_dump(mode="json", by_alias=True, exclude_none=True)
        for block in result.content
        if block.type != "text"
    ]
    text = "\n".join(texts)
    out: dict[str, Any]
    if result.is_error:
        message = text or "the tool reported an error without a message"
        error = {"type": "mcp_tool_error", "server": server, "tool": tool, "message": message}
        out = {"error": error}
    elif isinstance(result.structured_content, dict):
        out = dict(result.structured_content)
    else:
        out = {"text": text}
    if others:
        out["content"] = others
    return out
