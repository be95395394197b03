"""Paging for tools: the ``page_size`` / ``page_token`` -> ``has_more`` / ``next_page_token``
contract, as a helper for tool authors and a bounded, lazy consumer.

A tool that lists things takes ``page_size`` and ``page_token`` and answers with a `Page`:
the items, ``has_more`` and, when there is more, an opaque ``next_page_token`` to pass back.
`paged_tool` turns an ``async fetch(page_size, page_token, **args) -> Page`` into a
`FunctionTool` with that contract; `encode_page_token` / `decode_page_token` make opaque,
checksummed tokens (and `slice_page` pages an in-memory sequence with them).
`walk_pages` walks every page lazily, at most ``max_pages`` of them, owning no task.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final

import attrs

from ..errors import ToolArgumentError
from ..llm.types import ToolSpec

if TYPE_CHECKING:
    from ..agents import Context
    from .base import BoundTools

__all__ = [
    "Fetch",
    "Page",
    "PageRequest",
    "PageWalk",
    "PagedTool",
    "decode_page_token",
    "encode_page_token",
    "paged_tool",
    "slice_page",
    "tool_fetch",
    "walk_pages",
]

T = TypeVar("T")
Fetch = Callable[[int, str | None], Awaitable["Page[Any]"]]
"""``async fetch(page_size, page_token) -> Page``: one page of something."""

_CHECK_BYTES: Final = 4
_RESERVED: Final = frozenset({"page_size", "page_token"})


def _has_more_default(page: Page[Any]) -> bool:
    return page.next_page_token is not None


def _check_has_more(page: Page[Any], _: attrs.Attribute[bool], value: bool) -> None:
    if value and page.next_page_token is None:
        raise ValueError("a page with has_more=True needs a next_page_token")


@attrs.frozen(slots=True)
class Page(Generic[T]):
    """One page: ``items``, ``has_more`` and, if there is more, ``next_page_token``.

    ``has_more`` defaults to whether ``next_page_token`` is set; ``has_more=True`` without
    a token raises ``ValueError``.
    """

    items: Sequence[T]
    next_page_token: str | None = None
    has_more: bool = attrs.field(
        default=attrs.Factory(_has_more_default, takes_self=True), validator=_check_has_more
    )

    def to_dict(self) -> dict[str, Any]:
        """The tool output form: ``{"items": [...], "has_more": ..., "next_page_token": ...}``."""
        return {
            "items": list(self.items),
            "has_more": self.has_more,
            "next_page_token": self.next_page_token if self.has_more else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Page[Any]:
        """Read a tool's output back (the inverse of `to_dict`).

        Raises:
            ValueError: ``items`` is missing or not a list.
        """
        items = data.get("items")
        if not isinstance(items, list):
            raise ValueError("a page needs an 'items' list")
        token = data.get("next_page_token")
        has_more = bool(data.get("has_more", token is not None)) and token is not None
        return cls(items, token if has_more else None, has_more)


@attrs.frozen(slots=True)
class PageRequest:
    """What a paged tool was asked for: ``page_size`` (>= 1) and ``page_token`` (None: start)."""

    page_size: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    page_token: str | None = None

    @classmethod
    def from_args(
        cls, args: Mapping[str, Any], *, default_size: int = 20, max_size: int = 100
    ) -> PageRequest:
        """Read ``page_size`` / ``page_token`` from tool arguments; the size is clamped to
        ``1..max_size`` (a model asking for 10,000 gets ``max_size``)."""
        size = args.get("page_size")
        size = default_size if not isinstance(size, int) or isinstance(size, bool) else size
        token = args.get("page_token") or None
        return cls(max(1, min(size, max_size)), str(token) if token is not None else None)


def encode_page_token(state: Mapping[str, Any]) -> str:
    """An opaque token for ``state`` (JSON-able): URL-safe base64 of the JSON text and a
    short checksum, so a token the model mangled is refused instead of misread."""
    payload = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    check = hashlib.blake2b(payload, digest_size=_CHECK_BYTES).digest()
    return base64.urlsafe_b64encode(payload + check).rstrip(b"=").decode("ascii")


def decode_page_token(token: str, *, tool: str = "") -> dict[str, Any]:
    """The state `encode_page_token` put in ``token``.

    Raises:
        ToolArgumentError: (a ``ValueError``) the token is not one of ours, with
            ``field="page_token"``; raised inside a tool, the registry reports it to the
            model as an ``invalid_arguments`` error.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload, check = raw[:-_CHECK_BYTES], raw[-_CHECK_BYTES:]
        if (
            len(raw) <= _CHECK_BYTES
            or check != hashlib.blake2b(payload, digest_size=_CHECK_BYTES).digest()
        ):
            raise ValueError("checksum mismatch")
        state = json.loads(payload)
        if not isinstance(state, dict):
            raise ValueError("not an object")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        message = f"page_token {token[:40]!r} is not a token this tool returned"
        raise ToolArgumentError(message, tool=tool, field="page_token") from None
    return state


def slice_page(items: Sequence[T], page_size: int, page_token: str | None) -> Page[T]:
    """The page of ``items`` that ``page_token`` points to (an offset token; None: start).

    Raises:
        ToolArgumentError: ``page_token`` is not a token from this function.
    """
    offset = 0
    if page_token is not None:
        value = decode_page_token(page_token).get("offset")
        if not isinstance(value, int) or not 0 <= value <= len(items):
            raise ToolArgumentError("page_token is out of range", tool="", field="page_token")
        offset = value
    end = offset + page_size
    token = encode_page_token({"offset": end}) if end < len(items) else None
    return Page(items[offset:end], token)


