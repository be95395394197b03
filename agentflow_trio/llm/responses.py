"""The Responses API adapter (placeholder until issue #21's provider lands)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Provider

if TYPE_CHECKING:
    from ..config import LLMConfig

__all__ = ["open_responses"]


@asynccontextmanager
async def open_responses(llm: LLMConfig) -> AsyncIterator[Provider]:
    """Not built yet."""
    raise ConfigError("provider not available yet", key="llm.provider")
    yield  # pragma: no cover