@final
class PagedTool:
    """A `FunctionTool` made by `paged_tool`: the paging contract around a fetch function."""

    __slots__ = (
        "_fetch",
        "default_page_size",
        "description",
        "max_page_size",
        "name",
        "parameters",
        "timeout",
    )

    def __init__(
        self,
        fetch: Callable[..., Awaitable[Page[Any]]],
        *,
        name: str,
        description: str,
        parameters: Mapping[str, Any] | None,
        required: Sequence[str],
        default_page_size: int,
        max_page_size: int,
        timeout: float | None,
    ) -> None:
        if not 1 <= default_page_size <= max_page_size:
            raise ValueError("need 1 <= default_page_size <= max_page_size")
        extra = dict(parameters or {})
        clash = _RESERVED & set(extra)
        if clash:
            raise ValueError(f"parameters may not define {sorted(clash)}: paging adds them")
        self._fetch = fetch
        self.name = name
        self.description = description
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.timeout = timeout
        properties = {
            **extra,
            "page_size": {
                "type": "integer",
                "minimum": 1,
                "description": f"items per page (default {default_page_size}, at most "
                f"{max_page_size}; larger values are reduced)",
            },
            "page_token": {
                "type": ["string", "null"],
                "description": "next_page_token from the previous page; omit for the first",
            },
        }
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = list(required)
        schema["additionalProperties"] = False
        self.parameters: Mapping[str, Any] = schema

    async def call(self, ctx: Context | None, args: Mapping[str, Any]) -> dict[str, Any]:
        """Fetch the requested page; the output is `Page.to_dict`."""
        request = PageRequest.from_args(
            args, default_size=self.default_page_size, max_size=self.max_page_size
        )
        rest = {k: v for k, v in args.items() if k not in _RESERVED}
        page = await self._fetch(request.page_size, request.page_token, **rest)
        return page.to_dict()

    def to_spec(self) -> ToolSpec:
        """The `ToolSpec` a model is shown."""
        return ToolSpec(self.name, self.description, self.parameters)


def paged_tool(
    fetch: Callable[..., Awaitable[Page[Any]]],
    *,
    name: str,
    description: str = "",
    parameters: Mapping[str, Any] | None = None,
    required: Sequence[str] = (),
    default_page_size: int = 20,
    max_page_size: int = 100,
    timeout: float | None = None,
) -> PagedTool:
    """A tool following the paging contract from ``async fetch(page_size, page_token, **args)``.

    ``parameters`` are the tool's other arguments (JSON schema ``properties``; ``required``
    names the mandatory ones); ``page_size`` and ``page_token`` are added. ``fetch``
    returns a `Page`; the model sees ``{"items", "has_more", "next_page_token"}``.

    Raises:
        ValueError: the page sizes are inconsistent or ``parameters`` names a paging field.
    """
    return PagedTool(
        fetch,
        name=name,
        description=description or (fetch.__doc__ or "").strip().split("\n\n")[0],
        parameters=parameters,
        required=required,
        default_page_size=default_page_size,
        max_page_size=max_page_size,
        timeout=timeout,
    )


@final
class PageWalk(Generic[T]):
    """An async iterator over pages, fetched one at a time as it is advanced.

    It owns no task: each ``__anext__`` awaits ``fetch`` in the caller's task, so
    cancellation and errors reach the caller directly. It stops after the last page, or
    after ``max_pages`` pages; then `truncated` is True if the source had more, and
    `next_page_token` is where to resume.
    """

    __slots__ = (
        "_done",
        "_fetch",
        "max_pages",
        "next_page_token",
        "page_size",
        "pages",
        "truncated",
    )

    def __init__(
        self, fetch: Fetch, *, page_size: int, max_pages: int, page_token: str | None = None
    ) -> None:
        if max_pages < 1 or page_size < 1:
            raise ValueError("page_size and max_pages must be >= 1")
        self._fetch = fetch
        self.page_size = page_size
        self.max_pages = max_pages
        self.next_page_token = page_token
        self.pages = 0
        self.truncated = False
        self._done = False

    def __aiter__(self) -> PageWalk[T]:
        return self

    async def __anext__(self) -> Page[T]:
        if self._done:
            raise StopAsyncIteration
        if self.pages >= self.max_pages:
            self._done = self.truncated = True
            raise StopAsyncIteration
        page = await self._fetch(self.page_size, self.next_page_token)
        self.pages += 1
        self.next_page_token = page.next_page_token if page.has_more else None
        if not page.has_more:
            self._done = True
        elif self.pages >= self.max_pages:
            self._done = self.truncated = True
        return page


def walk_pages(
    fetch: Fetch, *, page_size: int = 20, max_pages: int = 10, page_token: str | None = None
) -> PageWalk[Any]:
    """Walk pages lazily: ``async for page in walk_pages(fetch, max_pages=5): ...``.

    At most ``max_pages`` calls of ``fetch``; afterwards the walk's ``truncated`` says
    whether pages were left and ``next_page_token`` where to resume (see `PageWalk`).

    Raises:
        ValueError: ``page_size`` or ``max_pages`` below 1.
    """
    return PageWalk(fetch, page_size=page_size, max_pages=max_pages, page_token=page_token)


def tool_fetch(tools: BoundTools, name: str, args: Mapping[str, Any] | None = None) -> Fetch:
    """A `Fetch` that calls paged tool ``name`` through ``tools`` (``ctx.tools``).

    A call that does not succeed raises (see `ToolResult.unwrap`).
    """
    base = dict(args or {})

    async def fetch(page_size: int, page_token: str | None) -> Page[Any]:
        call_args = {**base, "page_size": page_size}
        if page_token is not None:
            call_args["page_token"] = page_token
        result = await tools.call(name, call_args)
        return Page.from_dict(result.unwrap())

    return fetch
